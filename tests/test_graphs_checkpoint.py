"""Graph runs share pointseg's config grammar and checkpoint format: ``--set`` / ``--train-set`` values are
YAML, unknown or mistyped options are refused by name, and ``best.pt`` is a pointseg checkpoint of kind
``graph`` that ``graphs evaluate`` reads and ``segment`` / ``graphs evaluate`` refuse across kinds."""
import pytest
import torch

from graph_fixtures import write_planetoid
from pointseg.cli import main
from pointseg.engine.checkpoint import FORMAT, load_checkpoint


@pytest.fixture(scope="module")
def cora_run(tmp_path_factory):
    root = write_planetoid(tmp_path_factory.mktemp("pl"), feat=12, n_train=30, n_test=60, seed=1)
    out = tmp_path_factory.mktemp("run") / "o"
    assert main(["graphs", "train", "Cora", "--root", str(root), "--epochs", "3", "--out", str(out),
                 "--no-progress", "--set", "gcn_bias=true", "--train-set", "lr=5e-3",
                 "--train-set", "weight_decay_scope=all"]) == 0
    return root, out


def test_graph_best_pt_is_a_pointseg_checkpoint_of_kind_graph(cora_run):
    _, out = cora_run
    raw = torch.load(out / "run0" / "best.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["kind"] == "graph"
    ck = load_checkpoint(out / "run0" / "best.pt")
    assert ck["model_config"]["gcn_bias"] is True                 # YAML true, typed bool
    assert ck["train_config"]["lr"] == pytest.approx(5e-3)        # YAML 1.1 reads 5e-3 as a string: coerced
    assert ck["train_config"]["weight_decay_scope"] == "all"
    assert ck["provenance"]["project"] == "pointseg" and set(ck["metrics"]) == {"train", "valid", "test"}
    assert 1 <= ck["epoch"] <= 3 and ck["global_step"] == ck["epoch"]     # full batch: one step per epoch
    assert "optimizer" not in ck                                  # best.pt: the model, no training state
    assert any(k.endswith("lin.weight") for k in ck["model"])


def test_graphs_evaluate_reads_it_and_segment_refuses_it_in_one_line(cora_run, tmp_path, capsys):
    _, out = cora_run
    assert main(["graphs", "evaluate", str(out / "run0" / "best.pt")]) == 0
    capsys.readouterr()
    assert main(["segment", "--checkpoint", str(out / "run0" / "best.pt"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'graph'" in err and "not a segmentation model" in err
    assert not (tmp_path / "s").exists()


def test_graphs_evaluate_refuses_a_segmentation_checkpoint_in_one_line(capsys):
    # the file (segmentation checkpoints' bundled names belong to the segmentation application)
    from pointseg.assets import asset
    assert main(["graphs", "evaluate", str(asset("demo_checkpoint.pt"))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'segmentation'" in err and "not a graph model" in err


@pytest.mark.parametrize("args, msg", [
    (["--set", "layers=three"], "layers: expected an integer"),
    (["--set", "learn_t=3"], "learn_t: expected true/false"),
    (["--set", "chanels=8"], r"unknown graph model option\(s\) \['chanels'\]"),
    (["--train-set", "epochs=1.5"], "epochs: expected an integer"),
    (["--train-set", "lr"], "key=value"),
])
def test_bad_graph_options_are_refused_by_name(cora_run, tmp_path, capsys, args, msg):
    import re
    root, _ = cora_run
    assert main(["graphs", "train", "Cora", "--root", str(root), "--epochs", "1", "--out", str(tmp_path / "x"),
                 "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(msg, err), err
