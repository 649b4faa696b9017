r"""EdgeConv with a multi-layer edge MLP (DGCNN's EdgeConv stages).

.. math::
    h_i = \max_{j \in \mathcal{N}(i)} \; f_L \circ \dots \circ f_2 \circ f_1\big(e_{ij}\big),
    \qquad f_l(z) = \mathrm{post}_l(W_l z + b_l)

with the edge feature :math:`e_{ij} = [x_j - x_i \,\|\, x_i]` (``edge_order="diff-first"``, DGCNN's
order) or :math:`[x_i \,\|\, x_j - x_i]` (``"centre-first"``, the order of
:class:`~pointseg.nn.edge_conv.EdgeConv`). ``post`` is activation and norm in the layer's order.

The first layer is linear before its ``post``, so with :math:`W_1 = [W_d \| W_c]`
(``diff-first``) :math:`W_1 e_{ij} = W_d x_j + (W_c - W_d) x_i`: the 1x1 convolution runs on the
``N`` points and each edge only adds two gathered terms. The later layers are not linear in the
edge feature and run on every edge. With one layer, the exact O(N C) fast path of
:func:`~pointseg.nn.edge_reduce.edge_reduce` is used (identical to EdgeConv). With several:

* eval mode (BatchNorm on running statistics) or no norm: the edges are processed in chunks of
  query points (at most ``chunk_bytes`` of edge activations at a time) and reduced chunk by
  chunk, so memory stays bounded; the result is exactly that of the whole edge tensor. Without
  autograd (inference), eval BatchNorm is folded into the linear maps: for layer 1 into the node
  terms (:math:`s (a_i + b_j) + t = (s a_i + t) + s b_j`), for later layers into ``W`` and the
  bias, so an edge costs one add and one GEMM column per layer (equal up to rounding).
* BatchNorm in training mode needs statistics over *all* edges of every layer before any output
  is formed, so the whole ``(B, C, N, k)`` edge tensor is materialised (memory O(B N k C), the
  documented cost of training a multi-layer EdgeConv).

Args:
    in_channels: ``C_in`` of the point features.
    channels: output width of every edge-MLP layer (``[64, 64]`` for DGCNN's first stage).
    act, norm, bias, order: of every layer (DGCNN: ``leakyrelu`` (slope 0.2), ``batch``, no bias,
        ``conv-norm-act``).
    aggr: ``max`` | ``sum`` | ``mean`` over the neighbours.
    edge_order: ``diff-first`` or ``centre-first`` (see above).
    chunk_bytes: bound on the edge activations of one chunk in the multi-layer eval path.

Shapes: dense ``x (B, C_in, N)``, ``idx (B, N, k)`` -> ``(B, channels[-1], N)``; sparse
``x (N, C_in)``, ``edge_index (2, E)`` -> ``(N, channels[-1])`` (multi-layer sparse input always
takes the whole-edge path).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .edge_reduce import edge_reduce
from .graph import check_graph, gather_neighbors, neighbor_reduce
from .mlp import ChannelNorm, ConvNormAct, Order, pointwise_linear

EDGE_ORDERS = ("diff-first", "centre-first")
MLP_CHUNK_BYTES = 16 * 2**20


class EdgeMLPConv(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], act: str | None = "leakyrelu",
                 norm: str | None = "batch", bias: bool = False, order: Order = "conv-norm-act",
                 aggr: str = "max", edge_order: str = "diff-first",
                 chunk_bytes: int = MLP_CHUNK_BYTES) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive widths, got {channels}")
        if aggr not in ("max", "sum", "mean"):
            raise ValueError(f"aggr must be max/sum/mean, got {aggr!r}")
        if edge_order not in EDGE_ORDERS:
            raise ValueError(f"edge_order must be one of {EDGE_ORDERS}, got {edge_order!r}")
        self.in_channels, self.out_channels = in_channels, channels[-1]
        self.aggr, self.edge_order, self.chunk_bytes = aggr, edge_order, int(chunk_bytes)
        widths = [2 * in_channels] + channels
        self.layers = nn.ModuleList(ConvNormAct(widths[i], widths[i + 1], act, norm, bias, order)
                                    for i in range(len(channels)))

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def node_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)``: the first layer's pre-activation of edge ``(j -> i)`` is ``a_i + b_j``."""
        lin = self.layers[0].lin
        c = self.in_channels
        w_first, w_second = lin.weight[:, :c], lin.weight[:, c:]
        # diff-first: W_d (x_j - x_i) + W_c x_i; centre-first: W_c x_i + W_d (x_j - x_i)
        wd, wc = (w_first, w_second) if self.edge_order == "diff-first" else (w_second, w_first)
        return pointwise_linear(x, wc - wd, lin.bias), pointwise_linear(x, wd, None)

    def _edge_mlp(self, z: Tensor) -> Tensor:
        """Every layer after the first linear map, on pre-activations ``z`` of the first layer."""
        h = self.layers[0].post(z)
        for layer in self.layers[1:]:
            h = layer(h)
        return h

    def _batch_stats_needed(self) -> bool:
        for layer in self.layers:
            for m in layer.norm.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
                    return True
        return False

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        check_graph(x, graph)
        cin = x.shape[1 if x.dim() == 3 else -1]
        if cin != self.in_channels:
            raise ValueError(f"x has {cin} channels, EdgeMLPConv expects {self.in_channels} "
                             f"(shape {tuple(x.shape)})")
        a, b = self.node_terms(x)
        if len(self.layers) == 1:
            return edge_reduce(a, b, graph, self.layers[0], self.aggr)
        if x.dim() == 2:
            j, i = graph
            z = a.index_select(0, i) + b.index_select(0, j)
            return neighbor_reduce(self._edge_mlp(z), graph, self.aggr, num_nodes=x.shape[0])
        if self._batch_stats_needed():
            z = a.unsqueeze(-1) + gather_neighbors(b, graph)           # (B, C, N, k): all edges
            return neighbor_reduce(self._edge_mlp(z), graph, self.aggr)
        folded = None if torch.is_grad_enabled() else self._folded()
        if folded is not None:
            return self._chunked_folded(a, b, graph, folded)
        return self._chunked(a, b, graph)

    def _folded(self) -> list[tuple[Tensor, Tensor, nn.Module]] | None:
        """Per layer ``(scale, shift, act)`` with ``norm(W z + bias) = scale * (W z) + shift``, when
        every layer is conv -> (eval BatchNorm | none) -> elementwise act; else None."""
        out = []
        for layer in self.layers:
            norm, lin = layer.norm, layer.lin
            bias = lin.bias if lin.bias is not None else torch.zeros(lin.out_channels, device=lin.weight.device,
                                                                     dtype=lin.weight.dtype)
            if isinstance(norm, nn.Identity):
                scale, shift = torch.ones_like(bias), bias
            elif (isinstance(norm, ChannelNorm) and norm.kind == "batch" and type(norm.norm) is nn.BatchNorm1d
                  and layer.order == "conv-norm-act" and not norm.norm.training
                  and norm.norm.running_mean is not None):
                bn = norm.norm
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.affine:
                    scale = scale * bn.weight
                shift = (bias - bn.running_mean) * scale + (bn.bias if bn.affine else 0.0)
            else:
                return None
            if type(layer.act) not in (nn.ReLU, nn.LeakyReLU, nn.Identity):
                return None
            out.append((scale, shift, layer.act))
        return out

    @staticmethod
    def _act_(h: Tensor, act: nn.Module) -> Tensor:
        if type(act) is nn.ReLU:
            return h.relu_()
        if type(act) is nn.LeakyReLU:
            return F.leaky_relu_(h, act.negative_slope)
        return h

    def _chunked_folded(self, a: Tensor, b: Tensor, idx: Tensor,
                        folded: list[tuple[Tensor, Tensor, nn.Module]]) -> Tensor:
        """Inference path: BatchNorm folded into the linear maps (layer 1: into the node terms, so
        an edge costs one add), activations in place, chunks of query points. Same values as
        :meth:`_chunked` up to rounding."""
        B, C, N = a.shape
        k = idx.shape[-1]
        s1, t1, act1 = folded[0]
        bias = self.layers[0].lin.bias
        a = (a - (bias.view(1, -1, 1) if bias is not None else 0.0)) * s1.view(1, -1, 1) + t1.view(1, -1, 1)
        # channels-last: an edge is a contiguous row, every later layer one (edges x C) GEMM
        a_rows = a.transpose(1, 2)                                          # (B, N, C) view
        b_rows = (b * s1.view(1, -1, 1)).transpose(1, 2).reshape(B * N, C)  # (B N, C)
        mats = [((layer.lin.weight * s.view(-1, 1)).t().contiguous(), t, act)
                for layer, (s, t, act) in zip(self.layers[1:], folded[1:])]
        widest = max(layer.lin.out_channels for layer in self.layers)
        rows = max(1, min(N, self.chunk_bytes // max(1, 2 * B * widest * k * a.element_size())))
        offset = (torch.arange(B, device=idx.device) * N).view(B, 1, 1)
        out = a.new_empty(B, N, self.out_channels)
        for s in range(0, N, rows):
            e = min(N, s + rows)
            m = e - s
            flat = (idx[:, s:e] + offset).reshape(-1)
            h = b_rows.index_select(0, flat).view(B, m, k, C).add_(a_rows[:, s:e].unsqueeze(2))
            h = self._act_(h, act1)
            for w_t, t, act in mats:
                h = self._act_(torch.addmm(t, h.view(-1, h.shape[-1]), w_t), act).view(B, m, k, -1)
            if self.aggr == "max":
                out[:, s:e] = h.amax(dim=2)
            elif self.aggr == "sum":
                out[:, s:e] = h.sum(dim=2)
            else:
                out[:, s:e] = h.mean(dim=2)
        return out.transpose(1, 2).contiguous()

    def _chunked(self, a: Tensor, b: Tensor, idx: Tensor) -> Tensor:
        B, _, N = a.shape
        k = idx.shape[-1]
        widest = max(layer.lin.out_channels for layer in self.layers)
        # about three live edge tensors of the widest layer per chunk
        rows = max(1, min(N, self.chunk_bytes // max(1, 3 * B * widest * k * a.element_size())))
        out = a.new_empty(B, self.out_channels, N)
        for s in range(0, N, rows):
            e = min(N, s + rows)
            z = a[:, :, s:e].unsqueeze(-1) + gather_neighbors(b, idx[:, s:e])
            out[:, :, s:e] = neighbor_reduce(self._edge_mlp(z), idx, self.aggr)
        return out

    def extra_repr(self) -> str:
        widths = [layer.lin.out_channels for layer in self.layers]
        return f"{self.in_channels}, {widths}, aggr={self.aggr!r}, edge_order={self.edge_order!r}"
