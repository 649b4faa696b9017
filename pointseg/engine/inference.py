"""Per-point prediction on whole rooms and scans by sliding blocks with soft voting.

The room is cut into ``block_size`` columns at ``stride`` (overlapping for stride < block size);
``cover=True`` splits dense columns into several 4096-point blocks so every original point is
seen at least once. Softmax scores of every block are summed onto the original points (over
overlapping blocks and ``repeats`` random draws); a point that received no vote takes the label of
its nearest voted point.

Memory is bounded for large scans by processing the room in ``tile_size`` x ``tile_size`` tiles:
a tile's points are predicted from the blocks of the tile grown by one block on every side, which
are exactly the blocks that touch the tile, so tiling does not change what a point sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.block_gen import room_normalization, room_to_blocks


@dataclass
class SlidingConfig:
    # None: the checkpoint's input recipe (engine.checkpoint.sliding_for); 1 m / 0.5 m / 4096 for S3DIS
    block_size: float | None = None
    stride: float | None = None
    num_points: int | None = None  # points per block
    repeats: int = 1
    batch_size: int = 8
    tile_size: float = 8.0        # metres
    seed: int = 0


def _tiles(lo: np.ndarray, hi: np.ndarray, size: float) -> list[tuple[float, float, float, float]]:
    nx = max(1, int(np.ceil((hi[0] - lo[0]) / size)))
    ny = max(1, int(np.ceil((hi[1] - lo[1]) / size)))
    return [(lo[0] + i * size, lo[1] + j * size, nx - 1 == i, ny - 1 == j) for i in range(nx) for j in range(ny)]


@torch.no_grad()
def _block_scores(model: torch.nn.Module, blocks: np.ndarray, device: torch.device,
                  batch_size: int) -> torch.Tensor:
    """Softmax scores ``(B, P, C)`` of 9-channel blocks ``(B, P, 9)``."""
    out = []
    for s in range(0, len(blocks), batch_size):
        x = torch.from_numpy(blocks[s:s + batch_size]).to(device).transpose(1, 2).contiguous()
        out.append(torch.softmax(model(x).float(), dim=1).transpose(1, 2).cpu())
    return torch.cat(out)


@torch.no_grad()
def predict_points(model: torch.nn.Module, xyz: np.ndarray, rgb: np.ndarray | None, num_classes: int,
                   device: torch.device, cfg: SlidingConfig | None = None,
                   progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Label every point of ``xyz (N, 3)``; returns ``(labels int64 (N,), stats)``."""
    from scipy.spatial import cKDTree
    from tqdm import tqdm

    cfg = cfg or SlidingConfig()
    if cfg.num_points is None:
        raise ValueError("SlidingConfig.num_points is unset (take it from the checkpoint's input recipe: "
                         "engine.checkpoint.sliding_for)")
    if cfg.block_size is None or cfg.stride is None:      # the S3DIS block recipe
        from dataclasses import replace
        cfg = replace(cfg, block_size=cfg.block_size or 1.0, stride=cfg.stride or 0.5)
    model.eval()
    xyz = np.asarray(xyz, dtype=np.float32)
    n = len(xyz)
    if n == 0:
        raise ValueError("no points to segment")
    norm = room_normalization(xyz)
    labels = np.zeros(n, dtype=np.int64)
    stats = {"blocks": 0, "unvoted_points": 0, "tiles": 0}
    lo, hi = xyz[:, :2].min(0), xyz[:, :2].max(0)
    rng = np.random.default_rng(cfg.seed)
    margin = cfg.block_size
    bar = tqdm(total=n, unit="pt", unit_scale=True, desc="segment", disable=not progress, dynamic_ncols=True)
    for tx, ty, last_x, last_y in _tiles(lo, hi, cfg.tile_size):
        x, y = xyz[:, 0], xyz[:, 1]
        inner = (x >= tx) & (y >= ty) & ((x < tx + cfg.tile_size) | last_x) & ((y < ty + cfg.tile_size) | last_y)
        inner_idx = np.flatnonzero(inner)
        if len(inner_idx) == 0:
            continue
        grown = ((x >= tx - margin) & (x <= tx + cfg.tile_size + margin)
                 & (y >= ty - margin) & (y <= ty + cfg.tile_size + margin))
        sel = np.flatnonzero(grown)
        votes = torch.zeros(len(sel), num_classes)
        for _ in range(cfg.repeats):
            blocks, idx = room_to_blocks(xyz[sel], None if rgb is None else rgb[sel], cfg.block_size, cfg.stride,
                                         cfg.num_points, min_points=1, rng=rng, cover=True, norm=norm)
            if len(blocks) == 0:
                continue
            stats["blocks"] += len(blocks)
            scores = _block_scores(model, blocks, device, cfg.batch_size)
            votes.index_add_(0, torch.from_numpy(idx.reshape(-1)), scores.reshape(-1, num_classes))
        # positions of the tile's own points inside the grown selection
        local = np.searchsorted(sel, inner_idx)
        v = votes[torch.from_numpy(local)]
        voted = (v.sum(1) > 0).numpy()
        lab = v.argmax(1).numpy()
        if not voted.all():
            have = np.flatnonzero((votes.sum(1) > 0).numpy())
            if len(have) == 0:
                raise ValueError("no block could be formed from the points (empty scan?)")
            _, nn_idx = cKDTree(xyz[sel][have]).query(xyz[inner_idx[~voted]])
            lab[~voted] = votes[torch.from_numpy(have[nn_idx])].argmax(1).numpy()
            stats["unvoted_points"] += int((~voted).sum())
        labels[inner_idx] = lab
        stats["tiles"] += 1
        bar.update(len(inner_idx))
    bar.close()
    return labels, stats


@torch.no_grad()
def block_level_confusion(model: torch.nn.Module, xyz: np.ndarray, rgb: np.ndarray | None, label: np.ndarray,
                          num_classes: int, device: torch.device, batch_size: int = 8,
                          seed: int = 0, num_points: int = 4096) -> np.ndarray:
    """Confusion over the points of the test blocks (stride 1 m, >= 100 points, 4096 sampled),
    the way the reference code scored (duplicated points counted, unsampled points ignored)."""
    from .metrics import confusion_matrix
    blocks, idx = room_to_blocks(xyz, rgb, 1.0, 1.0, num_points, min_points=100, rng=seed)
    if len(blocks) == 0:
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    pred = _block_scores(model, blocks, device, batch_size).argmax(-1).numpy()
    return confusion_matrix(label[idx].reshape(-1), pred.reshape(-1), num_classes)
