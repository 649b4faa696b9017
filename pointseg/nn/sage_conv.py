r"""GraphSAGE with max pooling, as in the DeepGCNs comparison.

.. math::  h_i = \mathrm{MLP}_2\Big(\big[x_i \,\|\, \max_{j \in \mathcal{N}(i)} \mathrm{MLP}_1(x_j)\big]\Big)

``relative=True`` gives the paper's RSAGE variant, :math:`\mathrm{MLP}_1(x_j - x_i)`.
``MLP_1`` maps ``C -> C``, ``MLP_2`` maps ``2C -> C_out``. In the non-relative form ``MLP_1`` runs on
the nodes, not the edges (its output depends on ``j`` only).

Shapes: dense ``(B, C, N)`` + ``(B, N, k)``; sparse ``(N, C)`` + ``(2, E)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .graph import channel_dim, check_graph, gather_neighbors, neighbor_reduce
from .mlp import ConvNormAct, Order


class SAGEConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, act: str | None = "relu",
                 norm: str | None = "batch", bias: bool = True, order: Order = "conv-act-norm",
                 relative: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.relative = in_channels, out_channels, relative
        self.mlp1 = ConvNormAct(in_channels, in_channels, act, norm, bias, order)
        self.mlp2 = ConvNormAct(2 * in_channels, out_channels, act, norm, bias, order)

    def reset_parameters(self) -> None:
        self.mlp1.reset_parameters()
        self.mlp2.reset_parameters()

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        check_graph(x, graph)
        if x.dim() == 3:
            if self.relative:
                msg = self.mlp1(gather_neighbors(x, graph) - x.unsqueeze(-1))
            else:
                msg = gather_neighbors(self.mlp1(x), graph)
            agg = neighbor_reduce(msg, graph, "max")
        else:
            j, i = graph
            if self.relative:
                msg = self.mlp1(x.index_select(0, j) - x.index_select(0, i))
            else:
                msg = self.mlp1(x).index_select(0, j)
            agg = neighbor_reduce(msg, graph, "max", num_nodes=x.shape[0])
        return self.mlp2(torch.cat([x, agg], dim=channel_dim(x)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, relative={self.relative}"
