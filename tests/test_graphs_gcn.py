"""The Kipf & Welling Planetoid protocol (preset gcn-2), default presets, feature normalisation, run numbering."""
import re

import pytest
import torch
import torch.nn.functional as F

from graph_fixtures import write_planetoid
from pointseg.graphs.presets import default_preset, get_preset
from pointseg.graphs.tasks import make_task, row_normalize
from pointseg.graphs.optim import param_groups
from pointseg.graphs.train import run_training
from pointseg.cli import main
from pointseg.nn import GCNConv


@pytest.fixture(scope="module")
def cora(tmp_path_factory):
    return write_planetoid(tmp_path_factory.mktemp("pl"), feat=40, n_train=30, n_test=200, seed=1)


def _task_and_model(root, **train):
    preset = {**get_preset("gcn-2"), "name": "gcn-2"}
    task = make_task("Cora", str(root), {**preset["train"], **train}, torch.device("cpu"))
    return task, preset, task.model_config(preset, {})


def test_gcn2_is_two_bias_free_gcn_layers_with_16_hidden_and_first_layer_weight_decay(cora):
    task, preset, cfg = _task_and_model(cora)
    model = task.build(cfg)
    convs = [m for m in model.modules() if isinstance(m, GCNConv)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(40, 16), (16, 3)]
    assert all(c.bias is None for c in convs)
    assert not [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d))
                and not any(m is c.lin for c in convs)]
    assert preset["train"]["lr"] == 0.01 and preset["train"]["epochs"] == 200
    decayed, free = param_groups(model, task.train_cfg)           # the preset's training options, typed
    assert decayed["weight_decay"] == 5e-4 and free["weight_decay"] == 0.0
    assert [p for p in decayed["params"]] == [convs[0].lin.weight]
    assert [p for p in free["params"]] == [convs[1].lin.weight]


def test_planetoid_features_are_row_normalised_by_default_and_switchable(cora):
    on, _, _ = _task_and_model(cora)
    off, _, _ = _task_and_model(cora, normalize_features=False)
    assert torch.allclose(on.data.x.sum(1), torch.ones(on.data.num_nodes))
    assert torch.equal(off.data.x.unique(), torch.tensor([0.0, 1.0]))         # the raw bag of words
    x = torch.tensor([[1.0, 3.0], [0.0, 0.0], [0.5, 0.0]])
    assert torch.equal(row_normalize(x), torch.tensor([[0.25, 0.75], [0.0, 0.0], [1.0, 0.0]]))


def test_gcn2_protocol_equals_pyg_gcnconv_under_the_same_protocol(cora, tmp_path):
    """Our run (CLI training loop, our GCNConv) against a hand-written Kipf & Welling GCN of PyG GCNConvs with the
    same initial weights, dropout draws and optimiser: same losses every epoch, same best epoch and accuracy."""
    from torch_geometric.nn import GCNConv as PygGCNConv
    res = run_training("Cora", "gcn-2", str(cora), out=tmp_path / "run", progress=False)
    task, _, cfg = _task_and_model(cora)
    torch.manual_seed(0)                                    # run_training's seed for run0
    ours = task.build(cfg)
    state = torch.get_rng_state()
    conv1, conv2 = PygGCNConv(40, 16, bias=False), PygGCNConv(16, 3, bias=False)
    torch.set_rng_state(state)
    conv1.lin.weight.data.copy_(ours.backbone.first.conv.lin.weight)
    conv2.lin.weight.data.copy_(ours.head.lin.weight)
    opt = torch.optim.Adam([dict(params=conv1.parameters(), weight_decay=5e-4),
                            dict(params=conv2.parameters(), weight_decay=0.0)], lr=0.01)
    d = task.data

    def forward(train):
        h = F.dropout(d.x, 0.5, train)
        h = F.dropout(F.relu(conv1(h, d.edge_index)), 0.5, train)
        return conv2(h, d.edge_index)

    best, losses = (-1.0, None, None), []
    for epoch in range(1, 201):
        opt.zero_grad()
        loss = F.cross_entropy(forward(True)[d.train_mask], d.y[d.train_mask])
        loss.backward()
        opt.step()
        losses.append(loss.item())
        with torch.no_grad():
            pred = forward(False).argmax(-1)
        acc = {k: float((pred[m] == d.y[m]).float().mean()) for k, m in (("v", d.val_mask), ("t", d.test_mask))}
        if acc["v"] > best[0]:
            best = (acc["v"], acc["t"], epoch)
    assert torch.allclose(torch.tensor(res["losses"]), torch.tensor(losses), atol=1e-5)
    assert res["valid"][0] == pytest.approx(best[0]) and res["test"][0] == pytest.approx(best[1])
    ck = torch.load(tmp_path / "run" / "run0" / "best.pt", weights_only=True)
    assert ck["epoch"] == best[2]
    assert best[1] > 0.8                                    # the fixture is learnable: chance is 1/3


def test_preset_can_be_omitted_and_the_default_is_printed(cora, tmp_path, capsys):
    assert main(["graphs", "train", "Cora", "--root", str(cora), "--out", str(tmp_path / "o"), "--epochs", "3",
                 "--runs", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert [l for l in out.splitlines() if l.startswith("preset ")][0].startswith("preset gcn-2 (default for Cora")
    assert "features row-normalised" in out
    # one numbering: the log names runs as the folders they are saved in
    assert re.findall(r"^(run\d+)", out, re.M) == ["run0", "run1"]
    assert sorted(p.name for p in (tmp_path / "o").glob("run*")) == ["run0", "run1"]
    assert "runs run0..run1" in out
    ck = torch.load(tmp_path / "o" / "run1" / "best.pt", weights_only=True)
    assert ck["run"] == 1 and ck["preset"] == "gcn-2"


def test_default_preset_per_family():
    assert default_preset("Cora", "planetoid") == "gcn-2"
    assert default_preset("ogbn-arxiv", "ogbn") == "deepergcn-ogbn-arxiv"   # made for the dataset
    assert default_preset("ogbg-molbace", "ogbg") == "deepergcn"
    assert default_preset("PPI", "ppi") == "resmrgcn-28-ppi"
    assert default_preset("ENZYMES", "tu") == "gin-tu"                     # Errica et al.'s GIN (issue 30)
    assert default_preset("HIV.csv", "csv") == "deepergcn-mol"


@pytest.mark.parametrize("backbone", ["plain", "res", "dense", "res+", "rev"])
def test_gcn_conv_in_every_backbone(backbone):
    from pointseg.graphs.model import GraphNet, GraphNetConfig
    net = GraphNet(GraphNetConfig(backbone=backbone, conv="gcn", layers=3, channels=8, in_channels=5, out_channels=2))
    assert any(isinstance(m, GCNConv) for m in net.modules())
    out = net(torch.randn(6, 5), torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]]))
    assert out.shape == (6, 2) and torch.isfinite(out).all()


def test_head_conv_with_pooling_is_refused():
    from pointseg.graphs.model import GraphNet, GraphNetConfig
    with pytest.raises(ValueError, match="head='conv'"):
        GraphNet(GraphNetConfig(conv="gcn", head="conv", pool="mean", in_channels=3, out_channels=2))
