"""Every task family trains end to end from the CLI on a tiny dataset in its loader's on-disk format."""
import re

import numpy as np
import pytest
import torch

from graph_fixtures import write_ogb, write_planetoid, write_ppi
from pointseg.graphs.presets import get_preset
from pointseg.graphs.tasks import OgbNodeTask, make_task
from pointseg.graphs.train import load_graph_checkpoint, run_training
from pointseg.cli import main

FINAL = re.compile(r"^test (\S+) (\d\.\d+) ± (\d\.\d+) \| valid (\d\.\d+) ± (\d\.\d+)", re.M)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("graphs")
    out = {"planetoid": write_planetoid(base / "planetoid"), "ppi": write_ppi(base / "ppi")}
    for name in ("ogbn-arxiv", "ogbn-proteins", "ogbn-products", "ogbg-molhiv", "ogbg-ppa", "ogbl-collab"):
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
    m, first, last = train_cli(capsys, "Cora", "resgcn-7-graph", roots["planetoid"], tmp_path / "cora",
                               "--epochs", "15", "--set", "layers=3", "--set", "channels=16", "--runs", "2")
    assert m.group(1) == "acc" and last < first
    assert float(m.group(2)) > 0.6                      # 3 balanced classes: chance is 1/3
    ck = torch.load(tmp_path / "cora" / "run1" / "best.pt", weights_only=True)
    assert ck["dataset"] == "Cora" and ck["metric"] == "acc" and "model" in ck
    assert list((tmp_path / "cora" / "tb").iterdir())
    assert main(["graphs", "evaluate", str(tmp_path / "cora" / "run0" / "best.pt")]) == 0
    assert "test acc" in capsys.readouterr().out
    # never overwrite silently; the preset's old name still works for one release, with one line
    assert main(["graphs", "train", "Cora", "--preset", "resgcn-7", "--root", str(roots["planetoid"]),
                 "--out", str(tmp_path / "cora"), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "warning: graph preset 'resgcn-7' is now 'resgcn-7-graph'" in err and "FutureWarning" not in err


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


def test_ogbn_products_partitioned_training_and_inference_from_cli(roots, tmp_path, capsys, monkeypatch):
    EPOCHS = 15
    spy = EvalSpy(monkeypatch)
    parts_seen = []
    orig = OgbNodeTask._parts

    def parts(task, k, gen):
        out = orig(task, k, gen)
        parts_seen.append((k, sum(len(p) for p in out), max(len(p) for p in out)))
        return out
    monkeypatch.setattr(OgbNodeTask, "_parts", parts)
    m, first, last = train_cli(capsys, "ogbn-products", "deepergcn-ogbn-products", roots["ogbn-products"],
                               tmp_path / "prod", "--epochs", str(EPOCHS), "--set", "layers=2", "--set", "channels=32",
                               "--train-set", "parts=2", "--train-set", "eval_parts=2",
                               "--train-set", "eval_repeats=2")
    assert m.group(1) == "acc" and last < first
    assert float(m.group(2)) > 0.5                      # 3 used classes out of 47 outputs: chance ~1/3
    # training (k=2) and inference (k=2, twice per evaluation) both saw partitions that cover all 90 nodes
    # while no part holds the whole graph
    assert {k for k, _, _ in parts_seen} == {2}
    assert all(total == 90 and biggest < 90 for _, total, biggest in parts_seen)
    assert len(parts_seen) == EPOCHS * (1 + 2)
    name, shapes = spy.calls[0]
    assert name == "ogbn-products" and len(spy.calls) == EPOCHS * 3
    assert all(s["y_true"][1] == 1 and s["y_true"] == s["y_pred"] for _, s in spy.calls)
    assert sorted(s["y_true"][0] for _, s in spy.calls[:3]) == [18, 18, 54]


def _products_task(roots, **train):
    preset = get_preset("deepergcn-ogbn-products")
    task = make_task("ogbn-products", str(roots["ogbn-products"]), {**preset["train"], **train}, torch.device("cpu"))
    torch.manual_seed(0)
    model = task.build(task.model_config({**preset, "name": "deepergcn-ogbn-products"},
                                         dict(layers=2, channels=16)))
    return task, model


def test_partitioned_evaluation_averages_fixed_partitions_deterministically(roots, monkeypatch):
    task, model = _products_task(roots, eval_parts=3, eval_repeats=3)
    seeds = []
    orig = OgbNodeTask._parts
    monkeypatch.setattr(OgbNodeTask, "_parts", lambda t, k, gen: seeds.append(gen.initial_seed()) or orig(t, k, gen))
    a = task.predict(model)
    b = task.predict(model)
    assert torch.equal(a, b)                            # fixed partitions: the same every evaluation
    assert len(set(seeds)) == 3 and seeds[:3] == seeds[3:]
    assert torch.allclose(a.sum(-1), torch.ones(len(a)), atol=1e-5)  # mean of per-partition probabilities
    # the average is over the partitions: each repeat alone differs from it, their mean equals it
    singles = []
    for s in sorted(set(seeds)):
        monkeypatch.setattr(OgbNodeTask, "_parts", lambda t, k, gen, s=s: orig(t, k, torch.Generator().manual_seed(s)))
        task.train_cfg.eval_repeats = 1
        singles.append(task.predict(model))
    assert not torch.allclose(singles[0], singles[1])
    assert torch.allclose(torch.stack(singles).mean(0), a, atol=1e-6)
    task.train_cfg.eval_repeats = 0
    with pytest.raises(ValueError, match="eval_repeats"):
        task.predict(model)


def test_ogbg_molhiv_atom_bond_encoders_mean_pooling(roots, tmp_path, capsys, monkeypatch):
    spy = EvalSpy(monkeypatch)
    m, first, last = train_cli(capsys, "ogbg-molhiv", "deepergcn-ogbg-molhiv", roots["ogbg-molhiv"], tmp_path / "m",
                               "--epochs", "4", "--set", "layers=2", "--set", "channels=32")
    assert m.group(1) == "rocauc" and last < first and float(m.group(2)) > 0.7
    assert all(s["y_true"][1] == 1 and s["y_pred"] == s["y_true"] for _, s in spy.calls)


def test_ogbg_molpcba_generic_preset_with_virtual_node_from_cli(tmp_path, capsys, monkeypatch):
    root = write_ogb(tmp_path / "pcba", "ogbg-molpcba")
    spy = EvalSpy(monkeypatch)
    m, first, last = train_cli(capsys, "ogbg-molpcba", "deepergcn", root, tmp_path / "m",
                               "--epochs", "4", "--set", "layers=2", "--set", "channels=32")
    assert m.group(1) == "ap" and last < first
    assert all(s["y_true"][1] == 128 and s["y_pred"] == s["y_true"] for _, s in spy.calls)
    ck = load_graph_checkpoint(tmp_path / "m" / "run0" / "best.pt")
    assert ck["model_config"]["virtual_node"] is True and ck["model_config"]["node_encoder"] == "atom"
    assert any(".vn_mlps." in k for k in ck["model"])   # the virtual node's per-layer MLPs were saved


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
    ck = load_graph_checkpoint(tmp_path / "ppi" / "run0" / "best.pt")
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
