"""The dgcnn preset: parameter count, the multi-layer EdgeConv's paths, conv7's global split,
and the imported fold-5 weights against dgcnn.pytorch's own outputs (fixture)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pointseg.models import DGCNN, build_model, count_parameters
from pointseg.nn import EdgeMLPConv, dilated_knn
from pointseg.nn.graph import gather_neighbors

SHARED = Path(os.environ.get("POINTSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIXTURE = SHARED / "fixtures" / "import" / "dgcnn_s3dis_area5_io.npz"
MODEL5 = SHARED / "pretrained" / "dgcnn_s3dis" / "model_5.t7"


def test_dgcnn_preset_has_the_published_parameter_count():
    model = build_model("dgcnn", in_channels=9, out_channels=13)
    assert isinstance(model, DGCNN)
    assert count_parameters(model) == 983_552


def test_models_command_prints_the_dgcnn_summary(capsys):
    from pointseg.cli import main
    assert main(["models", "dgcnn"]) == 0
    out = capsys.readouterr().out
    assert "983,552 trainable parameters" in out and "EdgeMLPConv" in out


def _edgewise(conv: EdgeMLPConv, x, idx):
    """The textbook form: build [x_j - x_i, x_i] for every edge, run the MLP, max."""
    xj = gather_neighbors(x, idx)
    xi = x.unsqueeze(-1).expand_as(xj)
    h = torch.cat([xj - xi, xi], dim=1)
    for layer in conv.layers:
        h = layer(h)
    return h.amax(-1)


def _randomise_bn(module, gen):
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            with torch.no_grad():
                m.weight.uniform_(-1.5, 1.5, generator=gen)     # some negative scales too
                m.bias.normal_(0, 0.5, generator=gen)
                m.running_mean.normal_(0, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)


@pytest.mark.parametrize("widths", [[16], [16, 12], [16, 12, 8]])
def test_multilayer_edge_conv_equals_the_edgewise_formulation_in_eval(widths):
    gen = torch.Generator().manual_seed(1)
    conv = EdgeMLPConv(5, widths).double()
    _randomise_bn(conv, gen)
    conv.eval()
    conv.chunk_bytes = 4096                       # many chunks of a few points each
    x = torch.randn(2, 5, 300, generator=gen, dtype=torch.float64)
    idx = dilated_knn(x, 7)
    ref = _edgewise(conv, x, idx)
    assert torch.allclose(conv(x, idx), ref, rtol=1e-12, atol=1e-12)        # autograd path (chunked)
    with torch.no_grad():                                                    # folded inference path
        assert torch.allclose(conv(x, idx), ref, rtol=1e-10, atol=1e-10)


def test_multilayer_edge_conv_trains_like_the_edgewise_formulation():
    gen = torch.Generator().manual_seed(2)
    conv = EdgeMLPConv(4, [8, 6]).double().train()
    ref = EdgeMLPConv(4, [8, 6]).double().train()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 4, 120, generator=gen, dtype=torch.float64)
    idx = dilated_knn(x, 5)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = conv(x1, idx), _edgewise(ref, x2, idx)
    assert torch.allclose(y1, y2, atol=1e-12)
    w = torch.randn(y1.shape, generator=gen, dtype=torch.float64)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-10)
    for (n, p), q in zip(conv.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-10), n
    for a, b in zip(conv.buffers(), ref.buffers()):                          # running stats
        assert torch.allclose(a.double(), b.double())


def test_conv7_global_term_once_per_cloud_equals_the_concatenation():
    torch.manual_seed(3)
    split = build_model("dgcnn", emb_channels=48, head_channels=(32, 16), k=6).double()
    concat = build_model("dgcnn", emb_channels=48, head_channels=(32, 16), k=6, split_global=False).double()
    concat.load_state_dict(split.state_dict())
    x = torch.randn(2, 9, 200, dtype=torch.float64)
    for mode in ("train", "eval"):
        getattr(split, mode)()
        getattr(concat, mode)()
        split.dropout.p = concat.dropout.p = 0.0
        xs, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        ys, yc = split(xs), concat(xc)
        assert torch.allclose(ys, yc, rtol=1e-9, atol=1e-9), mode
        ys.pow(2).sum().backward()
        yc.pow(2).sum().backward()
        assert torch.allclose(xs.grad, xc.grad, rtol=1e-9, atol=1e-9), mode
        assert torch.allclose(split.head[0].lin.weight.grad, concat.head[0].lin.weight.grad, rtol=1e-9, atol=1e-9)
    for a, b in zip(split.buffers(), concat.buffers()):                     # same BatchNorm statistics
        assert torch.allclose(a.double(), b.double(), rtol=1e-9, atol=1e-12)


def test_first_stage_knn_uses_the_chosen_channel_slice():
    model = build_model("dgcnn", k=5).eval()
    x = torch.randn(1, 9, 64)
    g = model.graphs(x)[0]
    assert torch.equal(g, dilated_knn(x[:, 6:9], 5))
    assert not torch.equal(g, dilated_knn(x[:, 0:3], 5))


def _need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"missing {p}")


@pytest.fixture(scope="module")
def dgcnn5(tmp_path_factory):
    _need(FIXTURE, MODEL5)
    from pointseg.convert import import_checkpoint
    from pointseg.segmentation.checkpoint import build_from_checkpoint, load_checkpoint
    out = tmp_path_factory.mktemp("dgcnn") / "d5.pt"
    import_checkpoint("dgcnn-pytorch", MODEL5, out, test_area=5)
    model, _ = build_from_checkpoint(load_checkpoint(out))
    return model, np.load(FIXTURE)


def _rel(y, ref):
    return float((y - ref).abs().max() / ref.abs().max())


def test_imported_model5_reproduces_float32_logits_given_the_fixture_neighbours(dgcnn5):
    model, io = dgcnn5
    x = torch.from_numpy(io["x"])
    nb = [torch.from_numpy(io[f"knn{i}_float32"]) for i in range(3)]
    ref = torch.from_numpy(io["logits_float32"])
    with torch.no_grad():
        assert _rel(model(x, neighbours=nb), ref) < 1e-5      # inference (BatchNorm folded)
    assert _rel(model(x, neighbours=nb).detach(), ref) < 1e-5  # autograd path


def test_imported_model5_reproduces_float64_logits_with_its_own_knn(dgcnn5):
    """In float64 the fixture cloud has no distance ties among the 20 nearest, so pointseg's kNN
    (ties broken by lower index; the point itself is rank 0) returns the same neighbour *sets* as
    dgcnn.pytorch's top-k (whose tie order differs); max aggregation ignores the order within a set.
    At an exact tie on the 20th neighbour the two could pick different points."""
    model, io = dgcnn5
    model = model.double()
    x = torch.from_numpy(io["x"]).double()
    with torch.no_grad():
        graphs = model.graphs(x)
        for i, g in enumerate(graphs):
            ref = torch.from_numpy(io[f"knn{i}_float64"])
            assert torch.equal(g.sort(-1).values, ref.sort(-1).values), f"kNN {i}"
        assert _rel(model(x), torch.from_numpy(io["logits_float64"])) < 1e-9
