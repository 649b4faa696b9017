"""The two graph representations every convolution and block accepts.

* dense point blocks: features ``x`` of shape ``(B, C, N)``, neighbour indices ``(B, N, k)``
  (``idx[b, i]`` are the neighbours ``j`` of point ``i`` in cloud ``b``);
* sparse graphs: features ``x`` of shape ``(N, C)``, ``edge_index`` of shape ``(2, E)`` with
  ``edge_index[0] = j`` (source / neighbour) and ``edge_index[1] = i`` (target), PyG's
  ``source_to_target`` flow.

The rank of ``x`` tells the two apart, so one layer serves both.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from .checks import check_features, check_index


def is_dense(x: Tensor) -> bool:
    return x.dim() == 3


def channel_dim(x: Tensor) -> int:
    """Channel axis: 1 for dense ``(B, C, N)``, -1 for sparse ``(N, C)``."""
    return 1 if x.dim() == 3 else -1


def check_graph(x: Tensor, graph: Tensor, name: str = "x") -> None:
    """Validate features against the graph representation they come with."""
    check_features(x, name, dims=(2, 3), finite=False)
    if is_dense(x):
        B, _, N = x.shape
        check_index(graph, "neighbour index", N, (B, N, None))
    else:
        check_index(graph, "edge_index", x.shape[0], (2, None))


def gather_neighbors(x: Tensor, idx: Tensor) -> Tensor:
    """Dense gather: ``x (B, C, N)``, ``idx (B, M, k)`` -> ``(B, C, M, k)`` with ``out[b,:,i,t] = x[b,:,idx[b,i,t]]``."""
    B, C, N = x.shape
    _, M, k = idx.shape
    flat = idx.reshape(B, 1, M * k).expand(B, C, M * k)
    return torch.gather(x, 2, flat).view(B, C, M, k)


def neighbor_reduce(msg_or_x: Tensor, graph: Tensor, reduce: str = "max",
                    num_nodes: int | None = None) -> Tensor:
    """Aggregate over neighbours.

    Dense: ``msg (B, C, N, k)`` -> ``(B, C, N)`` reducing the last axis (``graph`` unused).
    Sparse: per-edge ``msg (E, C)`` -> ``(num_nodes, C)`` scattered to ``graph[1]``;
    nodes without incoming edges get 0 (never NaN/-inf).
    """
    if msg_or_x.dim() == 4:
        if reduce == "max":
            return msg_or_x.amax(dim=-1)
        if reduce == "sum":
            return msg_or_x.sum(dim=-1)
        if reduce == "mean":
            return msg_or_x.mean(dim=-1)
        if reduce == "min":
            return msg_or_x.amin(dim=-1)
        raise ValueError(f"reduce must be max/sum/mean/min, got {reduce!r}")
    return scatter(msg_or_x, graph[1], dim=0, dim_size=num_nodes, reduce=reduce)
