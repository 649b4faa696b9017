r"""Inference-only building blocks with eval-mode BatchNorm folded into the linear maps.

A layer ``conv -> BatchNorm (eval) -> act`` computes :math:`\sigma(s \odot (W x + b - \mu) + \beta)`
with :math:`s = \gamma / \sqrt{v + \epsilon}`; folded, that is :math:`\sigma(W' x + t)` with
:math:`W' = \mathrm{diag}(s) W` and :math:`t = s \odot (b - \mu) + \beta` -- one GEMM with a bias,
no separate normalisation pass (equal up to float rounding). The activations allowed (ReLU,
LeakyReLU with a slope >= 0, none) are monotone non-decreasing, so a max over points or neighbours
commutes with ``act(. + t)``: :math:`\max_j \sigma(z_j + t) = \sigma(\max_j z_j + t)`, whatever the
sign of :math:`\gamma` (it is inside :math:`W'`). The layers here use that to apply the bias and the
activation after the max, on ``k`` (or ``N``) times fewer values.

Everything is channel-last (``(B, N, C)``: one point's channels contiguous), float32 or float64
on the CPU, without autograd. :mod:`pointseg.models.dgcnn` builds its inference plan from these.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native
from .mlp import ChannelNorm, ConvNormAct, Pointwise

# Query points per chunk of the torch edge path: the chunk's edge rows (m * k * C floats) stay in L2.
EDGE_ROWS = 128
# Point rows per chunk of the per-point GEMMs: a chunk's widest output (rows x 1024 floats) in L2/L3.
HEAD_ROWS = 512
# The compiled fused edge pass (native.edge_mlp_max) where it applies; False: the torch chunks below.
USE_NATIVE = True


@dataclass
class FoldedLayer:
    """``act(x @ weight_t + shift)``: ``weight_t (in, out)`` contiguous, ``shift (out,)``,
    ``slope`` of the activation (0: ReLU, 1: none, else LeakyReLU)."""

    weight_t: Tensor
    shift: Tensor
    slope: float

    @property
    def out_channels(self) -> int:
        return self.weight_t.shape[1]

    def act_(self, h: Tensor) -> Tensor:
        return act_(h, self.slope)


def act_(h: Tensor, slope: float) -> Tensor:
    """The activation of slope ``slope`` in place."""
    if slope == 1.0:
        return h
    if slope == 0.0:
        return h.relu_()
    return F.leaky_relu_(h, slope)


def act_slope(act: nn.Module) -> float | None:
    """Slope of a monotone piecewise-linear activation (ReLU 0, LeakyReLU its slope >= 0, none 1),
    else None."""
    if type(act) is nn.ReLU:
        return 0.0
    if type(act) is nn.LeakyReLU and act.negative_slope >= 0:
        return float(act.negative_slope)
    if type(act) is nn.Identity:
        return 1.0
    return None


def fold_affine(norm: nn.Module, bias: Tensor | None, out: int, like: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(scale, shift)`` with ``norm(z + bias) = scale * z + shift`` for eval BatchNorm or no norm;
    None for any other norm (training BatchNorm, LayerNorm, ...). Computed in float64."""
    b = bias.detach().double() if bias is not None else torch.zeros(out, dtype=torch.float64, device=like.device)
    if type(norm) is nn.Identity:
        return torch.ones_like(b), b
    if not (isinstance(norm, ChannelNorm) and norm.kind == "batch" and type(norm.norm) is nn.BatchNorm1d):
        return None
    bn = norm.norm
    if bn.training or bn.running_mean is None:
        return None
    scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = (b - bn.running_mean.detach().double()) * scale
    if bn.affine:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def fold_layer(layer: ConvNormAct | Pointwise, weight: Tensor | None = None) -> FoldedLayer | None:
    """The folded form of a ``conv-norm-act`` :class:`ConvNormAct` (or a plain :class:`Pointwise`);
    ``weight`` replaces the layer's own weight (a column slice of it, for split inputs). None when
    the layer is not foldable."""
    if isinstance(layer, Pointwise):
        w = layer.weight if weight is None else weight
        shift = layer.bias if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        return FoldedLayer(w.detach().t().contiguous(), shift.detach().clone(), 1.0)
    if not isinstance(layer, ConvNormAct) or layer.order != "conv-norm-act":
        return None
    slope = act_slope(layer.act)
    w = layer.lin.weight if weight is None else weight
    aff = fold_affine(layer.norm, layer.lin.bias, w.shape[0], w)
    if slope is None or aff is None:
        return None
    scale, shift = aff
    wt = (w.detach().double() * scale[:, None]).t().to(w.dtype).contiguous()
    return FoldedLayer(wt, shift.to(w.dtype), slope)


@dataclass
class FoldedEdgeMLP:
    """An :class:`~pointseg.nn.EdgeMLPConv` (``aggr="max"``) folded for inference.

    ``node (C_in, 2 C_1)``, ``node_shift (2 C_1,)``: one GEMM gives ``[a_i | b_i]`` with the first
    layer's folded pre-activation of edge ``j -> i`` equal to ``a_i + b_j``; ``layers`` the later
    layers (the last one's shift and activation are applied after the max over the neighbours).
    """

    node_t: Tensor
    node_shift: Tensor
    slope1: float
    layers: list[FoldedLayer]

    @classmethod
    def from_module(cls, conv: nn.Module) -> "FoldedEdgeMLP | None":
        from .edge_mlp_conv import EdgeMLPConv
        if not isinstance(conv, EdgeMLPConv) or conv.aggr != "max":
            return None
        first = conv.layers[0]
        if first.order != "conv-norm-act":
            return None
        slope = act_slope(first.act)
        lin = first.lin
        aff = fold_affine(first.norm, lin.bias, lin.out_channels, lin.weight)
        if slope is None or aff is None:
            return None
        scale, shift = aff
        c = conv.in_channels
        w = lin.weight.detach().double()
        wf, ws = w[:, :c], w[:, c:]
        wd, wc = (wf, ws) if conv.edge_order == "diff-first" else (ws, wf)
        node = torch.cat([(wc - wd) * scale[:, None], wd * scale[:, None]], 0)        # (2 C1, C_in)
        node_shift = torch.cat([shift, torch.zeros_like(shift)])
        rest = [fold_layer(layer) for layer in conv.layers[1:]]
        if any(r is None for r in rest):
            return None
        dt = lin.weight.dtype
        return cls(node.t().to(dt).contiguous(), node_shift.to(dt), slope, rest)  # type: ignore[arg-type]

    @property
    def out_channels(self) -> int:
        return self.layers[-1].out_channels if self.layers else self.node_t.shape[1] // 2

    def __call__(self, h: Tensor, idx: Tensor, out: Tensor) -> Tensor:
        """``h (B, N, C_in)`` (rows may be strided), ``idx (B, N, k)`` -> writes ``out (B, N, C_out)``."""
        B, N, _ = h.shape
        c1 = self.node_t.shape[1] // 2
        ab = torch.addmm(self.node_shift, h.reshape(B * N, -1), self.node_t)        # (B N, 2 C1)
        a, b = ab[:, :c1], ab[:, c1:]
        if USE_NATIVE and self.layers and native.edge_mlp_max(a, b, idx, self, out):
            return out
        k = idx.shape[-1]
        offset = (torch.arange(B, device=idx.device) * N).view(B, 1, 1)
        flat_idx = (idx + offset).reshape(B * N, k)
        out_rows = out.view(B * N, out.shape[-1])         # (B, N, C) or a channel slice of a wider buffer
        last = self.layers[-1] if self.layers else None
        for s in range(0, B * N, EDGE_ROWS):
            e = min(B * N, s + EDGE_ROWS)
            m = e - s
            g = b.index_select(0, flat_idx[s:e].reshape(-1)).view(m, k, c1)
            if last is None:                         # one layer: act(a_i + max_j b_j)
                r = g.amax(1).add_(a[s:e])
                r = act_(r, self.slope1)
            else:
                z = act_(g.add_(a[s:e].unsqueeze(1)), self.slope1).view(m * k, c1)
                for layer in self.layers[:-1]:
                    z = layer.act_(torch.addmm(layer.shift, z, layer.weight_t))
                r = torch.mm(z, last.weight_t).view(m, k, -1).amax(1).add_(last.shift)
                r = last.act_(r)
            out_rows[s:e] = r
        return out
