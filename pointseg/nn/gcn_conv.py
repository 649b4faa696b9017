r"""Graph convolution of Kipf & Welling (GCN, ICLR'17) with symmetric normalisation.

.. math::  h_i = \sum_{j \in \mathcal{N}(i) \cup \{i\}} \frac{w_{ji}}{\sqrt{\hat d_j \hat d_i}}\, W x_j + b,
           \qquad \hat d_i = w_{ii} + \sum_{j \in \mathcal{N}(i)} w_{ji}

(:math:`\hat A = A + I`, :math:`\hat D^{-1/2} \hat A \hat D^{-1/2} X W`). Self-loops are *remaining*
self-loops: an edge ``i -> i`` already in the graph is replaced by one loop of weight ``fill`` (1, or 2
with ``improved=True``; an explicit self-loop weight is kept), so a kNN graph that lists the point
itself counts it once. Degrees are weighted in-degrees (at the target ``i``), as in PyG's ``gcn_norm``.

``cached=True`` stores the normalised graph of the first call and reuses it (transductive full-batch
training on one fixed graph); a later graph of another shape is refused, a different graph of the same
shape is not detected — do not cache when the graph changes. ``normalize=False`` sums ``W x_j`` over the
given edges (no self-loops, no degrees).

Args:
    in_channels, out_channels: feature widths.
    improved: self-loop weight 2 instead of 1.
    cached: reuse the normalisation of the first graph.
    add_self_loops: add the (remaining) self-loops before normalising.
    normalize: apply the symmetric normalisation at all.
    bias: learnable output bias (initialised to zero; ``W`` is Glorot-uniform).

Shapes: dense ``(B, C, N)`` + neighbour indices ``(B, N, k)`` -> ``(B, C_out, N)``; sparse
``(N, C)`` + ``edge_index (2, E)`` [+ ``edge_weight (E,)``] -> ``(N, C_out)``. Parameters are named as
in PyG's ``GCNConv`` (``lin.weight``, ``bias``), so state dicts load both ways.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from .graph import check_graph, gather_neighbors


def gcn_norm_sparse(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                    fill: float = 1.0, self_loops: bool = True, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """``(edge_index', norm)``: the graph with remaining self-loops and ``w_ji / sqrt(d_j d_i)`` per edge."""
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    elif edge_weight.shape != (edge_index.shape[1],):
        raise ValueError(f"edge_weight must have shape ({edge_index.shape[1]},), got {tuple(edge_weight.shape)}")
    if self_loops:
        j, i = edge_index
        keep = j != i
        loop_w = torch.full((num_nodes,), fill, dtype=edge_weight.dtype, device=edge_weight.device)
        loop_w[i[~keep]] = edge_weight[~keep]         # an explicit self-loop keeps its weight
        loops = torch.arange(num_nodes, device=edge_index.device)
        edge_index = torch.cat([edge_index[:, keep], torch.stack([loops, loops])], dim=1)
        edge_weight = torch.cat([edge_weight[keep], loop_w])
    j, i = edge_index
    deg = scatter(edge_weight, i, dim=0, dim_size=num_nodes, reduce="sum")
    dinv = deg.pow(-0.5)
    dinv = dinv.masked_fill(torch.isinf(dinv), 0.0)
    return edge_index, dinv[j] * edge_weight * dinv[i]


def gcn_norm_dense(idx: Tensor, fill: float = 1.0, self_loops: bool = True,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None]:
    """Dense ``idx (B, N, k)`` -> ``(norm (B, N, k), self_norm (B, N) or None)``: the weight of neighbour
    slot ``t`` of node ``i`` and of ``i``'s own (remaining) self-loop. Slots that point at ``i`` itself get 0."""
    B, N, k = idx.shape
    w = torch.ones(B, N, k, dtype=dtype, device=idx.device)
    if self_loops:
        w = w.masked_fill(idx == torch.arange(N, device=idx.device).view(1, N, 1), 0.0)
    deg = w.sum(-1) + (fill if self_loops else 0.0)            # in-degree of i: its own slots (+ loop)
    dinv = deg.pow(-0.5)
    dinv = dinv.masked_fill(torch.isinf(dinv), 0.0)
    dinv_j = torch.gather(dinv, 1, idx.reshape(B, N * k)).view(B, N, k)
    norm = dinv_j * w * dinv.unsqueeze(-1)
    return norm, (dinv * dinv * fill if self_loops else None)


class GCNConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, improved: bool = False, cached: bool = False,
                 add_self_loops: bool = True, normalize: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.improved, self.cached, self.add_self_loops, self.normalize = improved, cached, add_self_loops, normalize
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._cache: tuple[tuple[int, ...], Tensor, Tensor | None] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cache = None

    def _normalised(self, x: Tensor, graph: Tensor, edge_weight: Tensor | None):
        key = (x.dim(), x.shape[0 if x.dim() == 2 else 2], *graph.shape)
        if self.cached and self._cache is not None:
            if self._cache[0] != key:
                raise ValueError(f"GCNConv(cached=True) was called on a graph of shape {self._cache[0]} and now "
                                 f"on {key}; a cached normalisation serves one fixed graph")
            return self._cache[1], self._cache[2]
        fill = 2.0 if self.improved else 1.0
        if x.dim() == 3:
            if edge_weight is not None:
                raise ValueError("edge_weight is only supported for sparse graphs (edge_index)")
            out = gcn_norm_dense(graph, fill, self.add_self_loops, x.dtype) if self.normalize else (None, None)
        elif self.normalize:
            out = gcn_norm_sparse(graph, x.shape[0], edge_weight, fill, self.add_self_loops, x.dtype)
        else:
            out = (graph, edge_weight)
        if self.cached:
            self._cache = (key, out[0], out[1])
        return out

    def forward(self, x: Tensor, graph: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        check_graph(x, graph)
        if x.dim() == 3:
            norm, self_norm = self._normalised(x, graph, edge_weight)
            h = self.lin(x.transpose(1, 2)).transpose(1, 2)                  # (B, C_out, N)
            msg = gather_neighbors(h, graph)                                 # (B, C_out, N, k)
            if norm is None:
                out = msg.sum(-1)
            else:
                out = (msg * norm.unsqueeze(1)).sum(-1)
                if self_norm is not None:
                    out = out + h * self_norm.unsqueeze(1)
            if self.bias is not None:
                out = out + self.bias.view(1, -1, 1)
            return out
        ei, w = self._normalised(x, graph, edge_weight)
        h = self.lin(x)
        msg = h.index_select(0, ei[0])
        if w is not None:
            msg = msg * w.unsqueeze(-1)
        out = scatter(msg, ei[1], dim=0, dim_size=x.shape[0], reduce="sum")
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, improved={self.improved}, cached={self.cached}, "
                f"normalize={self.normalize}")
