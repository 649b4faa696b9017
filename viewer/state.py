"""What the viewer shows, independent of any window: colouring mode, hidden classes, legend.

The interactive window and the headless renderer both ask a :class:`ViewerState` for the
points to draw and their colours; key presses go through :meth:`ViewerState.handle_key`, so
the key bindings are tested without opening a window.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pointseg.classes import NO_LABEL, NO_LABEL_COLOUR, ClassTable
from pointseg.io.scans import Scan
from pointseg.metrics import confusion_matrix, iou_per_class
from pointseg.voxels import voxel_keys

MODES = ("rgb", "pred", "gt", "error")
MODE_TITLES = {"rgb": "RGB", "pred": "Prediction", "gt": "Ground truth", "error": "Error"}
CORRECT_COLOUR = (170, 170, 170)   # error mode: correct points grey
WRONG_COLOUR = (255, 0, 0)         # error mode: wrong points red
HIDE_CLASSES = ("ceiling", "wall")  # what the hide toggle removes to see inside a room

# key -> action; the window shows this as its help text.
KEYS: dict[str, str] = {
    "1": "rgb", "2": "pred", "3": "gt", "4": "error",
    "m": "next", "h": "hide", "l": "legend",
}
KEY_HELP = ("1 RGB   2 prediction   3 ground truth   4 error   M next mode   "
            "H hide ceiling/walls   L print legend")


# ----------------------------------------------------------------------------- downsampling

@dataclass
class Subset:
    """Indices of the points shown, and how they were chosen."""

    index: np.ndarray          # (M,) int64 into the full scan
    voxel: float | None        # voxel edge length, None when not downsampled

    @property
    def downsampled(self) -> bool:
        return self.voxel is not None


def display_subset(xyz: np.ndarray, labels: Sequence[np.ndarray | None] = (),
                   max_points: int = 1_000_000, seed: int = 0) -> Subset:
    """Voxel-downsample to at most about ``max_points`` points, keeping every class present.

    One random point is kept per occupied voxel, so classes (and correct / wrong points) keep
    their share of the picture. A label value of ``labels`` (ground truth, prediction) that loses
    all its points this way gets one point per voxel it occupies back, so every class present
    stays visible. The voxel size is found by a few multiplicative steps assuming the points
    lie on surfaces (count ~ 1 / voxel^2).
    """
    n = len(xyz)
    if max_points <= 0:
        raise ValueError(f"max_points must be positive, got {max_points}")
    if n <= max_points:
        return Subset(np.arange(n, dtype=np.int64), None)
    labels = [np.asarray(l, dtype=np.int64) for l in labels if l is not None]
    # A random order makes "the first point of each voxel" a random point of it: the file order
    # (often grouped by class) must not decide which class a voxel shows.
    order = np.random.default_rng(seed).permutation(n)
    pts = xyz[order]
    lo = pts.min(0).astype(np.float64)
    ext = np.maximum(pts.max(0) - lo, 1e-9)
    area = max(ext[0] * ext[1], ext[0] * ext[2], ext[1] * ext[2], 1e-12)
    voxel = math.sqrt(area / max_points)
    best = None
    keep = None
    for _ in range(8):
        keys = voxel_keys(pts, voxel, lo)
        _, keep = np.unique(keys, return_index=True)
        if len(keep) <= max_points:
            best = (keep, keys, voxel)
            if len(keep) >= 0.7 * max_points:
                break
            voxel *= max(math.sqrt(len(keep) / max_points), 0.5)
        else:
            voxel *= min(math.sqrt(len(keep) / max_points) * 1.05, 2.0)
    if best is None:
        # Still too many after the steps (a cloud much sparser than a surface at this voxel size,
        # e.g. volumetric noise): keep a random share of the voxels, so the cap holds.
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_points, replace=False))
        best = (keep, keys, voxel)
    keep, keys, voxel = best
    extra = []
    for lab in labels:
        lab = lab[order]
        missing = np.setdiff1d(np.unique(lab), np.unique(lab[keep]))
        for c in missing:
            members = np.flatnonzero(lab == c)
            _, first = np.unique(keys[members], return_index=True)
            extra.append(members[first])
    if extra:
        keep = np.unique(np.concatenate([keep, *extra]))
    return Subset(np.sort(order[keep]), float(voxel))


# ----------------------------------------------------------------------------- state

@dataclass
class LegendRow:
    index: int
    name: str
    colour: tuple[int, int, int]
    count: int                       # points of this class in the labels the mode shows
    iou: float | None = None         # when both ground truth and prediction exist


@dataclass
class ViewerState:
    """Colouring state of one scan. ``scan`` is the full-resolution scan; legend counts and IoU
    are computed on every point, colours only on the displayed subset ``subset``."""

    scan: Scan
    classes: ClassTable
    mode: str = "rgb"
    hide: bool = False
    max_points: int = 1_000_000
    subset: Subset = field(init=False)
    messages: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for attr in ("label", "pred"):
            v = getattr(self.scan, attr)
            if v is not None and v.size and v.max() >= self.classes.num_classes:
                raise ValueError(f"{self.scan.path or 'scan'}: {attr} goes up to {int(v.max())}, "
                                 f"outside the class table '{self.classes.name}' "
                                 f"(0..{self.classes.num_classes - 1})")
        self.subset = display_subset(self.scan.xyz, (self.scan.label, self.scan.pred), self.max_points)
        if self.mode == "auto":
            self.mode = self.default_mode()
        self._check_mode(self.mode)
        self._conf = None
        if self.scan.label is not None and self.scan.pred is not None:
            self._conf = confusion_matrix(self.scan.label, self.scan.pred, self.classes.num_classes)

    # --- what exists
    @property
    def available_modes(self) -> tuple[str, ...]:
        s = self.scan
        have = {"rgb": True, "pred": s.pred is not None, "gt": s.label is not None,
                "error": s.pred is not None and s.label is not None}
        return tuple(m for m in MODES if have[m])

    def default_mode(self) -> str:
        for m in ("pred", "gt"):
            if m in self.available_modes:
                return m
        return "rgb"

    def _check_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
        if mode not in self.available_modes:
            need = {"pred": "a prediction (--labels PRED.npy or a file with a 'pred' property)",
                    "gt": "ground-truth labels in the scan",
                    "error": "both ground truth and a prediction"}[mode]
            raise ValueError(f"mode '{mode}' needs {need}")

    # --- key handling
    def handle_key(self, key: str) -> bool:
        """Apply one key press; returns True when what is drawn changed."""
        action = KEYS.get(key.lower())
        if action is None:
            return False
        if action in MODES:
            if action not in self.available_modes:
                self.messages.append(f"no {MODE_TITLES[action].lower()} for this scan")
                return False
            changed = action != self.mode
            self.mode = action
            return changed
        if action == "next":
            modes = self.available_modes
            self.mode = modes[(modes.index(self.mode) + 1) % len(modes)]
            return len(modes) > 1
        if action == "hide":
            if self._hide_labels() is None or not self._hidden_ids():
                self.messages.append("cannot hide ceiling/walls: no labels naming them")
                return False
            self.hide = not self.hide
            return True
        if action == "legend":
            self.messages.append(self.legend_text())
            return False
        return False

    # --- what to draw
    def _hide_labels(self) -> np.ndarray | None:
        """Labels that decide what 'hide ceiling/walls' removes: the shown ones, else any."""
        s = self.scan
        if self.mode == "pred" and s.pred is not None:
            return s.pred
        return s.label if s.label is not None else s.pred

    def _hidden_ids(self) -> list[int]:
        return [i for i, n in enumerate(self.classes.names) if n in HIDE_CLASSES]

    def visible(self) -> np.ndarray:
        """Indices into the full scan of the points to draw now."""
        idx = self.subset.index
        if self.hide:
            lab = self._hide_labels()
            if lab is not None:
                idx = idx[~np.isin(lab[idx], self._hidden_ids())]
        return idx

    def colours(self, idx: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(M, 3)`` colours of points ``idx`` (default: :meth:`visible`) in the current mode."""
        if idx is None:
            idx = self.visible()
        return colours_for(self.scan, self.classes, self.mode, idx)

    # --- legend
    def legend(self) -> list[LegendRow]:
        """Classes present in the labels of the current mode (both, in error mode)."""
        s, k = self.scan, self.classes.num_classes
        gt_c = np.bincount(s.label[s.label != NO_LABEL], minlength=k) if s.label is not None else None
        pr_c = np.bincount(s.pred, minlength=k) if s.pred is not None else None
        if self.mode == "pred" or (self.mode == "rgb" and gt_c is None):
            counts = pr_c
        else:
            counts = gt_c
        if counts is None:
            return []
        iou = iou_per_class(self._conf) if self._conf is not None else None
        present = counts > 0
        if self.mode == "error" and pr_c is not None:
            present |= pr_c > 0
        rows = []
        for i in np.flatnonzero(present):
            v = None if iou is None or np.isnan(iou[i]) else float(iou[i])
            rows.append(LegendRow(int(i), self.classes.names[i], tuple(self.classes.palette[i]),
                                  int(counts[i]), v))
        return rows

    @property
    def miou(self) -> float | None:
        if self._conf is None:
            return None
        iou = iou_per_class(self._conf)
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else None

    @property
    def accuracy(self) -> float | None:
        if self._conf is None:
            return None
        return float(np.trace(self._conf) / max(self._conf.sum(), 1))

    def legend_text(self) -> str:
        rows = self.legend()
        head = f"{MODE_TITLES[self.mode]} — {self.scan.num_points:,} points"
        if self.miou is not None:
            head += f", OA {100 * self.accuracy:.1f} %, mIoU {100 * self.miou:.1f} %"
        lines = [head]
        if self.mode == "error":
            wrong = int(self._conf.sum() - np.trace(self._conf))
            lines.append(f"  correct (grey) {self.scan.num_points - wrong:>12,}   wrong (red) {wrong:,}")
        for r in rows:
            iou = f"   IoU {100 * r.iou:5.1f} %" if r.iou is not None else ""
            lines.append(f"  {r.index:>2} {r.name:<14} rgb({r.colour[0]:>3},{r.colour[1]:>3},"
                         f"{r.colour[2]:>3}) {r.count:>12,}{iou}")
        return "\n".join(lines)

    def title(self) -> str:
        name = self.scan.path.name if self.scan.path is not None else "scan"
        t = f"pointseg view — {name} — {MODE_TITLES[self.mode]}"
        if self.subset.downsampled:
            t += (f" — voxel-downsampled for display: {len(self.subset.index):,} of "
                  f"{self.scan.num_points:,} points ({100 * self.subset.voxel:.1f} cm voxels)")
        if self.hide:
            t += " — ceiling/walls hidden"
        return t


def colours_for(scan: Scan, classes: ClassTable, mode: str, idx: np.ndarray) -> np.ndarray:
    """uint8 colours of points ``idx`` of ``scan`` in ``mode`` (rgb | pred | gt | error)."""
    if mode == "rgb":
        if scan.rgb is not None:
            return scan.rgb[idx]
        return height_ramp(scan.xyz[idx, 2], float(scan.xyz[:, 2].min()), float(scan.xyz[:, 2].max()))
    if mode == "pred":
        return classes.colors(scan.pred[idx])
    if mode == "gt":
        gt = scan.label[idx]
        return np.where((gt == NO_LABEL)[:, None], np.uint8(NO_LABEL_COLOUR),
                        classes.colors(np.maximum(gt, 0))).astype(np.uint8)
    if mode == "error":
        gt = scan.label[idx]
        ok = scan.pred[idx] == gt
        c = np.where(ok[:, None], np.uint8(CORRECT_COLOUR), np.uint8(WRONG_COLOUR))
        return np.where((gt == NO_LABEL)[:, None], np.uint8(NO_LABEL_COLOUR), c).astype(np.uint8)
    raise ValueError(f"unknown mode '{mode}'")


def height_ramp(z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Colour scans without RGB by height: dark blue (low) to light yellow (high)."""
    t = np.clip((z - lo) / max(hi - lo, 1e-9), 0.0, 1.0)[:, None]
    a = np.array([40, 60, 150], np.float64)
    b = np.array([250, 230, 120], np.float64)
    return np.round(a + t * (b - a)).astype(np.uint8)
