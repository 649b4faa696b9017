r"""Per-edge ``post(a_i + b_j)`` followed by a reduction over neighbours, in O(N C) memory.

This is the inner loop of EdgeConv after the linearity trick: ``a`` and ``b`` are node terms
``(B, C, N)`` / ``(N, C)``; every edge ``(j -> i)`` has the pre-activation ``z_ij = a_i + b_j``,
then the layer's activation and norm (``ConvNormAct.post``), then ``max`` over ``j``.

Exact fast path (``aggr="max"``, activation ReLU / LeakyReLU with slope >= 0 / none, norm
BatchNorm / none, either order). With ``act`` monotone non-decreasing and BatchNorm a
per-channel affine map ``y = s_c (h - \mu_c) + \beta_c`` with ``s_c = \gamma_c / \sigma_c``,

.. math::
    \max_j \mathrm{post}(z_{ij}) = \mathrm{post}(a_i + b_{j^*}), \qquad
    j^* = \arg\max_j \, \mathrm{sign}(\gamma_c)\, b_j

(``\sigma_c > 0``, so the sign of ``s_c`` is that of ``\gamma_c``: max where it is positive, min
where negative). So only one edge per node and channel enters the output. In training mode
BatchNorm normalises with the mean and biased variance of ``h = act(z)`` (order conv-act-norm)
or ``h = z`` (conv-norm-act) over *all* ``B N k`` (or ``E``) edges: :class:`EdgeStats` computes them
in one pass without storing the edge tensor, and its backward recomputes ``z`` edge by edge,
since ``\partial L / \partial h_e = (g_\mu + 2 g_{\sigma^2} (h_e - \mu)) / M`` touches every edge.
The running statistics are updated exactly as ``nn.BatchNorm1d`` does (momentum or cumulative
average, unbiased variance). Everything else saved for backward is ``(B, C, N)``.

On CPU with float32/float64 the edge pass runs in the compiled kernel of :mod:`.native`, else
(CUDA, other dtypes, no compiler) in chunks of at most ``EDGE_CHUNK_BYTES`` with torch ops.

Fallback (documented): ``aggr`` sum/mean, non-monotone or learnable activations (GELU, PReLU),
LayerNorm / InstanceNorm, BatchNorm synchronised over processes (multi-process training), or a
single edge in training mode use :func:`edge_reduce_reference`,
which materialises the ``(B, C, N, k)`` edge tensor. At exact ties between neighbours the fast
path sends the whole gradient to the first neighbour where autograd of ``amax`` would split it;
both are valid subgradients and the forward values are equal.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native
from .graph import gather_neighbors, neighbor_reduce
from .mlp import ChannelNorm, ConvNormAct
from .sync_batch_norm import is_synced, update_running_stats

EDGE_CHUNK_BYTES = 64 * 2**20   # workspace of one chunk of edges on the torch path


@dataclass(frozen=True)
class FastPost:
    """What the exact fast path needs to know about a ``ConvNormAct.post``."""

    act_stats: bool                     # order conv-act-norm: the norm sees act(z)
    slope: float                        # act(z) = z (z > 0) else slope * z; relu 0, none 1
    bn: nn.BatchNorm1d | None


def fast_post(layer: ConvNormAct) -> FastPost | None:
    """The fast-path description of ``layer.post``, or None when only the reference path is exact."""
    act = layer.act
    if type(act) is nn.ReLU:
        slope = 0.0
    elif type(act) is nn.LeakyReLU and act.negative_slope >= 0:
        slope = float(act.negative_slope)
    elif type(act) is nn.Identity:
        slope = 1.0
    else:
        return None
    norm = layer.norm
    if type(norm) is nn.Identity:
        bn = None
    elif isinstance(norm, ChannelNorm) and norm.kind == "batch" and type(norm.norm) is nn.BatchNorm1d:
        bn = norm.norm
    else:
        return None
    return FastPost(layer.order == "conv-act-norm", slope, bn)


def _act(z: Tensor, slope: float) -> Tensor:
    if slope == 0.0:
        return torch.relu(z)
    if slope == 1.0:
        return z
    return F.leaky_relu(z, slope)


def _act_grad_term(z: Tensor, p: Tensor, q: Tensor, mu_hi: Tensor, mu_lo: Tensor, act_stats: bool,
                   slope: float) -> Tensor:
    """``dh/dz (p + q (h - mu))`` with ``h = act(z)`` (or ``z``): the per-edge gradient.

    Centred, with ``mu = mu_hi + mu_lo`` in two floats of ``z``'s dtype: the uncentred
    ``p' + q h`` (``p' = p - q mu``) cancels to a few bits in float32 when ``|mu| >> sigma``."""
    if not act_stats or slope == 1.0:
        return p + q * ((z - mu_hi) - mu_lo)
    h = torch.where(z > 0, z, slope * z)
    g = p + q * ((h - mu_hi) - mu_lo)
    return torch.where(z > 0, g, slope * g)


def _compute_dtype(t: Tensor) -> torch.dtype:
    """float16 / bfloat16 edge gradients are formed and summed in float32."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _split(mu: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """float64 ``mu`` as ``hi + lo`` in ``dtype`` (``lo`` the rounding error of ``hi``)."""
    hi = mu.to(dtype)
    return hi, (mu - hi.double()).to(dtype)


# ---------------------------------------------------------------------------------------------
# Edge passes on the torch path (CUDA / fallback); the CPU kernel does the same in one sweep.

def _rows_per_chunk(B: int, C: int, k: int, elem: int, n: int) -> int:
    return max(1, min(n, EDGE_CHUNK_BYTES // max(1, 4 * B * C * k * elem)))


def _stat_sums(h: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    h = h.to(torch.float64)        # float64 sums: E[h^2] - E[h]^2 must not cancel
    return h.sum(dims), (h * h).sum(dims)


def _dense_pass_forward(a: Tensor | None, b: Tensor, idx: Tensor, sgn: Tensor | None, act_stats: bool,
                        slope: float, want_stats: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    out = native.edge_forward(a, b, idx, sgn, act_stats, slope, want_stats)
    if out is not None:
        return out
    B, C, N = b.shape
    k = idx.shape[-1]
    src = torch.empty(B, C, N, dtype=torch.long, device=b.device)
    s1 = s2 = None
    if want_stats:
        s1 = torch.zeros(C, dtype=torch.float64, device=b.device)
        s2 = torch.zeros_like(s1)
    rows = _rows_per_chunk(B, C, k, b.element_size(), N)
    for s in range(0, N, rows):
        e = min(N, s + rows)
        nb = idx[:, s:e]                                           # (B, m, k)
        g = gather_neighbors(b, nb)                                # (B, C, m, k)
        key = g if sgn is None else g * sgn.view(1, C, 1, 1)
        pos = key.argmax(dim=-1, keepdim=True)                     # (B, C, m, 1)
        src[:, :, s:e] = nb.unsqueeze(1).expand(B, C, e - s, k).gather(3, pos).squeeze(3)
        if want_stats:
            z = g.add_(a[:, :, s:e].unsqueeze(-1))
            h = _act(z, slope) if act_stats else z
            t1, t2 = _stat_sums(h, (0, 2, 3))
            s1 += t1
            s2 += t2
    return src, s1, s2


def _dense_pass_backward(a: Tensor, b: Tensor, idx: Tensor, act_stats: bool, slope: float, p: Tensor,
                         q: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
    out = native.edge_backward(a, b, idx, act_stats, slope, p, q, mu)
    if out is not None:
        return out
    B, C, N = b.shape
    k = idx.shape[-1]
    cd = _compute_dtype(b)
    p = p.to(cd).view(1, C, 1, 1)
    q = q.to(cd).view(1, C, 1, 1)
    mh, ml = (m.view(1, C, 1, 1) for m in _split(mu, cd))
    ga = torch.zeros(a.shape, dtype=cd, device=a.device)
    gb = torch.zeros(b.shape, dtype=cd, device=b.device)
    rows = _rows_per_chunk(B, C, k, torch.finfo(cd).bits // 8, N)
    for s in range(0, N, rows):
        e = min(N, s + rows)
        nb = idx[:, s:e]
        z = gather_neighbors(b, nb).add_(a[:, :, s:e].unsqueeze(-1)).to(cd)
        g = _act_grad_term(z, p, q, mh, ml, act_stats, slope)
        ga[:, :, s:e] = g.sum(-1)
        gb.scatter_add_(2, nb.reshape(B, 1, -1).expand(B, C, -1), g.reshape(B, C, -1))
    return ga.to(a.dtype), gb.to(b.dtype)


def _edge_chunks(E: int, C: int, elem: int) -> tuple[range, int]:
    step = max(1, EDGE_CHUNK_BYTES // max(1, 4 * C * elem))
    return range(0, E, step), step


def _sparse_pass_forward(a: Tensor | None, b: Tensor, edge_index: Tensor, sgn: Tensor | None,
                         act_stats: bool, slope: float, want_stats: bool
                         ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    N, C = b.shape
    j, i = edge_index[0].long(), edge_index[1].long()
    E = j.numel()
    starts, step = _edge_chunks(E, C, b.element_size())
    best = torch.full((N, C), -torch.inf, dtype=b.dtype, device=b.device)
    for s in starts:
        jj, ii = j[s:s + step], i[s:s + step]
        key = b.index_select(0, jj) if sgn is None else b.index_select(0, jj) * sgn
        best.scatter_reduce_(0, ii[:, None].expand(-1, C), key, "amax", include_self=True)
    src = torch.full((N, C), N, dtype=torch.long, device=b.device)
    s1 = s2 = None
    if want_stats:
        s1 = torch.zeros(C, dtype=torch.float64, device=b.device)
        s2 = torch.zeros_like(s1)
    for s in starts:
        jj, ii = j[s:s + step], i[s:s + step]
        g = b.index_select(0, jj)
        key = g if sgn is None else g * sgn
        # lowest source index among the maximisers of each (node, channel)
        cand = torch.where(key == best.index_select(0, ii), jj[:, None], N)
        src.scatter_reduce_(0, ii[:, None].expand(-1, C), cand, "amin", include_self=True)
        if want_stats:
            z = g.add_(a.index_select(0, ii))
            h = _act(z, slope) if act_stats else z
            t1, t2 = _stat_sums(h, (0,))
            s1 += t1
            s2 += t2
    src.clamp_(max=N - 1)          # nodes without in-edges: any valid index, masked later
    return src, s1, s2


def _sparse_pass_backward(a: Tensor, b: Tensor, edge_index: Tensor, act_stats: bool, slope: float,
                          p: Tensor, q: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
    N, C = b.shape
    j, i = edge_index[0].long(), edge_index[1].long()
    cd = _compute_dtype(b)
    p, q = p.to(cd), q.to(cd)
    mh, ml = _split(mu, cd)
    ga = torch.zeros(a.shape, dtype=cd, device=a.device)
    gb = torch.zeros(b.shape, dtype=cd, device=b.device)
    starts, step = _edge_chunks(j.numel(), C, torch.finfo(cd).bits // 8)
    for s in starts:
        jj, ii = j[s:s + step], i[s:s + step]
        z = b.index_select(0, jj).add_(a.index_select(0, ii)).to(cd)
        g = _act_grad_term(z, p, q, mh, ml, act_stats, slope)
        ga.index_add_(0, ii, g)
        gb.index_add_(0, jj, g)
    return ga.to(a.dtype), gb.to(b.dtype)


def _num_edges(b: Tensor, graph: Tensor) -> int:
    return graph.numel() if b.dim() == 3 else graph.shape[1]


def select_neighbors(b: Tensor, graph: Tensor, sgn: Tensor | None = None) -> Tensor:
    r"""Per node and channel, the neighbour ``j`` maximising ``sgn_c \cdot b_j`` (no gradient).

    Dense ``b (B, C, N)``, ``idx (B, N, k)`` -> ``(B, C, N)``; sparse ``b (N, C)``,
    ``edge_index`` -> ``(N, C)`` (arbitrary valid index for nodes without in-edges). First
    maximiser at ties. ``b.gather(channel-free axis, src)`` gives the maxima with an O(N C) backward.
    """
    with torch.no_grad():
        b = b.detach()
        if b.dim() == 3:
            return _dense_pass_forward(None, b, graph, sgn, False, 1.0, False)[0]
        return _sparse_pass_forward(None, b, graph, sgn, False, 1.0, False)[0]


class EdgeStats(torch.autograd.Function):
    r"""Per-channel mean and biased variance of ``h_e`` over every edge ``e = (j -> i)``, with
    ``h_e = act(a_i + b_j)`` (``act_stats``) or ``a_i + b_j``; also returns the selection ``src``
    of :func:`select_neighbors` from the same sweep. Memory O(N C): nothing per edge is saved.

    ``forward(a, b, graph, sgn, act_stats, slope) -> (mean (C,), var (C,), src)``.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, graph: Tensor, sgn: Tensor | None, act_stats: bool,
                slope: float) -> tuple[Tensor, Tensor, Tensor]:
        if a.dim() == 3:
            # the kernels read (B, N, C) rows: made once here, kept for the backward's pass
            a, b = native.channel_last_view(a), native.channel_last_view(b)
            src, s1, s2 = _dense_pass_forward(a, b, graph, sgn, act_stats, slope, True)
        else:
            src, s1, s2 = _sparse_pass_forward(a, b, graph, sgn, act_stats, slope, True)
        M = _num_edges(b, graph)
        mean = s1 / M
        var = (s2 / M - mean * mean).clamp_min(0.0)
        ctx.save_for_backward(a, b, graph, mean)
        ctx.act_stats, ctx.slope, ctx.M = act_stats, slope, M
        ctx.mark_non_differentiable(src)
        return mean.to(a.dtype), var.to(a.dtype), src

    @staticmethod
    def backward(ctx, g_mean: Tensor | None, g_var: Tensor | None, _g_src: Tensor | None):
        a, b, graph, mean = ctx.saved_tensors
        C = mean.shape[0]
        gm = torch.zeros(C, dtype=torch.float64, device=a.device) if g_mean is None else g_mean.double()
        gv = torch.zeros(C, dtype=torch.float64, device=a.device) if g_var is None else g_var.double()
        # dL/dh_e = (g_mean + 2 g_var (h_e - mean)) / M = p + q (h_e - mean), kept centred
        p = gm / ctx.M
        q = 2.0 * gv / ctx.M
        if a.dim() == 3:
            ga, gb = _dense_pass_backward(a, b, graph, ctx.act_stats, ctx.slope, p, q, mean)
        else:
            ga, gb = _sparse_pass_backward(a, b, graph, ctx.act_stats, ctx.slope, p, q, mean)
        return ga, gb, None, None, None, None


class _Gather(torch.autograd.Function):
    """``b.gather(dim, src)`` with autograd's gradient (a scatter-add into zeros), saving only
    ``src``: autograd of ``gather`` keeps the whole input ``b`` alive until the backward, one
    ``(B, C, N)`` tensor per layer that nothing else needs (EdgeStats keeps its own layout)."""

    @staticmethod
    def forward(ctx, b: Tensor, dim: int, src: Tensor) -> Tensor:
        ctx.save_for_backward(src)
        ctx.dim, ctx.shape = dim, b.shape
        return b.gather(dim, src)

    @staticmethod
    def backward(ctx, g: Tensor):
        (src,) = ctx.saved_tensors
        return g.new_zeros(ctx.shape).scatter_add_(ctx.dim, src, g), None, None


def edge_reduce_fast(a: Tensor, b: Tensor, graph: Tensor, spec: FastPost) -> Tensor:
    """The exact O(N C)-memory path of :func:`edge_reduce` for ``aggr="max"`` (see module doc)."""
    dense = a.dim() == 3
    cdim = 1 if dense else -1
    C = a.shape[cdim]
    shape = (1, C, 1) if dense else (1, C)
    bn = spec.bn
    gamma = bn.weight if bn is not None and bn.affine else None
    beta = bn.bias if bn is not None and bn.affine else None
    sgn = None
    # on CUDA always pass the signs: testing for a negative gamma would sync with the host
    if gamma is not None and (gamma.device.type != "cpu" or bool((gamma.detach() < 0).any())):
        sgn = torch.where(gamma.detach() < 0, -1.0, 1.0).to(a.dtype)
    batch_stats = bn is not None and (bn.training or bn.running_mean is None)
    if batch_stats:
        M = _num_edges(b, graph)
        mean, var, src = EdgeStats.apply(a, b, graph, sgn, spec.act_stats, spec.slope)
        if bn.training:
            update_running_stats(bn, mean, var, M)
    else:
        src = select_neighbors(b, graph, sgn)
        if bn is not None:
            mean, var = bn.running_mean, bn.running_var
    z = a + _Gather.apply(b, 2 if dense else 0, src)    # pre-activation of the selected edge
    if bn is None:
        out = _act(z, spec.slope)
    else:
        h = _act(z, spec.slope) if spec.act_stats else z
        # BatchNorm as y = (h - mean) * scale + beta. Centred before scaling: the uncentred
        # affine form h * scale - mean * scale has the gradient sum(g h) - mean sum(g) for the
        # variance, which cancels in float32 when |mean| >> sigma (deep stacks, offset inputs).
        scale = torch.rsqrt(var + bn.eps)
        if gamma is not None:
            scale = scale * gamma
        hc = h - mean.view(shape)
        y = hc * scale.view(shape) if beta is None else torch.addcmul(beta.view(shape), hc, scale.view(shape))
        out = y if spec.act_stats else _act(y, spec.slope)
    if not dense:
        has_edge = torch.zeros(a.shape[0], dtype=torch.bool, device=a.device)
        has_edge[graph[1]] = True
        out = torch.where(has_edge[:, None], out, out.new_zeros(()))
    return out


def edge_reduce_reference(a: Tensor, b: Tensor, graph: Tensor, layer: ConvNormAct,
                          aggr: str = "max") -> Tensor:
    """Straightforward path: materialise every edge's ``post(a_i + b_j)``, then reduce."""
    if a.dim() == 3:
        z = a.unsqueeze(-1) + gather_neighbors(b, graph)          # (B, C, N, k)
        return neighbor_reduce(layer.post(z), graph, aggr)
    j, i = graph
    z = a.index_select(0, i) + b.index_select(0, j)               # (E, C)
    return neighbor_reduce(layer.post(z), graph, aggr, num_nodes=a.shape[0])


def edge_reduce(a: Tensor, b: Tensor, graph: Tensor, layer: ConvNormAct, aggr: str = "max") -> Tensor:
    """``reduce_j post(a_i + b_j)``: the exact fast path when it applies, else the reference path."""
    spec = fast_post(layer) if aggr == "max" else None
    if spec is not None and spec.bn is not None and (spec.bn.training or spec.bn.running_mean is None):
        if _num_edges(b, graph) <= 1:
            spec = None               # BatchNorm's own error for a single value per channel
    if spec is not None and a.dim() == 2 and graph.shape[1] == 0:
        spec = None
    if spec is not None and spec.bn is not None and is_synced(spec.bn):
        spec = None                   # statistics shared across processes: ChannelNorm does the sync
    if spec is None:
        return edge_reduce_reference(a, b, graph, layer, aggr)
    return edge_reduce_fast(a, b, graph, spec)
