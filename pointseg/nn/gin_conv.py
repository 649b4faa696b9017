r"""Graph isomorphism convolution (GIN), one of the convolutions the DeepGCNs paper compares:
see :class:`GINConv`."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .graph import check_graph, gather_neighbors, neighbor_reduce
from .mlp import ConvNormAct, Order


class GINConv(nn.Module):
    r"""The graph isomorphism operator of "How Powerful are Graph Neural Networks?", with one
    point-wise layer as its MLP:

    .. math::
        h_i = \mathrm{post}\Big(W \big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)} x_j\big) + b\Big)

    where ``post`` is the activation and norm in ``order``.

    Args:
        in_channels: width :math:`C` of :math:`x`.
        out_channels: width :math:`C_{out}` of :math:`h`.
        act, norm, bias, order: the layer :math:`W \cdot + b` and its ``post``, as for
            :class:`~pointseg.nn.EdgeConv`.
        eps: initial value of :math:`\epsilon`.
        train_eps: learn :math:`\epsilon` (else it stays fixed at ``eps``).

    Shapes:
        - **input:** dense ``x (B, C, N)`` with neighbour indices ``(B, N, k)``, or sparse
          ``x (N, C)`` with ``edge_index (2, E)``; the sum runs over the given neighbours as
          they are (a dilated kNN graph's rank-0 self included)
        - **output:** ``(B, C_out, N)`` or ``(N, C_out)``
    """

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
