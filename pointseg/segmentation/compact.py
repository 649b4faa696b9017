"""Sparse columns at the cost of their points (issue 27): the *compact* evaluation of a block.

The sliding inference pads a column of ``n < num_points`` points to ``num_points`` with random
duplicates (the release's sampling): every point appears once, and ``num_points - n`` random draws
repeat some of them, so point ``i`` appears ``m_i >= 1`` times (its *multiplicity*). A column with
one point used to cost a whole 4,096-point block.

The networks pointseg segments with (DGCNN, ResGCN / DenseGCN / PlainGCN, MR-GCN) only do three
things with a block's points: per-point layers (1x1 convs, BatchNorm in eval, activations,
dropout in eval), a max over each point's ``k`` nearest neighbours (dilated: ranks ``0, d, ..,
(k-1)d``) and a max over all points. Copies of a point carry identical features through all of
them, and a max over a multiset equals the max over its distinct members. So the padded block's
output on point ``i`` is the output of a block of the ``n`` distinct points in which the kNN walks
the distance-sorted distinct points (``i`` first) counting each ``m_j`` times: rank ``r`` falls on
the distinct point whose cumulative multiplicity first exceeds ``r``. That is what
:func:`multiset_knn` computes, and the network then runs on ``n`` points instead of
``num_points`` — the same labels for ``n`` points' work. The votes of the padded block add
every copy's scores to its point, so a point's vote is weighted by ``m_i`` here too.

The rule (:func:`compact_limit`): a column whose points fit a compact block smaller than
``num_points`` (3,584 of 4,096) is evaluated compactly, with the multiplicities of the same random
draw its padded block would take (so the random stream, and every full column's blocks, are
unchanged); fuller columns are padded as before (they cost at most 8/7 of their points). Compact
blocks are batched by size (:func:`bucket_of`: ``n`` rounded up by under a quarter); the empty
places of a bucket hold copies of the block's first point with multiplicity 0, which hold no
neighbour rank and equal that point in every feature, so they change neither the neighbours nor
the global max.

Exact in exact arithmetic; in float32 the neighbour order of two candidates at distances equal
to rounding (a padded block's copies are at distance ~1e-7, not 0) may differ, so a few points in
a near-tie may take another label (measured: tools/bench_sparse_segment.py).

Only models built from the layers above qualify (:func:`compact_supported`); any other module (an
instance norm over the points, a sum or mean aggregation, attention, a reversible or equilibrium
backbone, a user's model) keeps the padded path.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.block_gen import RoomNorm, _columns, _sample, cover_rows

MIN_BUCKET = 16           # smallest compact block size (points, padded with multiplicity 0)
SMALL_FORWARD = 16384     # compact forwards of fewer points run on one thread (see compact_scores)


def _allowed(m: nn.Module) -> bool:
    """Whether ``m`` is a layer whose output on a point depends on nothing but that point, its
    kNN neighbours through a max, or the max over all points (see the module docstring)."""
    from ..models.dgcnn import DGCNN
    from ..models.seg_gcn import SegGCN
    from ..nn import ConvNormAct, DilatedKnn, EdgeConv, EdgeMLPConv, GCNBlock, MLP, MRConv, Pointwise
    from ..nn.global_max import GlobalMax
    from ..nn.mlp import ChannelNorm
    if isinstance(m, (EdgeConv, EdgeMLPConv)):
        return m.aggr == "max"
    if isinstance(m, ChannelNorm):
        return m.kind in ("batch", "layer")
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return not m.training                        # training statistics would see the batch
    if isinstance(m, SegGCN):
        return m.cfg.backbone != "rev"
    if isinstance(m, DilatedKnn):
        return not (m.stochastic and m.training)
    return isinstance(m, (DGCNN, GCNBlock, MRConv, ConvNormAct, Pointwise, MLP, GlobalMax, nn.LayerNorm,
                          nn.ModuleList, nn.Sequential, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Dropout,
                          nn.Conv1d, nn.Linear))


def compact_supported(model: nn.Module) -> bool:
    """True when every module of ``model`` is one of the layers the compact evaluation is exact
    for, and it has at least one kNN (else there is nothing to count multiplicities in)."""
    from ..nn import DilatedKnn
    mods = list(model.modules())
    return any(isinstance(m, DilatedKnn) for m in mods) and all(_allowed(m) for m in mods)


def multiset_knn(x: Tensor, mult: Tensor, k: int, dilation: int) -> Tensor:
    """The dilated kNN of the padded block, on its distinct points.

    ``x (B, C, N)`` features of the distinct points, ``mult (B, N)`` how often each appears in the
    padded block (0: an empty place, a copy of entry 0). Returns ``(B, N, k)`` int64 indices:
    for ranks ``r = 0, d, .., (k-1)d`` of the multiset ordered by distance (the point itself
    first, ties by lower index, as :func:`~pointseg.nn.knn.dilated_knn` orders them), the distinct
    point holding rank ``r``.
    """
    from ..nn.knn import dilated_knn
    b, _, n = x.shape
    need = (k - 1) * dilation + 1
    # Each distinct point holds >= 1 rank, so ``need`` of them suffice -- plus the empty places,
    # which may come first (they are copies of entry 0) but hold no rank (multiplicity 0).
    empty = int((mult == 0).sum(1).max())
    m = min(need + empty, n)
    idx = dilated_knn(x.detach(), m, 1)                         # (B, N, m): self first, sorted
    cum = torch.gather(mult[:, None, :].expand(b, n, n), -1, idx).cumsum(-1)
    ranks = (torch.arange(k, device=x.device) * dilation).expand(b, n, k).contiguous()
    pos = torch.searchsorted(cum, ranks, right=True).clamp_(max=m - 1)
    out = idx.gather(-1, pos)
    # an empty place computes exactly what its original (entry 0) computes
    return torch.where((mult == 0)[:, :, None], out[:, :1, :], out).contiguous()


@contextlib.contextmanager
def _multiset_graphs(model: nn.Module, mult: Tensor) -> Iterator[None]:
    """Every kNN of ``model`` answers with :func:`multiset_knn` for ``mult`` while inside."""
    from ..nn import DilatedKnn
    knns = [m for m in model.modules() if isinstance(m, DilatedKnn)]

    def make(mod: DilatedKnn):
        def forward(x: Tensor, batch: Tensor | None = None) -> Tensor:
            if x.dim() != 3 or batch is not None:
                raise RuntimeError("compact evaluation needs dense (B, C, N) input")
            return multiset_knn(x, mult, mod.k, mod.dilation)
        return forward
    try:
        for mod in knns:
            mod.forward = make(mod)          # an instance attribute: nn.Module.__call__ finds it first
        yield
    finally:
        for mod in knns:
            mod.__dict__.pop("forward", None)


def bucket_of(n: int) -> int:
    """The compact block size a column of ``n`` points is evaluated in: ``n`` rounded up to a
    multiple of an eighth of the power of two above it (under a quarter empty places), at least
    ``MIN_BUCKET``: few sizes, so blocks batch, and little waste."""
    n = max(int(n), MIN_BUCKET)
    step = max(1 << max((n - 1).bit_length() - 3, 0), MIN_BUCKET // 2)
    return -(-n // step) * step


def compact_limit(num_points: int) -> int:
    """The most points a column may hold to be evaluated compactly: its bucket is under ``num_points``."""
    n = num_points - 1
    while n > 0 and bucket_of(n) >= num_points:
        n -= 1
    return n


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if n < before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n < before:
            torch.set_num_threads(before)


@torch.no_grad()
def compact_scores(model: nn.Module, feats: Sequence[np.ndarray], mults: Sequence[np.ndarray],
                   device: torch.device, max_points: int) -> list[np.ndarray]:
    """Softmax scores ``(n_b, C)`` of compact blocks: ``feats[b]`` the 9 channels ``(n_b, 9)`` of a
    column's distinct points, ``mults[b]`` their multiplicities. Blocks of one bucket are batched,
    up to ``max_points`` points per forward.

    A forward of fewer than ``SMALL_FORWARD`` points runs on one thread: its parallel regions are
    too short to pay for waking a second one (a 64-point DGCNN forward took 6 ms on one thread and
    370 ms on two, on this project's 2-core CPU under load)."""
    from .forward import _spans, prepared, run_jobs, worker_count
    plan = prepared(model) if torch.device(device).type == "cpu" else None
    out: list[np.ndarray | None] = [None] * len(feats)
    by_bucket: dict[int, list[int]] = {}
    for i, f in enumerate(feats):
        by_bucket.setdefault(bucket_of(len(f)), []).append(i)
    jobs = []
    for size, members in sorted(by_bucket.items()):
        per = max(1, max_points // size)
        # the folded path spreads forwards over worker threads: a bucket is split so each gets some
        spans = _spans(len(members), per, worker_count()) if plan is not None else \
            [(s, min(len(members), s + per)) for s in range(0, len(members), per)]
        for s, e in spans:
            chunk = members[s:e]
            x = np.empty((len(chunk), size, feats[chunk[0]].shape[1]), dtype=np.float32)
            mult = np.zeros((len(chunk), size), dtype=np.int64)
            for r, i in enumerate(chunk):
                n = len(feats[i])
                x[r, :n] = feats[i]
                x[r, n:] = feats[i][0]                   # copies of the first point, multiplicity 0
                mult[r, :n] = mults[i]
            if plan is not None:
                jobs.append(_folded_job(plan, x, mult, chunk, feats, out))
                continue
            xt = torch.from_numpy(x).to(device).transpose(1, 2).contiguous()
            mt = torch.from_numpy(mult).to(device)
            with _multiset_graphs(model, mt), _threads(1 if x.shape[0] * size < SMALL_FORWARD else 1 << 30):
                prob = torch.softmax(model(xt).float(), dim=1).transpose(1, 2).cpu().numpy()
            for r, i in enumerate(chunk):
                out[i] = prob[r, :len(feats[i])]
    # the folded DGCNN: one forward per Python thread, each on one intra-op thread (forward.run_jobs)
    run_jobs(jobs)
    return out  # type: ignore[return-value]


def _folded_job(plan, x: np.ndarray, mult: np.ndarray, chunk: list[int], feats: Sequence[np.ndarray],
                out: list) -> Callable[[], None]:
    """One compact forward of the folded DGCNN (:class:`~pointseg.models.dgcnn.FoldedDGCNN`), its
    kNN the multiset kNN of ``mult``; fills ``out`` at ``chunk``."""
    def run() -> None:
        knn = plan.model.knn
        mt = torch.from_numpy(mult)
        with _threads(1 if x.shape[0] * x.shape[1] < SMALL_FORWARD else 1 << 30):
            logits = plan(torch.from_numpy(x), knn=lambda f: multiset_knn(f, mt, knn.k, knn.dilation))
        prob = torch.softmax(logits.float(), dim=-1).numpy()
        for r, i in enumerate(chunk):
            out[i] = prob[r, :len(feats[i])]
    return run


class ColumnBlocks:
    """The blocks of some columns: padded or dense ones as :func:`room_to_blocks` cuts them
    (``blocks (B, P, 9)``, ``indices (B, P)``), and compact ones (``compact_indices[b]`` the
    column's points, ascending, ``compact_mults[b]`` their multiplicities, ``compact_feats[b]``
    their 9 channels)."""

    def __init__(self, blocks: np.ndarray, indices: np.ndarray, compact_indices: list[np.ndarray],
                 compact_mults: list[np.ndarray], compact_feats: list[np.ndarray]) -> None:
        self.blocks, self.indices = blocks, indices
        self.compact_indices, self.compact_mults, self.compact_feats = compact_indices, compact_mults, compact_feats

    def __len__(self) -> int:
        return len(self.blocks) + len(self.compact_indices)


def _channels(shifted: np.ndarray, colour: np.ndarray, scale: np.ndarray, rows: np.ndarray,
              block_size: float) -> np.ndarray:
    """The 9 block channels of points ``rows (..., P)`` (as :func:`room_to_blocks` computes them)."""
    pts = shifted[rows]
    out = np.empty(rows.shape + (9,), dtype=np.float32)
    out[..., 6:9] = pts / scale
    centre = pts[..., :2].min(axis=-2, keepdims=True) + block_size / 2
    out[..., 0:2] = pts[..., :2] - centre
    out[..., 2] = pts[..., 2]
    out[..., 3:6] = colour[rows]
    return out


def cut_columns(xyz: np.ndarray, rgb: np.ndarray | None, block_size: float, stride: float, num_points: int,
                rng: np.random.Generator, norm: RoomNorm, corners: Sequence[tuple[float, float]],
                compact_max: int) -> ColumnBlocks:
    """:func:`room_to_blocks` with ``cover=True, min_points=1`` (release sampling), except that a
    column of at most ``compact_max`` points is returned compact, with the multiplicities of the
    very draw its padded block would have taken (the random stream is consumed identically, so
    every other block is the same as :func:`room_to_blocks` gives)."""
    shifted = norm.shift(xyz)
    scale = np.where(norm.extent > 0, norm.extent, 1.0)
    colour = np.zeros_like(shifted) if rgb is None else np.asarray(rgb, dtype=np.float64) / 255.0
    rows: list[np.ndarray] = []
    c_idx: list[np.ndarray] = []
    c_mult: list[np.ndarray] = []
    for idx in _columns(shifted, block_size, stride, norm.extent, corners):
        n = len(idx)
        if n == 0:
            continue
        if n > num_points:                      # as room_to_blocks(cover=True)
            rows += cover_rows(idx, num_points, rng)
            continue
        pick = _sample(n, num_points, rng, "release")
        if n <= compact_max:
            c_idx.append(idx)
            c_mult.append(np.bincount(pick, minlength=n).astype(np.int64))
        else:
            rows.append(idx[pick])
    if rows:
        index = np.stack(rows).astype(np.int64)
        blocks = _channels(shifted, colour, scale, index, block_size)
    else:
        index = np.zeros((0, num_points), dtype=np.int64)
        blocks = np.zeros((0, num_points, 9), dtype=np.float32)
    feats = [_channels(shifted, colour, scale, i, block_size) for i in c_idx]
    return ColumnBlocks(blocks, index, c_idx, c_mult, feats)
