"""``pointseg segment [SCAN] [--checkpoint CKPT] [--out DIR]``: label every point of a scan and
write files other tools open.

The command composes the leaves around the engine: read the scan (:mod:`pointseg.io.scans`),
segment it (:mod:`pointseg.engine.segment`), write the files, render the picture (:mod:`viewer.render`).
Outputs in ``OUT_DIR`` (written together: the folder appears complete or not at all):

* ``<name>.labels.npy``: int64 ``(N,)`` predicted class per point (points with NaN/inf
  coordinates are dropped at reading, counted in the summary);
* ``<name>.ply``: binary PLY coloured by predicted class, with ``pred`` (and ground-truth
  ``label`` when the scan has one) vertex properties and the class table in header comments;
* ``<name>.png``: headless rendering (RGB | prediction | ground truth | error panels);
* ``<name>.html``: one self-contained page (three.js inlined) to turn the result around in any
  browser offline, with RGB / prediction / ground truth / error and a legend (:mod:`viewer.html`);
* ``<name>.json``: summary: class table, per-class histogram, timings, model, and metrics when
  the scan carries labels.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pointseg.assets import asset

if TYPE_CHECKING:
    from pointseg.engine.inference import SlidingConfig
    from pointseg.engine.segment import LoadedModel, Segmentation
    from pointseg.io.scans import Scan

DEFAULT_SCAN = asset("sample_room.ply")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scan", nargs="?", help="scan file: .ply .pcd .xyz .txt .npy .las .laz, or a prepared "
                                           "S3DIS room .npz (default: the bundled sample room)")
    p.add_argument("--checkpoint", help="model checkpoint file, or a bundled one by name: dgcnn-s3dis (the "
                                         "default: real S3DIS weights) or resgcn7-synthetic (synthetic rooms only)")
    p.add_argument("--out", help="output folder (default outputs/<scan name>); never overwritten silently")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--stride", type=float, default=None,
                   help="sliding-block stride in metres (default: the checkpoint's input recipe, 0.5)")
    p.add_argument("--repeats", type=int, default=1, help="random block draws averaged per point")
    p.add_argument("--batch-size", type=int, default=8, help="blocks per forward pass")
    p.add_argument("--tile-size", type=float, default=8.0, help="metres; bounds memory on large scans")
    p.add_argument("--up", default="auto", metavar="AXIS",
                   help="the scan's up axis: auto (the file's own axes unless its format or strong "
                        "evidence says otherwise: LAS is z-up, a single camera view is y-down and "
                        "levelled on its supporting plane), +z, -z, +y, -y, +x, -x")
    p.add_argument("--units", default="auto", metavar="UNIT",
                   help="the scan's length unit: auto (metres unless its height cannot be), m, cm or mm")
    p.add_argument("--walls", default="auto", metavar="TURN",
                   help="turn about up so the walls run along x/y: auto (when the walls agree), off, or "
                        "canonical (also a quarter turn to a canonical orientation)")
    p.add_argument("--voxel", default="auto", metavar="SIZE",
                   help="voxel size in metres for the network's copy of a dense scan: auto (only when "
                        "much denser than a block needs), off, or a size; every point keeps a label")
    p.add_argument("--no-color", default="gray", choices=("gray", "zeros"),
                   help="model input for scans without colour (default gray)")
    p.add_argument("--no-render", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="also show the rendering engine's start-up lines (hidden by default)")


def parse_voxel(text: str) -> float | str:
    """``--voxel``: 'auto', 'off', or a size in metres between 1 mm and 1 m."""
    if text in ("auto", "off"):
        return text
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"--voxel must be auto, off or a size in metres, got {text!r}") from None
    if not 0.001 <= v <= 1.0:
        raise ValueError(f"--voxel must be between 0.001 and 1 m, got {text}")
    return v


def run(args: argparse.Namespace) -> int:
    from pointseg.engine.frame import check_frame_choices
    from pointseg.engine.inference import SlidingConfig

    check_frame_choices(args.up, args.units, args.walls)
    voxel = parse_voxel(args.voxel)
    # Validated here (ValueError naming the option) before the checkpoint or the scan is read.
    sliding = SlidingConfig(stride=args.stride, repeats=args.repeats, batch_size=args.batch_size,
                            tile_size=args.tile_size)
    s = segment(args.scan, args.checkpoint, args.out, args.device, args.overwrite, sliding,
                args.no_color, render=not args.no_render, progress=not args.quiet,
                up=args.up, units=args.units, voxel=voxel, walls=args.walls)
    top = sorted(s["histogram"].items(), key=lambda kv: -kv[1])[:5]
    print(f"[segment] {s['points']:,} points with {s['model']} in {s['timings']['total_s']:.1f} s "
          f"({s['points_per_s']:,.0f} points/s predicting); most frequent: "
          + ", ".join(f"{c} {100 * v / s['points']:.1f}%" for c, v in top))
    if "metrics" in s:
        m = s["metrics"]
        print(f"[segment] against the scan's labels: OA {100 * m['oa']:.2f}  mIoU {100 * m['miou']:.2f}")
    print(f"[segment] wrote {s['out_dir']}/ (labels .npy, .ply, " + ("" if args.no_render else ".png, ") + ".json)")
    return 0


def _say(line: str) -> None:
    print(f"[segment] {line}")


def segment(scan_path: str | Path | None = None, checkpoint: str | Path | None = None,
            out_dir: str | Path | None = None, device: str = "auto", overwrite: bool = False,
            sliding: SlidingConfig | None = None, color_policy: str = "gray", render: bool = True,
            render_size: tuple[int, int] = (480, 360), progress: bool = True, up: str = "auto",
            units: str = "auto", voxel: float | str | None = "auto", walls: str = "auto") -> dict[str, Any]:
    """Segment one scan file and write its outputs (default: the bundled sample room with the
    bundled checkpoint); returns the summary, with ``out_dir``."""
    from pointseg.atomic import check_replaceable
    from pointseg.engine.segment import DEFAULT_CHECKPOINT, load_model, segment_scan
    from pointseg.io.scans import read_scan

    t_start = time.perf_counter()
    scan_path = Path(scan_path) if scan_path else DEFAULT_SCAN
    checkpoint = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    out_dir = Path(out_dir) if out_dir else Path("outputs") / scan_path.stem
    if out_dir.exists() or out_dir.is_symlink():
        if not overwrite:
            raise FileExistsError(f"output folder {out_dir} already exists (pass --overwrite to replace it)")
        check_replaceable(out_dir)        # refuse before the work, naming what is in the way
    timings: dict[str, float] = {}

    t = time.perf_counter()
    model = load_model(checkpoint, device)
    timings["load_model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with warnings.catch_warnings():
        # the reader's warning about NaN points becomes the note below: one line, pointseg's own
        warnings.simplefilter("ignore", RuntimeWarning)
        scan = read_scan(scan_path)
    timings["read_scan_s"] = time.perf_counter() - t
    if scan.num_points == 0:
        raise ValueError(f"{scan_path}: the scan holds no points")
    notes: list[str] = []
    if scan.dropped:
        notes.append(f"{scan.dropped} point(s) with NaN/inf coordinates were dropped")
        _say(f"note: {notes[-1]}")
    seg = segment_scan(model, scan, sliding, color_policy=color_policy, progress=progress, up=up, units=units,
                       voxel=voxel, notes=notes, say=_say, walls=walls)
    timings.update(seg.timings)
    summary: dict[str, Any] = {"scan": str(scan_path), "points": scan.num_points, "dropped_points": scan.dropped,
                               "checkpoint": str(checkpoint), **seg.summary}
    try:
        _write_outputs(out_dir, overwrite, scan, seg, model, summary, timings, render, render_size, t_start)
    except OSError as e:
        if isinstance(e, (FileExistsError, FileNotFoundError, NotADirectoryError)):
            raise
        raise ValueError(f"{out_dir}: cannot write the outputs: {e.strerror or e}") from None
    summary["out_dir"] = str(out_dir)
    return summary


def _write_outputs(out_dir: Path, overwrite: bool, scan: Scan, seg: Segmentation, model: LoadedModel,
                   summary: dict[str, Any], timings: dict[str, float], render: bool,
                   render_size: tuple[int, int], t_start: float) -> None:
    """All outputs into a temporary folder that replaces ``out_dir`` only when complete."""
    import json

    import numpy as np

    from pointseg.atomic import atomic_dir
    from pointseg.io.scans import write_labelled_ply
    name, pred = scan.name, seg.labels
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        np.save(tmp / f"{name}.labels.npy", pred.astype(np.int64))
        write_labelled_ply(tmp / f"{name}.ply", scan.xyz, None, seg.ground_truth, model.classes, pred=pred,
                           model=str(model.ckpt.get("preset")))
        timings["write_s"] = time.perf_counter() - t
        if render:
            from viewer.render import render_png
            t = time.perf_counter()
            render_png({"xyz": scan.xyz, "rgb": scan.rgb, "label": seg.ground_truth, "pred": pred},
                       tmp / f"{name}.png", mode="panels", classes=model.classes, size=render_size)
            timings["render_s"] = time.perf_counter() - t
        # The page needs no renderer (the browser draws it), so --no-render keeps it.
        from viewer.html import write_html
        t = time.perf_counter()
        write_html(tmp / f"{name}.html", scan.xyz, scan.rgb, pred, seg.ground_truth, model.classes,
                   title=f"pointseg — {name}", model=str(model.ckpt.get("preset")), scan=str(summary["scan"]),
                   summary={"checkpoint": summary["checkpoint"]})
        timings["html_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_start
        summary["timings"] = timings
        summary["points_per_s"] = scan.num_points / max(1e-9, timings["predict_s"])
        (tmp / f"{name}.json").write_text(json.dumps(summary, indent=1))
