"""Segmentation of one scan held in memory: labels for every point, and a summary of the run.

The engine works on arrays: a scan is any object with ``xyz`` ``(N, 3)``, ``rgb`` ``(N, 3)`` or
None, ``label`` ``(N,)`` or None and ``path`` (None, or the file it came from). Reading the file,
writing the outputs and rendering the picture belong to the caller (``pointseg segment``:
:mod:`pointseg.cli.segment`).

Before the network, the scan is brought into the convention S3DIS models were trained in
(:mod:`pointseg.segmentation.frame`: z up, metres, walls along x and y; ``--up`` / ``--units`` / ``--walls``;
the file's own axes are kept unless the evidence against them is strong) and, when it
is much denser than a block's ``num_points`` needs, voxel-subsampled (``--voxel``); every original
point takes the label of its voxel's representative. The labels refer to the scan's own points.
A prepared S3DIS room (``.npz``) is already in that convention and is used as it is.

Scans without colour are segmented with every colour channel set to mid-grey (``--no-color
gray``, the default) or to 0 (``zeros``); models trained with colour lose accuracy on them, and the
summary says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..assets import asset
from ..classes import ClassTable
from ..data.class_map import scan_ground_truth
from ..data.recipe import COLOUR_POLICIES
from ..metrics import SegMetrics, confusion_matrix
from ..voxels import count_distinct, voxel_keys
from .checkpoint import LoadedModel, check_input_recipe, load_model, sliding_for
from .frame import Decision, FileHints, Frame, resolve_frame
from .inference import SlidingConfig, score_points

# dgcnn.pytorch's fold-5 S3DIS weights (Area 5 held out), imported; the synthetic ResGCN-7 stays
# available as ``--checkpoint resgcn7-synthetic`` (segmentation.checkpoint.NAMED_CHECKPOINTS)
DEFAULT_CHECKPOINT = asset("dgcnn_s3dis_area5.pt")
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


def voxel_subsample(xyz: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """One representative (the first point) per ``size`` voxel: ``(kept indices, voxel of every point)``."""
    _, first, inverse = np.unique(voxel_keys(np.asarray(xyz, dtype=np.float64), size),
                                  return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def auto_voxel(xyz: np.ndarray, block_size: float, num_points: int) -> float | None:
    """A voxel size bringing the mean points per occupied ``block_size`` column to about
    ``TARGET_FACTOR * num_points``, or None when the scan is not much denser than that."""
    xyz = np.asarray(xyz, dtype=np.float64)
    _, per_col = np.unique(voxel_keys(xyz[:, :2], block_size), return_counts=True)
    if per_col.mean() <= DENSE_FACTOR * num_points:
        return None
    size = block_size / np.sqrt(num_points) / 4
    for _ in range(40):
        kept = count_distinct(voxel_keys(xyz, size))
        if kept / len(per_col) <= TARGET_FACTOR * num_points:
            return float(size)
        size *= 1.25
    return float(size)


def network_input(scan: Any, rgb: np.ndarray | None, block_size: float, num_points: int,
                  up: str = "auto", units: str = "auto", voxel: float | str | None = "auto",
                  walls: str = "auto", frame: Frame | None = None) -> NetworkInput:
    """Frame (``--up`` / ``--units`` / ``--walls``, with the file's own hints; or ``frame`` when
    given) and subsampling (``--voxel``: 'auto', None/'off', or metres)."""
    hints = FileHints.of(scan)
    if frame is None and hints.training_frame and up == "auto" and units == "auto":
        frame = Frame(decisions=[Decision("frame", "kept", 1.0, "a prepared S3DIS room: already z-up, "
                                          "metres, walls along x/y")])
    elif frame is None:
        frame = resolve_frame(scan.xyz, up, units, walls, hints)
    lines = frame.lines()
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
        lines.append(f"subsampled {len(scan.xyz):,} -> {len(keep):,} points for the network "
                     f"(voxel {float(voxel) * 100:.2f} cm); every point takes its voxel's label")
    return NetworkInput(np.ascontiguousarray(xyz, dtype=np.float32), rgb, back, frame, voxel, lines)


SPARSE_FACTOR = 8.0    # a block column holding under num_points / this: far sparser than training
ROOM_SIZE_M = (1.5, 30.0)   # horizontal extents of the rooms the models were trained on, roughly
ROOM_HEIGHT_M = (1.0, 6.0)


def sanity_report(net: NetworkInput, has_colour: bool, block_size: float, num_points: int,
                  rooms: bool = True, per_col: np.ndarray | None = None) -> list[str]:
    """What is off for the model's input recipe (coloured, about ``num_points`` or more points per
    ``block_size`` column, room-sized when the model was trained on rooms (``rooms``; a model
    trained on the user's own scans is not), in a confidently known frame), one line each; empty
    when nothing is. ``per_col``: the points of every occupied column when ``net.xyz`` is only a
    sample of the scan (a streamed one); None: counted from ``net.xyz``."""
    out = []
    if not has_colour:
        out.append("no colour: the model was trained on coloured scans")
    xyz = np.asarray(net.xyz, dtype=np.float64)
    lo, hi = np.percentile(xyz, [0.5, 99.5], axis=0)
    side, height = float(max(hi[:2] - lo[:2])), float(hi[2] - lo[2])
    if rooms and (side < ROOM_SIZE_M[0] or height < ROOM_HEIGHT_M[0]):
        out.append(f"much smaller than a room ({side:.2f} m across, {height:.2f} m high): the model was "
                   "trained on whole rooms")
    elif rooms and (side > ROOM_SIZE_M[1] or height > ROOM_HEIGHT_M[1]):
        out.append(f"much larger than a room ({side:.1f} m across, {height:.1f} m high): the model was "
                   "trained on single rooms")
    if per_col is None:
        _, per_col = np.unique(voxel_keys(xyz[:, :2], block_size), return_counts=True)
    median = float(np.median(per_col))
    if median < num_points / SPARSE_FACTOR:
        out.append(f"sparse: a median of {median:,.0f} points per {block_size:g} m column, where the "
                   f"training recipe samples {num_points:,} per block (points get repeated)")
    for d in net.frame.unsure:
        out.append(f"{d.what} decided with low confidence ({d.confidence:.2f}): {d.choice}"
                   + (f"; {d.flag} sets it" if d.flag else ""))
    return out


@dataclass
class Segmentation:
    """What segmenting a scan gives: ``labels`` int64 ``(N,)`` for every point of the scan; the
    scan's ``ground_truth`` when it has labels inside the model's class table (else None); the
    ``summary`` (JSON-ready: model, classes, histogram, sliding blocks, frame, notes, metrics against
    the ground truth); ``timings`` in seconds (``frame_s``; ``predict_s``, which includes framing);
    ``confidence`` float32 ``(N,)``, each point's winning class probability (its share of the soft
    votes); ``probabilities`` float32 ``(N, C)``, the averaged softmax, when asked for;
    ``confusion`` ``(C, C)`` against the ground truth (its points without one left out), when there
    is one."""

    labels: np.ndarray
    ground_truth: np.ndarray | None
    summary: dict[str, Any]
    timings: dict[str, float]
    confidence: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    confusion: np.ndarray | None = None


def model_input_colours(rgb: np.ndarray | None, n: int, policy: str) -> np.ndarray | None:
    if rgb is not None:
        return rgb
    if policy not in COLOUR_POLICIES:
        raise ValueError(f"--no-color must be one of {COLOUR_POLICIES}, got {policy!r}")
    return np.full((n, 3), 128 if policy == "gray" else 0, dtype=np.uint8)


def segment_scan(model: LoadedModel, scan: Any, sliding: SlidingConfig | None = None,
                 color_policy: str | None = None, progress: bool = True, up: str = "auto", units: str = "auto",
                 voxel: float | str | None = "auto", notes: list[str] | None = None,
                 say: Callable[[str], None] | None = None, walls: str = "auto",
                 probabilities: bool = False, frame: Frame | None = None) -> Segmentation:
    """Label every point of ``scan`` with ``model``.

    ``frame``: the frame to use instead of deciding one (a streamed run's, to compare with it).

    ``probabilities``: also keep every point's class probabilities (``C`` floats a point).

    ``notes``: what the caller already noted about the scan (they lead the summary's notes);
    ``say``: where progress lines (frame, subsampling, notes) go as they happen (None: nowhere).
    """
    say = say or (lambda line: None)
    notes = list(notes or [])
    # None: the checkpoint's input recipe says how a scan without colour is fed (gray for S3DIS)
    color_policy = color_policy or check_input_recipe(model.ckpt).no_colour
    n = len(scan.xyz)
    if scan.rgb is None:
        notes.append(f"the scan has no colour: colour channels set to {color_policy}; "
                     "a model trained with colour is less accurate on such scans")
        say(f"note: {notes[-1]}")
    timings: dict[str, float] = {}
    classes, ckpt = model.classes, model.ckpt

    t = time.perf_counter()
    rgb = model_input_colours(scan.rgb, n, color_policy)
    sliding = sliding_for(ckpt, sliding)
    net = network_input(scan, rgb, sliding.block_size, sliding.num_points, up, units, voxel, walls, frame)
    for line in net.lines:
        say(line)
    trained_on = (ckpt.get("train_config", {}).get("data", {}).get("source")
                  or ckpt.get("provenance", {}).get("project"))
    sanity = sanity_report(net, scan.rgb is not None, sliding.block_size, sliding.num_points,
                           rooms=trained_on != "scans")
    for line in sanity:
        say(f"check: {line}")
    timings["frame_s"] = time.perf_counter() - t
    scores = score_points(model.network, net.xyz, net.rgb, classes.num_classes, model.device,
                          sliding, progress, probabilities=probabilities)
    pred, stats, confidence, probs = scores.labels, scores.stats, scores.confidence, scores.probabilities
    if net.back is not None:
        # every original point takes its voxel representative's label, confidence and probabilities
        pred, confidence = pred[net.back], confidence[net.back]
        probs = None if probs is None else probs[net.back]
    if stats["outliers"]:
        notes.append(f"warning: {stats['outliers']} point(s) lie far outside the rest of the scan; they were "
                     "left out of the blocks and labelled like their nearest point")
        say(f"note: {notes[-1]}")
    timings["predict_s"] = time.perf_counter() - t

    # through the checkpoint's class map when it was trained on the user's scans
    gt, left_out = scan_ground_truth(scan, ckpt, classes.num_classes)
    if gt is not None and left_out:
        notes.append(f"{left_out:,} point(s) carry label values the class map ignores or does not list: "
                     "left out of the metrics")
        say(f"note: {notes[-1]}")
    hist = np.bincount(pred, minlength=classes.num_classes)
    summary: dict[str, Any] = {
        "model": ckpt.get("preset"), "device": str(model.device),
        "classes": classes.to_dict(),
        "histogram": {c: int(v) for c, v in zip(classes.names, hist)},
        "sliding": sliding.__dict__, "blocks": stats["blocks"],
        "unvoted_points": stats["unvoted_points"], "notes": notes,
        "tiles": stats["tiles"], "occupied_tiles": stats["occupied_tiles"], "outliers": stats["outliers"],
        "compact_blocks": stats.get("compact_blocks", 0),   # sparse columns run on their own points
        "frame": net.frame.to_dict(), "sanity": sanity,
        "network_points": len(net.xyz), "voxel": net.voxel,
        "trained_on": trained_on,
    }
    confusion = None
    if gt is not None:               # NO_LABEL points are not counted (metrics.confusion_matrix)
        confusion = confusion_matrix(gt, pred, classes.num_classes)
        summary["metrics"] = SegMetrics(confusion, classes.names).to_dict()
    return Segmentation(pred, gt, summary, timings, confidence, probs, confusion)


def predict_scan(checkpoint: str | Path, scan: Any, device: str = "auto",
                 sliding: SlidingConfig | None = None, color_policy: str | None = None,
                 progress: bool = False, up: str = "auto", units: str = "auto",
                 voxel: float | str | None = "auto", walls: str = "auto"
                 ) -> tuple[np.ndarray, str, ClassTable]:
    """Labels for every point of ``scan`` with the model of ``checkpoint``, the model's name and its
    class table (what ``pointseg view --compare`` runs for a checkpoint)."""
    model = load_model(checkpoint, device)
    seg = segment_scan(model, scan, sliding, color_policy, progress, up, units, voxel, walls=walls)
    return seg.labels, str(model.ckpt.get("preset", Path(checkpoint).stem)), model.classes
