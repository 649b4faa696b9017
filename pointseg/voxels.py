"""Voxel keys: one integer per occupied voxel of a point set, for grouping points by voxel.

A base module (every layer may import it): the engine subsamples dense scans with it and the viewer
thins what it draws, with the same keys and the same guard against keys that would overflow.
"""
from __future__ import annotations

import numpy as np


def voxel_keys(xyz: np.ndarray, size: float, origin: np.ndarray | None = None) -> np.ndarray:
    """int64 ``(N,)``: equal for points in the same ``size`` voxel (cells counted from ``origin``,
    default the points' min corner). ``ValueError`` when the grid would need more cells than an
    int64 key can number (a voxel far too small for the extent)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    origin = xyz.min(0) if origin is None else np.asarray(origin, dtype=np.float64)
    cells = np.floor((xyz - origin) / size).astype(np.int64)
    dims = cells.max(0) + 1
    if float(np.prod(dims.astype(np.float64))) >= 2.0 ** 62:
        raise ValueError(f"--voxel {size:g} m is too small for a scan this large")
    return np.ravel_multi_index(cells.T, dims)


def count_distinct(keys: np.ndarray) -> int:
    """How many distinct values ``keys`` (int64 ``(N,)``) holds. Sorting: numpy 2's hash-based
    ``np.unique`` took 3.4 s for 5 M voxel keys here, a sort 0.35 s."""
    k = np.sort(np.asarray(keys).reshape(-1))
    return int(len(k) > 0) + int(np.count_nonzero(k[1:] != k[:-1]))
