r"""Dilated k-nearest-neighbour graphs (DeepGCNs §3.3).

For each point :math:`i` the :math:`k\cdot d` nearest points in feature space are ranked by
squared Euclidean distance (the point itself is rank 0); dilation :math:`d` keeps ranks
:math:`0, d, 2d, \dots, (k-1)d`. Stochastic dilation (training only) instead keeps, with
probability :math:`\varepsilon`, one random set of :math:`k` ranks out of the :math:`k\cdot d`
(one draw per call, shared by all points, as in the reference code, which draws its random
number on every stochastic call, dilation 1 included).

Distances are computed one chunk of query points at a time, with one matrix product per chunk,
so memory stays within ``memory_budget`` bytes and no ``N x N`` matrix exists for large ``N``.
On CPU the kept ranks are selected by the compiled kernel of :mod:`pointseg.nn.native` (a
sampled threshold keeps a few hundred candidates, which are radix-sorted); on CUDA, or without a compiler,
``torch.topk``. Both give the same neighbours up to the order of exactly tied distances.

Deviation from the reference (documented): the point itself is forced to rank 0 even when a
duplicate point, or float round-off, would tie with it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import native
from .checks import check_features, check_values

# Bytes of distance workspace per chunk. Small on purpose: a chunk that stays in the last-level
# cache is selected while still hot, and malloc reuses a block this size from call to call,
# whereas a fresh full N x N matrix costs a page fault per 4 KiB on every call (measured: the
# dilated kNN of 2 x 4096 points took 104 ms with 256 MiB chunks, 59 ms with 16 MiB).
DEFAULT_MEMORY_BUDGET = 16 * 2**20
BACKENDS = ("torch", "cluster")


def _check_knn_args(n: int, k: int, dilation: int, where: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be a positive integer, got {dilation!r}")
    if k * dilation > n:
        raise ValueError(f"k*dilation = {k}*{dilation} = {k * dilation} exceeds the {n} points of {where}")


def _select_ranks(k: int, dilation: int, stochastic: bool, epsilon: float, training: bool,
                  device: torch.device) -> Tensor | None:
    """Ranks kept out of the sorted ``k*dilation`` candidates (None means ``::dilation``).

    The random stream is the reference code's: a stochastic kNN draws ``torch.rand(1)`` on every
    call (also at dilation 1 and in eval mode) and, when it falls below ``epsilon`` in training,
    ``torch.randperm(k*dilation)`` (at dilation 1 that keeps all ``k``), so one seed gives the
    same choices in both."""
    if not stochastic:
        return None
    u = float(torch.rand(1))
    if not (training and u < epsilon):
        return None
    ranks = torch.randperm(k * dilation)[:k].sort().values
    return None if dilation == 1 else ranks.to(device)


def _apply_ranks(cand: Tensor, dilation: int, ranks: Tensor | None) -> Tensor:
    if ranks is not None:
        return cand.index_select(-1, ranks)
    return cand[..., ::dilation] if dilation > 1 else cand


def _chunk_rows(batch: int, n: int, elem: int, memory_budget: int, workspace: int) -> int:
    # distance chunk (+ the workspace of torch.topk, ~2 more buffers of the same size)
    return max(1, min(n, memory_budget // max(1, workspace * batch * n * elem)))


def _rank_list(k: int, dilation: int, ranks: Tensor | None) -> Tensor:
    if ranks is not None:
        return ranks.to(device="cpu", dtype=torch.long)
    return torch.arange(0, k * dilation, dilation)


@torch.no_grad()
def _knn_select_torch(x: Tensor, k: int, dilation: int, ranks: Tensor | None, memory_budget: int,
                      use_native: bool | None = None, symmetric: bool | None = None,
                      fused: bool | None = None) -> Tensor:
    """Neighbours ``(B, N, k)`` of ``x (B, C, N)`` at the kept ranks of the ``k*dilation`` nearest.

    One matrix product per chunk of query rows gives ``|x_j|^2 - 2 q.x_j`` (the row constant
    ``|q|^2`` does not change the ranking); the point itself counts as ``-inf`` (rank 0). On CPU
    the compiled kernel of :mod:`.native` forms these values row by row from ``q.x_j`` and finds
    exactly the kept ranks (ties by lower index, no sort of the row); elsewhere ``torch.topk`` of
    the ``k*dilation`` nearest, sorted, and the kept ranks are taken. ``use_native=False`` forces the latter
    (benchmarks and tests compare the two). With the compiled kernel, ``symmetric=True`` (default:
    :data:`SYMMETRIC_GRAM`) takes the symmetric-tile scheme of :func:`_knn_symmetric` where it applies.
    Otherwise, in float32 where the kernel build has it (AVX-512 or AVX2 + FMA), the Gram products are fused into the
    selection (:func:`~pointseg.nn.native.knn_fused`; ``fused=False`` or :data:`FUSED_KNN` off: the
    row chunks below).
    """
    B, C, N = x.shape
    kd = k * dilation
    keep = _rank_list(k, dilation, ranks)
    if use_native is None or use_native:
        use_native = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and native.available()
    xt = x.transpose(1, 2)                                   # (B, N, C) view, no copy
    sq = (xt * xt).sum(-1).unsqueeze(1)                      # (B, 1, N)
    if check_values() and not bool(torch.isfinite(sq).all()):   # NaN / inf / overflowing features
        bad = int((~torch.isfinite(sq)).sum())
        raise ValueError(f"x holds NaN/inf (or overflowing) values at {bad} point(s) (shape {tuple(x.shape)})")
    if use_native and (SYMMETRIC_GRAM if symmetric is None else symmetric):
        sym = _knn_symmetric(x, xt, sq, keep, memory_budget)
        if sym is not None:
            return sym
    if use_native and (FUSED_KNN if fused is None else fused):
        out = native.knn_fused(x, sq, keep)
        if out is not None:
            return out
    rows = _chunk_rows(B, N, x.element_size(), memory_budget, 1 if use_native else 3)
    out = torch.empty(B, N, k, dtype=torch.long, device=x.device)
    buf = torch.empty(B * rows * N, dtype=x.dtype, device=x.device)   # reused by every chunk
    keep_dev = keep.to(x.device)
    for s in range(0, N, rows):
        e = min(N, s + rows)
        m = e - s
        chunk = buf[: B * m * N].view(B, m, N)
        if use_native:
            # q.x_j only; the kernel forms |x_j|^2 - 2 q.x_j row by row and skips the point itself
            torch.bmm(xt[:, s:e], x, out=chunk)
            out[:, s:e] = native.knn_select(chunk, sq, s, keep)
            continue
        d = torch.baddbmm(sq, xt[:, s:e], x, alpha=-2.0, out=chunk)
        d.diagonal(offset=s, dim1=1, dim2=2).fill_(-math.inf)   # (r, s + r): the point itself is rank 0
        cand = d.topk(kd, dim=-1, largest=False, sorted=True).indices
        out[:, s:e] = cand if ranks is None and dilation == 1 else cand.index_select(-1, keep_dev)
    return out


# Fused Gram + selection (compiled path, float32, AVX-512 or AVX2 + FMA builds): the Gram rows of a
# few query points at a time are selected while in L2, so no distance chunk goes through memory (docs/performance.md).
FUSED_KNN = True

# Symmetric-tile kNN (compiled path). Per-row candidate lists cost B*N*cap entries, so the
# scheme is used only while they fit SYMMETRIC_MEMORY (clouds are then processed one at a time if
# need be); larger clouds take the row-chunk path, whose memory does not grow with N*k*d.
SYMMETRIC_MEMORY = 64 * 2**20
# Off by default: on the 2-core AVX2 CPU this was measured on, the scattered appends to the
# per-row candidate lists cost more than the halved Gram saves (docs/performance.md has the numbers);
# exact either way, so it can be switched on where it measures faster.
SYMMETRIC_GRAM = False
SAMPLE = 256              # sampled columns per row for the threshold (as the row-chunk kernel)
TILES_MIN = 8             # at least this many row blocks: (T + 1) / (2 T) of the full Gram's FLOPs


def _sample_rank(kmax: int, n: int) -> int:
    """0-based rank in the sample of the per-row threshold: ~3 standard deviations above kmax."""
    t0 = kmax * SAMPLE / n
    return min(SAMPLE - 1, int(t0 + 3.0 * math.sqrt(t0) + 3.0))


def _knn_symmetric(x: Tensor, xt: Tensor, sq: Tensor, keep: Tensor, memory_budget: int) -> Tensor | None:
    """Exact dilated kNN computing only the Gram tiles ``G[I, J]``, ``I <= J``, of each cloud.

    Pass 1: a per-row threshold from ``SAMPLE`` strided columns (one small matrix product).
    Pass 2: per tile, the values ``v = |x_j|^2 - 2 x_i.x_j <= thr_i`` of its row block and those of
    its column block (the transposed tile) are appended to per-row candidate lists.
    Pass 3: each row's candidates are radix-sorted and the kept ranks read off. A row with fewer
    than ``kmax`` candidates (threshold too low) or more than the list holds is recomputed from its
    full row, so the result is exact whatever the sample; about half the Gram FLOPs of the row-chunk
    path. None when the scheme does not apply (small N, large kmax, too much candidate memory).
    """
    B, C, N = x.shape
    kmax = int(keep[-1]) + 1
    if N < 4 * SAMPLE or kmax * 4 >= N:
        return None
    t = _sample_rank(kmax, N)
    expect = (t + 1) * N / SAMPLE                            # survivors per row, mean
    cap = int(expect + 4.0 * math.sqrt(t + 1) * N / SAMPLE) + 64
    per_entry = 8 if x.dtype == torch.float32 else 16
    per_cloud = N * cap * per_entry
    if per_cloud > SYMMETRIC_MEMORY:
        return None
    clouds = max(1, min(B, SYMMETRIC_MEMORY // per_cloud))
    elem = x.element_size()
    rb = max(1, min(-(-N // TILES_MIN), int(math.sqrt(memory_budget / (clouds * elem)))))
    step = N // SAMPLE
    cols = torch.arange(SAMPLE) * step
    sq2 = sq.reshape(B, N).contiguous()
    out = torch.empty(B, N, keep.numel(), dtype=torch.long)
    tile_buf = torch.empty(clouds * rb * rb, dtype=x.dtype)
    words = cap * per_entry // 8
    for b0 in range(0, B, clouds):
        b1 = min(B, b0 + clouds)
        nb = b1 - b0
        xb, xtb, sqb = x[b0:b1], xt[b0:b1], sq2[b0:b1]
        sdot = torch.bmm(xtb, xb[:, :, cols].contiguous())    # (nb, N, SAMPLE)
        thr = native.knn_thresholds(sdot, sqb, step, t)
        del sdot
        cand = torch.empty(nb * N, words, dtype=torch.int64)
        cnt = torch.zeros(nb * N, dtype=torch.int64)
        for i0 in range(0, N, rb):
            i1 = min(N, i0 + rb)
            for j0 in range(i0, N, rb):
                j1 = min(N, j0 + rb)
                g = tile_buf[: nb * (i1 - i0) * (j1 - j0)].view(nb, i1 - i0, j1 - j0)
                torch.bmm(xtb[:, i0:i1], xb[:, :, j0:j1], out=g)
                native.knn_tile(g, sqb, thr, i0, j0, cand, cnt)
        sel = native.knn_finish(cand, cnt, x.dtype, keep).view(nb, N, -1)
        del cand
        bad = (sel[..., 0] < 0).nonzero()
        for bb in bad[:, 0].unique().tolist():               # rare: recompute those rows in full
            rows = bad[bad[:, 0] == bb, 1]
            d = sqb[bb].unsqueeze(0) - 2.0 * (xtb[bb, rows] @ xb[bb])
            d[torch.arange(rows.numel()), rows] = -math.inf
            sel[bb, rows] = native.rank_select(d, keep)
        out[b0:b1] = sel
    return out


@torch.no_grad()
def _knn_candidates_cluster(x: Tensor, kd: int) -> Tensor:
    try:
        import torch_cluster
    except ImportError:
        raise ValueError("backend='cluster' needs torch-cluster: pip install 'pointseg[cluster]'") from None
    B, C, N = x.shape
    flat = x.transpose(1, 2).reshape(B * N, C).contiguous()
    batch = torch.arange(B, device=x.device).repeat_interleave(N)
    row, col = torch_cluster.knn(flat, flat, kd, batch, batch)      # row: query, col: neighbour
    order = torch.argsort(row, stable=True)
    row, col = row[order], col[order]
    if row.numel() != B * N * kd:
        raise ValueError(f"torch-cluster returned {row.numel()} pairs, expected {B * N * kd}")
    col = col.view(B * N, kd)
    dist = (flat[col] - flat[:, None, :]).pow(2).sum(-1)
    dist[col == torch.arange(B * N, device=x.device)[:, None]] = -1.0
    col = col.gather(1, dist.argsort(dim=1, stable=True))
    return (col - (torch.arange(B, device=x.device) * N).repeat_interleave(N)[:, None]).view(B, N, kd)


def dilated_knn(x: Tensor, k: int, dilation: int = 1, *, stochastic: bool = False,
                epsilon: float = 0.0, training: bool = False,
                memory_budget: int = DEFAULT_MEMORY_BUDGET, backend: str = "torch") -> Tensor:
    """Dilated kNN of dense point features.

    Args:
        x: features ``(B, C, N)`` (any device, float dtype); neighbours are searched within each cloud.
        k: neighbours kept per point.
        dilation: keep every ``dilation``-th of the ``k*dilation`` nearest.
        stochastic, epsilon, training: stochastic dilation (active only when ``training``).
        memory_budget: bytes allowed for one chunk of the distance matrix.
        backend: ``"torch"`` (chunked matmul + top-k) or ``"cluster"`` (torch-cluster).

    Returns:
        neighbour indices ``(B, N, k)``, int64, on ``x.device``.
    """
    check_features(x, "x", dims=(3,), finite=False)     # finiteness: checked on |x|^2 below
    _check_knn_args(x.shape[2], k, dilation, f"x with shape {tuple(x.shape)}")
    x = x.detach()
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    ranks = _select_ranks(k, dilation, stochastic, epsilon, training, x.device)
    if backend == "torch":
        return _knn_select_torch(x, k, dilation, ranks, memory_budget)
    cand = _knn_candidates_cluster(x, k * dilation)
    return _apply_ranks(cand, dilation, ranks).contiguous()


def dilated_knn_graph(pos: Tensor, k: int, batch: Tensor | None = None, dilation: int = 1, *,
                      stochastic: bool = False, epsilon: float = 0.0, training: bool = False,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET, backend: str = "torch") -> Tensor:
    """Dilated kNN for a batch of variable-size clouds in the sparse representation.

    Args:
        pos: node features ``(N, C)``.
        batch: cloud id of every node ``(N,)``; any order (clouds need not be contiguous or sorted).

    Returns:
        ``edge_index (2, N*k)``: row 0 the neighbour ``j``, row 1 the centre ``i`` (sorted by ``i``).
    """
    check_features(pos, "pos", dims=(2,))
    N = pos.shape[0]
    if batch is None:
        batch = torch.zeros(N, dtype=torch.long, device=pos.device)
    if batch.dim() != 1 or batch.shape[0] != N:
        raise ValueError(f"batch must have shape ({N},), got {tuple(batch.shape)}")
    if batch.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"batch must be an integer tensor, got dtype {batch.dtype}")
    order = torch.argsort(batch, stable=True)
    ids, counts = torch.unique_consecutive(batch[order], return_counts=True)
    nbr = torch.empty(N, k, dtype=torch.long, device=pos.device)
    ranks = _select_ranks(k, dilation, stochastic, epsilon, training, pos.device)
    start = 0
    for cid, n in zip(ids.tolist(), counts.tolist()):
        members = order[start:start + n]
        start += n
        _check_knn_args(n, k, dilation, f"cloud {cid} (batch value {cid})")
        sub = pos[members].detach().t().unsqueeze(0)          # (1, C, n)
        if backend == "torch":
            sel = _knn_select_torch(sub, k, dilation, ranks, memory_budget)[0]
        elif backend == "cluster":
            sel = _apply_ranks(_knn_candidates_cluster(sub, k * dilation)[0], dilation, ranks)
        else:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        nbr[members] = members[sel]
    centre = torch.arange(N, device=pos.device).repeat_interleave(k)
    return torch.stack([nbr.reshape(-1), centre])


class DilatedKnn(nn.Module):
    """Module form of :func:`dilated_knn` / :func:`dilated_knn_graph`; stochastic only in training.

    Dense input ``(B, C, N)`` gives ``(B, N, k)`` indices; sparse input ``(N, C)`` (with ``batch``)
    gives ``edge_index``.
    """

    def __init__(self, k: int = 16, dilation: int = 1, stochastic: bool = False, epsilon: float = 0.0,
                 memory_budget: int = DEFAULT_MEMORY_BUDGET, backend: str = "torch") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.k, self.dilation = k, dilation
        self.stochastic, self.epsilon = stochastic, epsilon
        self.memory_budget, self.backend = memory_budget, backend

    def forward(self, x: Tensor, batch: Tensor | None = None) -> Tensor:
        kw = dict(stochastic=self.stochastic, epsilon=self.epsilon, training=self.training,
                  memory_budget=self.memory_budget, backend=self.backend)
        if x.dim() == 3:
            return dilated_knn(x, self.k, self.dilation, **kw)
        return dilated_knn_graph(x, self.k, batch, self.dilation, **kw)

    def extra_repr(self) -> str:
        s = f"k={self.k}, dilation={self.dilation}"
        if self.stochastic:
            s += f", stochastic=True, epsilon={self.epsilon}"
        return s
