from dataclasses import dataclass, field

import pytest

from pointseg.config import load_config, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    step: int = 20


@dataclass
class Cfg:
    name: str = "x"
    epochs: int = 100
    amp: bool = False
    optim: Optim = field(default_factory=Optim)
    areas: list[int] = field(default_factory=lambda: [1, 2])
    device: str | None = None


def test_yaml_with_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 5\noptim:\n  lr: 2e-3\n")
    cfg = load_config(Cfg, p, ["optim.step=3", "amp=true", "areas=[1,3,4]", "device=cuda"])
    assert cfg.epochs == 5 and cfg.optim.lr == 2e-3 and cfg.optim.step == 3
    assert cfg.amp is True and cfg.areas == [1, 3, 4] and cfg.device == "cuda"
    save_config(cfg, tmp_path / "out.yaml")
    assert to_dict(load_config(Cfg, tmp_path / "out.yaml")) == to_dict(cfg)


@pytest.mark.parametrize("override, msg", [
    (["epoch=3"], r"unknown config key\(s\) \['epoch'\]"),
    (["optim.lrr=3"], r"optim.lrr"),
    (["epochs=fast"], "epochs: expected an integer"),
    (["amp=3"], "amp: expected true/false"),
    (["noequals"], "key=value"),
])
def test_bad_overrides_name_the_key(tmp_path, override, msg):
    with pytest.raises(ValueError, match=msg):
        load_config(Cfg, None, override)


def test_bad_yaml_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("epochs: [1,\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(Cfg, p)
    with pytest.raises(ValueError, match="missing.yaml"):
        load_config(Cfg, tmp_path / "missing.yaml")
