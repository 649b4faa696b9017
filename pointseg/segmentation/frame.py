"""The scan's frame: which way is up, what unit, and how the walls are turned.

S3DIS models are trained on rooms that are z-up, in metres, with walls along x and y. Scans from
RGB-D cameras are y-down (camera frame), some files are in millimetres, and scans may be turned by
any angle about the vertical. :class:`Frame` is the similarity transform

.. math::  p' = s \\, R \\, p

(``R`` a rotation, ``s`` the unit scale) that takes a scan into that convention; ``segment``
applies it before cutting blocks and keeps its outputs in the scan's own frame (labels are per
point, so only the network's input moves).

The rule: **a file's own axes are kept unless there is strong evidence against them.** Real scans
are mostly partial (a pass that stops at a wall, a corridor, a room without its ceiling, a desk seen
by a camera), and in a room every coordinate axis is the normal of some large plane, so "the
dominant planar normal" is no evidence of gravity: on a partial room it turns a correct file on its
side. Each decision is a :class:`Decision` with its evidence, a confidence in [0, 1], the runner-up
and the flag that overrides it; a guess below :data:`CONFIDENT` keeps the file as it is.

Up (``--up auto``), the evidence in the order it is trusted:

1. **The file format's convention.** LAS/LAZ coordinates are z-up by the ASPRS standard (projected
   or geographic coordinates with elevation): +z, certain.
2. **A single camera view.** An organised PCD (``HEIGHT`` > 1, as RGB-D drivers write it), or a
   cloud lying in a viewing cone in front of the origin along +z (the sensor at the origin, every
   point at ``|x|, |y| <= 2 z``, at a depth camera's range, over a camera's angle and 2.5D: one
   surface along each ray, so neither a z-up scan with elevations far above its origin nor a room
   whose origin lies under its floor is taken for one), is in a camera frame: x right, y down, z forward, so up is near
   -y. Cameras are tilted (the Kinect scans in ``shared/real_scans`` look down 35-45 degrees), so up
   is refined by the supporting plane: the largest plane (RANSAC) whose normal lies within
   :data:`SUPPORT_CONE_DEG` of -y, its normal turned towards the sensor (a camera sees a table or a
   floor from above). A PCD ``VIEWPOINT`` that is not the identity places the sensor: the cone test
   and the camera axes are read in the sensor's frame.
3. **Room geometry**, only when it is unambiguous. For each coordinate axis: a floor *and* a
   ceiling (planar points with normals along it covering :data:`PAIR_COVER` of the footprint at the
   two ends of its extent), mass resting low (:data:`SUPPORT_SHARE` of the points between those ends
   in the lower half: furniture stands on floors), and the smallest extent (rooms are wider than
   high). The file's z is replaced only when another axis has all three (with
   :data:`STRONG_SUPPORT`), while z has a pair at both ends (the scan is closed along z, so z is
   not the up of a room scanned without its floor or ceiling), is not the smallest extent and
   shows no mass resting low in either direction, and the other axis's extent reads as a storey's
   height (:data:`STOREY_HEIGHT_M`) in metres, centimetres or millimetres (a corridor's width does not).
4. Otherwise the file's axes are kept, with a low confidence and the ``--up`` flag to change it.

Known failure modes: a multi-view RGB-D reconstruction exported in its first camera's frame, with
no floor-and-ceiling pair, is not recognised as a camera frame (it keeps its axes and says so); a
camera looking at a wall with no supporting surface in view gets plain -y (no refinement); an
upside-down file is kept upside down (its -z is named as the runner-up when it looks likelier; a
wrong flip would cost more than the rare upside-down file gains); a room in a camera frame without
a sensor cone, whose furniture is not clearly low, is kept (low confidence, flagged); a closed
corridor 2.3 m or wider whose furniture stands high along one wall could be turned onto that wall
(the only wrong turn the rule allows; seen on none of the synthetic or real scans here).

Units (``--units auto``): LAS/LAZ are taken in metres (the CRS's unit is not read: a US-feet CRS
needs ``--units``). A camera view's unit comes from its median depth (depth cameras see
:data:`CAMERA_DEPTH_M`; SDKs write metres or millimetres). Otherwise metres are kept unless the
scan's height along up is implausible in metres for anything scanned on the ground (over
:data:`MAX_METRE_HEIGHT`) while millimetres make it a room-sized height; a tabletop 0.7 m high
stays in metres. Centimetres are never guessed (rare in files, and a 300 m high metre scan would
read as a room): a room in cm keeps metres with a low confidence and cm as the runner-up.
Known failure mode: a tabletop that is not a camera view, in millimetres, keeps metres.

Walls (``--walls auto``): the dominant wall direction modulo 90 degrees (circular mean of ``4 phi``
of the horizontal normals); the scan is turned so its walls run along x and y only when the normals
agree (resultant length at least :data:`WALL_AGREEMENT`) and the turn is at least
:data:`MIN_YAW_DEG`. The quarter turn (a canonical orientation among the four that walls along
x/y allow) is not a default: S3DIS rooms come in all four, so it cannot make a scan more like the
training data, and it changes files that were right; ``--walls canonical`` adds it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from ..voxels import voxel_keys

UP_CHOICES: tuple[str, ...] = ("auto", "+z", "-z", "+y", "-y", "+x", "-x")
UNITS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
UNIT_CHOICES: tuple[str, ...] = ("auto", *UNITS)
WALL_CHOICES: tuple[str, ...] = ("auto", "off", "canonical")
CONFIDENT = 0.7               # a guess below this keeps the file's own axes / unit
TYPICAL_ROOM_HEIGHT_M = 3.0
MAX_METRE_HEIGHT = 60.0       # higher than this along up is not a ground scan in metres
ROOM_HEIGHT_M = (1.0, 8.0)    # a height read in millimetres must land here to be taken
SUPPORT_CONE_DEG = 55.0       # a camera's supporting plane: its normal this close to -y
PAIR_COVER = 0.6              # floor and ceiling each cover this share of the footprint
SUPPORT_SHARE = 0.55          # mass resting low: this share of the interior in the lower half
STRONG_SUPPORT = 0.6          # ... clearly low: what another axis needs to replace the file's z
STOREY_HEIGHT_M = (2.3, 6.0)  # ... and its extent must read as a storey's height in some unit
CAMERA_DEPTH_M = (0.15, 20.0)   # what depth cameras see
MIN_VIEW_DEG = (20.0, 12.0)     # a camera view spans at least this much across and up (degrees)
SINGLE_VIEW_SHARE = 0.7         # ... and hides none of this share of its points behind others
CONE_SHARE = 0.98             # points inside the viewing cone for a single camera view
MIN_YAW_DEG = 1.0
WALL_AGREEMENT = 0.5          # resultant length of exp(4i phi) over the wall normals
MIN_WALL_NORMALS = 200
MIN_QUARTER_OFFSET = 0.002    # centroid offset / horizontal extent at or below which none is taken
SQUARE_RATIO = 1.05           # sides within 5 % of each other: a square room
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class FileHints:
    """What a file says about its frame, beside its points: ``format`` (suffix without the dot),
    ``organized`` (width, height) of an organised cloud, ``viewpoint`` (tx ty tz qw qx qy qz) of a
    PCD, ``training_frame`` for a file already in the training convention. The reader fills it;
    the engine only reads it."""

    format: str | None = None
    organized: tuple[int, int] | None = None
    viewpoint: tuple[float, ...] | None = None
    training_frame: bool = False      # already z-up metres with walls along x/y (a prepared room)

    @classmethod
    def of(cls, scan: Any) -> "FileHints":
        """The hints of a scan-like object (attributes ``path``, ``organized``, ``viewpoint``,
        ``training_frame``)."""
        path = getattr(scan, "path", None)
        fmt = str(path).rsplit(".", 1)[-1].lower() if path is not None and "." in str(path) else None
        viewpoint, origin = getattr(scan, "viewpoint", None), getattr(scan, "origin", None)
        if viewpoint is not None and origin is not None:   # the sensor in the scan's local coordinates
            viewpoint = (*(np.asarray(viewpoint[:3], dtype=np.float64) - origin), *viewpoint[3:])
        return cls(fmt, getattr(scan, "organized", None), viewpoint,
                   bool(getattr(scan, "training_frame", False)))


@dataclass
class Decision:
    """One frame decision: ``what`` (up, units, walls), the ``choice``, how sure (``confidence``
    in [0, 1]), the ``evidence`` in words, the ``runner_up`` when there is one, whether the file's
    own value was ``kept`` for want of evidence, and the ``flag`` that sets it by hand."""

    what: str
    choice: str
    confidence: float
    evidence: str
    runner_up: str | None = None
    kept: bool = False
    flag: str = ""
    source: str = "geometry"      # given, format, camera or geometry: what the evidence is

    def line(self) -> str:
        level = "high" if self.confidence >= 0.85 else "medium" if self.confidence >= CONFIDENT else "low"
        s = f"{self.what} {self.choice} (confidence {self.confidence:.2f}, {level}): {self.evidence}"
        if self.runner_up:
            s += f"; runner-up {self.runner_up}"
        if self.kept and self.flag and self.confidence < CONFIDENT:
            s += f"; kept as the file has it, pass {self.flag} to change it"
        return s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def axis_vector(name: str) -> np.ndarray:
    """``'+z'`` -> ``(0, 0, 1)``, ``'-y'`` -> ``(0, -1, 0)``."""
    if name not in UP_CHOICES or name == "auto":
        raise ValueError(f"--up must be one of {', '.join(UP_CHOICES)}, got {name!r}")
    v = np.zeros(3)
    v[_AXES[name[1]]] = 1.0 if name[0] == "+" else -1.0
    return v


def _axis_name(v: np.ndarray) -> str:
    i = int(np.argmax(np.abs(v)))
    if abs(v[i]) == 1.0 and np.count_nonzero(v) == 1:
        return ("+" if v[i] > 0 else "-") + "xyz"[i]
    return f"({v[0]:+.3f}, {v[1]:+.3f}, {v[2]:+.3f})"


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))


def _sample(xyz: np.ndarray, n: int, seed: int) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) > n:
        xyz = xyz[np.random.default_rng(seed).choice(len(xyz), n, replace=False)]
    return xyz


class ScanSample:
    """The subsample every estimate of one scan reads (``max_points`` points drawn with ``seed``),
    and its :func:`local_normals`, computed once when first asked: the up estimate and the wall turn
    use the same ones."""

    def __init__(self, xyz: np.ndarray, seed: int = 0, max_points: int = 20_000) -> None:
        self.pts = _sample(xyz, max_points, seed)
        self._normals: tuple[np.ndarray, np.ndarray] | None = None

    def normals(self) -> tuple[np.ndarray, np.ndarray]:
        """``(unit normals (M, 3), planar mask (M,))`` of :attr:`pts`."""
        if self._normals is None:
            self._normals = local_normals(self.pts)
        return self._normals


def local_normals(pts: np.ndarray, k: int = 12, planarity: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``(M, 3)`` (sign arbitrary) of points ``(M, 3)``: smallest-eigenvalue eigenvector
    of each point's ``k``-neighbour covariance, and the mask of the locally planar ones (that
    eigenvalue under ``planarity`` of the trace)."""
    from scipy.spatial import cKDTree
    if len(pts) < k + 1:
        return np.zeros((len(pts), 3)), np.zeros(len(pts), dtype=bool)
    _, nb = cKDTree(pts).query(pts, k=k)
    local = pts[nb] - pts[nb].mean(axis=1, keepdims=True)            # (M, k, 3)
    w, v = np.linalg.eigh(np.einsum("mki,mkj->mij", local, local))    # ascending
    return v[:, :, 0], w[:, 0] < planarity * np.maximum(w.sum(axis=1), 1e-300)


def planar_normals(xyz: np.ndarray, k: int = 12, max_points: int = 20_000, seed: int = 0,
                   planarity: float = 0.02) -> np.ndarray:
    """Unit normals ``(M, 3)`` of the locally planar points of a subsample (:func:`local_normals`)."""
    n, planar = local_normals(_sample(xyz, max_points, seed), k, planarity)
    return n[planar]


# ----------------------------------------------------------------------------- up: camera view

def _quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / max(float(np.linalg.norm(q)), 1e-300)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def sensor_pose(hints: FileHints) -> tuple[np.ndarray, np.ndarray]:
    """``(position, rotation)`` of the sensor: a PCD ``VIEWPOINT``, else the origin and identity."""
    vp = hints.viewpoint
    if vp is None or len(vp) != 7 or not np.all(np.isfinite(vp)):
        return np.zeros(3), np.eye(3)
    return np.asarray(vp[:3], dtype=np.float64), _quat_to_matrix(vp[3:])


def cone_share(pts_sensor: np.ndarray) -> float:
    """Share of points in front of the sensor (+z) within ``|x|, |y| <= 2 z`` (a 127-degree cone,
    wider than any depth camera's field of view)."""
    x, y, z = pts_sensor.T
    return float(np.mean((z > 0) & (np.abs(x) <= 2 * z) & (np.abs(y) <= 2 * z))) if len(z) else 0.0


def single_view_share(pts_sensor: np.ndarray) -> float:
    """Share of the points in front of the sensor that nothing nearer hides: none is more than 10 %
    of the median depth behind the nearest point along its ray (angular cells of about 4 points).
    Near 1 for what one camera sees (occlusion boundaries aside); a 3D scan seen from a point under
    its floor hides most of itself behind the floor."""
    x, y, z = pts_sensor.T
    front = z > 0
    if front.sum() < 50:
        return 0.0
    ang = np.stack([np.arctan2(x[front], z[front]), np.arctan2(y[front], z[front])], axis=1)
    depth = np.linalg.norm(pts_sensor[front], axis=1)
    area = max(float(np.prod(np.ptp(ang, axis=0))), 1e-12)
    cell = np.sqrt(area / max(len(ang) / 4.0, 1.0))          # about 4 points per occupied cell
    _, inverse = np.unique(voxel_keys(ang, cell), return_inverse=True)
    nearest = np.full(inverse.max() + 1, np.inf)
    np.minimum.at(nearest, inverse, depth)
    return float(np.mean(depth - nearest[inverse] <= 0.1 * np.median(depth)))


def supporting_plane(pts: np.ndarray, near: np.ndarray, seed: int = 0, trials: int = 400
                     ) -> tuple[np.ndarray, float] | None:
    """The largest plane (RANSAC, then a least-squares refit of its inliers) whose normal lies within
    :data:`SUPPORT_CONE_DEG` of ``near``; ``(unit normal towards the sensor at the origin, share of
    the points on it)``, or None when no such plane holds 5 % of the points."""
    if len(pts) < 50:
        return None
    rng = np.random.default_rng(seed)
    depth = float(np.median(np.linalg.norm(pts, axis=1)))
    tol = max(0.01 * depth, 1e-9)          # depth-camera noise grows with range: ~1 % of it
    cos_cone = np.cos(np.radians(SUPPORT_CONE_DEG))
    best, best_count = None, 0
    tri = rng.integers(0, len(pts), size=(trials, 3))
    for a, b, c in tri:
        n = np.cross(pts[b] - pts[a], pts[c] - pts[a])
        norm = np.linalg.norm(n)
        if norm == 0:
            continue
        n = n / norm
        if abs(n @ near) < cos_cone:
            continue
        count = int(np.count_nonzero(np.abs((pts - pts[a]) @ n) < tol))
        if count > best_count:
            best, best_count = (n, pts[a]), count
    if best is None or best_count < 0.05 * len(pts):
        return None
    n, p0 = best
    inl = pts[np.abs((pts - p0) @ n) < tol]
    c = inl.mean(0)
    w, v = np.linalg.eigh((inl - c).T @ (inl - c))
    n = v[:, 0]
    if n @ (-c) < 0:                       # the sensor (origin) is on the plane's upper side
        n = -n
    if abs(n @ near) < cos_cone:
        return None
    return n, len(inl) / len(pts)


def camera_up(sample: ScanSample, hints: FileHints, seed: int = 0) -> tuple[np.ndarray, Decision] | None:
    """Up for a single camera view (organised cloud, or every point in a cone in front of the
    sensor), refined by the supporting plane; None when the scan is not one."""
    t, r = sensor_pose(hints)
    local = (sample.pts - t) @ r                  # sensor frame: x right, y down, z forward
    share = cone_share(local)
    organised = hints.organized is not None and hints.organized[1] > 1
    if share < CONE_SHARE and not (organised and share >= 0.9):
        return None
    # A z-up scan far from its origin (local x/y, elevations of 100 m) also lies in that cone: a
    # camera is near what it sees (a depth camera's range, in metres or millimetres) and sees it
    # over a wide angle.
    depth = float(np.median(np.linalg.norm(local, axis=1)))
    if not any(CAMERA_DEPTH_M[0] <= depth * UNITS[u] <= CAMERA_DEPTH_M[1] for u in ("m", "mm")):
        return None
    ax, ay = (np.ptp(np.percentile(np.degrees(np.arctan2(local[:, i], local[:, 2])), [2, 98])) for i in (0, 1))
    if not organised and (ax < MIN_VIEW_DEG[0] or ay < MIN_VIEW_DEG[1]):
        return None
    # What one camera sees is 2.5D: one surface along each ray. A 3D scan seen from a point that
    # merely lies in front of it (a z-up room whose origin is under its floor) is not: the rays
    # cross the floor, the furniture and the ceiling.
    single = single_view_share(local)
    if not organised and single < SINGLE_VIEW_SHARE:
        return None
    why = (f"organised {hints.organized[0]} x {hints.organized[1]} cloud" if organised else
           "every point in a viewing cone in front of the origin")
    why += f" ({100 * share:.1f}% in front of the sensor): a camera frame, y down"
    conf = 0.95 if organised else 0.85
    minus_y = np.array([0.0, -1.0, 0.0])
    plane = supporting_plane(local, minus_y, seed)
    if plane is None:
        up = minus_y
        why += f"; no supporting plane within {SUPPORT_CONE_DEG:g} degrees of -y, so plain -y"
        conf -= 0.1
    else:
        up, on = plane
        why += (f"; the supporting plane ({100 * on:.0f}% of the points) tilts up "
                f"{_angle_deg(up, minus_y):.1f} degrees from -y")
    up_file = r @ up
    if hints.viewpoint is not None and not np.allclose(r, np.eye(3)):
        why += " (read in the sensor frame of the PCD VIEWPOINT)"
    return up_file, Decision("up", _axis_name(up_file), conf, why, runner_up="+z (the file's axes)",
                             flag="--up", source="camera")


# ----------------------------------------------------------------------------- up: room geometry

@dataclass
class AxisEvidence:
    """Room evidence along one signed coordinate axis (see the module docstring)."""

    name: str
    floor: float          # share of the footprint covered by planar points at the low end
    ceiling: float        # ... at the high end
    support: float        # share of the points between the ends in the lower half
    span: float           # robust extent along the axis
    smallest: bool = False

    @property
    def pair(self) -> bool:
        return min(self.floor, self.ceiling) >= PAIR_COVER

    @property
    def rests(self) -> bool:
        return self.support >= SUPPORT_SHARE

    @property
    def score(self) -> int:
        """How many of the three signs of a vertical axis it shows (0-3)."""
        return int(self.pair) + int(self.rests) + int(self.smallest)

    def describe(self) -> str:
        return (f"{self.name}: floor {100 * self.floor:.0f}% / ceiling {100 * self.ceiling:.0f}% of the "
                f"footprint, {100 * self.support:.0f}% of the mass in the lower half"
                + (", the smallest extent" if self.smallest else ""))


def axis_evidence(sample: ScanSample) -> list[AxisEvidence]:
    """:class:`AxisEvidence` for +x, -x, +y, -y, +z, -z."""
    pts = sample.pts
    normals, planar = sample.normals()
    spans = np.ptp(np.percentile(pts, [0.5, 99.5], axis=0), axis=0)
    out = []
    for ax in range(3):
        other = [i for i in range(3) if i != ax]
        cell = max(float(spans[other].max()) / 24, 1e-12)
        cells = np.floor((pts[:, other] - pts[:, other].min(0)) / cell).astype(np.int64)
        keys = cells[:, 0] * (int(cells[:, 1].max()) + 1) + cells[:, 1]
        footprint = max(len(np.unique(keys)), 1)
        along = planar & (np.abs(normals[:, ax]) > 0.97)
        for sign in (1.0, -1.0):
            h = sign * pts[:, ax]
            lo, hi = np.percentile(h, [0.5, 99.5])
            span = max(hi - lo, 1e-12)
            mid = h[(h > lo + 0.1 * span) & (h < hi - 0.1 * span)]
            low = along & (h < lo + 0.04 * span)
            high = along & (h > hi - 0.04 * span)
            out.append(AxisEvidence(("+" if sign > 0 else "-") + "xyz"[ax],
                                    len(np.unique(keys[low])) / footprint,
                                    len(np.unique(keys[high])) / footprint,
                                    float(np.mean(mid < (lo + hi) / 2)) if len(mid) else 0.5,
                                    float(spans[ax]), bool(spans[ax] < 0.9 * np.delete(spans, ax).min())))
    return out


def _storey_height(span: float) -> bool:
    """Whether ``span`` reads as a storey's height (2.3-6 m) in metres, centimetres or millimetres:
    a corridor's width (1.5-2.3 m) between two walls does not."""
    return any(STOREY_HEIGHT_M[0] <= span * u <= STOREY_HEIGHT_M[1] for u in UNITS.values())


def room_up(sample: ScanSample) -> tuple[np.ndarray, Decision]:
    """Up from room geometry, keeping +z unless the evidence against it is unambiguous."""
    ev = {e.name: e for e in axis_evidence(sample)}
    z, minus_z = ev["+z"], ev["-z"]
    others = sorted((e for e in ev.values() if e.name[1] != "z"), key=lambda e: (-e.score, -e.support))
    best = others[0]
    # Another axis wins only when the scan is closed along z as well (a pair at both ends of z, so
    # z is not the up of a room scanned without floor or ceiling), z shows neither the smallest
    # extent nor, in either direction, mass resting low, and the other axis shows all three signs
    # with clearly more mass low. Walls give pairs and extents like floors do: a partial upright
    # room or a corridor still has its furniture low, and then z is kept.
    if (best.score == 3 and best.support >= STRONG_SUPPORT and z.pair and not z.smallest
            and not (z.rests or minus_z.rests) and _storey_height(best.span)):
        return axis_vector(best.name), Decision(
            "up", best.name, 0.8, f"room geometry: {best.describe()}; the file's z is closed at both ends "
            f"but shows no other sign of gravity ({z.describe()})", runner_up="+z (the file's axes)",
            flag="--up")
    # Floor-and-ceiling pairs and the smallest extent are as true of walls as of floors; only mass
    # resting low tells gravity, so a kept +z is sure only with it and ahead of every other axis.
    conf = (0.9 if z.score == 3 and best.score <= 1 else
            0.8 if z.rests and z.score >= 2 and z.score > best.score else 0.55)
    why = f"the file's axes ({z.describe()})"
    if conf < CONFIDENT:
        why += "; no axis shows the signs of gravity unambiguously"
    rival = max([minus_z, best], key=lambda e: (e.score, e.support))
    runner = f"{rival.name} ({rival.score} of 3 signs)" if rival.score >= z.score else None
    return axis_vector("+z"), Decision("up", "+z", conf, why, runner_up=runner, kept=True, flag="--up")


def estimate_up(xyz: np.ndarray, hints: FileHints | None = None, seed: int = 0,
                sample: ScanSample | None = None) -> tuple[np.ndarray, Decision]:
    """The scan's up direction (unit vector in the file's coordinates) and the decision
    (``sample``: the scan's :class:`ScanSample`, drawn here when not given)."""
    hints = hints or FileHints()
    if hints.format in ("las", "laz"):
        return axis_vector("+z"), Decision("up", "+z", 0.99, "LAS/LAZ coordinates are z-up by the "
                                           "format's standard", flag="--up", source="format")
    sample = sample or ScanSample(xyz, seed)
    cam = camera_up(sample, hints, seed)
    if cam is not None:
        return cam
    return room_up(sample)


# ----------------------------------------------------------------------------- units

def camera_units(depth: float) -> tuple[str, Decision]:
    """Unit of a camera view from its median depth: depth cameras see 0.15-20 m, and their SDKs
    write metres or millimetres."""
    for unit, conf in (("m", 0.9), ("mm", 0.85), ("cm", 0.7)):
        if CAMERA_DEPTH_M[0] <= depth * UNITS[unit] <= CAMERA_DEPTH_M[1]:
            return unit, Decision("units", unit, conf, f"a camera view with a median depth of {depth:,.4g}: "
                                  f"{depth * UNITS[unit]:.2f} m in {unit}", kept=unit == "m",
                                  flag="--units", source="camera")
    return "m", Decision("units", "m", 0.5, f"a camera view with a median depth of {depth:,.4g}, in no "
                         "unit a depth camera's range", kept=True, flag="--units", source="camera")


def estimate_units(xyz_up: np.ndarray, hints: FileHints | None = None) -> tuple[str, Decision]:
    """Unit of a z-up scan and the decision: metres unless its height cannot be metres and another
    unit makes it a room's height."""
    hints = hints or FileHints()
    z = np.asarray(xyz_up, dtype=np.float64)[:, 2]
    height = float(np.subtract(*np.percentile(z, [99.5, 0.5]))) if len(z) else 0.0
    if hints.format in ("las", "laz"):
        return "m", Decision("units", "m", 0.9, f"LAS/LAZ: coordinates in the CRS's unit, read as metres "
                             f"(height {height:,.4g})", flag="--units", source="format")
    if not np.isfinite(height) or height <= 0:
        return "m", Decision("units", "m", 0.5, "the scan is flat along up; metres assumed", kept=True,
                             flag="--units")
    if height <= MAX_METRE_HEIGHT:
        conf = 0.9 if 0.05 <= height <= 30 else 0.7
        return "m", Decision("units", "m", conf, f"the scan is {height:,.4g} high along up, plausible in "
                             "metres", kept=True, flag="--units")
    # Millimetres only: the unit of depth-camera SDKs and CAD exports. Centimetre files are rare,
    # and reading a 100-800 m high metre scan (a tower, a cliff) as a room in centimetres would be
    # a silent disaster; cm is named as the runner-up for the user to pass instead.
    in_mm = height * UNITS["mm"]
    cm_room = ROOM_HEIGHT_M[0] <= height * UNITS["cm"] <= ROOM_HEIGHT_M[1]
    if not ROOM_HEIGHT_M[0] <= in_mm <= ROOM_HEIGHT_M[1]:
        return "m", Decision("units", "m", 0.5, f"the scan is {height:,.4g} high along up, more than "
                             f"{MAX_METRE_HEIGHT:g} m in metres, but not a room's height in mm either",
                             runner_up="cm" if cm_room else None, kept=True, flag="--units")
    return "mm", Decision("units", "mm", 0.85, f"the scan is {height:,.4g} high along up: {in_mm:.2f} m in "
                          f"mm, over {MAX_METRE_HEIGHT:g} m in metres", flag="--units")


# ----------------------------------------------------------------------------- walls

def yaw_to_walls(xyz_up: np.ndarray, seed: int = 0, normals: np.ndarray | None = None
                 ) -> tuple[float, Decision]:
    """Angle (radians, in [-pi/4, pi/4)) to turn a z-up scan about z so its walls run along x and y,
    and the decision (``normals``: precomputed :func:`planar_normals` of the z-up scan). Not turned
    when the wall normals do not agree or the turn is under :data:`MIN_YAW_DEG`."""
    normals = planar_normals(xyz_up, seed=seed) if normals is None else normals
    horiz = normals[np.abs(normals[:, 2]) < 0.3] if len(normals) else normals
    if len(horiz) < MIN_WALL_NORMALS:
        return 0.0, Decision("walls", "not turned", 0.6, f"{len(horiz)} vertical planar points, too few "
                             "to tell the walls' direction", kept=True)
    phi = np.arctan2(horiz[:, 1], horiz[:, 0])
    c = np.exp(4j * phi).mean()
    agree = float(abs(c))
    deg = float(np.degrees(np.angle(c) / 4))       # wall normal direction modulo 90 degrees
    ev = f"the vertical planes run at {deg:+.1f} degrees modulo 90 (agreement {agree:.2f} of {len(horiz)} normals)"
    if agree < WALL_AGREEMENT:
        return 0.0, Decision("walls", "not turned", 0.6, ev + ": no dominant wall direction",
                             runner_up=f"turn {-deg:+.1f} degrees", kept=True)
    if abs(deg) < MIN_YAW_DEG:
        return 0.0, Decision("walls", "not turned", min(0.95, 0.5 + agree / 2), ev + ": already along x/y",
                             kept=True)
    return float(np.radians(-deg)), Decision("walls", f"turned {-deg:+.1f} degrees about up",
                                             min(0.95, 0.5 + agree / 2), ev, flag="--walls off")


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
    """``p' = scale * rotation @ p`` takes the scan into z-up metres with walls along x/y;
    ``decisions`` says why, one :class:`Decision` per step."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    scale: float = 1.0
    decisions: list[Decision] = field(default_factory=list)

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and bool(np.array_equal(self.rotation, np.eye(3)))

    @property
    def unsure(self) -> list[Decision]:
        """The decisions taken with low confidence."""
        return [d for d in self.decisions if d.confidence < CONFIDENT]

    def lines(self) -> list[str]:
        return [d.line() for d in self.decisions]

    def to_dict(self) -> dict[str, Any]:
        return {"rotation": self.rotation.tolist(), "scale": self.scale,
                "decisions": [d.to_dict() for d in self.decisions]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Frame":
        """The frame :meth:`to_dict` wrote (a streamed run keeps its frame on disk)."""
        return cls(np.asarray(d["rotation"], dtype=np.float64), float(d["scale"]),
                   [Decision(**x) for x in d["decisions"]])

    def forward(self, xyz: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return np.asarray(xyz)
        # Each output coordinate from its own three products, not a matrix product: a point's result
        # is then the same whatever array it comes in (a streamed chunk or the whole scan), bit for bit.
        p, r = np.asarray(xyz, dtype=np.float64), self.rotation
        out = np.empty(p.shape, dtype=np.float32)
        for j in range(3):
            out[:, j] = (p[:, 0] * r[j, 0] + p[:, 1] * r[j, 1] + p[:, 2] * r[j, 2]) * self.scale
        return out

    def inverse(self, xyz: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return np.asarray(xyz)
        return ((np.asarray(xyz, dtype=np.float64) / self.scale) @ self.rotation).astype(np.float32)


def check_frame_choices(up: str, units: str, walls: str = "auto") -> None:
    """``--up`` / ``--units`` / ``--walls`` refused by name unless they are choices of
    :data:`UP_CHOICES` / :data:`UNIT_CHOICES` / :data:`WALL_CHOICES`."""
    if up not in UP_CHOICES:
        raise ValueError(f"--up must be one of {', '.join(UP_CHOICES)}, got {up!r}")
    if units not in UNIT_CHOICES:
        raise ValueError(f"--units must be one of {', '.join(UNIT_CHOICES)}, got {units!r}")
    if walls not in WALL_CHOICES:
        raise ValueError(f"--walls must be one of {', '.join(WALL_CHOICES)}, got {walls!r}")


def check_geometry(xyz: np.ndarray) -> None:
    """Refuse, in one line, a scan whose frame cannot be read: no finite point, one point, or all
    points on one line."""
    xyz = np.asarray(xyz)
    finite = xyz[np.isfinite(xyz).all(axis=1)] if xyz.ndim == 2 else xyz[:0]
    if len(finite) == 0:
        raise ValueError("the scan has no point with finite coordinates")
    if len(finite) < 3 or np.ptp(finite, axis=0).max() == 0:
        raise ValueError(f"the scan's {len(finite)} point(s) are all at one place: nothing to segment")


def resolve_frame(xyz: np.ndarray, up: str = "auto", units: str = "auto", walls: str = "auto",
                  hints: FileHints | None = None, seed: int = 0) -> Frame:
    """The :class:`Frame` for ``--up`` / ``--units`` / ``--walls``; ``auto`` decides from the
    file's conventions (``hints``) and the scan itself (see the module docstring)."""
    check_frame_choices(up, units, walls)
    check_geometry(xyz)
    decisions = []
    sample = ScanSample(xyz, seed)      # up, units and walls read the same points and normals
    if up == "auto":
        vec, d = estimate_up(xyz, hints, seed, sample)
    else:
        vec, d = axis_vector(up), Decision("up", up, 1.0, "given", source="given")
    decisions.append(d)
    rot = rotation_to_z(vec)
    upright = xyz if np.array_equal(rot, np.eye(3)) else np.asarray(xyz, dtype=np.float64) @ rot.T
    if units == "auto" and decisions[0].source == "camera":
        t, _ = sensor_pose(hints or FileHints())
        units, d = camera_units(float(np.median(np.linalg.norm(sample.pts - t, axis=1))))
    elif units == "auto":
        units, d = estimate_units(upright, hints)
    else:
        d = Decision("units", units, 1.0, "given", source="given")
    decisions.append(d)
    if walls != "off":
        normals, planar = sample.normals()
        yaw, d = yaw_to_walls(upright, seed, normals[planar] @ rot.T)
        if yaw != 0.0:
            rot = rotation_z(yaw) @ rot
        if walls == "canonical":
            q, why = quarter_turn(upright @ rotation_z(yaw).T if yaw != 0.0 else upright)
            d.evidence += f"; {why}"
            if q:
                rot = _quarter_rotation(q) @ rot
        decisions.append(d)
    return Frame(rot, UNITS[units], decisions)
