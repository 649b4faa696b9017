"""A building floor of synthetic rooms at real S3DIS density, written to LAS room by room.

``write_floor_las(path, points=N, seed=S)`` lays synthetic rooms
(:func:`pointseg.data.synth.generate_room`, room ``i`` drawn from
``numpy.random.default_rng([seed, i])`` as :func:`~pointseg.data.synth.write_synthetic` draws it)
side by side in rows on a floor, ``gap`` metres apart, each turned by quarter turns (a half turn
drawn per room, a quarter turn where the packing needs it), until the floor holds exactly ``N``
points, and writes them as LAS 1.2 point format 2: coordinates scaled to the millimetre, 16-bit
RGB, ``classification`` = S3DIS class index, the same index in an extra bytes dimension ``label``
(the one :func:`pointseg.io.scans.read_scan` reads as ground truth: it does not read
``classification`` as a label, so without it a segmentation of the floor reports no OA / mIoU),
and ``point_source_id`` = the room's number.

Density is a room's own: a room gets ``density`` points per square metre of its floor area
(S3DIS: about 1 M points per 40-50 m^2, hence the default of 22,000), whatever ``N`` is; ``N``
decides how many rooms there are. Rooms are never thinned: the last room is cut across its long
axis (a partly scanned room) so that the total is exactly ``N``.

Memory is bounded by one room (plus a probe of each room's layout, a few kilobytes): rooms are
generated, written with ``laspy`` and dropped one at a time, so a 50 M-point floor needs about
what a 1.5 M-point room needs.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..classes import S3DIS_CLASSES
from .synth import MAX_ROOM_POINTS, MIN_ROOM_POINTS, generate_room

S3DIS_DENSITY = 22_000.0   # points per m^2 of a room's floor area (about 1 M points per 45 m^2)
GAP = 0.2                  # metres between neighbouring rooms
_PROBE_POINTS = 20_000     # enough to find a room's footprint to a few centimetres
_PAD = 0.03                # footprint margin for the points' position noise


@dataclass
class FloorRoom:
    """One room of a floor: its number (``point_source_id``), kind, quarter turns about z, the
    box it was placed in ``(x0, y0, x1, y1)`` and the points it holds (``planned``: at the full
    density, ``points``: written, fewer for the cut last room, 0 for a room not needed)."""
    index: int
    kind: str
    turns: int
    box: tuple[float, float, float, float]
    planned: int
    points: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _room_rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, i])


def _footprint(seed: int, i: int) -> tuple[str, float, float]:
    """(kind, length along x, width along y) of room ``i``: its layout does not depend on the
    number of points sampled, so a small sample finds it."""
    kind, objects = generate_room(_room_rng(seed, i), _PROBE_POINTS)
    xyz = np.concatenate([o[1] for o in objects])
    ext = xyz[:, :2].max(0) - xyz[:, :2].min(0)
    return kind, float(ext[0]) + _PAD, float(ext[1]) + _PAD


def plan_floor(points: int, seed: int = 0, density: float = S3DIS_DENSITY, gap: float = GAP) -> list[FloorRoom]:
    """The rooms of an ``points``-point floor and where they go: rooms until their planned points
    reach ``points``, plus one spare in case the sampled counts fall short (a room's count is
    drawn, not exact), packed in rows about as long as the floor is deep."""
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    if density <= 0 or gap < 0:
        raise ValueError(f"density must be > 0 and gap >= 0, got {density}, {gap}")
    rooms: list[tuple[int, str, int, float, float, int]] = []
    total = 0
    i = 0
    while True:
        if i > np.iinfo(np.uint16).max:
            raise ValueError(f"{points:,} points at {density:,.0f} points/m^2 need more rooms than "
                             "LAS point_source_id numbers")
        kind, length, width = _footprint(seed, i)
        half = int(np.random.default_rng([seed, i, 1]).integers(2))     # a half turn or not
        count = int(np.clip(round(density * length * width), MIN_ROOM_POINTS, MAX_ROOM_POINTS))
        # long side along x first; the packing below may turn it a quarter
        turns = 2 * half + (1 if width > length else 0)
        rooms.append((i, kind, turns, max(length, width), min(length, width), count))
        i += 1
        if total >= points:       # that was the spare
            break
        total += count
    area = sum((a + gap) * (b + gap) for *_, a, b, _ in rooms)
    row = max(1.2 * math.sqrt(area), max(r[3] for r in rooms))
    plan = []
    x = y = depth = 0.0
    for i, kind, turns, length, width, count in rooms:
        # along the row when it fits, else across it (a quarter turn), else a new row
        if x > 0 and x + length > row:
            if x + width <= row:
                length, width, turns = width, length, (turns + 1) % 4
            else:
                x, y, depth = 0.0, y + depth + gap, 0.0
        plan.append(FloorRoom(i, kind, turns, (x, y, x + length, y + width), count))
        x += length + gap
        depth = max(depth, width)
    return plan


def _turn(xyz: np.ndarray, turns: int) -> np.ndarray:
    x, y = xyz[:, 0].copy(), xyz[:, 1].copy()
    for _ in range(turns % 4):
        x, y = -y, x
    xyz[:, 0], xyz[:, 1] = x, y
    return xyz


def iter_floor(points: int, seed: int = 0, density: float = S3DIS_DENSITY, gap: float = GAP
               ) -> Iterator[tuple[FloorRoom, np.ndarray, np.ndarray, np.ndarray]]:
    """``(room, xyz float64 (n, 3), rgb uint8 (n, 3), S3DIS label uint8 (n,))`` room by room, the
    rooms in place on the floor (z = 0 at every room's floor), ``points`` points in all."""
    plan = plan_floor(points, seed, density, gap)
    left = points
    for room in plan:
        if left == 0:
            break
        _, objects = generate_room(_room_rng(seed, room.index), room.planned)
        xyz = np.concatenate([o[1] for o in objects])
        rgb = np.concatenate([o[2] for o in objects])
        label = np.concatenate([np.full(len(o[1]), S3DIS_CLASSES.index(o[0]), np.uint8) for o in objects])
        del objects
        xyz = _turn(xyz, room.turns)
        xyz -= xyz.min(0)
        xyz[:, 0] += room.box[0] + _PAD / 2
        xyz[:, 1] += room.box[1] + _PAD / 2
        if len(xyz) > left:
            # cut across the long axis, keeping the room's density: a partly scanned room
            axis = 0 if room.box[2] - room.box[0] >= room.box[3] - room.box[1] else 1
            keep = np.sort(np.argpartition(xyz[:, axis], left - 1)[:left])
            xyz, rgb, label = xyz[keep], rgb[keep], label[keep]
        room.points = len(xyz)
        left -= len(xyz)
        yield room, xyz, rgb, label
    if left:
        raise RuntimeError(f"floor plan for {points:,} points fell {left:,} points short")


def write_floor_las(path: str | Path, points: int, seed: int = 0, density: float = S3DIS_DENSITY,
                    gap: float = GAP, progress: Callable[[FloorRoom], None] | None = None) -> list[FloorRoom]:
    """Write an ``points``-point floor (:func:`iter_floor`) to ``path`` as LAS 1.2 point format 2,
    one room per write, under a temporary name renamed when complete; returns the rooms written.
    ``progress`` is called with each room once it is written."""
    import laspy

    path = Path(path)
    header = laspy.LasHeader(point_format=2, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.zeros(3)
    header.generating_software = "pointseg floor"
    header.add_extra_dim(laspy.ExtraBytesParams(name="label", type=np.uint8, description="S3DIS class index"))
    part = path.with_name(path.name + ".part")
    rooms: list[FloorRoom] = []
    try:
        with laspy.open(str(part), mode="w", header=header) as writer:
            for room, xyz, rgb, label in iter_floor(points, seed, density, gap):
                rec = laspy.ScaleAwarePointRecord.zeros(len(xyz), header=header)
                rec.x, rec.y, rec.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
                rgb16 = rgb.astype(np.uint16) * 257
                rec.red, rec.green, rec.blue = rgb16[:, 0], rgb16[:, 1], rgb16[:, 2]
                rec.classification = label
                rec.label = label
                rec.point_source_id = np.full(len(xyz), room.index, np.uint16)
                writer.write_points(rec)
                del rec, xyz, rgb, label, rgb16
                rooms.append(room)
                if progress is not None:
                    progress(room)
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()
    return rooms
