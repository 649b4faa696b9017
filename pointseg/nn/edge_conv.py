r"""EdgeConv (DGCNN; the DeepGCNs default convolution): see :class:`EdgeConv` for the operator.

Because the map is linear before ``post``, :math:`W[x_i, x_j - x_i] = (W_a - W_b) x_i + W_b x_j` with :math:`W = [W_a \| W_b]`:
the 1x1 convolution runs on the ``N`` points, not the ``N k`` edges, and only a sum of two
gathered terms is formed per edge. The result is identical to the edge-wise formulation
(BatchNorm statistics are still taken over every edge).
"""
from __future__ import annotations

from torch import Tensor, nn

from .edge_reduce import edge_reduce
from .graph import check_graph
from .mlp import ConvNormAct, Order, pointwise_linear


class EdgeConv(nn.Module):
    r"""The edge convolution of DGCNN ("Dynamic Graph CNN for Learning on Point Clouds"), the
    default convolution of the DeepGCNs point-cloud networks:

    .. math::
        h_i = \bigoplus_{j \in \mathcal{N}(i)} \mathrm{post}\big(W [x_i \,\|\, x_j - x_i] + b\big)

    where :math:`\bigoplus` is the ``aggr`` reduction over the neighbours and ``post`` is the
    activation and norm in the layer's ``order``.

    Args:
        in_channels: width :math:`C` of :math:`x`.
        out_channels: width :math:`C_{out}` of :math:`h`.
        act, norm, bias, order: the point-wise layer :math:`W \cdot + b` and its ``post``, as
            :class:`~pointseg.nn.mlp.ConvNormAct` takes them: activation (``relu``, ``leakyrelu``,
            ``prelu``, ``gelu`` or None); norm (``batch``, ``layer``, ``instance`` or None); learn
            :math:`b`; ``conv-act-norm`` (the reference dense code) or ``conv-norm-act``.
        aggr: neighbour reduction :math:`\bigoplus`: ``max`` (the papers'), ``sum`` or ``mean``.

    Shapes:
        - **input:** dense ``x (B, C, N)`` with neighbour indices ``(B, N, k)``, or sparse
          ``x (N, C)`` with ``edge_index (2, E)`` (row 0 the neighbour :math:`j`, row 1 the centre :math:`i`)
        - **output:** ``(B, C_out, N)`` or ``(N, C_out)``; a node without in-edges gets 0 (the
          reduction of nothing, like PyG's max aggregation)
    """

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
        r"""``(a, b)`` with ``a_i + b_j = W_a x_i + W_b (x_j - x_i) + bias`` on every edge.

        Formed from features centred on their (detached) per-cloud mean ``m``:
        ``a = (W_a - W_b)(x - m) + W_a m + bias`` and ``b = W_b (x - m)``; the sum does not depend
        on ``m``. Uncentred (``b = W_b x``), ``W_b x_j - W_b x_i`` cancels in float32 when the
        features carry a large common offset (deep residual stacks), losing digits the
        edge-wise ``W_b (x_j - x_i)`` keeps."""
        w = self.mlp.lin.weight
        c = self.in_channels
        wa, wb = w[:, :c], w[:, c:]
        m = x.detach().mean(dim=-1 if x.dim() == 3 else 0, keepdim=True)
        xc = x - m
        a = pointwise_linear(xc, wa - wb, self.mlp.lin.bias) + pointwise_linear(m, wa, None)
        return a, pointwise_linear(xc, wb, None)

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        check_graph(x, graph)
        if x.shape[1 if x.dim() == 3 else -1] != self.in_channels:
            raise ValueError(f"x has {x.shape[1 if x.dim() == 3 else -1]} channels, "
                             f"EdgeConv expects {self.in_channels} (shape {tuple(x.shape)})")
        a, b = self.node_terms(x)
        return edge_reduce(a, b, graph, self.mlp, self.aggr)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, aggr={self.aggr!r}"
