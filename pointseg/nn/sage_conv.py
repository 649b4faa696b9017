r"""GraphSAGE with max pooling, one of the convolutions the DeepGCNs paper compares: see
:class:`SAGEConv`.

In the non-relative form ``MLP_1`` runs on the nodes, not the edges (its output depends on
``j`` only), and the result is gathered per edge.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .graph import channel_dim, check_graph, gather_neighbors, neighbor_reduce
from .mlp import ConvNormAct, Order


class SAGEConv(nn.Module):
    r"""GraphSAGE ("Inductive Representation Learning on Large Graphs") with max pooling, and the
    relative variant RSAGE of DeepGCNs:

    .. math::
        h_i = \mathrm{MLP}_2\Big(\big[x_i \,\|\, \max_{j \in \mathcal{N}(i)} \mathrm{MLP}_1(m_{ji})\big]\Big),
        \qquad m_{ji} = x_j \;\text{or, relative,}\; x_j - x_i

    where :math:`\mathrm{MLP}_1` (``C -> C``) and :math:`\mathrm{MLP}_2` (``2C -> C_out``) are each
    one point-wise layer (linear map, activation and norm in ``order``).

    Args:
        in_channels: width :math:`C` of :math:`x`.
        out_channels: width :math:`C_{out}` of :math:`h`.
        act, norm, bias, order: of both MLPs, as for :class:`~pointseg.nn.EdgeConv`.
        relative: RSAGE: message :math:`x_j - x_i` instead of :math:`x_j`.

    Shapes:
        - **input:** dense ``x (B, C, N)`` with neighbour indices ``(B, N, k)``, or sparse
          ``x (N, C)`` with ``edge_index (2, E)``
        - **output:** ``(B, C_out, N)`` or ``(N, C_out)``
    """

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
