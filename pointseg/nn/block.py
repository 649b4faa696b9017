r"""One deep-GCN block, parameterised by ``kind`` (DeepGCNs §3, DeeperGCN §3.3).

With :math:`F` the block's convolution on graph :math:`G`:

* ``plain``: :math:`x' = F(x, G)`
* ``res``:   :math:`x' = F(x, G) + \lambda x`
* ``dense``: :math:`x' = [x \,\|\, F(x, G)]` (channels grow by ``F``'s output width)
* ``res+``:  :math:`x' = x + F(\mathrm{dropout}(\sigma(\mathrm{norm}(x))), G)` (pre-activation)

A *dynamic* block owns a :class:`~pointseg.nn.knn.DilatedKnn` and recomputes its graph from its
own input; a static block takes the graph as an argument. Extra keyword arguments (edge
features, ``batch``) are passed to the convolution.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .edge_conv import EdgeConv
from .gat_conv import GATConv
from .gcn_conv import GCNConv
from .gen_conv import GENConv
from .gin_conv import GINConv
from .graph import channel_dim
from .knn import DilatedKnn
from .mlp import act_layer, norm_layer
from .mr_conv import MRConv
from .sage_conv import SAGEConv

BLOCK_KINDS = ("plain", "res", "dense", "res+")
CONVS: dict[str, type[nn.Module]] = {
    "edge": EdgeConv, "mr": MRConv, "sage": SAGEConv, "gin": GINConv, "gen": GENConv, "gat": GATConv, "gcn": GCNConv,
}


def make_conv(kind: str, in_channels: int, out_channels: int, **kwargs: Any) -> nn.Module:
    """Build a convolution by name: ``edge`` | ``mr`` | ``sage`` | ``rsage`` | ``gin`` | ``gen`` | ``gat`` | ``gcn``.

    ``out_channels`` is always the output width: a ``gat`` with ``heads=H`` (concatenated) gets
    ``out_channels / H`` channels per head.
    """
    kind = kind.lower()
    if kind == "rsage":
        return SAGEConv(in_channels, out_channels, relative=True, **kwargs)
    if kind == "gat" and kwargs.get("concat", True):
        heads = int(kwargs.get("heads", 1))
        if heads < 1 or out_channels % heads:
            raise ValueError(f"gat: out_channels={out_channels} must be divisible by heads={heads}")
        return GATConv(in_channels, out_channels // heads, **kwargs)
    if kind not in CONVS:
        raise ValueError(f"conv must be one of {sorted(CONVS) + ['rsage']}, got {kind!r}")
    return CONVS[kind](in_channels, out_channels, **kwargs)


class GCNBlock(nn.Module):
    r"""A plain / residual / dense / pre-activation residual block around one convolution.

    Args:
        conv: the convolution ``F``; it must expose ``in_channels`` and ``out_channels``.
        kind: one of ``plain``, ``res``, ``dense``, ``res+``.
        knn: a ``DilatedKnn`` for a dynamic block (graph recomputed from the input), or None.
        norm, act, dropout: the pre-activation of ``res+`` blocks (ignored otherwise).
        res_scale: :math:`\lambda` of ``res`` blocks.

    Shapes: dense ``(B, C, N)`` or sparse ``(N, C)`` in; out has ``C`` channels, or
    ``C + C_out`` for ``dense``.
    """

    def __init__(self, conv: nn.Module, kind: str = "res", knn: DilatedKnn | None = None,
                 norm: str | None = "batch", act: str | None = "relu", dropout: float = 0.0,
                 res_scale: float = 1.0) -> None:
        super().__init__()
        if kind not in BLOCK_KINDS:
            raise ValueError(f"kind must be one of {BLOCK_KINDS}, got {kind!r}")
        cin, cout = conv.in_channels, conv.out_channels
        if kind in ("res", "res+") and cin != cout:
            raise ValueError(f"a {kind} block needs in_channels == out_channels, got {cin} -> {cout}")
        self.kind, self.conv, self.knn = kind, conv, knn
        self.in_channels = cin
        self.out_channels = cin + cout if kind == "dense" else cout
        self.res_scale = res_scale
        if kind == "res+":
            self.norm = norm_layer(norm, cin)
            self.act = act_layer(act)
            self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def graph_for(self, x: Tensor, graph: Tensor | None, batch: Tensor | None = None) -> Tensor:
        if self.knn is not None:
            return self.knn(x, batch) if x.dim() == 2 else self.knn(x)
        if graph is None:
            raise ValueError("a static block needs a graph (neighbour indices or edge_index)")
        return graph

    def forward(self, x: Tensor, graph: Tensor | None = None, batch: Tensor | None = None,
                **conv_kwargs: Any) -> Tensor:
        g = self.graph_for(x, graph, batch)
        if self.kind == "res+":
            return x + self.conv(self.dropout(self.act(self.norm(x))), g, **conv_kwargs)
        h = self.conv(x, g, **conv_kwargs)
        if self.kind == "res":
            return h + self.res_scale * x
        if self.kind == "dense":
            return torch.cat([x, h], dim=channel_dim(x))
        return h

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, dynamic={self.knn is not None}"
