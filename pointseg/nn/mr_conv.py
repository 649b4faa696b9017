r"""Max-relative graph convolution (DeepGCNs): see :class:`MRConv` for the operator.

Since :math:`x_i` does not depend on :math:`j`, :math:`\max_j (x_j - x_i) = \max_j x_j - x_i`:
the relative features are never formed per edge. The maximising neighbour of every node and
channel is found without autograd (:func:`~pointseg.nn.edge_reduce.select_neighbors`, the
compiled kernel on CPU) and gathered, so backward keeps ``(B, C, N)`` indices instead of the
``(B, C, N, k)`` gathered features that autograd of ``amax`` would save.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .edge_reduce import select_neighbors
from .graph import channel_dim, check_graph, gather_neighbors, neighbor_reduce
from .mlp import ConvNormAct, Order


def max_relative(x: Tensor, graph: Tensor) -> Tensor:
    """``max_j (x_j - x_i)`` for every node, in ``x``'s representation."""
    src = select_neighbors(x, graph)
    if x.dim() == 3:
        return x.gather(2, src) - x
    if graph.shape[1] == 0:
        return torch.zeros_like(x)
    has_edge = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    has_edge[graph[1]] = True
    return torch.where(has_edge[:, None], x.gather(0, src) - x, x.new_zeros(()))


def max_relative_reference(x: Tensor, graph: Tensor) -> Tensor:
    """Straightforward ``max_j (x_j - x_i)`` (per-edge tensor + ``amax``): the oracle of the tests."""
    if x.dim() == 3:
        return gather_neighbors(x, graph).amax(dim=-1) - x
    j, i = graph
    rel = x.index_select(0, j) - x.index_select(0, i)
    return neighbor_reduce(rel, graph, "max", num_nodes=x.shape[0])


class MRConv(nn.Module):
    r"""The max-relative graph convolution of DeepGCNs ("Can GCNs Go as Deep as CNNs?"), the
    convolution of its PPI networks:

    .. math::
        h_i = \mathrm{post}\Big(W \big[x_i \,\|\, \max_{j \in \mathcal{N}(i)} (x_j - x_i)\big] + b\Big)

    with the maximum taken per channel and ``post`` the activation and norm in ``order``.

    Args:
        in_channels: width :math:`C` of :math:`x`.
        out_channels: width :math:`C_{out}` of :math:`h`.
        act, norm, bias, order: the layer :math:`W \cdot + b` and its ``post``, as for
            :class:`~pointseg.nn.EdgeConv`.

    Shapes:
        - **input:** dense ``x (B, C, N)`` with neighbour indices ``(B, N, k)``, or sparse
          ``x (N, C)`` with ``edge_index (2, E)``
        - **output:** ``(B, C_out, N)`` or ``(N, C_out)``; a node with no in-edges gets 0 for its
          relative part (no ``-inf``)
    """

    def __init__(self, in_channels: int, out_channels: int, act: str | None = "relu",
                 norm: str | None = "batch", bias: bool = True, order: Order = "conv-act-norm") -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.mlp = ConvNormAct(2 * in_channels, out_channels, act, norm, bias, order)

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        check_graph(x, graph)
        return self.mlp(torch.cat([x, max_relative(x, graph)], dim=channel_dim(x)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}"
