"""Headless rendering to PNG through Open3D's ``OffscreenRenderer``.

Works without a display or GPU (Open3D's Filament renderer on Mesa's software Vulkan/EGL):
unlit shader, post-processing off (so colours come out exactly as given, no tone mapping),
white background, an orthographic camera fitted to the whole cloud.

``render_png`` is the one entry point other code calls (``pointseg view --screenshot``,
``pointseg segment``'s PNG):

* ``mode`` ``rgb`` | ``pred`` | ``gt`` | ``error``: one view of exactly ``size`` pixels;
* ``mode="panels"``: RGB | prediction | ground truth | error (those that exist) side by side,
  each ``size`` pixels with a title bar, and a legend strip of the class colours below.
"""
from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from pointseg.classes import ClassTable
from pointseg.metrics import confusion_matrix, iou_per_class
from pointseg.atomic import atomic_path
from pointseg.io.scans import Scan, check_labels, default_table, read_scan

from .quiet import engine_output_silenced
from .state import CORRECT_COLOUR, MODE_TITLES, MODES, WRONG_COLOUR, colours_for, display_subset

VIEWS = ("top", "iso", "front", "side")
# Direction from the cloud's centre to the camera, and the camera's up vector (z is up).
_VIEW_DIRS = {
    "top": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "iso": ((-0.6, -0.8, 1.4), (0.0, 0.0, 1.0)),   # 54 deg above the horizon
    "front": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "side": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}
BACKGROUND = (255, 255, 255)
DEFAULT_SIZE = (640, 480)
# A 640x480 view has 307 k pixels: more points than ~1.5 per pixel only cost render time.
DEFAULT_MAX_POINTS = 500_000
_LOCK = threading.Lock()   # Filament allows one offscreen renderer at a time per process


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size '{text}': expected WIDTHxHEIGHT, e.g. 640x480") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise ValueError(f"--size '{text}': width and height must be in 16..8192")
    return w, h


# ----------------------------------------------------------------------------- inputs

def as_scan(scan_or_arrays: Scan | str | Path | Mapping, pred: np.ndarray | None = None) -> Scan:
    """A :class:`Scan` from a scan, a scan file, or a mapping with ``xyz`` (and ``rgb``,
    ``label``, ``pred``); ``pred`` attaches (or replaces) a prediction."""
    if isinstance(scan_or_arrays, Scan):
        scan = scan_or_arrays
    elif isinstance(scan_or_arrays, (str, Path)):
        scan = read_scan(scan_or_arrays)
    elif isinstance(scan_or_arrays, Mapping):
        d = dict(scan_or_arrays)
        unknown = set(d) - {"xyz", "rgb", "label", "pred", "classes", "path"}
        if unknown or "xyz" not in d:
            raise ValueError(f"render: arrays need 'xyz' (and optional rgb/label/pred), got {sorted(d)}")
        scan = Scan(**d)
    else:
        raise TypeError(f"render: expected a Scan, a path or a mapping of arrays, got {type(scan_or_arrays)}")
    if pred is not None:
        where = str(scan.path) if scan.path else "scan"
        scan = Scan(xyz=scan.xyz, rgb=scan.rgb, label=scan.label,
                    pred=check_labels(pred, scan.num_points, where, None, "prediction"),
                    classes=scan.classes, path=scan.path, dropped=scan.dropped, kept=scan.kept,
                    model=scan.model)
    return scan


def resolve_classes(scan: Scan, classes: ClassTable | None = None,
                    palette: str | Path | None = None) -> ClassTable:
    """The class table to colour with: a user palette file wins, then ``classes`` given by the
    caller (e.g. from a checkpoint), then the table stored in the file, then S3DIS."""
    if palette is not None:
        table = ClassTable.load(palette)
    elif classes is not None:
        table = classes
    elif scan.classes is not None:
        table = scan.classes
    else:
        top = max((int(v.max()) + 1 for v in (scan.label, scan.pred) if v is not None and v.size), default=0)
        table = default_table(top)
    for attr in ("label", "pred"):
        v = getattr(scan, attr)
        if v is not None and v.size and v.max() >= table.num_classes:
            where = str(scan.path) if scan.path else "scan"
            raise ValueError(f"{where}: {attr} goes up to {int(v.max())}, outside the class table "
                             f"'{table.name}' (0..{table.num_classes - 1})")
    return table


def hidden_ids(classes: ClassTable, hide: str | Sequence[str], view: str) -> list[int]:
    """Class ids to leave out: ``"auto"`` hides the ceiling in views from above (it would cover
    the room), ``"none"`` nothing, else a comma list / sequence of class names."""
    if isinstance(hide, str):
        if hide == "auto":
            names = ["ceiling"] if view in ("top", "iso") else []
        elif hide in ("none", ""):
            names = []
        else:
            names = [h.strip() for h in hide.split(",") if h.strip()]
    else:
        names = list(hide)
    unknown = [n for n in names if n not in classes.names and not (hide == "auto")]
    if unknown:
        raise ValueError(f"--hide: {', '.join(unknown)} not in the class table "
                         f"({', '.join(classes.names)})")
    return [i for i, n in enumerate(classes.names) if n in names]


# ----------------------------------------------------------------------------- camera + renderer

def camera_frame(xyz: np.ndarray, view: str, aspect: float, margin: float = 0.04) -> dict:
    """Orthographic camera that frames every point of ``xyz`` for ``view`` at ``aspect`` = W/H."""
    if view not in _VIEW_DIRS:
        raise ValueError(f"unknown view '{view}' (choose from {', '.join(VIEWS)})")
    d, up = (np.asarray(v, np.float64) for v in _VIEW_DIRS[view])
    d /= np.linalg.norm(d)
    fwd = -d
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    lo, hi = xyz.min(0).astype(np.float64), xyz.max(0).astype(np.float64)
    centre = (lo + hi) / 2
    p = xyz.astype(np.float64) - centre
    pr, pu, pf = p @ right, p @ up, p @ fwd
    # Recentre on the projected extents so the cloud sits in the middle of the image.
    centre = centre + right * (pr.max() + pr.min()) / 2 + up * (pu.max() + pu.min()) / 2
    hx = max((pr.max() - pr.min()) / 2, 1e-6)
    hy = max((pu.max() - pu.min()) / 2, 1e-6)
    if hx / hy < aspect:
        hx = hy * aspect
    else:
        hy = hx / aspect
    hx, hy = hx * (1 + margin), hy * (1 + margin)
    radius = float(np.linalg.norm(hi - lo)) / 2 + 1e-6
    eye = centre + d * (radius * 2 + 1.0)
    return {"centre": centre, "eye": eye, "up": up, "hx": hx, "hy": hy,
            "near": 0.01, "far": radius * 4 + 2.0}


def auto_point_size(num_points: int, size: tuple[int, int]) -> float:
    """Bigger points for sparse clouds so the image has no holes; 1-2 px for dense ones."""
    w, h = size
    s = np.sqrt(w * h * 0.35 / max(num_points, 1))
    return float(np.clip(np.round(s), 1 if num_points > w * h else 2, 8))


class OffscreenViews:
    """One ``OffscreenRenderer`` of a fixed size, rendering point clouds with the unlit shader.

    Use as a context manager: Filament aborts the process if a renderer is torn down while
    geometry still uses its materials, so geometry is cleared and the renderer released in
    ``__exit__``; a lock keeps to one renderer at a time. The engine's start-up lines are kept
    off the terminal for the renderer's whole life (:mod:`viewer.quiet`; ``--verbose`` shows them).
    """

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self._r = None
        self._quiet = None

    def __enter__(self) -> "OffscreenViews":
        _LOCK.acquire()
        try:
            self._quiet = engine_output_silenced()
            self._quiet.__enter__()
            from open3d.visualization import rendering
            self._rendering = rendering
            self._r = rendering.OffscreenRenderer(int(self.size[0]), int(self.size[1]))
            scene = self._r.scene
            scene.set_background([c / 255 for c in BACKGROUND] + [1.0])
            scene.view.set_post_processing(False)
            scene.show_axes(False)
        except BaseException as e:
            try:
                if self._quiet is not None:
                    self._quiet.__exit__(type(e), e, e.__traceback__)
            finally:
                self._quiet = None
                _LOCK.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._r is not None:
                self._r.scene.clear_geometry()
                self._r = None
                gc.collect()
        finally:
            try:
                if self._quiet is not None:
                    self._quiet.__exit__(*exc)
            finally:
                self._quiet = None
                _LOCK.release()

    def render(self, xyz: np.ndarray, colours: np.ndarray, view: str, frame_xyz: np.ndarray,
               point_size: float | None = None) -> np.ndarray:
        """Render points ``xyz`` with uint8 ``colours``; the camera frames ``frame_xyz``.
        Returns an ``(H, W, 3)`` uint8 image."""
        import open3d as o3d
        rendering = self._rendering
        w, h = self.size
        scene = self._r.scene
        scene.clear_geometry()
        if len(xyz):
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
            pc.colors = o3d.utility.Vector3dVector(colours.astype(np.float64) / 255.0)
            mat = rendering.MaterialRecord()
            mat.shader = "defaultUnlit"
            mat.point_size = float(point_size or auto_point_size(len(xyz), self.size))
            scene.add_geometry("cloud", pc, mat)
        f = camera_frame(frame_xyz, view, w / h)
        cam = scene.camera
        cam.set_projection(rendering.Camera.Projection.Ortho, -f["hx"], f["hx"], -f["hy"], f["hy"],
                           f["near"], f["far"])
        cam.look_at(f["centre"].astype(np.float32), f["eye"].astype(np.float32),
                    f["up"].astype(np.float32))
        img = np.asarray(self._r.render_to_image())[..., :3].copy()
        scene.clear_geometry()
        return img


# ----------------------------------------------------------------------------- 2-D composition

def _font(size: int):
    from PIL import ImageFont
    try:
        import matplotlib
        path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except Exception:  # no matplotlib / FreeType: Pillow's own font
        try:
            return ImageFont.load_default(size=size)
        except TypeError:
            return ImageFont.load_default()


def title_bar(text: str, width: int, height: int) -> np.ndarray:
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (width, height), (245, 245, 245))
    d = ImageDraw.Draw(img)
    font = _font(max(int(height * 0.6), 8))
    # Shorten titles that do not fit rather than letting them run off the panel.
    t = text
    while len(t) > 4 and d.textlength(t, font=font) > width - 8:
        t = t[:-2]
    if t != text:
        t = t[:-1] + "…"
    tw = d.textlength(t, font=font)
    d.text(((width - tw) / 2, height / 2), t, fill=(20, 20, 20), font=font, anchor="lm")
    return np.asarray(img)


@dataclass
class LegendEntry:
    colour: tuple[int, int, int]
    text: str


def legend_strip(entries: Sequence[LegendEntry], width: int, font_px: int = 13) -> np.ndarray:
    """Rows of colour swatches with their labels, wrapped to ``width``."""
    from PIL import Image, ImageDraw
    font = _font(font_px)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sw, pad, row_h = font_px, 6, font_px + 8
    items, x, y = [], pad, pad
    for e in entries:
        w = sw + 4 + int(probe.textlength(e.text, font=font)) + 2 * pad
        if x + w > width - pad and x > pad:
            x, y = pad, y + row_h
        items.append((x, y, e))
        x += w
    height = y + row_h + pad
    img = Image.new("RGB", (width, height), BACKGROUND)
    d = ImageDraw.Draw(img)
    for x, y, e in items:
        d.rectangle([x, y + 2, x + sw, y + 2 + sw], fill=tuple(e.colour), outline=(120, 120, 120))
        d.text((x + sw + 4, y + 2 + sw / 2), e.text, fill=(20, 20, 20), font=font, anchor="lm")
    return np.asarray(img)


def compose(panels: Sequence[np.ndarray], titles: Sequence[str] | None,
            legend: Sequence[LegendEntry] | None, gap: int = 4) -> np.ndarray:
    """Panels side by side (with title bars), a legend strip underneath."""
    h, w = panels[0].shape[:2]
    cols = []
    for i, p in enumerate(panels):
        if titles is not None:
            bar = title_bar(titles[i], w, max(18, h // 14))
            p = np.concatenate([bar, p], axis=0)
        cols.append(p)
        if i + 1 < len(panels):
            cols.append(np.full((p.shape[0], gap, 3), 255, np.uint8))
    img = np.concatenate(cols, axis=1)
    if legend:
        img = np.concatenate([img, legend_strip(legend, img.shape[1], max(11, min(16, h // 30)))], axis=0)
    return img


def save_png(img: np.ndarray, out_path: str | Path, overwrite: bool = False,
             classes: ClassTable | None = None) -> Path:
    """Write atomically; the class table used goes into a ``pointseg_classes`` text chunk (JSON)."""
    import json
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    out = Path(out_path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the screenshot must be a .png file")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    info = PngInfo()
    if classes is not None:
        info.add_text("pointseg_classes", json.dumps(classes.to_dict()))
    with atomic_path(out) as tmp:
        Image.fromarray(img).save(tmp, format="PNG", pnginfo=info)
    return out


# ----------------------------------------------------------------------------- public API

def legend_entries(classes: ClassTable, ids: Sequence[int], iou: np.ndarray | None = None) -> list[LegendEntry]:
    out = []
    for i in ids:
        t = classes.names[i]
        if iou is not None and not np.isnan(iou[i]):
            t += f" {100 * iou[i]:.0f}%"
        out.append(LegendEntry(tuple(classes.palette[i]), t))
    return out


def render_images(scan: Scan, classes: ClassTable, modes: Sequence[str], size=DEFAULT_SIZE,
                  view: str = "iso", max_points: int = DEFAULT_MAX_POINTS,
                  hide: str | Sequence[str] = "auto", point_size: float | None = None,
                  extra: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
    """One image per mode (plus one per label array in ``extra``, coloured by class), all with
    the same points and camera."""
    sub = display_subset(scan.xyz, (scan.label, scan.pred, *extra), max_points)
    idx = sub.index
    drop = hidden_ids(classes, hide, view)
    deciding = scan.label if scan.label is not None else scan.pred
    if deciding is None and extra:
        deciding = extra[0]
    if drop and deciding is not None:
        idx = idx[~np.isin(deciding[idx], drop)]
        if len(idx) == 0:          # everything hidden: show everything rather than nothing
            idx = sub.index
    xyz = scan.xyz[idx]
    images = []
    with OffscreenViews(size) as r:
        for m in modes:
            images.append(r.render(xyz, colours_for(scan, classes, m, idx), view, xyz, point_size))
        for lab in extra:
            images.append(r.render(xyz, classes.colors(lab[idx]), view, xyz, point_size))
    return images


def render_png(scan_or_arrays: Scan | str | Path | Mapping, out_path: str | Path, *,
               mode: str = "panels", classes: ClassTable | None = None,
               pred: np.ndarray | None = None, size: tuple[int, int] = DEFAULT_SIZE,
               view: str = "iso", max_points: int = DEFAULT_MAX_POINTS,
               hide: str | Sequence[str] = "auto", palette: str | Path | None = None,
               point_size: float | None = None, overwrite: bool = False,
               confusion: np.ndarray | None = None) -> Path:
    """Render a scan (or arrays ``{"xyz", "rgb", "label", "pred"}``) to a PNG, headless.

    ``mode``: ``rgb`` | ``pred`` | ``gt`` | ``error`` (one ``size`` image) or ``panels``
    (every available one side by side, titled, with a legend strip). ``classes`` (e.g. from a
    checkpoint) wins over the table stored in the scan; ``palette`` (a JSON/YAML file) wins
    over both. ``hide``: ``auto`` (ceiling hidden in top/iso views), ``none`` or class names.
    Written atomically; an existing ``out_path`` is refused unless ``overwrite``.
    """
    scan = as_scan(scan_or_arrays, pred)
    table = resolve_classes(scan, classes, palette)
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    avail = ["rgb"] + [m for m, ok in (("pred", scan.pred is not None), ("gt", scan.label is not None),
                                       ("error", scan.pred is not None and scan.label is not None)) if ok]
    if mode == "panels":
        modes = avail
    elif mode in MODES:
        if mode not in avail:
            need = {"pred": "a prediction (--labels PRED.npy or a 'pred' property)",
                    "gt": "ground-truth labels in the scan",
                    "error": "both ground truth and a prediction"}[mode]
            raise ValueError(f"--mode {mode} needs {need}")
        modes = [mode]
    else:
        raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MODES + ('panels',))})")
    images = render_images(scan, table, modes, size, view, max_points, hide, point_size)
    if mode != "panels":
        return save_png(images[0], out, overwrite, table)
    titles = [MODE_TITLES[m] for m in modes]
    iou = None
    if scan.label is not None and scan.pred is not None:
        # the caller's confusion (segment has it in its summary) is used, not computed again
        conf = (np.asarray(confusion) if confusion is not None
                else confusion_matrix(scan.label, scan.pred, table.num_classes))
        iou = iou_per_class(conf)
        wrong = 1 - np.trace(conf) / max(conf.sum(), 1)
        titles[modes.index("pred")] = f"Prediction (mIoU {100 * np.nanmean(iou):.1f}%)"
        titles[modes.index("error")] = f"Error ({100 * wrong:.1f}% wrong)"
    present = _present(table, scan.label, scan.pred)
    entries = legend_entries(table, present, iou)
    if "error" in modes:
        entries += [LegendEntry(CORRECT_COLOUR, "correct"), LegendEntry(WRONG_COLOUR, "wrong")]
    return save_png(compose(images, titles, entries), out, overwrite, table)


def _present(classes: ClassTable, *labels: np.ndarray | None) -> list[int]:
    seen = np.zeros(classes.num_classes, bool)
    for l in labels:
        if l is not None and l.size:
            l = l[l >= 0]               # NO_LABEL: points without ground truth name no class
            seen |= np.bincount(l, minlength=classes.num_classes)[: classes.num_classes] > 0
    return [int(i) for i in np.flatnonzero(seen)]
