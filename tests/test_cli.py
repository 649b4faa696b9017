import subprocess
import sys

from pointseg.cli import SUBCOMMANDS, main


def test_help_lists_every_subcommand(capsys):
    main([])
    out = capsys.readouterr().out
    for name, _ in SUBCOMMANDS:
        assert name in out


def test_models_prints_name_and_exact_count(capsys):
    assert main(["models"]) == 0
    lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert lines["resgcn-28"] == "3644301" and lines["densegcn-28"] == "43678605"


def test_models_name_prints_layer_summary(capsys):
    assert main(["models", "resgcn-7"]) == 0
    out = capsys.readouterr().out
    assert "1,403,853" in out and "backbone" in out and "fusion" in out


def test_unknown_model_is_a_clear_error_with_nonzero_exit():
    r = subprocess.run([sys.executable, "-m", "pointseg", "models", "resnet-50"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "unknown model preset 'resnet-50'" in r.stderr and "Traceback" not in r.stderr


def test_train_overrides_may_follow_options(monkeypatch):
    import pointseg.cli.train as train_cli
    seen = {}
    monkeypatch.setattr(train_cli, "run", lambda args: seen.update(vars(args)) or 0)  # bound at parse time
    assert main(["train", "configs/densegcn28_synthetic.yaml", "epochs=2", "--device", "cpu", "amp=bf16"]) == 0
    assert seen["overrides"] == ["epochs=2", "amp=bf16"] and seen["device"] == "cpu"


def test_unknown_option_is_still_an_error(capsys):
    import pytest
    with pytest.raises(SystemExit):
        main(["models", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
