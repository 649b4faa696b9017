"""RevGNN graph backbone (``backbone="rev"``): exact reference counts, CLI training, exact gradients."""
import copy
import math
import re

import pytest
import torch

from graph_fixtures import write_ogb, write_planetoid
from pointseg.graphs.model import GraphNet, GraphNetConfig
from pointseg.models import count_parameters
from pointseg.graphs.presets import GRAPH_PRESETS, build_preset
from pointseg.cli import main

# Targets from design.md §4 / issue 8 (RevGNN reference models), not from this implementation.
REV_COUNTS = {"revgnn-deep-ogbn-proteins": 20_031_384, "revgnn-wide-ogbn-proteins": 68_471_608,
              "revgcn-ogbn-arxiv": 262_056, "revgat-ogbn-arxiv": 2_098_256}
FINAL = re.compile(r"^test (\S+) (\d\.\d+) ± (\d\.\d+) \| valid (\d\.\d+) ± (\d\.\d+)", re.M)


def test_presets_command_lists_rev_presets_with_the_reference_counts(capsys):
    assert main(["graphs", "presets"]) == 0
    got = dict(line.split() for line in capsys.readouterr().out.strip().splitlines())
    for name, n in REV_COUNTS.items():
        assert got[name] == str(n)
    assert got["revgnn"] == "-"


def _ln(c):
    return 2 * c


def _lin(i, o):
    return i * o + o


@pytest.mark.parametrize("name", ["revgnn-deep-ogbn-proteins", "revgnn-wide-ogbn-proteins"])
def test_proteins_count_follows_the_revgnn_formula(name):
    """Hand formula of the reference RevGNN (ogbn-proteins): per layer, G branches of LayerNorm(C/G) +
    GENConv(C/G) with edge Linear(C -> C/G) and MLP [C/G, 2C/G, C/G] with LayerNorm; plus one-hot
    Linear(8, 8), node Linear(16, C), edge Linear(8, C), final LayerNorm(C), Linear(C, 112).
    Checked on a 2-layer model (cheap) and extrapolated to the preset's depth."""
    m = GRAPH_PRESETS[name]["model"]
    c, g, depth = m["channels"], m["groups"], m["layers"]
    gc = c // g
    branch = _ln(gc) + _lin(c, gc) + _lin(gc, 2 * gc) + _ln(2 * gc) + _lin(2 * gc, gc)
    rest = _lin(8, 8) + _lin(16, c) + _lin(8, c) + _ln(c) + _lin(c, 112)
    assert count_parameters(build_preset(name, layers=2)) == rest + 2 * g * branch
    assert rest + depth * g * branch == REV_COUNTS[name]


def test_arxiv_revgcn_builds_with_the_reference_count_and_formula():
    c, gc = 128, 64
    branch = 2 * gc + _lin(gc, gc)                      # BatchNorm(C/G) + GENConv MLP Linear(C/G, C/G)
    rest = _lin(128, c) + 2 * c + _lin(c, 40)           # node encoder, final BatchNorm, head
    assert count_parameters(build_preset("revgcn-ogbn-arxiv")) == REV_COUNTS["revgcn-ogbn-arxiv"]
    assert rest + 28 * 2 * branch == REV_COUNTS["revgcn-ogbn-arxiv"]


def test_revgat_count_follows_the_reference_layer_shapes():
    """RevGAT (arXiv): GAT(168 -> 3x256, residual, no target attention, no bias), 3 reversible layers
    of 2 branches BatchNorm(384) + GAT(384 -> 3x128, residual), BatchNorm(768), GAT(768 -> 40, one
    head, residual) + output bias."""
    def gat(cin, heads, c, residual=True, bias=False):   # W, a_src, W_res, b
        return cin * heads * c + heads * c + (cin * heads * c if residual else 0) + (heads * c if bias else 0)
    total = gat(168, 3, 256) + 3 * 2 * (2 * 384 + gat(384, 3, 128)) + 2 * 768 + gat(768, 1, 40, bias=True)
    assert total == REV_COUNTS["revgat-ogbn-arxiv"]
    assert count_parameters(build_preset("revgat-ogbn-arxiv")) == total


def test_weight_tied_rev_backbone_count_does_not_depend_on_depth():
    base = dict(backbone="rev", channels=8, in_channels=5, out_channels=3, weight_tied=True, norm="layer")
    n3 = count_parameters(GraphNet(GraphNetConfig(layers=3, **base)))
    n9 = count_parameters(GraphNet(GraphNetConfig(layers=9, **base)))
    untied = count_parameters(GraphNet(GraphNetConfig(layers=3, **{**base, "weight_tied": False})))
    assert n3 == n9 and untied > n3


def test_rev_backbone_refuses_bad_widths():
    with pytest.raises(ValueError, match="divisible by groups"):
        GraphNet(GraphNetConfig(backbone="rev", channels=9, groups=2, in_channels=4, out_channels=2))
    # without a node encoder a first convolution maps the input to the stack's width (RevGAT)
    net = GraphNet(GraphNetConfig(backbone="rev", channels=8, in_channels=4, out_channels=2, node_encoder="none"))
    assert net.backbone.first.in_channels == 4 and net.backbone.first.out_channels == 8


def _tiny_graph(n=12, e=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), ei, torch.randn(e, 3, generator=g, dtype=torch.float64)


def _assert_memory_saving_grads_equal_plain(cfg: GraphNetConfig, edge_attr: bool) -> tuple[GraphNet, GraphNet]:
    """Train-mode float64 GraphNet with its rev stack memory-saving and a plain-autograd copy: the same
    random draws (seeded alike), equal gradients for the inputs and every parameter."""
    torch.manual_seed(0)
    fast = GraphNet(cfg).double().train()
    plain = copy.deepcopy(fast)
    plain.backbone.stack.memory_saving = False
    x, ei, ea = _tiny_graph()
    grads = []
    for net in (fast, plain):
        inputs = [x.clone().requires_grad_()] + ([ea.clone().requires_grad_()] if edge_attr else [])
        torch.manual_seed(1)
        out = net(inputs[0], ei, *inputs[1:])
        (out.sin() * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([t.grad for t in inputs] + [p.grad for p in net.parameters()])
    assert all(a is not None for a in grads[0])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    return fast, plain


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_memory_saving_gradients_equal_plain_autograd_for_the_graph_model(norm):
    """Full GraphNet (edge encoders, learnable softmax t, shared dropout, training mode) in float64:
    the reversible backward equals plain autograd; with BatchNorm the running statistics are
    updated exactly once (same as plain autograd) despite the recomputation."""
    cfg = GraphNetConfig(backbone="rev", layers=4, channels=8, groups=2, in_channels=6, out_channels=3,
                         aggr="softmax", learn_t=True, mlp_layers=2, norm=norm, conv_edge="linear",
                         edge_encoder="linear", edge_channels=3, dropout=0.3)
    fast, plain = _assert_memory_saving_grads_equal_plain(cfg, edge_attr=True)
    if norm == "batch":
        bufs = [dict(m.named_buffers()) for m in (fast, plain)]
        assert any("running_mean" in k for k in bufs[0])
        for k in bufs[0]:
            torch.testing.assert_close(bufs[0][k], bufs[1][k], rtol=1e-9, atol=0)


def test_reversible_gat_gradients_equal_plain_autograd_with_edge_drop():
    """RevGAT in float64, training mode, with every random draw the layers make (edge drop, attention
    dropout, shared dropout): the memory-saving backward replays them and equals plain autograd."""
    cfg = GraphNetConfig(backbone="rev", conv="gat", layers=3, channels=12, groups=2, heads=3, attn_dst=False,
                         gat_residual=True, gat_bias=False, sym_norm=True, edge_drop=0.3, attn_dropout=0.2,
                         norm="batch", node_encoder="none", in_channels=6, out_channels=3, head="conv",
                         dropout=0.3, input_dropout=0.1)
    _assert_memory_saving_grads_equal_plain(cfg, edge_attr=False)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("revgraphs")
    return {"planetoid": write_planetoid(base / "planetoid"),
            "ogbn-proteins": write_ogb(base / "proteins", "ogbn-proteins"),
            "ogbn-arxiv": write_ogb(base / "arxiv", "ogbn-arxiv")}


def _train(capsys, dataset, preset, root, out, *extra):
    assert main(["graphs", "train", dataset, "--preset", preset, "--root", str(root), "--out", str(out),
                 "--no-progress", *extra]) == 0
    text = capsys.readouterr().out
    m = FINAL.search(text)
    assert m, text
    first, last = map(float, re.search(r"loss (\S+) -> (\S+)", text).groups())
    return m, first, last


def test_revgnn_proteins_preset_trains_from_cli_with_edge_features(roots, tmp_path, capsys):
    m, first, last = _train(capsys, "ogbn-proteins", "revgnn-deep-ogbn-proteins", roots["ogbn-proteins"],
                            tmp_path / "p", "--epochs", "3", "--set", "layers=3", "--set", "channels=8",
                            "--train-set", "lr=0.01", "--train-set", "parts=3", "--train-set", "eval_parts=2")
    assert m.group(1) == "rocauc" and last < first
    ck = torch.load(tmp_path / "p" / "run0" / "best.pt", weights_only=True)
    assert ck["model_config"]["backbone"] == "rev"


def test_revgcn_arxiv_preset_with_batchnorm_trains_from_cli(roots, tmp_path, capsys):
    m, first, last = _train(capsys, "ogbn-arxiv", "revgcn-ogbn-arxiv", roots["ogbn-arxiv"], tmp_path / "a",
                            "--epochs", "5", "--set", "layers=3", "--set", "channels=16")
    assert m.group(1) == "acc" and last < first and float(m.group(2)) > 0.4


def test_revgat_arxiv_preset_trains_from_cli_with_label_inputs(roots, tmp_path, capsys):
    m, first, last = _train(capsys, "ogbn-arxiv", "revgat-ogbn-arxiv", roots["ogbn-arxiv"], tmp_path / "g",
                            "--epochs", "8", "--set", "layers=2", "--set", "channels=24", "--set", "dropout=0.1",
                            "--train-set", "lr=0.01", "--train-set", "warmup_epochs=2")
    assert m.group(1) == "acc" and last < first and float(m.group(2)) > 0.4   # 3 classes used: chance 1/3
    ck = torch.load(tmp_path / "g" / "run0" / "best.pt", weights_only=True)
    assert ck["model_config"]["conv"] == "gat" and ck["model_config"]["in_channels"] == 128 + 40
    assert main(["graphs", "evaluate", str(tmp_path / "g" / "run0" / "best.pt")]) == 0   # label inputs again


@pytest.mark.parametrize("label_iters", [0, 1])
def test_label_inputs_feed_some_training_labels_in_training_and_all_in_evaluation(roots, label_iters):
    from pointseg.graphs.tasks import make_task
    from pointseg.engine.trainer import train_epoch
    task = make_task("ogbn-arxiv", str(roots["ogbn-arxiv"]), {"use_labels": True, "label_iters": label_iters},
                     torch.device("cpu"))
    assert task.data_widths()["in_channels"] == 128 + 40
    seen = []
    logits = torch.randn(90, 40)

    def spy(model, nodes, x_all=None):
        seen.append(x_all.clone())
        return logits.clone().requires_grad_(), torch.arange(90)
    task._forward = spy
    model = torch.nn.Linear(1, 1)
    train_epoch(task, model, torch.optim.SGD(model.parameters(), lr=0.1))
    n_train = len(seen)
    task.predict(model)
    assert n_train == 1 + label_iters and len(seen) == 2 * (1 + label_iters)
    train, y = task.split["train"], task.data.y.view(-1)
    others = torch.cat([task.split["valid"], task.split["test"]])
    lab_train, lab_eval = seen[n_train - 1][:, 128:], seen[-1][:, 128:]
    onehot_train = lab_train.eq(1).sum(1) == 1
    fed = train[onehot_train[train]]
    assert 0.25 * len(train) < len(fed) < 0.75 * len(train)          # about label_rate = 0.5 of them
    assert torch.equal(lab_train[fed].argmax(1), y[fed])
    assert torch.equal(lab_eval[train].argmax(1), y[train]) and bool(lab_eval[train].eq(1).sum(1).eq(1).all())
    soft = logits.softmax(-1)
    if label_iters:     # label reuse: the model's own softmax predictions fill the other nodes' label channels
        not_fed = train[~onehot_train[train]]
        torch.testing.assert_close(lab_train[not_fed], soft[not_fed])
        torch.testing.assert_close(lab_eval[others], soft[others])
    else:
        assert lab_eval[others].abs().sum() == 0 and lab_train[others].abs().sum() == 0


def test_log_cross_entropy_is_the_reference_formula_and_refused_for_multilabel(roots):
    from pointseg.graphs.tasks import log_cross_entropy, make_task
    logits, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    eps = 1 - math.log(2)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.isclose(log_cross_entropy(logits, y), (torch.log(eps + ce) - math.log(eps)).mean())
    assert float(log_cross_entropy(torch.eye(4) * 50, torch.arange(4))) < 1e-6     # zero when right
    with pytest.raises(ValueError, match="log_ce"):
        make_task("ogbn-proteins", str(roots["ogbn-proteins"]), {"loss": "log_ce"}, torch.device("cpu"))
    with pytest.raises(ValueError, match="label_iters"):
        make_task("ogbn-arxiv", str(roots["ogbn-arxiv"]), {"label_iters": 1}, torch.device("cpu"))


def test_unknown_training_option_is_refused_by_name(roots, tmp_path, capsys):
    assert main(["graphs", "train", "ogbn-arxiv", "--preset", "revgat-ogbn-arxiv", "--root", str(roots["ogbn-arxiv"]),
                 "--out", str(tmp_path / "x"), "--no-progress", "--train-set", "label_iter=2"]) == 2
    assert "unknown training option(s) ['label_iter']" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_warmup_lr_is_linear_then_constant():
    from pointseg.graphs.optim import warmup_lr
    assert [warmup_lr(0.01, e, 4) for e in (1, 2, 4, 5, 100)] == pytest.approx([0.0025, 0.005, 0.01, 0.01, 0.01])
    assert warmup_lr(0.01, 1, 0) == 0.01


def test_generic_weight_tied_revgnn_trains_on_cora_and_checkpoint_evaluates(roots, tmp_path, capsys):
    m, first, last = _train(capsys, "Cora", "revgnn", roots["planetoid"], tmp_path / "c", "--epochs", "10",
                            "--set", "layers=4", "--set", "channels=16", "--set", "weight_tied=true")
    assert m.group(1) == "acc" and last < first and float(m.group(2)) > 0.6   # 3 classes: chance 1/3
    ck = torch.load(tmp_path / "c" / "run0" / "best.pt", weights_only=True)
    assert ck["model_config"]["weight_tied"] is True and ck["model_config"]["backbone"] == "rev"
    assert main(["graphs", "evaluate", str(tmp_path / "c" / "run0" / "best.pt")]) == 0
