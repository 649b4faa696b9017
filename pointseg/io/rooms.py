"""Prepared rooms: every original point of one room, as one uncompressed ``.npz`` file.

Keys: ``xyz`` float32 ``(N, 3)``, ``rgb`` uint8 ``(N, 3)`` (optional), ``label`` uint8 ``(N,)``
(optional), ``classes`` (the class names, optional). ``pointseg prepare-s3dis`` writes
``OUT_DIR/Area_k/<room>.npz``; evaluation, ``segment`` and the viewer read them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path


@dataclass
class Room:
    name: str
    xyz: np.ndarray                   # (N, 3) float32
    rgb: np.ndarray | None = None     # (N, 3) uint8
    label: np.ndarray | None = None   # (N,) uint8
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.xyz)
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"room {self.name}: xyz must be (N, 3), got {self.xyz.shape}")
        if self.rgb is not None and self.rgb.shape != (n, 3):
            raise ValueError(f"room {self.name}: rgb must be ({n}, 3), got {self.rgb.shape}")
        if self.label is not None and self.label.shape != (n,):
            raise ValueError(f"room {self.name}: label must be ({n},), got {self.label.shape}")

    @property
    def num_points(self) -> int:
        return len(self.xyz)


def save_room(path: str | Path, room: Room) -> None:
    """Write atomically (temporary file, then rename)."""
    arrays: dict[str, np.ndarray] = {"xyz": np.ascontiguousarray(room.xyz, dtype=np.float32)}
    if room.rgb is not None:
        arrays["rgb"] = np.ascontiguousarray(room.rgb, dtype=np.uint8)
    if room.label is not None:
        arrays["label"] = np.ascontiguousarray(room.label, dtype=np.uint8)
    if room.classes is not None:
        arrays["classes"] = np.asarray(room.classes)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_room(path: str | Path) -> Room:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "xyz" not in z:
                raise ValueError(f"{path}: not a prepared room (no 'xyz' array; keys {sorted(z.files)})")
            xyz = z["xyz"].astype(np.float32, copy=False)
            rgb = z["rgb"] if "rgb" in z else None
            label = z["label"] if "label" in z else None
            classes = tuple(str(c) for c in z["classes"]) if "classes" in z else None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read prepared room: {e}") from None
    except Exception as e:  # zipfile.BadZipFile, pickled (object) arrays, a member too large...
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: corrupt or unsupported prepared room: {msg}") from None
    try:
        return Room(path.stem, xyz, rgb, label, classes)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
