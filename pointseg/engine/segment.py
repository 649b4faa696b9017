"""``pointseg segment``: label every point of a scan and write files other tools open.

Outputs in ``OUT_DIR`` (written together: the folder appears complete or not at all):

* ``<name>.labels.npy``: int64 ``(N,)`` predicted class per point (points with NaN/inf
  coordinates are dropped at reading, counted in the summary);
* ``<name>.ply``: binary PLY coloured by predicted class, with ``pred`` (and ground-truth
  ``label`` when the scan has one) vertex properties and the class table in header comments;
* ``<name>.png``: headless rendering (RGB | prediction | ground truth | error panels);
* ``<name>.json``: summary: class table, per-class histogram, timings, model, and metrics when
  the scan carries labels.

Scans without colour are segmented with every colour channel set to mid-grey (``--no-color
gray``, the default) or to 0 (``zeros``); models trained with colour lose accuracy on them, and the
summary says so.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..assets import asset
from ..classes import ClassTable
from .checkpoint import build_from_checkpoint, load_checkpoint, sliding_for
from .inference import SlidingConfig, predict_points

DEFAULT_SCAN = asset("sample_room.ply")
DEFAULT_CHECKPOINT = asset("demo_checkpoint.pt")
COLOR_POLICIES = ("gray", "zeros")


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[torch.nn.Module, ClassTable, dict[str, Any]]:
    ckpt = load_checkpoint(checkpoint, map_location=device)
    model, classes = build_from_checkpoint(ckpt, checkpoint)
    return model.to(device), classes, ckpt


def model_input_colours(rgb: np.ndarray | None, n: int, policy: str) -> np.ndarray | None:
    if rgb is not None:
        return rgb
    if policy not in COLOR_POLICIES:
        raise ValueError(f"--no-color must be one of {COLOR_POLICIES}, got {policy!r}")
    return np.full((n, 3), 128 if policy == "gray" else 0, dtype=np.uint8)


def predict_scan(checkpoint: str | Path, scan: Any, device: str = "auto",
                 sliding: SlidingConfig | None = None, color_policy: str = "gray",
                 progress: bool = False) -> tuple[np.ndarray, str]:
    """Labels for every point of a :class:`~pointseg.io.scans.Scan`, and the model's name."""
    from .train import resolve_device
    dev = resolve_device(device)
    model, classes, ckpt = load_model(checkpoint, dev)
    rgb = model_input_colours(scan.rgb, scan.num_points, color_policy)
    labels, _ = predict_points(model, scan.xyz, rgb, classes.num_classes, dev, sliding_for(ckpt, sliding), progress)
    return labels, str(ckpt.get("preset", Path(checkpoint).stem))


def segment(scan_path: str | Path | None = None, checkpoint: str | Path | None = None,
            out_dir: str | Path | None = None, device: str = "auto", overwrite: bool = False,
            sliding: SlidingConfig | None = None, color_policy: str = "gray", render: bool = True,
            render_size: tuple[int, int] = (480, 360), progress: bool = True) -> dict[str, Any]:
    """Segment one scan (default: the bundled sample room with the bundled checkpoint)."""
    from ..io.atomic import atomic_dir, check_replaceable
    from ..io.scans import read_scan, write_labelled_ply
    from .metrics import SegMetrics, confusion_matrix
    from .train import resolve_device

    t_start = time.perf_counter()
    scan_path = Path(scan_path) if scan_path else DEFAULT_SCAN
    checkpoint = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    out_dir = Path(out_dir) if out_dir else Path("outputs") / scan_path.stem
    if out_dir.exists() or out_dir.is_symlink():
        if not overwrite:
            raise FileExistsError(f"output folder {out_dir} already exists (pass --overwrite to replace it)")
        check_replaceable(out_dir)        # refuse before the work, naming what is in the way
    dev = resolve_device(device)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    model, classes, ckpt = load_model(checkpoint, dev)
    timings["load_model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    scan = read_scan(scan_path)
    timings["read_scan_s"] = time.perf_counter() - t
    if scan.num_points == 0:
        raise ValueError(f"{scan_path}: the scan holds no points")
    notes = []
    if scan.dropped:
        notes.append(f"{scan.dropped} point(s) with NaN/inf coordinates were dropped")
    if scan.rgb is None:
        notes.append(f"the scan has no colour: colour channels set to {color_policy}; "
                     "a model trained with colour is less accurate on such scans")
    for n in notes:
        print(f"[segment] note: {n}")

    t = time.perf_counter()
    rgb = model_input_colours(scan.rgb, scan.num_points, color_policy)
    sliding = sliding_for(ckpt, sliding)
    pred, stats = predict_points(model, scan.xyz, rgb, classes.num_classes, dev, sliding, progress)
    timings["predict_s"] = time.perf_counter() - t

    name = scan_path.stem
    gt = scan.label if scan.label is not None and (scan.label.max(initial=0) < classes.num_classes) else None
    hist = np.bincount(pred, minlength=classes.num_classes)
    summary: dict[str, Any] = {
        "scan": str(scan_path), "points": scan.num_points, "dropped_points": scan.dropped,
        "checkpoint": str(checkpoint), "model": ckpt.get("preset"), "device": str(dev),
        "classes": classes.to_dict(),
        "histogram": {c: int(v) for c, v in zip(classes.names, hist)},
        "sliding": sliding.__dict__, "blocks": stats["blocks"],
        "unvoted_points": stats["unvoted_points"], "notes": notes,
        "trained_on": ckpt.get("train_config", {}).get("data", {}).get("source"),
    }
    if gt is not None:
        summary["metrics"] = SegMetrics(confusion_matrix(gt, pred, classes.num_classes), classes.names).to_dict()

    try:
        _write_outputs(out_dir, overwrite, name, scan, pred, gt, classes, ckpt, summary, timings,
                       render, render_size, t_start)
    except OSError as e:
        if isinstance(e, (FileExistsError, FileNotFoundError, NotADirectoryError)):
            raise
        raise ValueError(f"{out_dir}: cannot write the outputs: {e.strerror or e}") from None
    summary["out_dir"] = str(out_dir)
    return summary


def _write_outputs(out_dir: Path, overwrite: bool, name: str, scan: Any, pred: np.ndarray,
                   gt: np.ndarray | None, classes: ClassTable, ckpt: dict[str, Any],
                   summary: dict[str, Any], timings: dict[str, float], render: bool,
                   render_size: tuple[int, int], t_start: float) -> None:
    """All outputs into a temporary folder that replaces ``out_dir`` only when complete."""
    from ..io.atomic import atomic_dir
    from ..io.scans import write_labelled_ply
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        np.save(tmp / f"{name}.labels.npy", pred.astype(np.int64))
        write_labelled_ply(tmp / f"{name}.ply", scan.xyz, None, gt, classes, pred=pred,
                           model=str(ckpt.get("preset")))
        timings["write_s"] = time.perf_counter() - t
        if render:
            from viewer.render import render_png
            t = time.perf_counter()
            render_png({"xyz": scan.xyz, "rgb": scan.rgb, "label": gt, "pred": pred},
                       tmp / f"{name}.png", mode="panels", classes=classes, size=render_size)
            timings["render_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_start
        summary["timings"] = timings
        summary["points_per_s"] = scan.num_points / max(1e-9, timings["predict_s"])
        (tmp / f"{name}.json").write_text(json.dumps(summary, indent=1))
