"""One self-contained HTML page to look at a scan or a segmentation in any current browser.

``write_html`` writes a single file that opens from ``file://`` with no server and no network:
three.js (``viewer/assets/three.min.js``, MIT, its licence kept in the page) and the page's own
script are inlined, and the points travel inside the file as gzip-compressed, base64-encoded
arrays that the browser inflates with its ``DecompressionStream``:

* positions quantised to uint16 per axis over the bounding box (0.15 mm steps over a 10 m room);
* RGB as uint8 triples, prediction and ground truth as class indices (uint8, uint16 above 256
  classes), confidence as uint8 (1/255 steps);
* at most ``max_points`` points (default 2,000,000): larger clouds are voxel-downsampled with
  :func:`viewer.state.display_subset` (every class kept) and the page says so; shares of points,
  IoU, OA and mIoU are computed here on every point.

Every string that comes from a user's file (class names, paths, model names) reaches the page only
inside a JSON block whose ``<``, ``>`` and ``&`` are escaped, and the page puts it into the DOM with
``textContent``: a class named ``</script><script>...`` stays text.
"""
from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pointseg.atomic import atomic_path
from pointseg.classes import NO_LABEL, NO_LABEL_COLOUR, ClassTable
from pointseg.metrics import confusion_matrix, iou_per_class

from .state import CORRECT_COLOUR, MODES, WRONG_COLOUR, display_subset

HTML_MAX_POINTS = 2_000_000
MIN_MAX_POINTS = 100
QUANT = 65535                        # uint16 position steps per axis
MAX_CLASSES = 65536                  # class indices travel as uint16 at most


@dataclass(frozen=True)
class HtmlPage:
    """What :func:`write_html` wrote."""

    path: Path
    points: int                      # points of the scan
    shown: int                       # points in the page
    voxel: float | None              # display voxel edge (scan units) when downsampled, else None
    bytes: int                       # size of the file


@functools.lru_cache(maxsize=None)
def _asset(name: str) -> str:
    return (resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


def _json_for_script(obj: Any) -> str:
    """JSON that cannot end its ``<script>`` element or open a comment there: ``<`` ``>`` ``&``
    as \\u escapes (valid JSON; ``ensure_ascii`` already escapes U+2028/2029)."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _encode(name: str, a: np.ndarray) -> tuple[dict[str, Any], str]:
    """(spec for the page's JSON, the ``<script>`` element holding gzip + base64 of ``a``)."""
    dtype = {np.dtype("<u1"): "uint8", np.dtype("<u2"): "uint16"}[a.dtype]
    # mtime=0: the same input gives the same file; level 6 is within a few % of 9 at half the time.
    data = base64.b64encode(gzip.compress(np.ascontiguousarray(a).tobytes(), 6, mtime=0)).decode("ascii")
    spec = {"id": f"d-{name}", "dtype": dtype, "length": int(a.size)}
    return spec, f'<script type="application/octet-stream" id="d-{name}">{data}</script>'


def _labels(v: Any, n: int, what: str, where: str, k: int) -> np.ndarray | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.shape != (n,):
        raise ValueError(f"{where}: {what} has shape {a.shape}, expected one label per point ({n},)")
    if a.dtype.kind not in "iu":
        if a.dtype.kind != "f" or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{where}: {what} must be integer class indices")
    a = a.astype(np.int64)
    # ground truth may mark points without one (NO_LABEL: a value the class map ignores)
    if n and (a.min() < (NO_LABEL if what == "the ground truth" else 0) or a.max() >= k):
        raise ValueError(f"{where}: {what} spans {int(a.min())}..{int(a.max())}, outside the class table "
                         f"(0..{k - 1})")
    return a


def _point_size(shown: int) -> float:
    """A starting size in pixels that closes the gaps of a typical room at its density."""
    return 2.0 if shown > 300_000 else 3.0 if shown > 50_000 else 4.0


def write_html(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None,
               pred: np.ndarray | None = None, label: np.ndarray | None = None,
               classes: ClassTable | None = None, confidence: np.ndarray | None = None, *,
               title: str | None = None, model: str | None = None, scan: str | None = None,
               summary: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None,
               mode: str = "auto", hide: Sequence[str] = ("ceiling",), point_size: float | None = None,
               max_points: int = HTML_MAX_POINTS, overwrite: bool = True,
               confusion: np.ndarray | None = None) -> HtmlPage:
    """Write the page for one scan to ``path`` (atomically: a temporary file renamed on success).

    ``xyz`` ``(N, 3)``; ``rgb`` uint8 ``(N, 3)``; ``pred`` / ``label`` class indices ``(N,)`` into
    ``classes`` (needed when either is given); ``confidence`` ``(N,)`` in [0, 1] for the prediction.
    ``title``, ``model``, ``scan`` and ``summary`` (label -> value lines) are shown as text.
    ``mode`` is the first colouring (``auto``: prediction > ground truth > RGB); the classes named
    in ``hide`` start hidden (the ceiling covers a room seen from above). Bad input raises
    ``ValueError`` with one line naming ``scan`` (or ``path``); an existing ``path`` is refused
    (``FileExistsError``) unless ``overwrite``; a write that fails raises ``ValueError`` naming
    ``path``.
    """
    path = Path(path)
    where = scan or str(path)
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{where}: points must be (N, 3), got {xyz.shape}")
    n = len(xyz)
    if n == 0:
        raise ValueError(f"{where}: no points to show")
    xyz = xyz.astype(np.float64)
    if not np.all(np.isfinite(xyz)):
        raise ValueError(f"{where}: {int((~np.isfinite(xyz).all(1)).sum())} points have NaN/inf coordinates")
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points must be at least {MIN_MAX_POINTS}, got {max_points}")
    if (pred is not None or label is not None) and classes is None:
        raise ValueError(f"{where}: class labels but no class table (names and colours) to show them with")
    k = classes.num_classes if classes is not None else 0
    if k > MAX_CLASSES:
        raise ValueError(f"{where}: {k} classes; the page holds at most {MAX_CLASSES}")
    pred = _labels(pred, n, "the prediction", where, k)
    label = _labels(label, n, "the ground truth", where, k)
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (n, 3):
            raise ValueError(f"{where}: {n} points but colours of shape {rgb.shape}")
        rgb = rgb.astype(np.uint8)
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != (n,) or not np.all((confidence >= 0) & (confidence <= 1)):
            raise ValueError(f"{where}: confidence must be one value in [0, 1] per point ({n},)")
        if pred is None:
            raise ValueError(f"{where}: a confidence without a prediction")
    have = {"rgb": True, "pred": pred is not None, "gt": label is not None,
            "error": pred is not None and label is not None}
    modes = [m for m in MODES if have[m]]
    if mode == "auto":
        mode = "pred" if have["pred"] else "gt" if have["gt"] else "rgb"
    if mode not in modes:
        raise ValueError(f"mode '{mode}' is not available for {where} (it has: {', '.join(modes)})")
    if point_size is not None and not (math.isfinite(point_size) and 0 < point_size <= 100):
        raise ValueError(f"point size must be in (0, 100] pixels, got {point_size}")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the page's file name, e.g. {path / 'scan.html'}")
    blocker = next((a for a in path.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"{path}: cannot write the page: {blocker} is a file, not a folder")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")

    # --- what is drawn
    sub = display_subset(xyz, (label, pred), max_points)
    idx = sub.index
    lo = xyz.min(0)
    ext = np.maximum(xyz.max(0) - lo, 1e-6)
    q = np.rint((xyz[idx] - lo) / ext * QUANT).astype("<u2")
    # one value above the classes encodes NO_LABEL in the ground truth (the page draws it grey)
    cls_dtype = "<u1" if k < 256 else "<u2"
    arrays: dict[str, np.ndarray] = {"pos": q.reshape(-1)}
    if rgb is not None:
        arrays["rgb"] = rgb[idx].reshape(-1)
    if pred is not None:
        arrays["pred"] = pred[idx].astype(cls_dtype)
    if label is not None:
        arrays["gt"] = np.where(label[idx] == NO_LABEL, k, label[idx]).astype(cls_dtype)
    if confidence is not None:
        arrays["conf"] = np.rint(confidence[idx] * 255).astype("<u1")

    # --- what is said, on every point
    counts = {key: np.bincount(v[v >= 0], minlength=k).tolist() for key, v in (("pred", pred), ("gt", label))
              if v is not None}
    iou = oa = miou = None
    wrong = 0
    if pred is not None and label is not None:
        # the caller's confusion (segment has it in its summary) is used, not computed again
        conf_m = np.asarray(confusion) if confusion is not None else confusion_matrix(label, pred, k)
        per = iou_per_class(conf_m)
        iou = [None if math.isnan(v) else float(v) for v in per]
        oa = float(np.trace(conf_m) / max(conf_m.sum(), 1))
        miou = float(np.nanmean(per)) if np.isfinite(per).any() else None
        wrong = int(conf_m.sum() - np.trace(conf_m))
    present = sorted({i for c in counts.values() for i, v in enumerate(c) if v > 0})
    names = list(classes.names) if classes is not None else []
    hidden = [i for i, nm in enumerate(names) if nm in set(hide) and i in present]
    lines = list(summary.items()) if isinstance(summary, Mapping) else list(summary or [])
    meta = {
        "title": title or f"pointseg — {Path(scan).name if scan else path.stem}",
        "scan": scan, "model": model, "points": n, "shown": int(len(idx)),
        "voxel": sub.voxel, "modes": modes, "mode": mode,
        "has": {"rgb": rgb is not None, "pred": pred is not None, "gt": label is not None,
                "conf": confidence is not None},
        "classes": [{"name": nm, "colour": [int(v) for v in c]}
                    for nm, c in zip(names, classes.palette if classes is not None else [])],
        "present": present, "hidden": hidden, "counts": counts, "iou": iou, "oa": oa, "miou": miou,
        "wrong": wrong, "bbox": {"lo": lo.tolist(), "ext": ext.tolist()},
        "point_size": float(point_size) if point_size is not None else _point_size(len(idx)),
        "error_colours": {"correct": list(CORRECT_COLOUR), "wrong": list(WRONG_COLOUR),
                          "no_label": list(NO_LABEL_COLOUR)},
        "summary": [[str(a), str(b)] for a, b in lines],
        "arrays": {},
    }
    blocks = []
    for name, a in arrays.items():
        spec, block = _encode(name, a)
        meta["arrays"][name] = spec
        blocks.append(block)

    three, page_js = _asset("three.min.js"), _asset("page.js")
    for name, code in (("three.min.js", three), ("page.js", page_js)):
        if "</script" in code.lower():       # would end the inline <script> early
            raise RuntimeError(f"viewer/assets/{name} contains '</script'; it cannot be inlined")
    parts = {
        "TITLE": html.escape(meta["title"]),
        "THREE_LICENSE": html.escape(_asset("THREE_LICENSE")),
        "META": _json_for_script(meta),
        "DATA": "\n".join(blocks),
        "THREE_JS": three,
        "PAGE_JS": page_js,
    }
    # One pass over the template: text put in is never searched for placeholders again.
    text = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: parts[m.group(1)], _asset("page.html"))
    data = text.encode("utf-8")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise ValueError(f"{path}: cannot write the page: {e.strerror or e}") from None
    return HtmlPage(path, n, int(len(idx)), sub.voxel, len(data))
