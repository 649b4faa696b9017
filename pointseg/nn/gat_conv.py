r"""Graph attention convolution (GAT, Veličković et al. 2018), in the form RevGAT uses.

For ``H`` heads of width ``C``, with :math:`W` shared by source and target nodes,

.. math::
    h_j = W x_j \in \mathbb{R}^{H \times C}, \qquad
    e_{ji} = \mathrm{LeakyReLU}\big(a_s^\top h_j + a_d^\top h_i\big), \qquad
    \alpha_{ji} = \mathrm{softmax}_{j \in \mathcal{N}(i)}(e_{ji}),

.. math::
    x'_i = \Big\Vert_{\text{heads}} \sum_{j \in \mathcal{N}(i)} \alpha_{ji} h_j \;+\; W_r x_i \;+\; b

with the heads concatenated (``(N, H*C)``) or averaged (``(N, C)``; then :math:`W_r` maps to
``C``, as in PyG). Options, all
named after what they switch: ``attn_dst=False`` drops :math:`a_d` (the arXiv "bag of tricks"
GAT / RevGAT), ``residual`` adds the bias-free :math:`W_r x_i`, ``bias`` the final :math:`b`.
``sym_norm`` scales :math:`h_j` by :math:`d^{out}_j{}^{-1/2}` before the
aggregation and the result by :math:`d^{in}_i{}^{1/2}` (degrees clamped at 1; the "normalised
adjacency" of the arXiv GAT that RevGAT builds on). In training, ``edge_drop`` removes that fraction of the edges before the softmax (the attention
is renormalised over the kept ones, as in RevGAT) and ``attn_dropout`` drops attention
coefficients. With ``attn_dst=True, residual=False, bias=True`` and no self loops added this is
PyG's ``GATConv(add_self_loops=False)``.

Shapes: ``x (N, C_in)``, ``edge_index (2, E)`` (row 0 source :math:`j`, row 1 target :math:`i`)
-> ``(N, H*C)`` (``concat``) or ``(N, C)``. Nodes without in-edges get only the residual and bias.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from .graph import check_graph


class GATConv(nn.Module):
    """Multi-head graph attention; see the module docstring.

    Args:
        in_channels: input width.
        out_channels: output width *per head*.
        heads: number of attention heads ``H``.
        concat: concatenate the heads (``H * out_channels`` outputs) or average them.
        negative_slope: slope of the LeakyReLU on the attention logits.
        attn_dst: use the target-node attention vector :math:`a_d`.
        residual: add a bias-free linear map of the target's own input.
        bias: add a learnable bias to the output.
        attn_dropout: dropout on the attention coefficients (training only).
        edge_drop: fraction of edges removed before the softmax (training only).
        sym_norm: symmetric degree normalisation around the aggregation (see module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, attn_dst: bool = True, residual: bool = False,
                 bias: bool = True, attn_dropout: float = 0.0, edge_drop: float = 0.0,
                 sym_norm: bool = False) -> None:
        super().__init__()
        if heads < 1 or out_channels < 1:
            raise ValueError(f"heads and out_channels must be >= 1, got {heads}, {out_channels}")
        for name, p in (("attn_dropout", attn_dropout), ("edge_drop", edge_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.in_channels, self.heads, self.head_channels, self.concat = in_channels, heads, out_channels, concat
        self.out_channels = heads * out_channels if concat else out_channels
        self.negative_slope, self.attn_dropout, self.edge_drop = negative_slope, attn_dropout, edge_drop
        self.sym_norm = sym_norm
        self.lin = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels)) if attn_dst else None
        self.res = nn.Linear(in_channels, self.out_channels, bias=False) if residual else None
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-normal with the ReLU gain, as the RevGAT / arXiv GAT reference initialises it.
        gain = nn.init.calculate_gain("relu")
        nn.init.xavier_normal_(self.lin.weight, gain=gain)
        nn.init.xavier_normal_(self.att_src, gain=gain)
        if self.att_dst is not None:
            nn.init.xavier_normal_(self.att_dst, gain=gain)
        if self.res is not None:
            nn.init.xavier_normal_(self.res.weight, gain=gain)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"GATConv takes sparse node features (N, C) with an edge_index, got shape {tuple(x.shape)}")
        check_graph(x, edge_index)
        N, H, C = x.shape[0], self.heads, self.head_channels
        h = self.lin(x).view(N, H, C)
        j, i = edge_index[0], edge_index[1]
        if self.training and self.edge_drop > 0:
            keep = torch.rand(j.numel(), device=x.device) >= self.edge_drop
            j, i = j[keep], i[keep]
        logit = (h * self.att_src).sum(-1).index_select(0, j)                    # (E, H)
        if self.att_dst is not None:
            logit = logit + (h * self.att_dst).sum(-1).index_select(0, i)
        alpha = softmax(F.leaky_relu(logit, self.negative_slope), i, num_nodes=N)
        alpha = F.dropout(alpha, self.attn_dropout, self.training)
        msg = h.index_select(0, j)
        if self.sym_norm:      # degrees of the full graph, as the reference computes them
            ones = torch.ones_like(edge_index[0], dtype=h.dtype)
            d_out = scatter(ones, edge_index[0], dim=0, dim_size=N, reduce="sum").clamp_min(1)
            msg = msg * d_out.pow(-0.5).index_select(0, j).view(-1, 1, 1)
        out = scatter(msg * alpha.unsqueeze(-1), i, dim=0, dim_size=N, reduce="sum")
        if self.sym_norm:
            d_in = scatter(ones, edge_index[1], dim=0, dim_size=N, reduce="sum").clamp_min(1)
            out = out * d_in.sqrt().view(N, 1, 1)
        out = out.reshape(N, H * C) if self.concat else out.mean(dim=1)
        if self.res is not None:
            out = out + self.res(x)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.head_channels}, heads={self.heads}, concat={self.concat}, "
                f"attn_dst={self.att_dst is not None}, residual={self.res is not None}")
