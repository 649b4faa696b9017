"""The scan's frame: which way is up, what unit, and how the walls are turned.

S3DIS models are trained on rooms that are z-up, in metres, with walls along x and y. Scans from
RGB-D cameras and scanners are often y-down (camera frame) or in millimetres, and turned by any
angle about the vertical. :class:`Frame` is the similarity transform

.. math::  p' = s \\, R \\, p

(``R`` a rotation, ``s`` the unit scale) that takes a scan into that convention; ``segment``
applies it before cutting blocks and keeps its outputs in the scan's own frame (labels are per
point, so only the network's input moves).

Estimation (``auto``), each step printable as one line:

* :func:`estimate_up`: local PCA normals of a subsample; the dominant normal direction (eigen-
  vector of the planar normals' scatter matrix with the largest eigenvalue) is the floor/ceiling
  direction; snapped to a coordinate axis when within 10 degrees. Its sign: furniture stands on
  the floor, so most points between the floor and ceiling planes lie in the lower half. Known
  limit: a long corridor whose walls outweigh floor plus ceiling is misread; pass ``--up``.
* :func:`estimate_units`: the room height (robust 0.5-99.5 percentile span along up) read as
  metres, centimetres or millimetres, whichever is closest to 3 m on a log scale.
* :func:`yaw_to_walls`: the dominant wall direction modulo 90 degrees from the horizontal
  normals (circular mean of ``4 phi``); the scan is turned so that walls run along x and y.
  Turns under 1 degree are left out (a scan that is already axis-aligned is not resampled; the
  quarter turn below is exact).
* :func:`quarter_turn`: walls along x/y leave four orientations (multiples of 90 degrees). S3DIS
  rooms come in all four, so none is "right", but the blocks a scan is cut into, and the
  room-normalised coordinates a model sees, depend on which. The one taken is read off the room
  itself: its longer side along x, then the end holding more of its points (the centroid's offset
  from the centre of its extent) positive. A scan turned by any angle then gives the same blocks
  as the upright one. A room too symmetric to tell keeps the orientation it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UP_CHOICES: tuple[str, ...] = ("auto", "+z", "-z", "+y", "-y", "+x", "-x")
UNITS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
UNIT_CHOICES: tuple[str, ...] = ("auto", *UNITS)
TYPICAL_ROOM_HEIGHT_M = 3.0
AXIS_SNAP_COS = float(np.cos(np.radians(10.0)))
MIN_YAW_DEG = 1.0
MIN_QUARTER_OFFSET = 0.002    # centroid offset / horizontal extent at or below which none is taken
SQUARE_RATIO = 1.05           # sides within 5 % of each other: a square room
_AXES = {"x": 0, "y": 1, "z": 2}


def axis_vector(name: str) -> np.ndarray:
    """``'+z'`` -> ``(0, 0, 1)``, ``'-y'`` -> ``(0, -1, 0)``."""
    if name not in UP_CHOICES or name == "auto":
        raise ValueError(f"--up must be one of {', '.join(UP_CHOICES)}, got {name!r}")
    v = np.zeros(3)
    v[_AXES[name[1]]] = 1.0 if name[0] == "+" else -1.0
    return v


def _axis_name(v: np.ndarray) -> str | None:
    i = int(np.argmax(np.abs(v)))
    if abs(v[i]) == 1.0 and np.count_nonzero(v) == 1:
        return ("+" if v[i] > 0 else "-") + "xyz"[i]
    return None


def _sample(xyz: np.ndarray, n: int, seed: int) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) > n:
        xyz = xyz[np.random.default_rng(seed).choice(len(xyz), n, replace=False)]
    return xyz


def planar_normals(xyz: np.ndarray, k: int = 12, max_points: int = 20_000, seed: int = 0,
                   planarity: float = 0.02) -> np.ndarray:
    """Unit normals ``(M, 3)`` (sign arbitrary) of the locally planar points of a subsample:
    smallest-eigenvalue eigenvector of each point's ``k``-neighbour covariance, kept when that
    eigenvalue is under ``planarity`` of the trace."""
    from scipy.spatial import cKDTree
    pts = _sample(xyz, max_points, seed)
    if len(pts) < k + 1:
        return np.zeros((0, 3))
    _, nb = cKDTree(pts).query(pts, k=k)
    local = pts[nb] - pts[nb].mean(axis=1, keepdims=True)            # (M, k, 3)
    cov = np.einsum("mki,mkj->mij", local, local)
    w, v = np.linalg.eigh(cov)                                        # ascending
    keep = w[:, 0] < planarity * np.maximum(w.sum(axis=1), 1e-300)
    return v[keep, :, 0]


def estimate_up(xyz: np.ndarray, seed: int = 0, normals: np.ndarray | None = None
                ) -> tuple[np.ndarray, str]:
    """The scan's up direction (unit vector) and one line saying why (``normals``: precomputed
    :func:`planar_normals`)."""
    pts = _sample(xyz, 20_000, seed)
    normals = planar_normals(pts, seed=seed) if normals is None else normals
    if len(normals) < 50:
        return np.array([0.0, 0.0, 1.0]), "too few planar points to tell; assumed +z"
    w, v = np.linalg.eigh(normals.T @ normals / len(normals))
    up = v[:, 2]
    share = w[2]
    i = int(np.argmax(np.abs(up)))
    snapped = abs(up[i]) >= AXIS_SNAP_COS
    if snapped:
        up = np.zeros(3)
        up[i] = 1.0
    h = pts @ up
    lo, hi = np.percentile(h, [1, 99])
    span = max(hi - lo, 1e-12)
    mid = h[(h > lo + 0.1 * span) & (h < hi - 0.1 * span)]
    low_share = float(np.mean(mid < (lo + hi) / 2)) if len(mid) else 0.5
    if low_share < 0.5:
        up, low_share = -up, 1.0 - low_share
    name = _axis_name(up) or f"({up[0]:+.3f}, {up[1]:+.3f}, {up[2]:+.3f})"
    return up, (f"{name}: {100 * share:.0f}% of the planar normals lie along it (floor/ceiling), and "
                f"{100 * low_share:.0f}% of the points between those planes are in its lower half")


def estimate_units(xyz_up: np.ndarray) -> tuple[str, str]:
    """Unit name of a z-up scan from its height, and one line saying why."""
    z = np.asarray(xyz_up, dtype=np.float64)[:, 2]
    height = float(np.subtract(*np.percentile(z, [99.5, 0.5]))) if len(z) else 0.0
    if not np.isfinite(height) or height <= 0:
        return "m", "the scan is flat along up; assumed metres"
    unit = min(UNITS, key=lambda u: abs(np.log(height * UNITS[u] / TYPICAL_ROOM_HEIGHT_M)))
    return unit, (f"{unit}: the scan is {height:,.4g} units high, {height * UNITS[unit]:.2f} m in {unit} "
                  f"(closest to a {TYPICAL_ROOM_HEIGHT_M:g} m room)")


def yaw_to_walls(xyz_up: np.ndarray, seed: int = 0, normals: np.ndarray | None = None
                 ) -> tuple[float, str]:
    """Angle (radians, in [-pi/4, pi/4)) to turn a z-up scan about z so its walls run along x and y
    (``normals``: precomputed :func:`planar_normals` of the z-up scan)."""
    normals = planar_normals(xyz_up, seed=seed) if normals is None else normals
    horiz = normals[np.abs(normals[:, 2]) < 0.3] if len(normals) else normals
    if len(horiz) < 50:
        return 0.0, "too few wall points to tell; not turned"
    phi = np.arctan2(horiz[:, 1], horiz[:, 0])
    c = np.exp(4j * phi).mean()
    wall = float(np.angle(c) / 4)                  # wall normal direction modulo 90 degrees
    deg = np.degrees(wall)
    if abs(deg) < MIN_YAW_DEG:
        return 0.0, f"walls within {MIN_YAW_DEG:g} degree of x/y ({deg:+.2f}); not turned"
    return -wall, (f"turned {-deg:+.1f} degrees about up: walls ran at {deg:+.1f} degrees "
                   f"(agreement {abs(c):.2f} of {len(horiz)} wall normals)")


def quarter_turn(xyz_aligned: np.ndarray) -> tuple[int, str]:
    """Quarter turns ``q`` (0..3, counter-clockwise about z) for a z-up scan whose walls run along
    x and y: the longer side of the horizontal extent (robust 1-99 percentile box) along x, then
    the larger component of the centroid's offset from the box centre positive. A square room
    (sides within ``SQUARE_RATIO``) takes the offset into the first quadrant instead."""
    xy = np.asarray(xyz_aligned, dtype=np.float64)[:, :2]
    lo, hi = np.percentile(xy, [1.0, 99.0], axis=0)
    side, offset = hi - lo, xy.mean(0) - (lo + hi) / 2
    tiny = MIN_QUARTER_OFFSET * float(np.linalg.norm(side))
    if max(side) > SQUARE_RATIO * max(min(side), 1e-12):
        base = 0 if side[0] >= side[1] else 1
        o = offset if base == 0 else np.array([-offset[1], offset[0]])   # the offset after the base turn
        d = int(np.argmax(np.abs(o)))
        if abs(o[d]) <= tiny:
            return base, f"quarter turn {90 * base} degrees: longer side along x (no off-centre mass to pick its end)"
        q = base if o[d] > 0 else base + 2
        return q, (f"quarter turn {90 * q} degrees: longer side along x, the room's off-centre mass towards "
                   f"+{'xy'[d]}")
    if np.linalg.norm(offset) <= tiny:
        return 0, "square and symmetric room: quarter turn kept"
    angle = np.degrees(np.arctan2(offset[1], offset[0])) % 360.0
    q = int((-(angle // 90.0)) % 4)
    return q, f"quarter turn {90 * q} degrees: square room, its off-centre mass turned towards +x+y"


def _quarter_rotation(q: int) -> np.ndarray:
    """Exact 90-degree multiples (no cos(pi/2) round-off)."""
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][q % 4]
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def rotation_to_z(up: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``up`` to +z (exact signed permutation for axes)."""
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    z = np.array([0.0, 0.0, 1.0])
    c = float(up @ z)
    if c >= 1.0:
        return np.eye(3)
    if c <= -1.0:
        return np.diag([1.0, -1.0, -1.0])           # half turn about x
    axis = np.cross(up, z)
    s = float(np.linalg.norm(axis))
    kx, ky, kz = axis / s
    k = np.array([[0, -kz, ky], [kz, 0, -kx], [-ky, kx, 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Frame:
    """``p' = scale * rotation @ p`` takes the scan into z-up metres with walls along x/y."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    scale: float = 1.0
    reasons: dict[str, str] = field(default_factory=dict)   # 'up', 'units', 'yaw' -> one line each

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and bool(np.array_equal(self.rotation, np.eye(3)))

    def forward(self, xyz: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return np.asarray(xyz)
        return ((np.asarray(xyz, dtype=np.float64) @ self.rotation.T) * self.scale).astype(np.float32)

    def inverse(self, xyz: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return np.asarray(xyz)
        return ((np.asarray(xyz, dtype=np.float64) / self.scale) @ self.rotation).astype(np.float32)


def check_frame_choices(up: str, units: str) -> None:
    """``--up`` / ``--units`` refused by name unless they are choices of :data:`UP_CHOICES` /
    :data:`UNIT_CHOICES`."""
    if up not in UP_CHOICES:
        raise ValueError(f"--up must be one of {', '.join(UP_CHOICES)}, got {up!r}")
    if units not in UNIT_CHOICES:
        raise ValueError(f"--units must be one of {', '.join(UNIT_CHOICES)}, got {units!r}")


def resolve_frame(xyz: np.ndarray, up: str = "auto", units: str = "auto", seed: int = 0) -> Frame:
    """The :class:`Frame` for ``--up`` / ``--units``; ``auto`` estimates from the scan itself.
    The wall turn is part of ``--up auto`` (an explicit ``--up`` is taken as already aligned)."""
    check_frame_choices(up, units)
    reasons = {}
    normals = planar_normals(xyz, seed=seed) if up == "auto" else None
    if up == "auto":
        vec, why = estimate_up(xyz, seed, normals)
        reasons["up"] = f"auto {why}"
    else:
        vec = axis_vector(up)
        reasons["up"] = f"{up} (given)"
    rot = rotation_to_z(vec)
    upright = xyz if np.array_equal(rot, np.eye(3)) else np.asarray(xyz, dtype=np.float64) @ rot.T
    if units == "auto":
        units, why = estimate_units(upright)
        reasons["units"] = f"auto {why}"
    else:
        reasons["units"] = f"{units} (given)"
    if up == "auto":
        yaw, why = yaw_to_walls(upright, seed, normals @ rot.T)
        if yaw != 0.0:
            rot = rotation_z(yaw) @ rot
        q, qwhy = quarter_turn(upright @ rotation_z(yaw).T if yaw != 0.0 else upright)
        reasons["yaw"] = f"{why}; {qwhy}"
        if q:
            rot = _quarter_rotation(q) @ rot
    return Frame(rot, UNITS[units], reasons)
