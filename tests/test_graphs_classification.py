"""Graph classification at the published level (issue 30): the GIN preset of Errica et al. (ICLR'20) is the
reference GIN, TU node attributes are used, the protocol's early stopping and step decay work, runs at chance
are flagged, and on fixtures in the public TU / MoleculeNet CSV formats whose label needs both the graph and
the node attributes, the default presets learn while models blind to either fail."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from graph_fixtures import write_tu_files
from pointseg.graphs.model import GraphNet, GraphNetConfig
from pointseg.graphs.optim import LinearWarmup, epoch_lr
from pointseg.graphs.presets import default_preset, preset_model_config
from pointseg.graphs.tasks import make_task
from pointseg.graphs.train import EarlyStopping, chance_check
from pointseg.cli import main
from pointseg.engine.task import Task as EngineTask
from pointseg.engine.trainer import FitOptions, Trainer

FINAL = re.compile(r"^test (\S+) (\S+) ± (\S+) \| valid (\S+)", re.M)
RUN = re.compile(r"^run(\d+).*valid (\S+) test (\S+)", re.M)


# ----------------------------------------------------------------------------- fixtures in the public formats
def write_tu_cycles(root: Path, name: str = "CYCLES", graphs: int = 400, attributes: int = 4, node_labels: int = 3,
                    seed: int = 0) -> Path:
    """A TU dataset (``NAME_{A,graph_indicator,graph_labels,node_labels,node_attributes}.txt``, 1-based node ids,
    each undirected edge both ways, as the TU release) whose label is ``2 * ring + sign``: ``ring`` = the graph
    is a cycle rather than a path (structure only: node counts 6..12 either way), ``sign`` = attribute 0 is
    drawn around +1 rather than -1 (attributes only; the other attributes and the node labels are noise). A
    model blind to the attributes or to the edges can reach at most 50 %, chance being 25 %."""
    rng = np.random.default_rng(seed)
    edges, indicator, glabels, nlabels, attrs = [], [], [], [], []
    offset = 0
    for g in range(graphs):
        ring, sign = (g // 2) % 2, g % 2
        n = int(rng.integers(6, 13))
        perm = rng.permutation(n)                          # node order carries nothing
        pairs = [(i, i + 1) for i in range(n - 1)] + ([(n - 1, 0)] if ring else [])
        for i, j in pairs:
            u, v = offset + int(perm[i]) + 1, offset + int(perm[j]) + 1
            edges += [(u, v), (v, u)]
        indicator += [g + 1] * n
        glabels.append(2 * ring + sign)
        nlabels += [int(rng.integers(0, node_labels)) for _ in range(n)]
        x = rng.normal(0.0, 1.0, (n, attributes))
        x[:, 0] += 1.0 if sign else -1.0
        attrs += list(x)
        offset += n
    return write_tu_files(root, name, edges, indicator, glabels, nlabels, attrs, digits=5)


def write_tu_constant(root: Path, name: str = "SAME", graphs: int = 40) -> Path:
    """A TU dataset of identical graphs (a 5-node ring, same node labels and attributes) with labels 3:1, so no
    model can do better than the majority class."""
    n = 5
    edges = []
    for g in range(graphs):
        for i in range(n):
            u, v = g * n + i + 1, g * n + (i + 1) % n + 1
            edges += [(u, v), (v, u)]
    return write_tu_files(root, name, edges, [g + 1 for g in range(graphs) for _ in range(n)],
                          [int(g % 4 == 0) for g in range(graphs)], [i % 2 for _ in range(graphs) for i in range(n)],
                          [(i * 0.5, 1.0) for _ in range(graphs) for i in range(n)], digits=1)


RINGS = ("C1CCC1", "C1CCCC1", "C1CCCCC1", "C1CCCCCC1", "C1CCCCCCC1", "C1CCC2CCCCC2C1", "C1CCC(CC1)C1CCCC1",
         "C1CC2CCC1C2", "C1CCC(CC1)C1CCCCC1", "C1CCC2(CC1)CCCC2")


def write_ring_csv(path: Path) -> Path:
    """A MoleculeNet-style CSV (``smiles,N_on_ring``) of saturated ring systems (10 Bemis-Murcko scaffolds) with
    an amine and an alcohol: one on ring atom 0, the other at the end of a 1-3 carbon chain on ring atom 1-3.
    ``N_on_ring`` = 1 iff the nitrogen is the one on the ring. Each molecule's N <-> O swap is in the file with the
    other label: the same atom-feature multiset (a model blind to the bonds cannot tell them apart) and the same
    skeleton (a model blind to the atom types cannot either)."""
    from rdkit import Chem, RDLogger
    RDLogger.DisableLog("rdApp.*")
    labels: dict[str, int] = {}
    for ring in RINGS:
        base = Chem.MolFromSmiles(ring)
        for pos in range(1, 4):
            for chain in (1, 2, 3):
                for on_ring, at_end in ((7, 8), (8, 7)):
                    m = Chem.RWMol(base)
                    a = m.AddAtom(Chem.Atom(on_ring))
                    m.AddBond(0, a, Chem.BondType.SINGLE)
                    prev = pos
                    for _ in range(chain):
                        c = m.AddAtom(Chem.Atom(6))
                        m.AddBond(prev, c, Chem.BondType.SINGLE)
                        prev = c
                    m.AddBond(prev, m.AddAtom(Chem.Atom(at_end)), Chem.BondType.SINGLE)
                    try:
                        Chem.SanitizeMol(m)
                    except Chem.rdchem.AtomValenceException:  # a ring junction has no free valence
                        continue
                    labels.setdefault(Chem.MolToSmiles(m), int(on_ring == 7))
    path = Path(path)
    path.write_text("smiles,N_on_ring\n" + "".join(f"{s},{y}\n" for s, y in labels.items()))
    return path


@pytest.fixture(scope="module")
def cycles(tmp_path_factory):
    return write_tu_cycles(tmp_path_factory.mktemp("tu"))


def train(capsys, args: list[str]) -> str:
    assert main(["graphs", "train", *args, "--no-progress"]) == 0
    return capsys.readouterr().out


# ----------------------------------------------------------------------------- the GIN preset
def _errica_gin(cfg: GraphNetConfig) -> nn.Module:
    """Errica et al.'s ``GIN`` (models/graph_classifiers/GIN.py of their code) with PyG's GINConv, for comparison."""
    from torch.nn import BatchNorm1d, Linear, ReLU, Sequential
    from torch_geometric.nn import GINConv, global_add_pool, global_mean_pool

    def mlp(cin: int, c: int) -> nn.Module:
        return Sequential(Linear(cin, c), BatchNorm1d(c), ReLU(), Linear(c, c), BatchNorm1d(c), ReLU())

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = cfg.channels
            self.first_h = mlp(cfg.in_channels, c)
            self.convs = nn.ModuleList(GINConv(mlp(c, c), train_eps=True) for _ in range(cfg.layers))
            self.linears = nn.ModuleList(Linear(c, cfg.out_channels) for _ in range(cfg.layers + 1))
            self.pool = global_add_pool if cfg.pool == "sum" else global_mean_pool

        def forward(self, x, edge_index, batch):
            x = self.first_h(x)
            out = self.pool(self.linears[0](x), batch)     # their layer 0: pool after the linear map
            for conv, lin in zip(self.convs, self.linears[1:]):
                x = conv(x, edge_index)
                out = out + lin(self.pool(x, batch))
            return out

    return Reference()


def _copy_into_reference(ours: GraphNet, ref: nn.Module) -> None:
    def lin(dst: nn.Linear, src) -> None:
        dst.weight.data.copy_(src.weight)
        dst.bias.data.copy_(src.bias)

    def bn(dst: nn.BatchNorm1d, src) -> None:
        dst.load_state_dict(src.norm.state_dict())

    def mlp(dst, layers) -> None:                          # layers: our ConvNormAct layers in order
        for k, layer in enumerate(layers):
            lin(dst[3 * k], layer.lin)
            bn(dst[3 * k + 1], layer.norm)

    bb = ours.backbone
    mlp(ref.first_h, list(bb.first))
    for conv, blk in zip(ref.convs, bb.blocks):
        mlp(conv.nn, [blk.conv.mlp, *blk.mlp])
        conv.eps.data.copy_(blk.conv.eps)
    for dst, src in zip(ref.linears, ours.head.lins):
        lin(dst, src)


@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_gin_preset_equals_the_reference_gin_with_the_same_weights(pool):
    torch.manual_seed(0)
    cfg = preset_model_config("gin-tu", in_channels=21, out_channels=6, pool=pool)
    ours = GraphNet(cfg)
    ref = _errica_gin(cfg)
    # ENZYMES-sized: 21 inputs (18 attributes + 3 labels), 6 classes; a reference GIN has 42,082 parameters
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters()) == 42_082
    # train a few steps first so that BatchNorm statistics and eps are not at their initial values
    x = torch.randn(30, 21) * 3
    edge_index = torch.randint(0, 30, (2, 90))
    batch = torch.arange(30) // 10
    opt = torch.optim.Adam(ours.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ours(x, edge_index, batch=batch), torch.tensor([0, 3, 5])).backward()
        opt.step()
    if pool == "sum":
        # their layer 0 pools after its linear map: with sum pooling its bias counts once per node, not once
        ours.head.lins[0].bias.data.zero_()
    _copy_into_reference(ours, ref)
    ours.eval(), ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x, edge_index, batch=batch), ref(x, edge_index, batch), rtol=1e-5, atol=1e-5)
    assert ours.backbone.blocks[0].conv.eps.abs().item() > 0       # eps was learnt, and compared


def test_tu_datasets_default_to_gin_with_node_attributes_beside_labels(cycles):
    assert default_preset("ENZYMES", "tu") == "gin-tu"
    task = make_task("CYCLES", str(cycles), {}, torch.device("cpu"))
    g = task.graphs[0]
    raw = np.loadtxt(cycles / "CYCLES" / "raw" / "CYCLES_node_attributes.txt", delimiter=",")
    labels = np.loadtxt(cycles / "CYCLES" / "raw" / "CYCLES_node_labels.txt", dtype=int)
    n = g.num_nodes
    assert g.x.shape == (n, 4 + 3)                          # attributes first, then the one-hot node labels
    np.testing.assert_allclose(g.x[:, :4].numpy(), raw[:n], atol=1e-5)
    assert (g.x[:, 4:].argmax(1).numpy() == labels[:n]).all()
    assert "4 node attributes + 3 one-hot node labels" in task.describe()
    blind = make_task("CYCLES", str(cycles), {"use_node_attr": False}, torch.device("cpu"))
    assert blind.graphs[0].x.shape == (n, 3) and "4 node attributes left out" in blind.describe()


# The full model must use both halves of the label; each blind model is capped at 50 % by construction.
# 4 folds: 100 test graphs per fold, so a blind model's accuracy (50 % at best) stays well below 0.7.
@pytest.mark.parametrize("blind,extra,check", [
    ("", [], lambda acc: acc >= 0.85),
    ("attributes", ["--train-set", "use_node_attr=false"], lambda acc: acc <= 0.7),
    ("graph", ["--set", "layers=0"], lambda acc: acc <= 0.7),   # no GIN layer: an MLP on nodes, pooled
])
def test_default_gin_learns_a_label_of_structure_and_attributes_and_blind_models_fail(
        cycles, tmp_path, capsys, blind, extra, check):
    out = train(capsys, ["CYCLES", "--root", str(cycles), "--out", str(tmp_path / "r"), "--epochs", "40",
                         "--runs", "1", "--train-set", "folds=4", *extra])
    assert "preset gin-tu (default for CYCLES" in out and "early stopping: a run stops after 500 epochs" in out
    acc = float(FINAL.search(out).group(2))
    assert check(acc), (blind, acc, out)
    if not blind:
        assert "WARNING" not in out                        # a run that learnt is not flagged


# ----------------------------------------------------------------------------- runs at chance are flagged
def test_a_run_at_the_majority_class_rate_is_flagged_in_its_line_and_the_summary(tmp_path, capsys):
    root = write_tu_constant(tmp_path)
    out = train(capsys, ["SAME", "--root", str(root), "--out", str(tmp_path / "r"), "--epochs", "3", "--runs", "2",
                         "--set", "layers=1", "--set", "channels=8"])
    runs = RUN.findall(out)
    warned = re.findall(r"^WARNING run(\d) did not learn: (.*)$", out, re.M)
    assert [w[0] for w in warned] == ["0", "1"], out
    for (_, valid, test), (_, text) in zip(runs, warned):
        # identical graphs: every prediction is one class, so neither split can beat the majority class
        assert f"test acc {float(test):.4f} <=" in text and "the majority-class rate (always predicting class 0" in text
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("test acc") and "WARNING did not learn:" in summary
    assert "the mean majority-class rate" in summary and "runs at chance: run0, run1" in summary


def test_chance_check_names_the_figure_in_each_direction():
    assert chance_check({"valid": 0.5, "test": 0.9}, {"valid": 0.5, "test": 0.5}, "ROC-AUC of a constant score",
                        "rocauc") == "valid rocauc 0.5000 <= 0.5000, the ROC-AUC of a constant score"
    assert chance_check({"valid": 0.6, "test": 0.7}, {"valid": 0.5, "test": 0.5}, "x", "acc") is None
    # RMSE: lower is better, so at or above the mean predictor's RMSE is chance
    assert chance_check({"valid": 1.2, "test": 0.8}, {"valid": 1.1, "test": 1.0}, "RMSE of predicting the training mean",
                        "rmse", higher_is_better=False) == "valid rmse 1.2000 >= 1.1000, the RMSE of predicting the training mean"
    assert chance_check({"valid": float("nan"), "test": 0.8}, {"valid": 0.5, "test": 0.5}, "x", "rocauc") is None


@pytest.mark.skipif(importlib.util.find_spec("rdkit") is None, reason="MoleculeNet CSV datasets need rdkit")
def test_csv_chance_figures_are_the_constant_predictors_scores(tmp_path):
    from graph_fixtures import write_molecule_csv
    csv = write_molecule_csv(tmp_path / "m.csv")
    task = make_task(str(csv), ".", {"target": "solubility"}, torch.device("cpu"))
    rates, what = task.chance()
    y = {s: np.array([float(task.graphs[i].y) for i in task.split[s]]) for s in ("train", "test")}
    assert what == "RMSE of predicting the training mean"
    assert rates["test"] == pytest.approx(np.sqrt(np.mean((y["test"] - y["train"].mean()) ** 2)))
    task = make_task(str(csv), ".", {"target": "HIV_active"}, torch.device("cpu"))
    rates, what = task.chance()
    assert what == "ROC-AUC of a constant score"
    assert rates["test"] == 0.5                            # a constant score ranks nothing


# ----------------------------------------------------------------------------- the protocol's training options
class Scripted(EngineTask):
    """A task whose validation score per epoch is scripted; counts the epochs that trained."""

    kind, selection_metric = "graph", "valid"

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls, self.trained = scores, 0, 0
        self.device = torch.device("cpu")

    def build_model(self) -> nn.Module:
        return nn.Linear(1, 1)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> list[int]:
        self.trained += 1
        return [0]

    def loss(self, model: nn.Module, batch: int) -> torch.Tensor:
        return model(torch.ones(1, 1)).pow(2).sum()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.calls += 1
        return {"valid": self.scores[self.calls - 1], "test": 0.0}

    def checkpoint_payload(self, model: nn.Module) -> dict:
        return {"kind": "graph", "model": model.state_dict()}


def test_early_stopping_stops_after_patience_epochs_without_reaching_the_best(tmp_path):
    # best 0.6 at epoch 2; 0.6 again at epoch 4 (a tie resets the count, as in the protocol); then 3 worse epochs
    task = Scripted([0.5, 0.6, 0.55, 0.6, 0.4, 0.3, 0.59, 0.9, 0.9, 0.9])
    runner = EarlyStopping(task, patience=3)
    fit = Trainer(runner, FitOptions(out=tmp_path, epochs=10, progress=False, check_finite=False)).fit()
    assert runner.stopped_epoch == 7 and task.trained == 7 and task.calls == 7    # epochs 8-10 trained nothing
    assert fit.best_epoch == 2 and fit.best_metrics["valid"] == 0.6              # 0.9 was never reached
    assert all(np.isnan(v) for v in fit.epoch_losses[7:])
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStopping(task, 0)


def test_bad_protocol_options_are_one_line_errors(cycles, tmp_path, capsys):
    for bad in ("patience=-1", "lr_step=-5", "lr_gamma=0"):
        assert main(["graphs", "train", "CYCLES", "--root", str(cycles), "--out", str(tmp_path / "r"),
                     "--train-set", bad, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "patience and lr_step must be >= 0" in err and len(err.strip().splitlines()) == 1


def test_step_decay_halves_the_rate_every_step_epochs_as_torch_steplr():
    ours = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.01)
    ref = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.01)
    sched, ref_sched = LinearWarmup(ours, 0, step=50, gamma=0.5), torch.optim.lr_scheduler.StepLR(ref, 50, 0.5)
    lrs, ref_lrs = [], []
    for _ in range(160):
        lrs.append(ours.param_groups[0]["lr"])
        ref_lrs.append(ref.param_groups[0]["lr"])
        ours.step(), ref.step()
        sched.step(), ref_sched.step()
    assert lrs == pytest.approx(ref_lrs, rel=1e-12)
    assert lrs[49] == 0.01 and lrs[50] == 0.005 and lrs[150] == 0.00125
    assert epoch_lr(0.01, 3, warmup=4, step=2, gamma=0.5) == pytest.approx(0.01 * 3 / 4 * 0.5)
    with pytest.raises(ValueError, match="lr_gamma"):
        LinearWarmup(ours, 0, step=5, gamma=0.0)


# ----------------------------------------------------------------------------- MoleculeNet CSV
needs_rdkit = pytest.mark.skipif(importlib.util.find_spec("rdkit") is None,
                                 reason="MoleculeNet CSV datasets need rdkit (the `chem` / `test` extra)")


@needs_rdkit
def test_ring_csv_label_needs_both_the_bonds_and_the_atom_types(tmp_path):
    from ogb.utils import smiles2graph
    from rdkit import Chem
    csv = write_ring_csv(tmp_path / "rings.csv")
    rows = dict(line.split(",") for line in csv.read_text().split()[1:])
    assert len(rows) > 150 and sorted(set(rows.values())) == ["0", "1"]
    for s, y in rows.items():
        swapped = Chem.MolToSmiles(Chem.MolFromSmiles(s.replace("N", "#").replace("O", "N").replace("#", "O")))
        assert rows[swapped] != y                          # same skeleton, other label
        a, b = smiles2graph(s)["node_feat"], smiles2graph(swapped)["node_feat"]
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))   # same atom features


@needs_rdkit
def test_csv_default_preset_is_deepergcn_molhiv_and_learns_the_ring_label(tmp_path, capsys):
    csv = write_ring_csv(tmp_path / "rings.csv")
    assert default_preset(str(csv), "csv") == "deepergcn-mol"
    out = train(capsys, [str(csv), "--target", "N_on_ring", "--out", str(tmp_path / "r"), "--epochs", "15",
                         "--set", "layers=3", "--set", "channels=64"])
    assert "scaffold split" in out and "binary, rocauc" in out
    m = FINAL.search(out)
    assert m.group(1) == "rocauc" and float(m.group(2)) >= 0.9 and "WARNING" not in out
    # the default model itself is DeeperGCN's ogbg-molhiv model (532,232 parameters for one target)
    task = make_task(str(csv), ".", {"target": "N_on_ring"}, torch.device("cpu"))
    from pointseg.graphs.presets import get_preset
    from pointseg.models import count_parameters
    cfg = task.model_config({**get_preset("deepergcn-mol"), "name": "deepergcn-mol"}, {})
    assert count_parameters(task.build(cfg)) == 532_232


def test_planetoid_chance_is_the_training_majority_class_rate_on_each_split(tmp_path):
    from graph_fixtures import write_planetoid
    root = write_planetoid(tmp_path)
    task = make_task("Cora", str(root), {}, torch.device("cpu"))
    rates, what = task.chance()
    y, d = task.data.y.numpy(), task.data
    major = np.bincount(y[d.train_mask.numpy()]).argmax()
    assert what.startswith(f"majority-class rate (always predicting class {major}")
    assert rates["test"] == pytest.approx(np.mean(y[d.test_mask.numpy()] == major))
    assert rates["valid"] == pytest.approx(np.mean(y[d.val_mask.numpy()] == major))
