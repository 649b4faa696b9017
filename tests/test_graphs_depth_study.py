"""tools/depth_study.py runs on a Planetoid fixture and writes its table and PNGs."""
import importlib.util
from pathlib import Path

from graph_fixtures import write_planetoid


def test_depth_study_writes_table_and_plots(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("depth_study", Path(__file__).parents[1] / "tools" / "depth_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = write_planetoid(tmp_path / "data")
    out = tmp_path / "study"
    assert mod.main(["Cora", "--root", str(root), "--depths", "2", "3", "--backbones", "plain", "res",
                     "--epochs", "2", "--channels", "8", "--out", str(out)]) == 0
    text = (out / "table.txt").read_text()
    assert "plain" in text and "res" in text and len(text.splitlines()) == 4
    for png in ("metric_vs_depth.png", "loss_curves.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert mod.main(["Cora", "--root", str(root), "--backbones", "nope"]) == 2
