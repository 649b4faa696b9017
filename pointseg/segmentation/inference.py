"""Per-point prediction on whole rooms and scans by sliding blocks with soft voting.

The room is cut into ``block_size`` columns at ``stride`` (overlapping for stride < block size);
``cover=True`` splits dense columns into several 4096-point blocks so every original point is
seen at least once. Softmax scores of every block are summed onto the original points (over
overlapping blocks and ``repeats`` random draws); a point that received no vote takes the label of
its nearest voted point.

Memory is bounded for large scans by processing the room in ``tile_size`` x ``tile_size`` tiles:
a tile's points are predicted from the blocks of the tile grown by one block on every side, which
are exactly the blocks that touch the tile, so tiling does not change what a point sees. Only
occupied tiles are visited (integer cell keys of the points), and inside a tile only the columns
that hold one of its points are cut, so time and memory follow the points, not the bounding box.
A column with fewer points than a block is evaluated on its own points, each counted as often as
the padded block would repeat it (:mod:`pointseg.segmentation.compact`: the padded block's result for
max-aggregating models), so a sparse column costs its points, not a block.

Extreme outliers (a point kilometres away from the rest) would stretch the room normalisation
(channels 6-8) for every other point: points farther than ``OUTLIER_FACTOR`` times the bulk's
robust size (0.1-99.9 percentile box) outside that box are left out of the blocks, counted in the
stats, and take the label of their nearest inlier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.block_gen import room_normalization, room_to_blocks
from .forward import block_scores
from .compact import compact_limit, compact_scores, compact_supported, cut_columns


OUTLIER_FACTOR = 4.0
MAX_REPEATS = 1000
MAX_BATCH = 65536
MAX_CELLS_PER_AXIS = 2.0 ** 40   # integer cell keys stay exact far below int64's range


@dataclass
class SlidingConfig:
    """Sliding-block settings; invalid values raise ``ValueError`` naming the CLI option."""

    # None: the checkpoint's input recipe (segmentation.checkpoint.sliding_for); 1 m / 0.5 m / 4096 for S3DIS
    block_size: float | None = None
    stride: float | None = None
    num_points: int | None = None  # points per block
    repeats: int = 1
    batch_size: int = 8
    tile_size: float = 8.0        # metres
    seed: int = 0
    # columns of few points at the cost of their points (engine.compact; same labels up to near-ties)
    compact: bool = True

    def __post_init__(self) -> None:
        def finite_positive(name: str, v: float) -> None:
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        # None: filled from the checkpoint's recipe later (a new SlidingConfig, checked again)
        if self.block_size is not None:
            finite_positive("block size", self.block_size)
        if self.stride is not None:
            finite_positive("--stride", self.stride)
        finite_positive("--tile-size", self.tile_size)
        if self.block_size is not None:
            if self.stride is not None and self.stride > self.block_size:
                raise ValueError(f"--stride must be at most the block size {self.block_size:g} m, got {self.stride:g}")
            if self.stride is not None and self.stride < self.block_size / 100:
                raise ValueError(f"--stride must be at least 1/100 of the block size ({self.block_size / 100:g} m), "
                                 f"got {self.stride:g}")
            if self.tile_size < self.block_size:
                raise ValueError(f"--tile-size must be at least the block size {self.block_size:g} m, "
                                 f"got {self.tile_size:g}")
        if not 1 <= self.repeats <= MAX_REPEATS:
            raise ValueError(f"--repeats must be between 1 and {MAX_REPEATS}, got {self.repeats}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"--batch-size must be between 1 and {MAX_BATCH}, got {self.batch_size}")
        if self.num_points is not None and not 1 <= self.num_points <= 1_000_000:
            raise ValueError(f"points per block must be between 1 and 1,000,000, got {self.num_points}")


def robust_box(xyz: np.ndarray, factor: float = OUTLIER_FACTOR) -> tuple[np.ndarray, np.ndarray] | None:
    """The box outside which a point is an outlier: the bulk's 0.1-99.9 % order statistics box
    (the lower and the higher order statistic, no interpolation, so a streamed scan computes the
    same box exactly from counts: :func:`pointseg.segmentation.stream.order_statistics`) grown by
    ``factor`` x its largest side (at least 1 m); None under 100 points (nothing is an outlier)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) < 100:
        return None
    lo_k, hi_k = box_ranks(len(xyz))
    lo = np.partition(xyz, lo_k, axis=0)[lo_k]
    hi = np.partition(xyz, hi_k, axis=0)[hi_k]
    return box_from_bulk(lo, hi, factor)


def box_ranks(n: int) -> tuple[int, int]:
    """The order statistics (0-based ranks) bounding the bulk of ``n`` values: 0.1 % and 99.9 %."""
    return int(np.floor(0.001 * (n - 1))), int(np.ceil(0.999 * (n - 1)))


def box_from_bulk(lo: np.ndarray, hi: np.ndarray, factor: float = OUTLIER_FACTOR) -> tuple[np.ndarray, np.ndarray]:
    margin = factor * max(float((hi - lo).max()), 1.0)
    return np.asarray(lo, dtype=np.float64) - margin, np.asarray(hi, dtype=np.float64) + margin


def outside(xyz: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """True for points outside ``box`` (:func:`robust_box`; None: no point is)."""
    if box is None:
        return np.zeros(len(xyz), dtype=bool)
    xyz = np.asarray(xyz, dtype=np.float64)
    return ((xyz < box[0]) | (xyz > box[1])).any(axis=1)


def outlier_mask(xyz: np.ndarray, factor: float = OUTLIER_FACTOR) -> np.ndarray:
    """True for points more than ``factor`` x the bulk's size outside its 0.1-99.9 % box."""
    return outside(xyz, robust_box(xyz, factor))


def occupied_tiles(xy: np.ndarray, lo: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer keys ``(T, 2)`` of the tiles that hold a point, and each point's tile number."""
    cells = np.floor((np.asarray(xy, dtype=np.float64) - lo) / size)
    if cells.size and cells.max() > MAX_CELLS_PER_AXIS:
        raise ValueError(f"the scan spans {cells.max() * size:.3g} m across: too large to tile "
                         f"(more than {MAX_CELLS_PER_AXIS:.3g} tiles of {size:g} m per axis)")
    keys, inverse = np.unique(cells.astype(np.int64), axis=0, return_inverse=True)
    return keys, inverse.reshape(-1)


def occupied_corners(shifted_xy: np.ndarray, extent: np.ndarray, block_size: float,
                     stride: float) -> list[tuple[float, float]]:
    """Min corners (x-major) of the release grid's columns that may hold one of ``shifted_xy``
    (a superset: an empty column is dropped by ``room_to_blocks``)."""
    n_axis = np.maximum(np.ceil((extent[:2] - block_size) / stride).astype(np.int64) + 1, 1)
    cells = np.unique(np.floor(shifted_xy / stride).astype(np.int64), axis=0)
    reach = int(np.ceil(block_size / stride))
    offs = np.array([(a, b) for a in range(reach + 1) for b in range(reach + 1)], dtype=np.int64)
    cand = (cells[:, None, :] - offs[None]).reshape(-1, 2)
    cand = cand[((cand >= 0) & (cand < n_axis)).all(axis=1)]
    cand = np.unique(cand, axis=0)          # lexicographic: x outer, y inner, as the release
    return [(i * stride, j * stride) for i, j in cand.tolist()]


@dataclass
class PointScores:
    """What the soft vote gives every point: ``labels`` int64 ``(N,)`` (the argmax of the summed
    votes); ``confidence`` float32 ``(N,)``, the winning class's share of the point's votes (its
    averaged softmax probability); ``probabilities`` float32 ``(N, C)``, the averaged softmax, only
    when asked for (it is ``C`` times the memory of the labels); ``stats`` as :func:`predict_points`.
    A point that received no vote, or an outlier, takes the votes of the point whose label it takes."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None
    stats: dict[str, Any]


@torch.no_grad()
def predict_points(model: torch.nn.Module, xyz: np.ndarray, rgb: np.ndarray | None, num_classes: int,
                   device: torch.device, cfg: SlidingConfig | None = None,
                   progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Label every point of ``xyz (N, 3)``; returns ``(labels int64 (N,), stats)``."""
    scores = score_points(model, xyz, rgb, num_classes, device, cfg, progress)
    return scores.labels, scores.stats


def resolved(cfg: SlidingConfig | None) -> SlidingConfig:
    """``cfg`` with the S3DIS block recipe where block size or stride are unset."""
    cfg = cfg or SlidingConfig()
    if cfg.num_points is None:
        raise ValueError("SlidingConfig.num_points is unset (take it from the checkpoint's input recipe: "
                         "segmentation.checkpoint.sliding_for)")
    if cfg.block_size is None or cfg.stride is None:
        from dataclasses import replace
        from ..data.recipe import S3DIS_RECIPE
        cfg = replace(cfg, block_size=cfg.block_size or S3DIS_RECIPE.block_size,
                      stride=cfg.stride or S3DIS_RECIPE.stride)
    return cfg


def grown_mask(x: np.ndarray, y: np.ndarray, tx: float, ty: float, size: float, margin: float) -> np.ndarray:
    """The points of the tile with min corner ``(tx, ty)`` grown by ``margin`` on every side: the
    points of every block that touches the tile (``x``, ``y`` float32, compared as such)."""
    return (x >= tx - margin) & (x <= tx + size + margin) & (y >= ty - margin) & (y <= ty + size + margin)


class TileScorer:
    """Soft votes for the points of one tile at a time, in tile order (the random draws of the
    padded blocks run on, tile after tile, from ``cfg.seed``): the loop of :func:`score_points`
    and of the streamed segmentation (:mod:`pointseg.segmentation.stream`) share it, so a streamed
    scan gets a whole-scan run's labels. ``stats`` counts blocks, compact blocks, unvoted points."""

    def __init__(self, model: torch.nn.Module, num_classes: int, device: torch.device, cfg: SlidingConfig,
                 norm: Any, probabilities: bool = False) -> None:
        self.model, self.num_classes, self.device, self.cfg, self.norm = model, num_classes, device, cfg, norm
        self.probabilities = probabilities
        self.rng = np.random.default_rng(cfg.seed)
        # a sparse column costs its points, not a block (segmentation.compact), when the model allows it
        self.compact_max = compact_limit(cfg.num_points) if cfg.compact and compact_supported(model) else 0
        self.stats = {"blocks": 0, "compact_blocks": 0, "unvoted_points": 0, "tiles": 0}

    @torch.no_grad()
    def score(self, pts: np.ndarray, rgb: np.ndarray | None, local: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels, confidences and (when asked) class shares of the tile's own points
        ``pts[local]``; ``pts`` ``(S, 3)`` float32 are the points of the grown tile
        (:func:`grown_mask`) in the scan's order, ``rgb`` their colours."""
        from scipy.spatial import cKDTree
        cfg, c = self.cfg, self.num_classes
        corners = occupied_corners(self.norm.shift(pts[local])[:, :2], self.norm.extent, cfg.block_size,
                                   cfg.stride)
        votes = torch.zeros(len(pts), c)
        for _ in range(cfg.repeats):
            cols = cut_columns(pts, rgb, cfg.block_size, cfg.stride, cfg.num_points, self.rng, self.norm,
                               corners, self.compact_max)
            self.stats["blocks"] += len(cols)
            self.stats["compact_blocks"] += len(cols.compact_indices)
            if len(cols.blocks):
                scores = block_scores(self.model, cols.blocks, self.device, cfg.batch_size)
                votes.index_add_(0, torch.from_numpy(cols.indices.reshape(-1)), scores.reshape(-1, c))
            if cols.compact_indices:
                # every copy of the padded block voted: a point's vote counts its multiplicity
                cs = compact_scores(self.model, cols.compact_feats, cols.compact_mults, self.device,
                                    cfg.batch_size * cfg.num_points)
                weighted = np.concatenate([sc * m[:, None].astype(np.float32)
                                           for m, sc in zip(cols.compact_mults, cs)])
                votes.index_add_(0, torch.from_numpy(np.concatenate(cols.compact_indices)),
                                 torch.from_numpy(weighted))
        v = votes[torch.from_numpy(local)]
        voted = (v.sum(1) > 0).numpy()
        lab = v.argmax(1).numpy()
        if not voted.all():
            have = np.flatnonzero((votes.sum(1) > 0).numpy())
            if len(have) == 0:
                raise ValueError("no block could be formed from the points (empty scan?)")
            _, nn_idx = cKDTree(pts[have]).query(pts[local[~voted]])
            lab[~voted] = votes[torch.from_numpy(have[nn_idx])].argmax(1).numpy()
            # the nearest voted point's votes too, so confidence and probabilities match its label
            v = v.clone()
            v[torch.from_numpy(~voted)] = votes[torch.from_numpy(have[nn_idx])]
            self.stats["unvoted_points"] += int((~voted).sum())
        # Votes are sums of softmax rows (each sums to 1): their share is the averaged probability.
        # The labels stay the argmax of the raw sums.
        share = v / v.sum(1, keepdim=True)
        conf = share.gather(1, torch.from_numpy(lab).long()[:, None])[:, 0].numpy()
        self.stats["tiles"] += 1
        return lab, conf, share.numpy() if self.probabilities else None


@torch.no_grad()
def score_points(model: torch.nn.Module, xyz: np.ndarray, rgb: np.ndarray | None, num_classes: int,
                 device: torch.device, cfg: SlidingConfig | None = None, progress: bool = False,
                 probabilities: bool = False) -> PointScores:
    """:func:`predict_points` with each point's confidence, and its class probabilities when
    ``probabilities`` (labels and stats are the same)."""
    from scipy.spatial import cKDTree
    from tqdm import tqdm

    cfg = resolved(cfg)
    model.eval()
    xyz = np.asarray(xyz, dtype=np.float32)
    n = len(xyz)
    if n == 0:
        raise ValueError("no points to segment")
    labels = np.zeros(n, dtype=np.int64)
    confidence = np.zeros(n, dtype=np.float32)
    probs = np.zeros((n, num_classes), dtype=np.float32) if probabilities else None
    far = outlier_mask(xyz)
    inl = np.flatnonzero(~far)
    pts = xyz[inl]
    prgb = None if rgb is None else rgb[inl]
    norm = room_normalization(pts)
    lo = pts[:, :2].min(0).astype(np.float64)
    keys, tile_of = occupied_tiles(pts[:, :2], lo, cfg.tile_size)
    order = np.argsort(tile_of, kind="stable")
    starts = np.searchsorted(tile_of[order], np.arange(len(keys) + 1))
    x, y = pts[:, 0], pts[:, 1]
    inl_labels = np.zeros(len(pts), dtype=np.int64)
    inl_conf = np.zeros(len(pts), dtype=np.float32)
    inl_probs = np.zeros((len(pts), num_classes), dtype=np.float32) if probabilities else None
    scorer = TileScorer(model, num_classes, device, cfg, norm, probabilities)
    bar = tqdm(total=n, unit="pt", unit_scale=True, desc="segment", disable=not progress, dynamic_ncols=True)
    for t, (kx, ky) in enumerate(keys.tolist()):
        inner_idx = order[starts[t]:starts[t + 1]]           # ascending within a tile (stable sort)
        tx, ty = lo[0] + kx * cfg.tile_size, lo[1] + ky * cfg.tile_size
        sel = np.flatnonzero(grown_mask(x, y, tx, ty, cfg.tile_size, cfg.block_size))
        # positions of the tile's own points inside the grown selection
        lab, conf, share = scorer.score(pts[sel], None if prgb is None else prgb[sel],
                                        np.searchsorted(sel, inner_idx))
        inl_labels[inner_idx] = lab
        inl_conf[inner_idx] = conf
        if inl_probs is not None:
            inl_probs[inner_idx] = share
        bar.set_postfix_str(f"tile {t + 1}/{len(keys)}", refresh=False)
        bar.update(len(inner_idx))
    labels[inl] = inl_labels
    confidence[inl] = inl_conf
    if probs is not None:
        probs[inl] = inl_probs
    if far.any():
        _, nn_idx = cKDTree(pts.astype(np.float64)).query(xyz[far].astype(np.float64))
        labels[far] = inl_labels[nn_idx]
        confidence[far] = inl_conf[nn_idx]
        if probs is not None:
            probs[far] = inl_probs[nn_idx]
        bar.update(int(far.sum()))
    bar.close()
    stats = {**scorer.stats, "occupied_tiles": len(keys), "outliers": int(far.sum())}
    return PointScores(labels, confidence, probs, stats)


@torch.no_grad()
def block_level_confusion(model: torch.nn.Module, xyz: np.ndarray, rgb: np.ndarray | None, label: np.ndarray,
                          num_classes: int, device: torch.device, batch_size: int = 8,
                          seed: int = 0, num_points: int = 4096, block_size: float = 1.0) -> np.ndarray:
    """Confusion over the points of the test blocks (``block_size`` columns at a stride of one
    block, >= 100 points, ``num_points`` sampled: the checkpoint's recipe), the way the reference
    code scored (duplicated points counted, unsampled points ignored)."""
    from ..metrics import confusion_matrix
    blocks, idx = room_to_blocks(xyz, rgb, block_size, block_size, num_points, min_points=100, rng=seed)
    if len(blocks) == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    pred = block_scores(model, blocks, device, batch_size).argmax(-1).numpy()
    return confusion_matrix(label[idx].reshape(-1), pred.reshape(-1), num_classes)
