"""The global max over the points gives the values and, bit for bit, the gradients of autograd
of ``amax``, ties (split evenly) and NaN rows included, with and without the compiled kernel."""
from __future__ import annotations

import pytest
import torch

from pointseg.models import build_model
from pointseg.nn import native
from pointseg.nn.global_max import GlobalMax, global_max
from pointseg.nn.reference import ReferenceGlobalMax, to_reference


def amax_and_grad(y: torch.Tensor, g: torch.Tensor, fn) -> tuple[torch.Tensor, torch.Tensor]:
    y = y.detach().clone().requires_grad_(True)
    v = fn(y)
    (gy,) = torch.autograd.grad(v, y, g)
    return v.detach(), gy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("use_native", [True, False])
def test_gradient_equals_autograd_of_amax_bit_for_bit(dtype, use_native, monkeypatch):
    if use_native and not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.failure()}")
    if not use_native:
        monkeypatch.setattr(native, "max_backward", lambda *a: None)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(-3, 4, (3, 37, 501), generator=g).to(dtype)     # many tied maxima
    y[0, 1] = 2.0                                                     # a constant row: 501 ties
    y[1, 2, 7] = 1e30                                                 # one clear maximum
    y[2, 3, 100] = float("nan")                                       # a NaN row
    grad = torch.randn(3, 37, 1, generator=g).to(dtype)
    v_want, g_want = amax_and_grad(y, grad, lambda t: t.amax(dim=-1, keepdim=True))
    v_got, g_got = amax_and_grad(y, grad, global_max)
    assert torch.equal(v_got.nan_to_num(7.0), v_want.nan_to_num(7.0))
    assert torch.equal(g_got.nan_to_num(7.0), g_want.nan_to_num(7.0))
    assert torch.isnan(g_got[2, 3]).all() and not torch.isnan(g_got[2, 4]).any()
    assert (g_got[0, 1] == grad[0, 1] / 501).all()


def test_models_use_it_and_the_reference_swaps_in_plain_amax():
    model = build_model("resgcn-28", layers=3, k=4)
    assert isinstance(model.pool, GlobalMax)
    assert isinstance(to_reference(model).pool, ReferenceGlobalMax)
    assert isinstance(build_model("dgcnn", k=4).pool, GlobalMax)
