"""``pointseg segment``: label every point of a scan and write files other tools open.

Outputs in ``OUT_DIR`` (written together: the folder appears complete or not at all):

* ``<name>.labels.npy``: int64 ``(N,)`` predicted class per point (points with NaN/inf
  coordinates are dropped at reading, counted in the summary);
* ``<name>.ply``: binary PLY coloured by predicted class, with ``pred`` (and ground-truth
  ``label`` when the scan has one) vertex properties and the class table in header comments;
* ``<name>.png``: headless rendering (RGB | prediction | ground truth | error panels);
* ``<name>.json``: summary: class table, per-class histogram, timings, model, and metrics when
  the scan carries labels.

Before the network, the scan is brought into the convention S3DIS models were trained in
(:mod:`pointseg.engine.frame`: z up, metres, walls along x and y; ``--up`` / ``--units``) and, when it
is much denser than a block's ``num_points`` needs, voxel-subsampled (``--voxel``); every original
point takes the label of its voxel's representative. The outputs keep the scan's own coordinates.
A prepared S3DIS room (``.npz``) is already in that convention and is used as it is.

Scans without colour are segmented with every colour channel set to mid-grey (``--no-color
gray``, the default) or to 0 (``zeros``); models trained with colour lose accuracy on them, and the
summary says so.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..assets import asset
from ..classes import ClassTable
from .checkpoint import build_from_checkpoint, load_checkpoint, sliding_for
from .frame import Frame, resolve_frame
from .inference import SlidingConfig, predict_points

DEFAULT_SCAN = asset("sample_room.ply")
# dgcnn.pytorch's fold-5 S3DIS weights (Area 5 held out), imported; the synthetic ResGCN-7 stays
# available as ``--checkpoint resgcn7-synthetic`` (engine.checkpoint.NAMED_CHECKPOINTS)
DEFAULT_CHECKPOINT = asset("dgcnn_s3dis_area5.pt")
COLOR_POLICIES = ("gray", "zeros")
DENSE_FACTOR = 4.0     # subsample when a column holds more than this many blocks' worth of points
TARGET_FACTOR = 2.0    # ... down to about this many blocks' worth


@dataclass
class NetworkInput:
    """What the network sees of a scan: ``xyz`` (model frame), ``rgb``, and ``back`` mapping every
    original point to its row (None: one row per original point)."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    back: np.ndarray | None
    frame: Frame
    voxel: float | None
    lines: list[str]


def _voxel_keys(xyz: np.ndarray, size: float) -> np.ndarray:
    cells = np.floor((xyz - xyz.min(0)) / size).astype(np.int64)
    dims = cells.max(0) + 1
    if float(np.prod(dims.astype(np.float64))) >= 2.0 ** 62:
        raise ValueError(f"--voxel {size:g} m is too small for a scan this large")
    return np.ravel_multi_index(cells.T, dims)


def voxel_subsample(xyz: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """One representative (the first point) per ``size`` voxel: ``(kept indices, voxel of every point)``."""
    _, first, inverse = np.unique(_voxel_keys(np.asarray(xyz, dtype=np.float64), size),
                                  return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def auto_voxel(xyz: np.ndarray, block_size: float, num_points: int) -> float | None:
    """A voxel size bringing the mean points per occupied ``block_size`` column to about
    ``TARGET_FACTOR * num_points``, or None when the scan is not much denser than that."""
    xyz = np.asarray(xyz, dtype=np.float64)
    _, per_col = np.unique(_voxel_keys(xyz[:, :2], block_size), return_counts=True)
    if per_col.mean() <= DENSE_FACTOR * num_points:
        return None
    size = block_size / np.sqrt(num_points) / 4
    for _ in range(40):
        kept = len(np.unique(_voxel_keys(xyz, size)))
        if kept / len(per_col) <= TARGET_FACTOR * num_points:
            return float(size)
        size *= 1.25
    return float(size)


def network_input(scan: Any, rgb: np.ndarray | None, block_size: float, num_points: int,
                  up: str = "auto", units: str = "auto", voxel: float | str | None = "auto",
                  prepared: bool = False) -> NetworkInput:
    """Frame (``--up`` / ``--units``) and subsampling (``--voxel``: 'auto', None/'off', or metres)."""
    if prepared and up == "auto" and units == "auto":
        frame = Frame(reasons={"up": "+z (a prepared S3DIS room: already z-up, metres, walls along x/y)"})
    else:
        frame = resolve_frame(scan.xyz, up, units)
    lines = [f"up {frame.reasons['up']}", f"units {frame.reasons.get('units', 'm (prepared room)')}"]
    if "yaw" in frame.reasons:
        lines.append(f"walls: {frame.reasons['yaw']}")
    xyz = frame.forward(scan.xyz)
    if voxel == "auto":
        voxel = auto_voxel(xyz, block_size, num_points)
        if voxel is not None:
            lines.append(f"voxel {voxel * 100:.2f} cm (auto: the scan is over {DENSE_FACTOR:g} blocks of "
                         f"{num_points} points per {block_size:g} m column)")
    elif voxel == "off":
        voxel = None
    back = None
    if voxel is not None:
        keep, back = voxel_subsample(xyz, float(voxel))
        xyz = xyz[keep]
        rgb = None if rgb is None else rgb[keep]
        lines.append(f"subsampled {scan.num_points:,} -> {len(keep):,} points for the network "
                     f"(voxel {float(voxel) * 100:.2f} cm); every point takes its voxel's label")
    return NetworkInput(np.ascontiguousarray(xyz, dtype=np.float32), rgb, back, frame, voxel, lines)


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
                 progress: bool = False, up: str = "auto", units: str = "auto",
                 voxel: float | str | None = "auto") -> tuple[np.ndarray, str]:
    """Labels for every point of a :class:`~pointseg.io.scans.Scan`, and the model's name."""
    from .device import resolve_device
    dev = resolve_device(device)
    model, classes, ckpt = load_model(checkpoint, dev)
    rgb = model_input_colours(scan.rgb, scan.num_points, color_policy)
    sliding = sliding_for(ckpt, sliding)
    prepared = scan.path is not None and Path(scan.path).suffix.lower() == ".npz"
    net = network_input(scan, rgb, sliding.block_size, sliding.num_points, up, units, voxel, prepared)
    labels, _ = predict_points(model, net.xyz, net.rgb, classes.num_classes, dev, sliding, progress)
    if net.back is not None:
        labels = labels[net.back]
    return labels, str(ckpt.get("preset", Path(checkpoint).stem))


def segment(scan_path: str | Path | None = None, checkpoint: str | Path | None = None,
            out_dir: str | Path | None = None, device: str = "auto", overwrite: bool = False,
            sliding: SlidingConfig | None = None, color_policy: str = "gray", render: bool = True,
            render_size: tuple[int, int] = (480, 360), progress: bool = True, up: str = "auto",
            units: str = "auto", voxel: float | str | None = "auto") -> dict[str, Any]:
    """Segment one scan (default: the bundled sample room with the bundled checkpoint)."""
    from ..atomic import atomic_dir, check_replaceable
    from ..io.scans import read_scan, write_labelled_ply
    from ..metrics import SegMetrics, confusion_matrix
    from .device import resolve_device

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
    net = network_input(scan, rgb, sliding.block_size, sliding.num_points, up, units, voxel,
                        prepared=scan_path.suffix.lower() == ".npz")
    for line in net.lines:
        print(f"[segment] {line}")
    timings["frame_s"] = time.perf_counter() - t
    pred, stats = predict_points(model, net.xyz, net.rgb, classes.num_classes, dev, sliding, progress)
    if net.back is not None:
        pred = pred[net.back]
    if stats["outliers"]:
        notes.append(f"warning: {stats['outliers']} point(s) lie far outside the rest of the scan; they were "
                     "left out of the blocks and labelled like their nearest point")
        print(f"[segment] note: {notes[-1]}")
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
        "tiles": stats["tiles"], "occupied_tiles": stats["occupied_tiles"], "outliers": stats["outliers"],
        "frame": {"rotation": net.frame.rotation.tolist(), "scale": net.frame.scale, **net.frame.reasons},
        "network_points": len(net.xyz), "voxel": net.voxel,
        "trained_on": (ckpt.get("train_config", {}).get("data", {}).get("source")
                       or ckpt.get("provenance", {}).get("project")),
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
    from ..atomic import atomic_dir
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
