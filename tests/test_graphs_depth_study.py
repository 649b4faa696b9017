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


def test_depth_study_with_the_gcn_preset_starts_from_the_preset_model(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("depth_study", Path(__file__).parents[1] / "tools" / "depth_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = write_planetoid(tmp_path / "data")
    out = tmp_path / "study"
    assert mod.main(["Cora", "--root", str(root), "--preset", "gcn-2", "--depths", "2", "4", "--backbones", "plain",
                     "res", "dense", "--epochs", "3", "--out", str(out)]) == 0
    assert len((out / "table.txt").read_text().splitlines()) == 5
    # a depth too shallow for a preset whose head is a convolution is one line, exit 2
    assert mod.main(["Cora", "--root", str(root), "--preset", "gcn-2", "--depths", "1", "--epochs", "1",
                     "--out", str(out)]) == 2
    # --conv gcn alone (generic depth-study model) runs too
    assert mod.main(["Cora", "--root", str(root), "--conv", "gcn", "--depths", "2", "--backbones", "res",
                     "--epochs", "2", "--out", str(out)]) == 0
