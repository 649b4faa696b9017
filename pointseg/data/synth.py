"""Procedural synthetic rooms written in the raw S3DIS layout.

``write_synthetic(out_dir, rooms=N, seed=S)`` writes ``Area_k/<room>/Annotations/<class>_<i>.txt``
(``x y z r g b`` per line, 3 decimals, as the release) and the room-level ``Area_k/<room>/<room>.txt``
(the concatenation, as the release has it), so the whole raw -> prepared -> blocks pipeline runs
without the real data.

A room is a box (floor, ceiling, four walls) furnished according to its kind (office,
conferenceRoom, lounge, hallway) with all 13 S3DIS classes: doors, windows and boards cut into the
walls, beams under the ceiling, columns against walls, tables with chairs around them, sofas,
bookcases with shelves and books, and clutter (boxes on floors, tables and shelves; posters).
Points are sampled uniformly on the visible surfaces (scanner-like density; surfaces hidden behind
a door, window, board, column or bookcase are cut out of the wall), with a few millimetres of
position noise. Every class has a characteristic colour with per-object and per-point noise, and a
characteristic shape and height, so a point network can learn them.

Deterministic: room ``i`` of a run is drawn from ``numpy.random.default_rng([seed, i])``, so it
does not depend on how many rooms are written.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_dir

ROOM_KINDS = ("office", "conferenceRoom", "lounge", "hallway")

# class -> (base RGB, per-object jitter std, per-point noise std)
STYLE: dict[str, tuple[tuple[int, int, int], float, float]] = {
    "ceiling": ((212, 212, 205), 6, 6),
    "floor": ((105, 88, 72), 12, 8),
    "wall": ((188, 182, 165), 8, 6),
    "beam": ((150, 152, 160), 8, 6),
    "column": ((165, 135, 112), 8, 7),
    "window": ((135, 172, 215), 10, 12),
    "door": ((135, 85, 45), 14, 8),
    "table": ((198, 160, 105), 14, 8),
    "chair": ((48, 55, 80), 10, 8),
    "sofa": ((155, 55, 52), 14, 8),
    "bookcase": ((92, 62, 38), 8, 8),
    "board": ((238, 238, 232), 4, 5),
    "clutter": ((128, 128, 128), 0, 10),   # colour drawn per object
}


@dataclass
class _Instance:
    cls: str
    color: np.ndarray   # (3,) float
    noise: float


@dataclass
class _Rect:
    inst: int
    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    shade: float = 1.0
    color: np.ndarray | None = None
    holes: list[tuple[float, float, float, float]] = field(default_factory=list)  # (a0, a1, b0, b1) in [0,1]

    @property
    def area(self) -> float:
        return float(np.linalg.norm(np.cross(self.u, self.v)))


class _Scene:
    """Surfaces of one room, sampled once the total area (hence the density) is known."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.instances: list[_Instance] = []
        self.rects: list[_Rect] = []

    def instance(self, cls: str, color: Sequence[float] | None = None) -> int:
        base, jitter, noise = STYLE[cls]
        if color is None:
            color = np.asarray(base, float) + self.rng.normal(0, jitter, 3) if jitter else np.asarray(base, float)
        self.instances.append(_Instance(cls, np.asarray(color, float), noise))
        return len(self.instances) - 1

    def rect(self, inst: int, origin, u, v, shade: float = 1.0, color=None, holes=None) -> _Rect:
        r = _Rect(inst, np.asarray(origin, float), np.asarray(u, float), np.asarray(v, float), shade,
                  None if color is None else np.asarray(color, float), list(holes or []))
        self.rects.append(r)
        return r

    def box(self, inst: int, lo, hi, bottom: bool = False, skip: Sequence[str] = (), color=None) -> None:
        """Faces of an axis-aligned box; ``skip`` names faces hidden against something
        (``-x``, ``+x``, ``-y``, ``+y``, ``top``)."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        dx, dy, dz = hi - lo
        ex, ey, ez = np.array([dx, 0, 0]), np.array([0, dy, 0]), np.array([0, 0, dz])
        faces = {
            "top": ([lo[0], lo[1], hi[2]], ex, ey, 1.0),
            "-x": (lo, ey, ez, 0.85), "+x": ([hi[0], lo[1], lo[2]], ey, ez, 0.85),
            "-y": (lo, ex, ez, 0.9), "+y": ([lo[0], hi[1], lo[2]], ex, ez, 0.9),
        }
        if bottom:
            faces["bottom"] = (lo, ex, ey, 0.75)
        for name, (o, u, v, shade) in faces.items():
            if name not in skip:
                self.rect(inst, o, u, v, shade, color)

    def sample(self, points: int, pos_noise: float = 0.003) -> list[tuple[str, np.ndarray, np.ndarray]]:
        # Holes (openings, occluded wall) are cut after sampling: count only what stays visible.
        total = sum(r.area * max(1.0 - sum((a1 - a0) * (b1 - b0) for a0, a1, b0, b1 in r.holes), 0.0)
                    for r in self.rects)
        density = points / max(total, 1e-9)
        per_inst: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in self.instances]
        for r in self.rects:
            n = int(self.rng.poisson(density * r.area))
            if n == 0:
                continue
            ab = self.rng.random((n, 2))
            keep = np.ones(n, dtype=bool)
            for a0, a1, b0, b1 in r.holes:
                keep &= ~((ab[:, 0] > a0) & (ab[:, 0] < a1) & (ab[:, 1] > b0) & (ab[:, 1] < b1))
            ab = ab[keep]
            xyz = r.origin + ab[:, :1] * r.u + ab[:, 1:] * r.v
            inst = self.instances[r.inst]
            base = (inst.color if r.color is None else r.color) * r.shade
            rgb = base + self.rng.normal(0, inst.noise, (len(ab), 3))
            per_inst[r.inst].append((xyz, rgb))
        out = []
        for inst, parts in zip(self.instances, per_inst):
            if not parts:
                continue
            xyz = np.concatenate([p[0] for p in parts])
            xyz += self.rng.normal(0, pos_noise, xyz.shape)
            rgb = np.clip(np.rint(np.concatenate([p[1] for p in parts])), 0, 255).astype(np.uint8)
            out.append((inst.cls, xyz, rgb))
        return out


# --------------------------------------------------------------------------------------------
# Room layout


@dataclass
class _Wall:
    p0: np.ndarray       # start corner (x, y)
    d: np.ndarray        # unit direction along the wall
    n: np.ndarray        # unit inward normal
    length: float
    used: list[tuple[float, float]] = field(default_factory=list)
    holes: list[tuple[float, float, float, float]] = field(default_factory=list)  # (s0, s1, z0, z1)

    def free(self, s0: float, s1: float, margin: float = 0.1) -> bool:
        return s0 >= margin and s1 <= self.length - margin and all(
            s1 + margin <= a or s0 - margin >= b for a, b in self.used)

    def at(self, s: float, off: float = 0.0) -> np.ndarray:
        return self.p0 + s * self.d + off * self.n


def _xyz(p2: np.ndarray, z: float) -> np.ndarray:
    return np.array([p2[0], p2[1], z])


def _vec(p2: np.ndarray, z: float = 0.0) -> np.ndarray:
    return np.array([p2[0], p2[1], z])


class _Layout:
    def __init__(self, rng: np.random.Generator, kind: str) -> None:
        self.rng, self.kind = rng, kind
        if kind == "hallway":
            self.L, self.W = rng.uniform(9, 16), rng.uniform(1.8, 2.8)
        elif kind == "conferenceRoom":
            self.L, self.W = rng.uniform(6, 9), rng.uniform(4.5, 7)
        else:
            self.L, self.W = rng.uniform(4.5, 8), rng.uniform(3.8, 6.5)
        self.H = rng.uniform(2.7, 3.3)
        L, W = self.L, self.W
        self.walls = [
            _Wall(np.array([0, 0.0]), np.array([1, 0.0]), np.array([0, 1.0]), L),
            _Wall(np.array([L, 0.0]), np.array([0, 1.0]), np.array([-1, 0.0]), W),
            _Wall(np.array([L, W]), np.array([-1, 0.0]), np.array([0, -1.0]), L),
            _Wall(np.array([0, W]), np.array([0, -1.0]), np.array([1, 0.0]), W),
        ]
        self.footprints: list[tuple[float, float, float, float]] = []   # (x0, y0, x1, y1) on the floor
        self.floor_holes: list[tuple[float, float, float, float]] = []
        self.ceiling_holes: list[tuple[float, float, float, float]] = []
        self.surfaces_z: list[tuple[tuple[float, float, float, float], float]] = []  # tops for clutter

    # -- placement helpers
    def wall_slot(self, width: float, walls: Sequence[int] | None = None, tries: int = 30
                  ) -> tuple[_Wall, float] | None:
        cands = [self.walls[i] for i in (walls if walls is not None else range(4))]
        cands = [w for w in cands if w.length > width + 0.3]
        for _ in range(tries):
            if not cands:
                return None
            w = cands[self.rng.integers(len(cands))]
            s0 = self.rng.uniform(0.15, w.length - width - 0.15)
            if w.free(s0, s0 + width):
                w.used.append((s0, s0 + width))
                return w, s0
        return None

    def wall_opening(self, width: float, z0_range: tuple[float, float], height_range: tuple[float, float],
                     top: float | None = None) -> tuple[_Wall, float, float, float] | None:
        """``(wall, s0, z0, z1)``: a free stretch of ``width`` on a wall (:meth:`wall_slot`) and an
        opening's vertical span, its bottom and height drawn uniformly, its top capped at ``top``."""
        slot = self.wall_slot(width)
        if slot is None:
            return None
        z0 = self.rng.uniform(*z0_range)
        z1 = z0 + self.rng.uniform(*height_range)
        return (*slot, z0, z1 if top is None else min(z1, top))

    def fp_free(self, fp: tuple[float, float, float, float], margin: float = 0.15) -> bool:
        x0, y0, x1, y1 = fp
        if x0 < -1e-6 or y0 < -1e-6 or x1 > self.L + 1e-6 or y1 > self.W + 1e-6:
            return False
        return all(x1 + margin <= a0 or x0 - margin >= a1 or y1 + margin <= b0 or y0 - margin >= b1
                   for a0, b0, a1, b1 in self.footprints)

    def wall_footprint(self, w: _Wall, s0: float, s1: float, depth: float) -> tuple[float, float, float, float]:
        a, b = w.at(s0), w.at(s1, depth)
        return (min(a[0], b[0]), min(a[1], b[1]), max(a[0], b[0]), max(a[1], b[1]))

    def reserve_against_wall(self, length: float, depth: float
                             ) -> tuple[_Wall, float, float, tuple[float, float, float, float]] | None:
        """A free wall span of ``length`` whose ``depth``-deep footprint clears the others, reserved."""
        slot = self.wall_slot(length)
        if slot is None:
            return None
        w, s0 = slot
        s1 = s0 + length
        fp = self.wall_footprint(w, s0, s1, depth)
        if not self.fp_free(fp, 0.05):
            w.used.pop()
            return None
        self.footprints.append(fp)
        return w, s0, s1, fp

    def floor_hole(self, fp: tuple[float, float, float, float], ceiling: bool = False) -> None:
        x0, y0, x1, y1 = fp
        hole = (x0 / self.L, x1 / self.L, y0 / self.W, y1 / self.W)
        (self.ceiling_holes if ceiling else self.floor_holes).append(hole)


def _wall_panel(sc: _Scene, inst: int, w: _Wall, s0: float, s1: float, z0: float, z1: float,
                off: float, shade: float = 0.9, color=None) -> None:
    """A rectangle parallel to wall ``w`` at distance ``off`` inside the room (negative: behind)."""
    sc.rect(inst, _xyz(w.at(s0, off), z0), _vec((s1 - s0) * w.d), [0, 0, z1 - z0], shade, color)


def _wall_reveal(sc: _Scene, inst: int, w: _Wall, s0: float, s1: float, z0: float, z1: float,
                 depth: float, sides: Sequence[str] = ("left", "right", "top", "bottom")) -> None:
    """The faces of an opening of ``depth`` behind the wall plane (jambs, head, sill)."""
    back = -depth * w.n
    if "left" in sides:
        sc.rect(inst, _xyz(w.at(s0), z0), _vec(back), [0, 0, z1 - z0], 0.8)
    if "right" in sides:
        sc.rect(inst, _xyz(w.at(s1), z0), _vec(back), [0, 0, z1 - z0], 0.8)
    if "top" in sides:
        sc.rect(inst, _xyz(w.at(s0), z1), _vec((s1 - s0) * w.d), _vec(back), 0.75)
    if "bottom" in sides:
        sc.rect(inst, _xyz(w.at(s0), z0), _vec((s1 - s0) * w.d), _vec(back), 1.0)


def _add_door(sc: _Scene, lay: _Layout, walls=None) -> bool:
    width = lay.rng.uniform(0.85, 1.05)
    slot = lay.wall_slot(width + 0.2, walls)
    if slot is None:
        return False
    w, s = slot
    s0, s1, h = s + 0.1, s + 0.1 + width, lay.rng.uniform(2.0, 2.2)
    inst = sc.instance("door")
    _wall_panel(sc, inst, w, s0, s1, 0.0, h, -0.06, 0.9)
    _wall_reveal(sc, inst, w, s0, s1, 0.0, h, 0.06, ("left", "right", "top"))
    # Handle: a small darker patch at hand height.
    hs = s1 - 0.12 if lay.rng.random() < 0.5 else s0 + 0.06
    _wall_panel(sc, inst, w, hs, hs + 0.06, 0.95, 1.05, -0.03, 0.9, color=(60, 60, 60))
    w.holes.append((s0, s1, 0.0, h))
    return True


def _add_window(sc: _Scene, lay: _Layout) -> bool:
    width = lay.rng.uniform(0.9, 2.0)
    opening = lay.wall_opening(width, (0.8, 1.0), (1.1, 1.5), top=lay.H - 0.25)
    if opening is None:
        return False
    w, s0, z0, z1 = opening
    inst = sc.instance("window")
    depth = lay.rng.uniform(0.1, 0.2)
    _wall_panel(sc, inst, w, s0, s0 + width, z0, z1, -depth, 1.05)
    _wall_reveal(sc, inst, w, s0, s0 + width, z0, z1, depth)
    # Mullion: a vertical bar in the middle, lighter (frame colour).
    m = s0 + width / 2
    _wall_panel(sc, inst, w, m - 0.03, m + 0.03, z0, z1, -depth + 0.02, 1.0, color=(200, 205, 215))
    w.holes.append((s0, s0 + width, z0, z1))
    return True


def _add_board(sc: _Scene, lay: _Layout) -> bool:
    width = lay.rng.uniform(1.2, 2.6)
    opening = lay.wall_opening(width, (0.85, 1.0), (0.9, 1.2))
    if opening is None:
        return False
    w, s0, z0, z1 = opening
    inst = sc.instance("board")
    off = 0.025
    _wall_panel(sc, inst, w, s0, s0 + width, z0, z1, off, 1.0)
    # Aluminium rim and the marker tray below.
    rim = np.array([170, 172, 178.0])
    for a, b in ((s0, s0 + 0.025), (s0 + width - 0.025, s0 + width)):
        _wall_panel(sc, inst, w, a, b, z0, z1, off + 0.003, 1.0, color=rim)
    sc.rect(inst, _xyz(w.at(s0, 0.0), z0 - 0.01), _vec(width * w.d), _vec(0.06 * w.n), 1.0, color=rim)
    w.holes.append((s0, s0 + width, z0, z1))
    return True


def _add_column(sc: _Scene, lay: _Layout) -> bool:
    width, depth = lay.rng.uniform(0.35, 0.7), lay.rng.uniform(0.25, 0.6)
    placed = lay.reserve_against_wall(width, depth)
    if placed is None:
        return False
    w, s0, s1, fp = placed
    inst = sc.instance("column")
    _wall_panel(sc, inst, w, s0, s1, 0.0, lay.H, depth, 0.92)
    for s in (s0, s1):
        sc.rect(inst, _xyz(w.at(s), 0.0), _vec(depth * w.n), [0, 0, lay.H], 0.82)
    w.holes.append((s0, s1, 0.0, lay.H))
    lay.floor_hole(fp)
    lay.floor_hole(fp, ceiling=True)
    return True


def _add_beam(sc: _Scene, lay: _Layout) -> None:
    along_x = lay.rng.random() < 0.5 if lay.kind != "hallway" else False
    width, depth = lay.rng.uniform(0.25, 0.5), lay.rng.uniform(0.3, 0.6)
    span = lay.L if along_x else lay.W
    across = lay.W if along_x else lay.L
    c = lay.rng.uniform(0.6, across - 0.6 - width)
    inst = sc.instance("beam")
    z0 = lay.H - depth
    if along_x:
        sc.rect(inst, [0, c, z0], [span, 0, 0], [0, width, 0], 0.8)
        sc.rect(inst, [0, c, z0], [span, 0, 0], [0, 0, depth], 0.9)
        sc.rect(inst, [0, c + width, z0], [span, 0, 0], [0, 0, depth], 0.9)
        lay.ceiling_holes.append((0, 1, c / lay.W, (c + width) / lay.W))
    else:
        sc.rect(inst, [c, 0, z0], [width, 0, 0], [0, span, 0], 0.8)
        sc.rect(inst, [c, 0, z0], [0, 0, depth], [0, span, 0], 0.9)
        sc.rect(inst, [c + width, 0, z0], [0, 0, depth], [0, span, 0], 0.9)
        lay.ceiling_holes.append((c / lay.L, (c + width) / lay.L, 0, 1))


def _add_bookcase(sc: _Scene, lay: _Layout, clutter: list) -> bool:
    width, depth, height = lay.rng.uniform(0.8, 1.3), lay.rng.uniform(0.3, 0.42), lay.rng.uniform(1.7, 2.2)
    placed = lay.reserve_against_wall(width, depth)
    if placed is None:
        return False
    w, s0, s1, fp = placed
    inst = sc.instance("bookcase")
    t = 0.03
    for s in (s0, s1):   # outer sides
        sc.rect(inst, _xyz(w.at(s), 0.0), _vec(depth * w.n), [0, 0, height], 0.8)
    _wall_panel(sc, inst, w, s0, s1, 0.0, height, 0.01, 0.7)          # back panel
    nshelf = int(lay.rng.integers(4, 7))
    levels = np.linspace(0.08, height, nshelf + 1)
    for z in levels:    # shelf tops and their front edges
        sc.rect(inst, _xyz(w.at(s0), z), _vec(width * w.d), _vec(depth * w.n), 1.0)
        _wall_panel(sc, inst, w, s0, s1, z - t, z, depth, 0.95)
    # Books: rows of thin spines of muted colours standing on each shelf (not the top one).
    for z0, z1 in zip(levels[:-1], levels[1:]):
        s = s0 + 0.02
        while s < s1 - 0.05:
            bw = lay.rng.uniform(0.02, 0.06)
            if lay.rng.random() < 0.8:
                bh = min(lay.rng.uniform(0.6, 0.9) * (z1 - z0 - t), z1 - z0 - t)
                col = np.asarray(STYLE["bookcase"][0], float) + lay.rng.normal(0, 25, 3)
                _wall_panel(sc, inst, w, s, min(s + bw, s1 - 0.02), z0, z0 + bh,
                            depth - lay.rng.uniform(0.02, 0.08), 0.95, color=col)
            s += bw
    w.holes.append((s0, s1, 0.0, height))
    lay.floor_hole(fp)
    clutter.append(("on", fp, height))
    return True


def _add_sofa(sc: _Scene, lay: _Layout) -> bool:
    length, depth = lay.rng.uniform(1.5, 2.3), lay.rng.uniform(0.8, 0.95)
    placed = lay.reserve_against_wall(length, depth)
    if placed is None:
        return False
    w, s0, s1, fp = placed
    inst = sc.instance("sofa")
    seat, back_h, arm_h, back_d, arm_w = 0.42, lay.rng.uniform(0.75, 0.9), 0.6, 0.22, 0.16
    # Seat cushion top and front.
    sc.rect(inst, _xyz(w.at(s0 + arm_w, back_d), seat), _vec((length - 2 * arm_w) * w.d),
            _vec((depth - back_d) * w.n), 1.0)
    _wall_panel(sc, inst, w, s0, s1, 0.05, seat, depth, 0.85)
    # Backrest front and top.
    _wall_panel(sc, inst, w, s0 + arm_w, s1 - arm_w, seat, back_h, back_d, 0.9)
    sc.rect(inst, _xyz(w.at(s0), back_h), _vec(length * w.d), _vec(back_d * w.n), 1.0)
    # Arms: tops, inner and outer sides.
    for a in (s0, s1 - arm_w):
        sc.rect(inst, _xyz(w.at(a), arm_h), _vec(arm_w * w.d), _vec(depth * w.n), 1.0)
        for s in (a, a + arm_w):
            sc.rect(inst, _xyz(w.at(s), 0.05), _vec(depth * w.n), [0, 0, arm_h - 0.05], 0.85)
    w.holes.append((s0, s1, 0.0, back_h))
    return True


def _chair(sc: _Scene, centre: np.ndarray, facing: np.ndarray, color=None) -> None:
    """A chair at ``centre`` (x, y) whose sitter faces ``facing`` (unit 2D)."""
    inst = sc.instance("chair", color)
    f = _vec(facing)
    side = np.array([-facing[1], facing[0], 0.0])
    s, seat_z, back_z = 0.46, 0.45, 0.92
    c = _vec(centre)
    corner = c - 0.5 * s * f - 0.5 * s * side
    sc.rect(inst, corner + [0, 0, seat_z], s * f, s * side, 1.0)              # seat top
    sc.rect(inst, corner + [0, 0, seat_z - 0.04], s * f, s * side, 0.7)       # seat bottom
    sc.rect(inst, corner + [0, 0, seat_z - 0.04], s * side, [0, 0, 0.04], 0.85)
    back = corner - 0.02 * f
    sc.rect(inst, back + [0, 0, seat_z + 0.1], s * side, [0, 0, back_z - seat_z - 0.1], 0.9)
    sc.rect(inst, back - 0.03 * f + [0, 0, seat_z + 0.1], s * side, [0, 0, back_z - seat_z - 0.1], 0.8)
    for a in (0.03, s - 0.06):   # legs
        for b in (0.03, s - 0.06):
            p = corner + a * f + b * side
            sc.rect(inst, p, 0.03 * f, [0, 0, seat_z - 0.04], 0.8)
            sc.rect(inst, p, 0.03 * side, [0, 0, seat_z - 0.04], 0.8)


def _add_table(sc: _Scene, lay: _Layout, clutter: list, big: bool = False, chairs: int = 4) -> bool:
    if big:
        tl, tw = lay.rng.uniform(2.4, min(4.2, lay.L - 2.0)), lay.rng.uniform(1.0, 1.4)
    else:
        tl, tw = lay.rng.uniform(1.1, 1.9), lay.rng.uniform(0.6, 0.95)
    if lay.rng.random() < 0.5 and not big:
        tl, tw = tw, tl
    h = lay.rng.uniform(0.72, 0.78)
    for _ in range(40):
        x0 = lay.rng.uniform(0.7, max(0.71, lay.L - tl - 0.7))
        y0 = lay.rng.uniform(0.7, max(0.71, lay.W - tw - 0.7))
        fp = (x0 - 0.55, y0 - 0.55, x0 + tl + 0.55, y0 + tw + 0.55)  # room for chairs
        if lay.fp_free(fp, 0.05):
            break
    else:
        return False
    lay.footprints.append(fp)
    inst = sc.instance("table")
    sc.box(inst, [x0, y0, h - 0.04], [x0 + tl, y0 + tw, h], bottom=True)
    for lx in (x0 + 0.05, x0 + tl - 0.1):
        for ly in (y0 + 0.05, y0 + tw - 0.1):
            sc.box(inst, [lx, ly, 0.0], [lx + 0.05, ly + 0.05, h - 0.04], skip=("top",))
    clutter.append(("on", (x0, y0, x0 + tl, y0 + tw), h))
    # Chairs around the long sides (and the ends of big tables).
    seats: list[tuple[np.ndarray, np.ndarray]] = []
    long_x = tl >= tw
    n_long = max(1, int((tl if long_x else tw) // 0.7))
    for k in range(n_long):
        t = (k + 0.5) / n_long
        if long_x:
            seats.append((np.array([x0 + t * tl, y0 - 0.3]), np.array([0, 1.0])))
            seats.append((np.array([x0 + t * tl, y0 + tw + 0.3]), np.array([0, -1.0])))
        else:
            seats.append((np.array([x0 - 0.3, y0 + t * tw]), np.array([1.0, 0])))
            seats.append((np.array([x0 + tl + 0.3, y0 + t * tw]), np.array([-1.0, 0])))
    if big:
        seats.append((np.array([x0 - 0.35, y0 + tw / 2]), np.array([1.0, 0])))
        seats.append((np.array([x0 + tl + 0.35, y0 + tw / 2]), np.array([-1.0, 0])))
    order = lay.rng.permutation(len(seats))[:chairs]
    chair_color = np.asarray(STYLE["chair"][0], float) + lay.rng.normal(0, STYLE["chair"][1], 3)
    for i in order:
        c, f = seats[i]
        jitter = lay.rng.normal(0, 0.05, 2)
        ang = lay.rng.normal(0, 0.15)
        rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        _chair(sc, c + jitter, rot @ f, chair_color + lay.rng.normal(0, 4, 3))
    return True


def _clutter_color(rng: np.random.Generator) -> np.ndarray:
    hue = rng.random()
    sat, val = rng.uniform(0.35, 0.9), rng.uniform(0.35, 0.95)
    i, f = int(hue * 6) % 6, hue * 6 - int(hue * 6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    rgb = [(val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q)][i]
    return np.asarray(rgb) * 255


def _add_clutter(sc: _Scene, lay: _Layout, spots: list, count: int) -> None:
    rng = lay.rng
    for _ in range(count):
        r = rng.random()
        color = _clutter_color(rng)
        if r < 0.45 and spots:          # on a table or a bookcase top
            _, (x0, y0, x1, y1), z = spots[rng.integers(len(spots))]
            sx, sy, sz = rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.35), rng.uniform(0.03, 0.3)
            if x1 - x0 <= sx or y1 - y0 <= sy:
                continue
            px, py = rng.uniform(x0, x1 - sx), rng.uniform(y0, y1 - sy)
            sc.box(sc.instance("clutter", color), [px, py, z], [px + sx, py + sy, z + sz])
        elif r < 0.8:                   # on the floor: bins, boxes, printers
            sx, sy, sz = rng.uniform(0.25, 0.6), rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.8)
            for _ in range(20):
                px, py = rng.uniform(0.1, lay.L - sx - 0.1), rng.uniform(0.1, lay.W - sy - 0.1)
                fp = (px, py, px + sx, py + sy)
                if lay.fp_free(fp, 0.05):
                    lay.footprints.append(fp)
                    sc.box(sc.instance("clutter", color), [px, py, 0.0], [px + sx, py + sy, sz])
                    lay.floor_hole(fp)
                    break
        else:                           # on a wall: posters, frames, switches
            width = rng.uniform(0.15, 0.8)
            slot = lay.wall_slot(width)
            if slot is None:
                continue
            w, s0 = slot
            z0 = rng.uniform(1.0, 1.8)
            inst = sc.instance("clutter", color)
            _wall_panel(sc, inst, w, s0, s0 + width, z0, z0 + rng.uniform(0.15, 0.7), 0.02, 1.0)


MIN_ROOM_POINTS = 1000
MAX_ROOM_POINTS = 50_000_000       # a real S3DIS room has up to ~10 M points


def generate_room(rng: np.random.Generator, points: int = 300_000, kind: str | None = None
                  ) -> tuple[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """One furnished room: ``(kind, [(class, xyz float64 (n,3), rgb uint8 (n,3)), ...])``, one
    entry per object, about ``points`` points in all."""
    if not MIN_ROOM_POINTS <= points <= MAX_ROOM_POINTS:
        raise ValueError(f"--points {points}: points per room must be in {MIN_ROOM_POINTS}..{MAX_ROOM_POINTS:,}")
    kind = kind or ROOM_KINDS[int(rng.choice(len(ROOM_KINDS), p=[0.4, 0.25, 0.15, 0.2]))]
    lay = _Layout(rng, kind)
    sc = _Scene(rng)
    spots: list = []
    hall = kind == "hallway"

    n_doors = int(rng.integers(2, 5)) if hall else int(rng.integers(1, 3))
    for _ in range(n_doors):
        _add_door(sc, lay, walls=(0, 2) if hall else None)
    for _ in range(int(rng.integers(0, 3))):
        _add_column(sc, lay)
    for _ in range(int(rng.integers(0, 2) if hall else rng.integers(1, 4))):
        _add_window(sc, lay)
    n_boards = {"conferenceRoom": rng.integers(1, 3), "office": rng.integers(0, 2),
                "lounge": rng.integers(0, 2), "hallway": rng.integers(0, 2)}[kind]
    for _ in range(int(n_boards)):
        _add_board(sc, lay)
    n_beams = int(rng.integers(0, 3)) if rng.random() < 0.7 else 0
    for _ in range(n_beams):
        _add_beam(sc, lay)
    n_books = {"conferenceRoom": rng.integers(0, 2), "office": rng.integers(1, 4),
               "lounge": rng.integers(0, 3), "hallway": rng.integers(0, 2)}[kind]
    for _ in range(int(n_books)):
        _add_bookcase(sc, lay, spots)
    if kind == "lounge" or (kind == "office" and rng.random() < 0.5):
        for _ in range(int(rng.integers(1, 3)) if kind == "lounge" else 1):
            _add_sofa(sc, lay)
    if kind == "conferenceRoom":
        _add_table(sc, lay, spots, big=True, chairs=int(rng.integers(5, 11)))
    elif kind == "office":
        for _ in range(int(rng.integers(1, 3))):
            _add_table(sc, lay, spots, chairs=int(rng.integers(1, 4)))
    elif kind == "lounge":
        _add_table(sc, lay, spots, chairs=int(rng.integers(0, 3)))
    n_clutter = int(rng.integers(3, 7)) if hall else int(rng.integers(6, 16))
    _add_clutter(sc, lay, spots, n_clutter)

    # The shell last: its holes are known now.
    L, W, H = lay.L, lay.W, lay.H
    sc.rect(sc.instance("floor"), [0, 0, 0], [L, 0, 0], [0, W, 0], 1.0, holes=lay.floor_holes)
    sc.rect(sc.instance("ceiling"), [0, 0, H], [L, 0, 0], [0, W, 0], 0.95, holes=lay.ceiling_holes)
    for w in lay.walls:
        holes = [(s0 / w.length, s1 / w.length, z0 / H, z1 / H) for s0, s1, z0, z1 in w.holes]
        sc.rect(sc.instance("wall"), _xyz(w.p0, 0.0), _vec(w.length * w.d), [0, 0, H], 0.92, holes=holes)

    objects = sc.sample(points)
    # Rooms of the release sit at arbitrary building coordinates.
    offset = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-1, 2)])
    return kind, [(c, xyz + offset, rgb) for c, xyz, rgb in objects]


PARTIAL_CUTS = ("full", "no-floor", "no-ceiling", "no-floor-ceiling", "half-bare", "one-wall")


def partial_room(rng: np.random.Generator, cut: str, points: int = 120_000, kind: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A room as real scans see it: ``(xyz float64 (N, 3), rgb uint8 (N, 3), S3DIS label (N,))``,
    z-up metres with its min corner at 0, with part of it cut away: ``no-floor``, ``no-ceiling``,
    ``no-floor-ceiling``; ``half-bare`` (no ceiling, no floor, only the half x < L/2, so one end
    wall dominates the planar normals); ``one-wall`` (a pass along the wall at y = 0: the points
    within 1.5 m of it, no ceiling); ``full`` keeps everything. A ``hallway`` kind with
    ``no-ceiling`` is a corridor whose walls outweigh its floor."""
    from ..classes import S3DIS_CLASSES
    if cut not in PARTIAL_CUTS:
        raise ValueError(f"cut must be one of {PARTIAL_CUTS}, got {cut!r}")
    _, objects = generate_room(rng, points, kind)
    xyz = np.concatenate([o[1] for o in objects])
    rgb = np.concatenate([o[2] for o in objects])
    label = np.concatenate([np.full(len(o[1]), S3DIS_CLASSES.index(o[0])) for o in objects])
    xyz = xyz - xyz.min(0)
    floor, ceiling = label == S3DIS_CLASSES.index("floor"), label == S3DIS_CLASSES.index("ceiling")
    keep = np.ones(len(xyz), dtype=bool)
    if cut in ("no-floor", "no-floor-ceiling", "half-bare"):
        keep &= ~floor
    if cut in ("no-ceiling", "no-floor-ceiling", "half-bare", "one-wall"):
        keep &= ~ceiling
    if cut == "half-bare":
        keep &= xyz[:, 0] < 0.5 * xyz[:, 0].max()
    if cut == "one-wall":
        keep &= xyz[:, 1] < 1.5
    return xyz[keep], rgb[keep], label[keep]


# --------------------------------------------------------------------------------------------
# Writing the raw layout

_FMT = "%.3f %.3f %.3f %d %d %d"


def _write_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    table = np.concatenate((xyz, rgb.astype(np.float64)), axis=1)
    with open(path, "w") as f:
        np.savetxt(f, table, fmt=_FMT)


def _inject_defects(room_dir: Path, rng: np.random.Generator) -> list[str]:
    """The known defects of the release, for tests and demos: a NUL between two colour values,
    a control byte inside a number, junk files, a duplicate copy and an unknown class prefix."""
    ann = room_dir / "Annotations"
    notes = []
    ceiling = sorted(ann.glob("ceiling_*.txt"))[0]
    lines = ceiling.read_bytes().split(b"\n")
    k = min(len(lines) - 2, 5)
    parts = lines[k].split(b" ")
    lines[k] = b" ".join(parts[:4]) + b"\x00" + b" ".join(parts[4:])
    ceiling.write_bytes(b"\n".join(lines))
    notes.append(f"{ceiling.name}:{k + 1}: NUL between two colour values")
    wall = sorted(ann.glob("wall_*.txt"))[0]
    lines = wall.read_bytes().split(b"\n")
    k = min(len(lines) - 2, 3)
    num = lines[k].split(b" ")
    num[0] = num[0][:-1] + b"\x1f" + num[0][-1:]
    lines[k] = b" ".join(num)
    wall.write_bytes(b"\n".join(lines))
    notes.append(f"{wall.name}:{k + 1}: control byte inside a number")
    shutil.copy(wall, ann / f"{wall.stem} (1).txt")
    (ann / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(rng.integers(0, 256, 64, dtype=np.uint8)))
    (room_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    clutter = sorted(ann.glob("clutter_*.txt"))
    if clutter:
        clutter[-1].rename(ann / "stairs_1.txt")
        notes.append(f"{clutter[-1].name} renamed stairs_1.txt (unknown prefix -> clutter)")
    return notes


def write_room(room_dir: Path, objects: list[tuple[str, np.ndarray, np.ndarray]]) -> dict[str, int]:
    """Write one room folder (``Annotations/<class>_<i>.txt`` + ``<room>.txt``); returns counts."""
    ann = room_dir / "Annotations"
    ann.mkdir(parents=True)
    counters: dict[str, int] = {}
    files = []
    for cls, xyz, rgb in objects:
        counters[cls] = counters.get(cls, 0) + 1
        path = ann / f"{cls}_{counters[cls]}.txt"
        _write_points(path, xyz, rgb)
        files.append(path)
    with open(room_dir / f"{room_dir.name}.txt", "wb") as out:
        for p in files:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out)
    return counters


def room_plan(rooms: int, areas: Sequence[int], seed: int) -> list[tuple[int, int]]:
    """(index, area) of every room: rooms are dealt to the areas in turn."""
    if rooms < 1:
        raise ValueError(f"--rooms must be >= 1, got {rooms}")
    if not areas or any(a < 1 for a in areas):
        raise ValueError(f"--areas must be positive area numbers, got {list(areas)}")
    return [(i, areas[i % len(areas)]) for i in range(rooms)]


def write_synthetic(out_dir: str | Path, rooms: int = 12, seed: int = 0,
                    areas: Sequence[int] = (1, 2, 3, 4, 5, 6), points: int = 300_000,
                    defects: bool = False, overwrite: bool = False, progress: bool = True
                    ) -> list[dict]:
    """Write ``rooms`` synthetic rooms under ``out_dir/Area_k/`` (raw release layout).

    Each room folder is written under a temporary name and renamed when complete. An existing
    room folder is an error unless ``overwrite``. Returns one summary dict per room.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not MIN_ROOM_POINTS <= points <= MAX_ROOM_POINTS:
        raise ValueError(f"--points {points}: points per room must be in {MIN_ROOM_POINTS}..{MAX_ROOM_POINTS:,}")
    if rooms < 1:
        raise ValueError(f"--rooms {rooms}: must be >= 1")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder")
    plan = room_plan(rooms, list(areas), seed)
    # Names first (they depend on the kinds), so existing rooms are found before anything is written.
    drawn = []
    seen: dict[tuple[int, str], int] = {}
    for i, area in plan:
        rng = np.random.default_rng([seed, i])
        kind = ROOM_KINDS[int(rng.choice(len(ROOM_KINDS), p=[0.4, 0.25, 0.15, 0.2]))]
        seen[(area, kind)] = seen.get((area, kind), 0) + 1
        drawn.append((i, area, kind, f"{kind}_{seen[(area, kind)]}", rng))
    if not overwrite:
        clash = [out_dir / f"Area_{a}" / n for _, a, _, n, _ in drawn if (out_dir / f"Area_{a}" / n).exists()]
        if clash:
            raise FileExistsError(f"{clash[0]} already exists ({len(clash)} room(s); pass --overwrite)")
    summaries = []
    for i, area, kind, name, rng in tqdm(drawn, desc="synth", unit="room", disable=not progress):
        _, objects = generate_room(rng, points, kind)
        with atomic_dir(out_dir / f"Area_{area}" / name, overwrite=overwrite) as tmp:
            # The room-level file is named after the room, not the temporary folder.
            counters = write_room(tmp, objects)
            if tmp.name != name:
                (tmp / f"{tmp.name}.txt").rename(tmp / f"{name}.txt")
            notes = _inject_defects(tmp, rng) if defects else []
        summaries.append({"area": area, "name": name, "index": i,
                          "num_points": int(sum(len(x) for _, x, _ in objects)),
                          "objects": counters, "defects": notes})
    return summaries

