r"""Per-edge ``post(a_i + b_j)`` followed by a reduction over neighbours.

This is the inner loop of EdgeConv after the linearity trick: ``a`` and ``b`` are node terms
``(B, C, N)`` / ``(N, C)``; every edge ``(j -> i)`` gets ``z_ij = a_i + b_j``, then the layer's
activation and norm (``ConvNormAct.post``), then ``max`` (or sum / mean) over ``j``.
"""
from __future__ import annotations

from torch import Tensor

from .graph import gather_neighbors, neighbor_reduce
from .mlp import ConvNormAct


def edge_reduce(a: Tensor, b: Tensor, graph: Tensor, layer: ConvNormAct, aggr: str = "max") -> Tensor:
    if a.dim() == 3:
        z = a.unsqueeze(-1) + gather_neighbors(b, graph)          # (B, C, N, k)
        return neighbor_reduce(layer.post(z), graph, aggr)
    j, i = graph
    z = a.index_select(0, i) + b.index_select(0, j)               # (E, C)
    return neighbor_reduce(layer.post(z), graph, aggr, num_nodes=a.shape[0])
