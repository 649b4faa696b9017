"""Every task family trains end to end from the CLI on a tiny dataset in its loader's on-disk format."""
import re

import numpy as np
import pytest
import torch

from graph_fixtures import write_ogb, write_planetoid, write_ppi
from graphs.train import load_checkpoint, run_training
from pointseg.cli import main

FINAL = re.compile(r"^test (\S+) (\d\.\d+) ± (\d\.\d+) \| valid (\d\.\d+) ± (\d\.\d+)", re.M)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("graphs")
    out = {"planetoid": write_planetoid(base / "planetoid"), "ppi": write_ppi(base / "ppi")}
    for name in ("ogbn-arxiv", "ogbn-proteins", "ogbg-molhiv", "ogbg-ppa", "ogbl-collab"):
        out[name] = write_ogb(base / name, name)
    return out


class EvalSpy:
    """Records the shapes ogb's Evaluator receives."""

    def __init__(self, monkeypatch):
        from ogb.graphproppred import Evaluator as GE
        from ogb.linkproppred import Evaluator as LE
        from ogb.nodeproppred import Evaluator as NE
        self.calls = []
        for cls in (NE, GE, LE):
            orig = cls.eval

            def spy(ev, d, _orig=orig):
                self.calls.append((ev.name, {k: tuple(np.shape(v)) for k, v in d.items()}))
                return _orig(ev, d)
            monkeypatch.setattr(cls, "eval", spy)


def train_cli(capsys, dataset, preset, root, out, *extra):
    argv = ["graphs", "train", dataset, "--preset", preset, "--root", str(root), "--out", str(out),
            "--no-progress", *extra]
    assert main(argv) == 0
    text = capsys.readouterr().out
    m = FINAL.search(text)
    assert m, text
    losses = re.search(r"loss (\S+) -> (\S+)", text)
    return m, float(losses.group(1)), float(losses.group(2))


def test_planetoid_trains_from_cli_beats_chance_and_checkpoint_evaluates(roots, tmp_path, capsys):
    m, first, last = train_cli(capsys, "Cora", "resgcn-7", roots["planetoid"], tmp_path / "cora",
                               "--epochs", "15", "--set", "layers=3", "--set", "channels=16", "--runs", "2")
    assert m.group(1) == "acc" and last < first
    assert float(m.group(2)) > 0.6                      # 3 balanced classes: chance is 1/3
    ck = torch.load(tmp_path / "cora" / "run1" / "best.pt", weights_only=True)
    assert ck["dataset"] == "Cora" and ck["metric"] == "acc" and "state_dict" in ck
    assert list((tmp_path / "cora" / "tb").iterdir())
    assert main(["graphs", "evaluate", str(tmp_path / "cora" / "run0" / "best.pt")]) == 0
    assert "test acc" in capsys.readouterr().out
    # never overwrite silently
    assert main(["graphs", "train", "Cora", "--preset", "resgcn-7", "--root", str(roots["planetoid"]),
                 "--out", str(tmp_path / "cora"), "--epochs", "1", "--no-progress"]) == 2


def test_ogbn_arxiv_full_batch_from_cli_with_evaluator_shapes(roots, tmp_path, capsys, monkeypatch):
    spy = EvalSpy(monkeypatch)
    m, first, last = train_cli(capsys, "ogbn-arxiv", "deepergcn-ogbn-arxiv", roots["ogbn-arxiv"], tmp_path / "a",
                               "--epochs", "5", "--set", "layers=3")
    assert m.group(1) == "acc" and last < first and float(m.group(2)) > 0.5
    name, shapes = spy.calls[0]
    assert name == "ogbn-arxiv" and shapes["y_true"][1] == 1 and shapes["y_true"] == shapes["y_pred"]


def test_ogbn_proteins_partitions_with_edge_features_and_rocauc(roots, tmp_path, capsys, monkeypatch):
    spy = EvalSpy(monkeypatch)
    m, first, last = train_cli(capsys, "ogbn-proteins", "deepergcn-ogbn-proteins", roots["ogbn-proteins"],
                               tmp_path / "p", "--epochs", "3", "--set", "layers=3",
                               "--train-set", "parts=3", "--train-set", "eval_parts=2")
    assert m.group(1) == "rocauc" and last < first and float(m.group(2)) > 0.7
    assert all(s["y_true"][1] == 112 and s["y_true"] == s["y_pred"] for _, s in spy.calls)


def test_ogbg_molhiv_atom_bond_encoders_mean_pooling(roots, tmp_path, capsys, monkeypatch):
    spy = EvalSpy(monkeypatch)
    m, first, last = train_cli(capsys, "ogbg-molhiv", "deepergcn-ogbg-molhiv", roots["ogbg-molhiv"], tmp_path / "m",
                               "--epochs", "4", "--set", "layers=2", "--set", "channels=32")
    assert m.group(1) == "rocauc" and last < first and float(m.group(2)) > 0.7
    assert all(s["y_true"][1] == 1 and s["y_pred"] == s["y_true"] for _, s in spy.calls)


def test_ogbg_ppa_node_features_from_edges(roots, tmp_path, capsys):
    m, first, last = train_cli(capsys, "ogbg-ppa", "deepergcn-ogbg-ppa", roots["ogbg-ppa"], tmp_path / "ppa",
                               "--epochs", "4", "--set", "layers=2", "--set", "channels=32")
    assert m.group(1) == "acc" and last < first


def test_ogbl_collab_link_predictor_hits(roots, tmp_path, capsys, monkeypatch):
    spy = EvalSpy(monkeypatch)
    m, first, last = train_cli(capsys, "ogbl-collab", "deepergcn-ogbl-collab", roots["ogbl-collab"],
                               tmp_path / "c", "--epochs", "8", "--set", "layers=2", "--set", "channels=32")
    assert m.group(1) == "hits@50" and last < first
    assert all(len(s["y_pred_pos"]) == 1 and len(s["y_pred_neg"]) == 1 for _, s in spy.calls)


def test_ppi_multilabel_micro_f1(roots, tmp_path):
    res = run_training("PPI", "resmrgcn-28-ppi", str(roots["ppi"]), epochs=3, out=tmp_path / "ppi",
                       overrides=dict(layers=2, channels=16), progress=False)
    assert res["metric"] == "micro-F1" and res["losses"][-1] < res["losses"][0]
    ck = load_checkpoint(tmp_path / "ppi" / "run0" / "best.pt")
    assert ck["model_config"]["head"] == "fusion"


def test_bad_inputs_give_one_line_errors(roots, tmp_path, capsys):
    cases = [
        (["ogbn-arxive", "--preset", "deepergcn", "--root", str(tmp_path)], "did you mean ogbn-arxiv"),
        (["Cora", "--preset", "deepergcn-ogbn-proteins", "--root", str(roots["planetoid"])], "needs edge features"),
        (["ogbg-molhiv", "--preset", "deepergcn-ogbn-arxiv", "--root", str(roots["ogbg-molhiv"])], "node input channels"),
        (["ogbn-arxiv", "--preset", "deepergcn", "--root", str(tmp_path)], "ogbn_arxiv"),
        (["CiteSeer", "--preset", "deepergcn", "--root", str(roots["planetoid"])], "ind.citeseer.x"),
        (["PPI", "--preset", "resmrgcn-28-ppi", "--root", str(tmp_path / "nope")], "train_feats.npy"),
    ]
    for argv, needle in cases:
        assert main(["graphs", "train", *argv, "--epochs", "1", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    # an ogb folder without its release note would make ogb 1.3.6 ask on stdin: we refuse first
    bad = tmp_path / "ogbn_arxiv"
    (bad / "raw").mkdir(parents=True)
    assert main(["graphs", "train", "ogbn-arxiv", "--preset", "deepergcn", "--root", str(tmp_path),
                 "--epochs", "1"]) == 2
    assert "RELEASE_v1.txt" in capsys.readouterr().err
    assert main(["graphs", "evaluate", str(tmp_path / "missing.pt")]) == 2
