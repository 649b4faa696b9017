r"""Graph isomorphism convolution (GIN), as in the DeepGCNs comparison.

.. math::  h_i = \mathrm{post}\Big(W \big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)} x_j\big) + b\Big)

with a learnable (or fixed) scalar :math:`\epsilon`.
Shapes: dense ``(B, C, N)`` + ``(B, N, k)``; sparse ``(N, C)`` + ``(2, E)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .graph import check_graph, gather_neighbors, neighbor_reduce
from .mlp import ConvNormAct, Order


class GINConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, act: str | None = "relu",
                 norm: str | None = "batch", bias: bool = True, order: Order = "conv-act-norm",
                 eps: float = 0.0, train_eps: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.initial_eps = eps
        self.mlp = ConvNormAct(in_channels, out_channels, act, norm, bias, order)
        if train_eps:
            self.eps = nn.Parameter(torch.tensor([eps]))
        else:
            self.register_buffer("eps", torch.tensor([eps]))

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        check_graph(x, graph)
        if x.dim() == 3:
            agg = neighbor_reduce(gather_neighbors(x, graph), graph, "sum")
        else:
            agg = neighbor_reduce(x.index_select(0, graph[0]), graph, "sum", num_nodes=x.shape[0])
        return self.mlp((1 + self.eps) * x + agg)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"
