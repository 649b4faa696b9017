r"""Point-wise (1x1) layers: linear map, activation and normalisation on either representation.

A ``ConvNormAct`` layer computes, per point (or per edge),

.. math::  y = \mathrm{norm}(\sigma(W x + b))   \quad \text{(order ``conv-act-norm``, the reference dense code)}
.. math::  y = \sigma(\mathrm{norm}(W x + b))   \quad \text{(order ``conv-norm-act``)}

on dense ``(B, C, N)`` / ``(B, C, N, k)`` or sparse ``(N, C)`` tensors. The weight has the shape of
``nn.Linear(in, out)``, so parameter counts equal those of the reference 1x1 ``Conv2d``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sync_batch_norm import is_synced, synced_batch_norm

Order = Literal["conv-act-norm", "conv-norm-act"]
ORDERS = ("conv-act-norm", "conv-norm-act")


def act_layer(kind: str | None) -> nn.Module:
    """``relu`` | ``leakyrelu`` (slope 0.2) | ``prelu`` | ``gelu`` | ``none``."""
    kind = (kind or "none").lower()
    if kind == "relu":
        return nn.ReLU()
    if kind == "leakyrelu":
        return nn.LeakyReLU(0.2)
    if kind == "prelu":
        return nn.PReLU()
    if kind == "gelu":
        return nn.GELU()
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"act must be relu/leakyrelu/prelu/gelu/none, got {kind!r}")


class ChannelNorm(nn.Module):
    """Normalisation over the channel axis of either representation.

    ``batch``: BatchNorm over every point (and edge) of the batch; ``layer``: LayerNorm over
    channels of each point; ``instance``: InstanceNorm over the points of each cloud (dense only).
    """

    def __init__(self, kind: str, channels: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(channels)
        elif kind == "layer":
            self.norm = nn.LayerNorm(channels)
        elif kind == "instance":
            self.norm = nn.InstanceNorm1d(channels, affine=True)
        else:
            raise ValueError(f"norm must be batch/layer/instance/none, got {kind!r}")

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:                       # (N, C)
            if self.kind == "batch" and is_synced(self.norm):
                return synced_batch_norm(x.t().unsqueeze(0), self.norm)[0].t()
            if self.kind == "instance":
                raise ValueError("instance norm needs dense (B, C, N) input")
            return self.norm(x)
        shape = x.shape                        # (B, C, N[, k])
        h = x.reshape(shape[0], shape[1], -1)
        if self.kind == "batch" and is_synced(self.norm):
            return synced_batch_norm(h, self.norm).reshape(shape)
        if self.kind == "layer":
            h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        else:
            h = self.norm(h)
        return h.reshape(shape)


def norm_layer(kind: str | None, channels: int) -> nn.Module:
    kind = (kind or "none").lower()
    return nn.Identity() if kind == "none" else ChannelNorm(kind, channels)


def pointwise_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``W x + b`` on the channel axis: ``(N, C)`` or ``(B, C, N[, k])``."""
    if x.dim() == 2:
        return F.linear(x, weight, bias)
    shape = x.shape
    h = x.reshape(shape[0], shape[1], -1)
    # one batched GEMM with the bias fused in (about 2x faster than conv1d for 64 channels on CPU)
    w = weight.expand(shape[0], -1, -1)
    h = torch.bmm(w, h) if bias is None else torch.baddbmm(bias.view(1, -1, 1), w, h)
    return h.reshape(shape[0], weight.shape[0], *shape[2:])


class Pointwise(nn.Module):
    """Shared linear map on each point: ``nn.Linear`` semantics on the channel axis."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The reference initialises every 1x1 conv with Kaiming-normal weights and zero bias.
        nn.init.kaiming_normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return pointwise_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, bias={self.bias is not None}"


class ConvNormAct(nn.Module):
    """One point-wise layer: linear map, then activation and norm in the chosen ``order``."""

    def __init__(self, in_channels: int, out_channels: int, act: str | None = "relu",
                 norm: str | None = "batch", bias: bool = True, order: Order = "conv-act-norm") -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.order = order
        self.lin = Pointwise(in_channels, out_channels, bias)
        self.act = act_layer(act)
        self.norm = norm_layer(norm, out_channels)

    def reset_parameters(self) -> None:
        for m in (self.lin, self.norm, self.act):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def post(self, h: Tensor) -> Tensor:
        """Activation and norm applied to a pre-activation ``h = W x + b``."""
        if self.order == "conv-act-norm":
            return self.norm(self.act(h))
        return self.act(self.norm(h))

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.lin(x))


class MLP(nn.Sequential):
    """Stack of ``ConvNormAct`` layers; ``channels=[c0, c1, ..., cL]``.

    ``last_plain=True`` leaves the last layer without activation and norm (a classifier head).
    """

    def __init__(self, channels: Sequence[int], act: str | None = "relu", norm: str | None = "batch",
                 bias: bool = True, order: Order = "conv-act-norm", dropout: float = 0.0,
                 last_plain: bool = False) -> None:
        if len(channels) < 2:
            raise ValueError(f"MLP needs at least two channel sizes, got {list(channels)}")
        layers: list[nn.Module] = []
        n = len(channels) - 1
        for i in range(n):
            plain = last_plain and i == n - 1
            if plain and dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(ConvNormAct(channels[i], channels[i + 1], None if plain else act,
                                      None if plain else norm, bias, order))
        super().__init__(*layers)

    def reset_parameters(self) -> None:
        for m in self:
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
