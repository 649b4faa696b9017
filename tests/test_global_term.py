"""The prediction layer's per-cloud global term (``W_f f`` computed once per cloud) equals the
concatenated ``W [f; x]`` form: outputs, every gradient and the BatchNorm running statistics."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from pointseg.models import SegGCN, build_model, count_parameters


def _run(model: SegGCN, x: torch.Tensor, y: torch.Tensor, split: bool):
    model.split_global = split
    torch.manual_seed(7)                       # same stochastic dilation and dropout draws
    out = model(x)
    F.cross_entropy(out, y).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    bufs = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach(), grads, bufs


@pytest.mark.parametrize("block", ["res", "dense", "plain"])
@pytest.mark.parametrize("order", ["conv-act-norm", "conv-norm-act"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9)])
def test_split_global_term_equals_concatenated_input(block, order, dtype, tol):
    torch.manual_seed(0)
    model = SegGCN(backbone=block, order=order, layers=3, channels=8, k=4, fusion_channels=32,
                   out_channels=5).to(dtype).train()
    with torch.no_grad():                      # non-trivial BatchNorm affine parameters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    twin = copy.deepcopy(model)
    x = torch.randn(2, 9, 64, dtype=dtype)
    y = torch.randint(0, 5, (2, 64))
    out_a, g_a, b_a = _run(model, x, y, split=True)
    out_b, g_b, b_b = _run(twin, x, y, split=False)
    torch.testing.assert_close(out_a, out_b, rtol=tol, atol=tol)
    assert g_a.keys() == g_b.keys()
    for n in g_a:
        torch.testing.assert_close(g_a[n], g_b[n], rtol=tol, atol=tol, msg=lambda m: f"{n}: {m}")
    for n in b_a:                              # running mean / var / num_batches_tracked
        torch.testing.assert_close(b_a[n], b_b[n], rtol=tol, atol=tol, msg=lambda m: f"{n}: {m}")
    model.eval(), twin.eval()
    model.split_global, twin.split_global = True, False
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=tol, atol=tol)


def test_split_global_term_keeps_parameters_and_state_dict_layout():
    model = build_model("resgcn-28")
    assert count_parameters(model) == 3_644_301
    w = model.state_dict()["prediction.0.lin.weight"]
    assert tuple(w.shape) == (512, 1024 + 64 * 28)      # one weight tensor, [fusion; features] columns
    assert model.split_global


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_first_prediction_layer_pre_activation_and_gradients_equal_concatenated_form(dtype, tol):
    """Layer level (float32 included): ``W_f f + b + W_x x`` against ``W [f; x] + b``."""
    torch.manual_seed(1)
    model = SegGCN(layers=2, channels=8, k=4, fusion_channels=32).to(dtype)
    first = model.prediction[0]
    fusion = torch.randn(2, 32, 1, dtype=dtype, requires_grad=True)
    feats = torch.randn(2, 16, 50, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(2, 512, 50, dtype=dtype)
    a = SegGCN._first_prediction_linear(first, fusion, feats)
    ga = torch.autograd.grad(a, [fusion, feats, first.lin.weight, first.lin.bias], grad_out)
    b = first.lin(torch.cat([fusion.expand(-1, -1, 50), feats], dim=1))
    gb = torch.autograd.grad(b, [fusion, feats, first.lin.weight, first.lin.bias], grad_out)
    # float32: relative to each tensor's scale (the fusion gradient sums 512 x 50 terms)
    for u, v in zip((a, *ga), (b, *gb)):
        assert float((u - v).abs().max()) <= tol * float(v.abs().max())


def test_float32_network_with_split_term_is_as_accurate_as_concatenated_form():
    """Whole network in float32 (training mode, BatchNorm over few points amplifies round-off):
    the split form is no further from the float64 result than the concatenated form is."""
    torch.manual_seed(2)
    m64 = SegGCN(layers=3, channels=8, k=4, fusion_channels=32, out_channels=5).double().train()
    x = torch.randn(2, 9, 64, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 64))
    truth, g_truth, _ = _run(m64, x, y, split=False)
    errs = {}
    for split in (True, False):
        m32 = copy.deepcopy(m64).float()
        out, g, _ = _run(m32, x.float(), y, split=split)
        errs[split] = [float((out.double() - truth).abs().max())] + [
            float((g[n].double() - g_truth[n]).abs().max() / (g_truth[n].abs().max() + 1e-30)) for n in g]
    for e_split, e_cat in zip(errs[True], errs[False]):
        assert e_split <= max(1e-5, 4 * e_cat)
