r"""Float32 accuracy of the fast EdgeConv path against float64, next to the straightforward
(edge-tensor) formulation of :mod:`pointseg.nn.reference` in float32.

For each case the same module and input are run in float64 (the truth) and in float32 through
both formulations; the error of a tensor is ``max |g32 - g64| / max |g64|`` (``norm="max"``) or
``||g32 - g64|| / ||g64||`` (``norm="l2"``) and the reported number is the largest over the
output, the input gradient and every parameter gradient.

In a deep stack one near-tie between neighbours that float32 resolves otherwise than float64
sends a gradient to another neighbour in one formulation and not the other: a jump in the error
of every layer below it that says nothing about cancellation. :func:`deep_stack_median` therefore
reports the median over several seeds.

Cases: one EdgeConv on inputs with per-channel offsets drawn from [10, 100] (large BatchNorm
means: where ``p + q h`` cancels), and a deep residual stack of EdgeConv layers
(``x <- x + EdgeConv(x)``, the ResGCN backbone) on fixed random neighbours.
``tools/accuracy_fp32.py`` prints both; ``tests/test_fp32_accuracy.py`` bounds both.
"""
from __future__ import annotations

import copy
import statistics
from typing import Callable

import torch
from torch import Tensor, nn

from .edge_conv import EdgeConv
from .reference import ReferenceEdgeConv


class ResStack(nn.Module):
    """``depth`` residual EdgeConv layers on one fixed neighbour index."""

    def __init__(self, convs: list[nn.Module]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(x, idx)
        return x


def _randomise(conv: EdgeConv, g: torch.Generator) -> EdgeConv:
    bn = conv.mlp.norm.norm
    with torch.no_grad():
        bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
        bn.bias.copy_(torch.rand(bn.bias.shape, generator=g) - 0.5)
    return conv


def _grads(module: nn.Module, x: Tensor, idx: Tensor, w: Tensor) -> list[Tensor]:
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = module(x, idx)
    (out * w).sum().backward()
    return [out.detach(), x.grad] + [p.grad for p in module.parameters()]


def _err(test: list[Tensor], truth: list[Tensor], norm: str = "max") -> float:
    def size(t: Tensor) -> Tensor:
        return t.abs().max() if norm == "max" else t.norm()
    return max(float(size(t.double() - r) / size(r).clamp_min(1e-300)) for t, r in zip(test, truth))


def compare(module: nn.Module, to_ref: Callable[[nn.Module], nn.Module], x: Tensor, idx: Tensor, w: Tensor,
            norm: str = "max") -> tuple[float, float]:
    """(fast float32 error, reference float32 error), both against fast float64."""
    if norm not in ("max", "l2"):
        raise ValueError(f"norm must be max or l2, got {norm!r}")
    m64 = copy.deepcopy(module).double().train()
    truth = _grads(m64, x.double(), idx, w.double())
    fast = _grads(copy.deepcopy(module).float().train(), x.float(), idx, w.float())
    ref = _grads(to_ref(copy.deepcopy(module).float().train()), x.float(), idx, w.float())
    return _err(fast, truth, norm), _err(ref, truth, norm)


def one_edge_conv(points: int = 1024, channels: int = 64, k: int = 16, seed: int = 0,
                  offset: float | None = None) -> tuple[float, float]:
    """Offsets uniform in [10, 100] per channel, or ``offset`` for every channel."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    conv = _randomise(EdgeConv(channels, channels), g)
    off = torch.rand(1, channels, 1, generator=g, dtype=torch.float64) * 90 + 10
    if offset is not None:
        off = torch.full_like(off, offset)
    x = torch.randn(2, channels, points, generator=g, dtype=torch.float64) + off
    idx = torch.randint(0, points, (2, points, k), generator=g)
    w = torch.randn(2, channels, points, generator=g, dtype=torch.float64)
    return compare(conv, ReferenceEdgeConv, x, idx, w)


def deep_stack(depth: int = 28, points: int = 1024, channels: int = 32, k: int = 16,
               seed: int = 0, offset: float = 10.0, norm: str = "max") -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    stack = ResStack([_randomise(EdgeConv(channels, channels), g) for _ in range(depth)])
    x = torch.randn(2, channels, points, generator=g, dtype=torch.float64) + offset
    idx = torch.randint(0, points, (2, points, k), generator=g)
    w = torch.randn(2, channels, points, generator=g, dtype=torch.float64)

    def to_ref(s: ResStack) -> ResStack:
        return ResStack([ReferenceEdgeConv(c) for c in s.convs])
    return compare(stack, to_ref, x, idx, w, norm)


def deep_stack_median(seeds: int = 6, norm: str = "l2", **kwargs) -> tuple[float, float, list[tuple[float, float]]]:
    """Median over ``seeds`` seeds of :func:`deep_stack`'s (fast, reference) errors, and every pair."""
    pairs = [deep_stack(seed=s, norm=norm, **kwargs) for s in range(seeds)]
    return statistics.median(f for f, _ in pairs), statistics.median(r for _, r in pairs), pairs
