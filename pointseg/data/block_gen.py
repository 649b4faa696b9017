"""Block geometry: a room cut into blocks as the public ``indoor3d_sem_seg_hdf5_data`` was made
(the release writer is :mod:`pointseg.data.block_release`; the recipe :mod:`pointseg.data.recipe`).

A room is shifted to its minimum corner, cut into ``block_size`` x ``block_size`` columns (full
height) whose corners step by ``stride`` (0.5 m for training, 1.0 m for testing); a column with
fewer than ``min_points`` points is dropped, the others are resampled to ``num_points`` points.
The 9 channels per point are (design notes §3):

    0-2  x - (min_x + block_size / 2), y - (min_y + block_size / 2), z   (min over the sampled points)
    3-5  r / 255, g / 255, b / 255
    6-8  x / X, y / Y, z / Z     (X, Y, Z: the room's max corner after the shift)

Block corners follow the release: ``ceil((extent - block_size) / stride) + 1`` per axis, both
column edges inclusive (a point on an edge belongs to both columns). Sampling follows the release
too (``sampling="release"``): a column with more points draws ``num_points`` *with* replacement;
one with fewer keeps every point and adds random duplicates. ``sampling="unique"`` draws without
replacement instead (a named deviation). :func:`room_to_blocks` also returns, for every block
point, its index in the room, so evaluation can vote on every original point; ``cover=True``
splits each column into as many blocks as needed so that every point is in at least one block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np




@dataclass(frozen=True)
class RoomNorm:
    """Room normalisation constants: ``offset`` is the min corner subtracted from every point,
    ``extent`` the max corner after that shift (the divisor of channels 6-8)."""

    offset: np.ndarray   # (3,) float64
    extent: np.ndarray   # (3,) float64

    def shift(self, xyz: np.ndarray) -> np.ndarray:
        return np.asarray(xyz, dtype=np.float64) - self.offset

    def to_dict(self) -> dict[str, list[float]]:
        return {"offset": self.offset.tolist(), "extent": self.extent.tolist()}


def room_normalization(xyz: np.ndarray) -> RoomNorm:
    """The constants the release uses for one room (min corner, max corner after the shift)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise ValueError(f"room_normalization: xyz must be a non-empty (N, 3) array, got {xyz.shape}")
    offset = xyz.min(axis=0)
    return RoomNorm(offset, (xyz - offset).max(axis=0))


def block_corners(extent: np.ndarray, block_size: float, stride: float) -> list[tuple[float, float]]:
    """Block min corners (x outer, y inner), as the release enumerates them."""
    nx = max(int(np.ceil((extent[0] - block_size) / stride)) + 1, 1)
    ny = max(int(np.ceil((extent[1] - block_size) / stride)) + 1, 1)
    return [(i * stride, j * stride) for i in range(nx) for j in range(ny)]


def _columns(shifted: np.ndarray, block_size: float, stride: float, extent: np.ndarray,
             corners: Sequence[tuple[float, float]] | None = None) -> Iterator[np.ndarray]:
    """Point indices (ascending) of every column, in release order. Points are pre-sorted by x
    and each x strip by y, so a room costs O(N log N + blocks x strip) instead of O(blocks x N)."""
    corners = block_corners(extent, block_size, stride) if corners is None else corners
    ox = np.argsort(shifted[:, 0], kind="stable")
    xs = shifted[ox, 0]
    strip_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for xb, yb in corners:
        if xb not in strip_cache:
            strip_cache.clear()
            lo = np.searchsorted(xs, xb, side="left")
            hi = np.searchsorted(xs, xb + block_size, side="right")
            strip = ox[lo:hi]
            oy = np.argsort(shifted[strip, 1], kind="stable")
            strip_cache[xb] = (strip[oy], shifted[strip[oy], 1])
        strip, ys = strip_cache[xb]
        lo = np.searchsorted(ys, yb, side="left")
        hi = np.searchsorted(ys, yb + block_size, side="right")
        yield np.sort(strip[lo:hi])


def _sample(n: int, num_points: int, rng: np.random.Generator, sampling: str) -> np.ndarray:
    if n == num_points:
        return np.arange(n)
    if n > num_points:
        return rng.choice(n, num_points, replace=sampling == "release")
    return np.concatenate((np.arange(n), rng.choice(n, num_points - n, replace=True)))


def cover_rows(idx: np.ndarray, num_points: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A column of more than ``num_points`` points (indices ``idx``) as blocks that hold every point:
    a random order cut into ``num_points`` rows, the last filled up with random repeats."""
    n = len(idx)
    perm = rng.permutation(n)
    rows = []
    for c in range(0, n, num_points):
        part = perm[c:c + num_points]
        if len(part) < num_points:
            part = np.concatenate((part, rng.choice(n, num_points - len(part), replace=True)))
        rows.append(idx[part])
    return rows


def room_to_blocks(xyz: np.ndarray, rgb: np.ndarray | None, block_size: float = 1.0,
                   stride: float = 1.0, num_points: int = 4096, min_points: int = 100,
                   rng: np.random.Generator | int | None = None,
                   sampling: Literal["release", "unique"] = "release", cover: bool = False,
                   norm: RoomNorm | None = None,
                   corners: Sequence[tuple[float, float]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut one room into 9-channel blocks.

    Args:
        xyz: ``(N, 3)`` point coordinates (any offset; the room is shifted by ``norm``).
        rgb: ``(N, 3)`` colours 0-255 (uint8 or float) or None (colour channels 0).
        cover: split each column's points over ``ceil(n / num_points)`` blocks (a random
            partition, the last one padded with duplicates) so every point of a kept column
            appears; for evaluation. ``min_points=1`` keeps every column.
        norm: room constants (default :func:`room_normalization` of ``xyz``).
        corners: the column min corners to cut (shifted frame, x-major order; default every
            corner of :func:`block_corners`); sliding inference passes only occupied ones.

    Returns:
        ``blocks`` float32 ``(B, num_points, 9)`` and ``point_indices`` int64 ``(B, num_points)``
        (row ``b`` holds the room index of every point of block ``b``).
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"room_to_blocks: xyz must be (N, 3), got {xyz.shape}")
    if rgb is not None and np.shape(rgb) != xyz.shape:
        raise ValueError(f"room_to_blocks: rgb must be {xyz.shape}, got {np.shape(rgb)}")
    if not (0 < stride <= block_size):
        raise ValueError(f"room_to_blocks: need 0 < stride <= block_size, got stride={stride}, "
                         f"block_size={block_size}")
    if num_points < 1 or min_points < 1:
        raise ValueError("room_to_blocks: num_points and min_points must be >= 1")
    if sampling not in ("release", "unique"):
        raise ValueError(f"room_to_blocks: sampling must be 'release' or 'unique', got {sampling!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    norm = norm or room_normalization(xyz)
    shifted = norm.shift(xyz)
    # A flat room (extent 0 on an axis) would divide by zero in the release; use 1 there.
    scale = np.where(norm.extent > 0, norm.extent, 1.0)
    colour = (np.zeros_like(shifted) if rgb is None else np.asarray(rgb, dtype=np.float64) / 255.0)

    index_rows: list[np.ndarray] = []
    for idx in _columns(shifted, block_size, stride, norm.extent, corners):
        n = len(idx)
        if n < min_points:
            continue
        if cover and n > num_points:
            index_rows += cover_rows(idx, num_points, rng)
        else:
            index_rows.append(idx[_sample(n, num_points, rng, sampling)])
    if not index_rows:
        return (np.zeros((0, num_points, 9), dtype=np.float32), np.zeros((0, num_points), dtype=np.int64))
    point_indices = np.stack(index_rows).astype(np.int64)
    pts = shifted[point_indices]                           # (B, P, 3)
    blocks = np.empty(point_indices.shape + (9,), dtype=np.float32)
    blocks[..., 6:9] = pts / scale
    centre = pts[..., :2].min(axis=1, keepdims=True) + block_size / 2
    blocks[..., 0:2] = pts[..., :2] - centre
    blocks[..., 2] = pts[..., 2]
    blocks[..., 3:6] = colour[point_indices]
    return blocks, point_indices
