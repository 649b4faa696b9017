"""The exact O(N C)-memory EdgeConv / MRConv paths equal the straightforward edge-wise formulation
(gather [x_i, x_j - x_i], 1x1 conv on every edge, act, BatchNorm over all edges, max)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from pointseg.models import build_model
from pointseg.nn import EdgeConv, MRConv, native
from pointseg.nn import edge_reduce as er
from pointseg.nn.knn import dilated_knn
from pointseg.nn.mr_conv import max_relative, max_relative_reference
from pointseg.nn.reference import ReferenceEdgeConv, ReferenceMRConv, to_reference

ORDERS = ("conv-act-norm", "conv-norm-act")
ACTS = ("relu", "leakyrelu", None)


def randomise_bn(conv, seed=0):
    """Mixed-sign gammas (the min branch), non-trivial betas and running statistics."""
    g = torch.Generator().manual_seed(seed)
    bn = conv.mlp.norm.norm
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) * 2 - 1)
        bn.bias.copy_(torch.rand(bn.bias.shape, generator=g) * 2 - 1)
        bn.running_mean.copy_(torch.rand(bn.running_mean.shape, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    return conv


def sparse_reference(conv: EdgeConv, x, edge_index):
    """Straightforward sparse EdgeConv: per-edge [x_i, x_j - x_i], linear, post, scatter-max."""
    j, i = edge_index
    edges = torch.cat([x[i], x[j] - x[i]], dim=1)
    h = conv.mlp.post(F.linear(edges, conv.mlp.lin.weight, conv.mlp.lin.bias))
    out = torch.full((x.shape[0], h.shape[1]), -torch.inf, dtype=h.dtype)
    out = out.scatter_reduce(0, i[:, None].expand_as(h), h, "amax", include_self=True)
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)


def run(module, x, graph, weight, fn=None):
    x = x.detach().clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    out = module(x, graph) if fn is None else fn(module, x, graph)
    (out * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    return out.detach(), x.grad, grads


def assert_same(fast, ref, dtype):
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    (o1, gx1, gp1), (o2, gx2, gp2) = fast, ref
    torch.testing.assert_close(o1, o2, **tol)
    scale = max(1.0, float(gx2.abs().max()))
    torch.testing.assert_close(gx1 / scale, gx2 / scale, **tol)
    assert gp1.keys() == gp2.keys()
    for n in gp1:
        scale = max(1.0, float(gp2[n].abs().max()))
        torch.testing.assert_close(gp1[n] / scale, gp2[n] / scale, **tol, msg=lambda m: f"{n}: {m}")


def assert_same_bn_state(c1, c2):
    b1, b2 = c1.mlp.norm.norm, c2.mlp.norm.norm
    torch.testing.assert_close(b1.running_mean, b2.running_mean, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b1.running_var, b2.running_var, rtol=1e-6, atol=1e-7)
    assert int(b1.num_batches_tracked) == int(b2.num_batches_tracked)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cout", [8, 40])     # the kernel's 16-channel blocks: partial only; full + partial
def test_dense_edge_conv_matches_edgewise_formulation(dtype, order, act, training, cout):
    torch.manual_seed(1)
    conv = randomise_bn(EdgeConv(6, cout, act=act, order=order)).to(dtype).train(training)
    ref = copy.deepcopy(conv)
    x = torch.randn(2, 6, 48, dtype=dtype)
    idx = dilated_knn(x, 5, 2)
    w = torch.randn(2, cout, 48, dtype=dtype)
    assert er.fast_post(conv.mlp) is not None
    for _ in range(2):                       # two steps: running stats compound
        assert_same(run(conv, x, idx, w), run(ReferenceEdgeConv(ref), x, idx, w), dtype)
    assert_same_bn_state(conv, ref)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("training", [True, False])
def test_sparse_edge_conv_matches_edgewise_formulation(order, training):
    torch.manual_seed(2)
    conv = randomise_bn(EdgeConv(5, 7, order=order)).double().train(training)
    ref = copy.deepcopy(conv)
    x = torch.randn(30, 5, dtype=torch.float64)
    j = torch.randint(0, 30, (120,))
    i = torch.randint(0, 29, (120,))          # node 29 gets no in-edges: output 0
    ei = torch.stack([j, i])
    w = torch.randn(30, 7, dtype=torch.float64)
    fast = run(conv, x, ei, w)
    assert torch.all(fast[0][29] == 0)
    assert_same(fast, run(ref, x, ei, w, fn=sparse_reference), torch.float64)
    assert_same_bn_state(conv, ref)


def test_momentum_none_and_untracked_batchnorm_match_nn_batchnorm():
    torch.manual_seed(3)
    x = torch.randn(2, 4, 40, dtype=torch.float64)
    idx = dilated_knn(x, 4)
    for kw in (dict(momentum=None), dict(track_running_stats=False), dict(affine=False)):
        conv = EdgeConv(4, 6).double()
        conv.mlp.norm.norm = torch.nn.BatchNorm1d(6, **kw).double()
        ref = copy.deepcopy(conv)
        w = torch.randn(2, 6, 40, dtype=torch.float64)
        for training in (True, True, False):
            conv.train(training), ref.train(training)
            assert_same(run(conv, x, idx, w), run(ReferenceEdgeConv(ref), x, idx, w), torch.float64)
        if conv.mlp.norm.norm.track_running_stats:
            assert_same_bn_state(conv, ref)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_fast_edge_conv_float64(order, training):
    torch.manual_seed(4)
    conv = randomise_bn(EdgeConv(3, 4, act="leakyrelu", order=order)).double().train(training)
    x = torch.randn(2, 3, 12, dtype=torch.float64, requires_grad=True)
    idx = dilated_knn(x, 4)
    names = ["mlp.lin.weight", "mlp.lin.bias", "mlp.norm.norm.weight", "mlp.norm.norm.bias"]
    params = dict(conv.named_parameters())
    tensors = [params[n].detach().clone().requires_grad_(True) for n in names]

    def f(x, *ps):
        return functional_call(conv, dict(zip(names, ps)), (x, idx))
    assert torch.autograd.gradcheck(f, (x, *tensors), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("act_stats", [True, False])
def test_gradcheck_edge_statistics(act_stats):
    torch.manual_seed(5)
    a = torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 10, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 10, (2, 10, 4))
    ei = torch.stack([torch.randint(0, 10, (25,)), torch.randint(0, 10, (25,))])
    a2 = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    for aa, bb, g in ((a, b, idx), (a2, b2, ei)):
        def f(a, b):
            mean, var, _ = er.EdgeStats.apply(a, b, g, None, act_stats, 0.2)
            return mean, var
        assert torch.autograd.gradcheck(f, (aa, bb), eps=1e-6, atol=1e-7)


def test_torch_fallback_equals_compiled_kernel(monkeypatch):
    torch.manual_seed(6)
    conv = randomise_bn(EdgeConv(5, 6)).train()
    x = torch.randn(2, 5, 64)
    idx = dilated_knn(x, 6)
    w = torch.randn(2, 6, 64)
    ref = copy.deepcopy(conv)
    with_kernel = run(conv, x, idx, w)
    monkeypatch.setattr(native, "edge_forward", lambda *a, **k: None)
    monkeypatch.setattr(native, "edge_backward", lambda *a, **k: None)
    monkeypatch.setattr(er, "EDGE_CHUNK_BYTES", 4096)          # many chunks
    assert_same(run(ref, x, idx, w), with_kernel, torch.float32)
    assert_same_bn_state(conv, ref)


def test_fast_path_saves_no_per_edge_tensor():
    torch.manual_seed(7)
    B, C, N, k = 2, 8, 64, 16
    x = torch.randn(B, C, N, requires_grad=True)
    idx = dilated_knn(x, k)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    for conv in (EdgeConv(C, C).train(), MRConv(C, C).train()):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            conv(x, idx).sum().backward()
        assert saved and max(saved) < B * C * N * k // 4, max(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ReferenceEdgeConv(EdgeConv(C, C)).train()(x, idx).sum()
    assert max(saved) >= B * C * N * k           # the reference keeps edge tensors: the test can fail


@pytest.mark.parametrize("layer_kw", [dict(act="gelu"), dict(norm="layer"), dict(act="prelu")])
def test_unsupported_post_falls_back_to_exact_reference_path(layer_kw):
    torch.manual_seed(8)
    conv = EdgeConv(4, 5, **layer_kw).double()
    assert er.fast_post(conv.mlp) is None
    x = torch.randn(2, 4, 30, dtype=torch.float64)
    idx = dilated_knn(x, 4)
    w = torch.randn(2, 5, 30, dtype=torch.float64)
    assert_same(run(conv, x, idx, w), run(ReferenceEdgeConv(copy.deepcopy(conv)), x, idx, w), torch.float64)


def test_sum_aggregation_uses_reference_path_and_matches():
    conv = EdgeConv(4, 5, aggr="sum").double()
    x = torch.randn(2, 4, 30, dtype=torch.float64)
    idx = dilated_knn(x, 4)
    w = torch.randn(2, 5, 30, dtype=torch.float64)
    assert_same(run(conv, x, idx, w), run(ReferenceEdgeConv(copy.deepcopy(conv)), x, idx, w), torch.float64)


@pytest.mark.parametrize("dense", [True, False])
def test_max_relative_matches_edgewise_max(dense):
    torch.manual_seed(9)
    if dense:
        x = torch.randn(2, 5, 40, dtype=torch.float64, requires_grad=True)
        graph = dilated_knn(x, 6)
    else:
        x = torch.randn(40, 5, dtype=torch.float64, requires_grad=True)
        graph = torch.stack([torch.randint(0, 40, (150,)), torch.randint(0, 39, (150,))])
    w = torch.randn_like(x)
    a = max_relative(x, graph)
    ga, = torch.autograd.grad((a * w).sum(), x)
    b = max_relative_reference(x, graph)
    gb, = torch.autograd.grad((b * w).sum(), x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    if not dense:
        assert torch.all(a[39] == 0)
    assert torch.autograd.gradcheck(lambda x: max_relative(x, graph), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("training", [True, False])
def test_mrconv_matches_reference(training):
    torch.manual_seed(10)
    conv = randomise_bn(MRConv(5, 6)).double().train(training)
    ref = ReferenceMRConv(copy.deepcopy(conv)).train(training)
    x = torch.randn(2, 5, 40, dtype=torch.float64)
    idx = dilated_knn(x, 6)
    w = torch.randn(2, 6, 40, dtype=torch.float64)
    assert_same(run(conv, x, idx, w), run(ref, x, idx, w), torch.float64)


@pytest.mark.parametrize("training", [True, False])
def test_resgcn_model_matches_reference_formulation(training):
    """The whole segmentation network (dense blocks, dilated dynamic kNN) equals the reference
    formulation with the same weights: the fast paths are the model's default."""
    torch.manual_seed(11)
    model = build_model("resgcn-28", layers=4, k=4, channels=8, fusion_channels=16,
                        stochastic=False).double().train(training)
    ref = to_reference(model)
    x = torch.randn(2, 9, 64, dtype=torch.float64)

    def call(net):
        torch.manual_seed(0)                 # same dropout mask
        return net(x)
    torch.testing.assert_close(call(model), call(ref), rtol=1e-9, atol=1e-9)
    g1 = torch.autograd.grad(call(model).square().sum(), list(model.parameters()))
    g2 = torch.autograd.grad(call(ref).square().sum(), list(ref.parameters()))
    for u, v in zip(g1, g2):
        torch.testing.assert_close(u, v, rtol=1e-8, atol=1e-8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("order", ORDERS)
def test_cuda_fast_edge_conv_matches_reference(order):
    torch.manual_seed(12)
    conv = randomise_bn(EdgeConv(6, 8, order=order)).cuda().train()
    ref = copy.deepcopy(conv)
    x = torch.randn(2, 6, 256, device="cuda")
    idx = dilated_knn(x, 8, 2)
    w = torch.randn(2, 8, 256, device="cuda")
    assert_same(run(conv, x, idx, w), run(ReferenceEdgeConv(ref), x, idx, w), torch.float32)
    assert_same_bn_state(conv, ref)
