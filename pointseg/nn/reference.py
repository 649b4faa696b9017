r"""The straightforward ("reference") formulation of the dense DeepGCN layers: the oracle the fast
paths are compared with (tests, :mod:`pointseg.nn.precision`) and timed against
(``tools/bench_resgcn.py``). No layer or model uses it.

* kNN: the full ``B x N x N`` matrix of squared distances ``|x_i|^2 - 2 x_i.x_j + |x_j|^2``,
  ``topk`` of the ``k*d`` nearest (sorted), every ``d``-th kept (stochastic dilation draws the
  same random numbers as :mod:`pointseg.nn.knn`, so both pick the same ranks for one seed);
* EdgeConv: gather ``[x_i, x_j - x_i]`` as a ``(B, 2C, N, k)`` edge tensor, 1x1 conv on every
  edge, activation and BatchNorm on the edge tensor (statistics over all edges, as BatchNorm2d
  does), max over ``j``;
* MRConv: ``max_j (x_j - x_i)`` from the ``(B, C, N, k)`` tensor of relative features;
* SegGCN prediction: the first layer on the concatenated ``[fusion; x]`` (``split_global = False``);
* the global max over the points: autograd of ``amax`` (:class:`~pointseg.nn.global_max.GlobalMax`
  swapped out).

:func:`to_reference` turns a pointseg model into this formulation with the *same* parameters
and buffers (state-dict keys are unchanged), so both can be run side by side.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pointseg.nn.edge_conv import EdgeConv
from pointseg.nn.global_max import GlobalMax
from pointseg.nn.graph import gather_neighbors
from pointseg.nn.knn import DilatedKnn, _select_ranks
from pointseg.nn.mr_conv import MRConv, max_relative_reference


@torch.no_grad()
def reference_knn(x: Tensor, k: int, dilation: int = 1, stochastic: bool = False, epsilon: float = 0.0,
                  training: bool = False) -> Tensor:
    """Dilated kNN of ``x (B, C, N)`` from the full distance matrix; ``(B, N, k)``."""
    x = x.detach()
    xt = x.transpose(1, 2)
    sq = (xt * xt).sum(-1, keepdim=True)                          # (B, N, 1)
    dist = sq - 2 * torch.matmul(xt, x) + sq.transpose(1, 2)      # (B, N, N)
    idx = torch.arange(x.shape[2], device=x.device)
    dist[:, idx, idx] = -torch.inf                                # self at rank 0, as pointseg does
    cand = dist.topk(k * dilation, dim=-1, largest=False, sorted=True).indices
    ranks = _select_ranks(k, dilation, stochastic, epsilon, training, x.device)
    if ranks is not None:
        return cand.index_select(-1, ranks)
    return cand[..., ::dilation].contiguous()


class ReferenceKnn(nn.Module):
    def __init__(self, knn: DilatedKnn) -> None:
        super().__init__()
        self.k, self.dilation, self.stochastic, self.epsilon = knn.k, knn.dilation, knn.stochastic, knn.epsilon

    def forward(self, x: Tensor, batch: Tensor | None = None) -> Tensor:
        if x.dim() != 3:
            raise ValueError("the reference kNN covers dense (B, C, N) input only")
        return reference_knn(x, self.k, self.dilation, self.stochastic, self.epsilon, self.training)


class ReferenceEdgeConv(nn.Module):
    """EdgeConv on explicit edge features; shares ``mlp`` (weights, BatchNorm) with the source conv."""

    def __init__(self, conv: EdgeConv) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.aggr = conv.in_channels, conv.out_channels, conv.aggr
        self.mlp = conv.mlp

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        if x.dim() != 3:
            raise ValueError("the reference EdgeConv covers dense (B, C, N) input only")
        k = idx.shape[-1]
        x_i = x.unsqueeze(-1).expand(-1, -1, -1, k)
        x_j = gather_neighbors(x, idx)
        edges = torch.cat([x_i, x_j - x_i], dim=1)                         # (B, 2C, N, k)
        lin = self.mlp.lin
        h = F.conv2d(edges, lin.weight[:, :, None, None], lin.bias)        # 1x1 conv on every edge
        h = self.mlp.post(h)                                               # act / BatchNorm over all edges
        if self.aggr == "max":
            return h.amax(dim=-1)
        return h.sum(dim=-1) if self.aggr == "sum" else h.mean(dim=-1)


class ReferenceMRConv(nn.Module):
    def __init__(self, conv: MRConv) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.mlp = conv.mlp

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        return self.mlp(torch.cat([x, max_relative_reference(x, graph)], dim=1 if x.dim() == 3 else -1))


class ReferenceGlobalMax(nn.Module):
    def __init__(self, pool: GlobalMax) -> None:
        super().__init__()

    def forward(self, y: Tensor) -> Tensor:
        return y.amax(dim=-1, keepdim=True)


def to_reference(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every EdgeConv, MRConv, DilatedKnn and GlobalMax in the reference form."""
    ref = copy.deepcopy(model)
    swaps = {EdgeConv: ReferenceEdgeConv, MRConv: ReferenceMRConv, DilatedKnn: ReferenceKnn,
             GlobalMax: ReferenceGlobalMax}
    for parent in list(ref.modules()):
        for name, child in list(parent.named_children()):
            for cls, ref_cls in swaps.items():
                if type(child) is cls:
                    setattr(parent, name, ref_cls(child))
    for m in ref.modules():                     # the prediction layer on the concatenated [fusion; x]
        if hasattr(m, "split_global"):
            m.split_global = False
    return ref
