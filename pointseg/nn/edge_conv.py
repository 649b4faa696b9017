r"""EdgeConv (DGCNN; the DeepGCNs default convolution).

.. math::
    h_i = \max_{j \in \mathcal{N}(i)} \; \mathrm{post}\big(W [x_i \,\|\, x_j - x_i] + b\big)

where ``post`` is activation and norm in the layer's order. Because the map is linear before
``post``, :math:`W[x_i, x_j - x_i] = (W_a - W_b) x_i + W_b x_j` with :math:`W = [W_a \| W_b]`:
the 1x1 convolution runs on the ``N`` points, not the ``N k`` edges, and only a sum of two
gathered terms is formed per edge. The result is identical to the edge-wise formulation
(BatchNorm statistics are still taken over every edge).

Shapes: dense ``x (B, C, N)``, ``idx (B, N, k)`` -> ``(B, C_out, N)``;
sparse ``x (N, C)``, ``edge_index (2, E)`` -> ``(N, C_out)`` (nodes without in-edges get ``post(·)``
of nothing, i.e. 0, like PyG's max aggregation).
"""
from __future__ import annotations

from torch import Tensor, nn

from .edge_reduce import edge_reduce
from .graph import check_graph
from .mlp import ConvNormAct, Order, pointwise_linear


class EdgeConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, act: str | None = "relu",
                 norm: str | None = "batch", bias: bool = True, order: Order = "conv-act-norm",
                 aggr: str = "max") -> None:
        super().__init__()
        if aggr not in ("max", "sum", "mean"):
            raise ValueError(f"aggr must be max/sum/mean, got {aggr!r}")
        self.in_channels, self.out_channels, self.aggr = in_channels, out_channels, aggr
        self.mlp = ConvNormAct(2 * in_channels, out_channels, act, norm, bias, order)

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()

    def node_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)`` with ``a = (W_a - W_b) x + bias`` and ``b = W_b x`` on every node."""
        w = self.mlp.lin.weight
        c = self.in_channels
        wa, wb = w[:, :c], w[:, c:]
        return pointwise_linear(x, wa - wb, self.mlp.lin.bias), pointwise_linear(x, wb, None)

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        check_graph(x, graph)
        if x.shape[1 if x.dim() == 3 else -1] != self.in_channels:
            raise ValueError(f"x has {x.shape[1 if x.dim() == 3 else -1]} channels, "
                             f"EdgeConv expects {self.in_channels} (shape {tuple(x.shape)})")
        a, b = self.node_terms(x)
        return edge_reduce(a, b, graph, self.mlp, self.aggr)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, aggr={self.aggr!r}"
