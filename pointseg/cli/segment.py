"""``pointseg segment [SCAN] [--checkpoint CKPT] [--out DIR]``: label every point of a scan and
write files other tools open.

The command composes the leaves around the engine: read the scan (:mod:`pointseg.io.scans`),
segment it (:mod:`pointseg.segmentation.segment`), write the files, render the picture (:mod:`viewer.render`).
Outputs in ``OUT_DIR`` (written together: the folder appears complete or not at all):

* ``<name>.labels.npy``: int64 ``(N,)`` predicted class per point (points with NaN/inf
  coordinates are dropped at reading, counted in the summary);
* ``<name>.ply``: binary PLY coloured by predicted class, with ``pred`` (and ground-truth
  ``label`` when the scan has one) vertex properties and the class table in header comments;
* ``<name>.png``: headless rendering (RGB | prediction | ground truth | error panels);
* ``<name>.html``: one self-contained page (three.js inlined) to turn the result around in any
  browser offline, with RGB / prediction / ground truth / error and a legend (:mod:`viewer.html`);
* ``<name>.json``: summary: class table, per-class histogram, timings, model, and metrics when
  the scan carries labels;
* the scan in its own format with the prediction added (``site.laz``, ``room.pcd``, ...; a PLY
  scan is ``<name>.scan.ply`` beside the class-coloured ``<name>.ply``): every original point,
  field and header record kept, plus a label and a confidence per point (:mod:`pointseg.io.write_back`);
* ``<name>.probabilities.npy`` with ``--probabilities``: float16 ``(N, C)`` class probabilities.

``--write`` chooses among them (default: all; ``--no-render`` leaves the PNG out).
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pointseg.assets import asset

if TYPE_CHECKING:
    from pointseg.segmentation.inference import SlidingConfig
    from pointseg.segmentation.segment import LoadedModel, Segmentation
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
    p.add_argument("--no-color", default=None, choices=("gray", "zeros"),
                   help="model input for scans without colour (default: the checkpoint's input recipe, gray for S3DIS)")
    p.add_argument("--no-render", action="store_true", help="skip the PNG (same as leaving png out of --write)")
    p.add_argument("--write", default=None, metavar="LIST",
                   help="comma-separated outputs to write, of " + ",".join(WRITE_CHOICES)
                        + " (default: all; 'scan' is the scan in its own format with label and confidence "
                          "added, skipped for a prepared .npz room)")
    p.add_argument("--las-codes", default=None, metavar="FILE",
                   help="YAML or JSON mapping class name -> LAS classification code (0-255) for a LAS/LAZ "
                        "scan, replacing the checkpoint's codes or the default 19 + class index")
    p.add_argument("--probabilities", action="store_true",
                   help="also write NAME.probabilities.npy: float16 (N, C) class probabilities per point")
    p.add_argument("--stream", action="store_true",
                   help="stream the scan through tiles on disk in bounded memory (automatic over "
                        "20 M points); the work folder OUT.stream-work keeps every finished tile")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted streamed run from its first unfinished tile "
                        "(same scan, checkpoint and settings; the labels equal an uninterrupted run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true",
                   help="also show the rendering engine's start-up lines (hidden by default)")


WRITE_CHOICES = ("labels", "ply", "png", "html", "json", "scan")


def parse_write(text: str | None, render: bool = True) -> tuple[frozenset[str], bool]:
    """``--write``: the outputs to write and whether they were chosen explicitly (the default,
    every output, skips 'scan' for a scan that cannot be written back instead of refusing it)."""
    if text is None:
        return frozenset(c for c in WRITE_CHOICES if render or c != "png"), False
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in chosen if w not in WRITE_CHOICES]
    if bad or not chosen:
        raise ValueError(f"--write takes a comma-separated list of {', '.join(WRITE_CHOICES)}, got {text!r}")
    outputs = frozenset(c for c in chosen if render or c != "png")
    if not outputs:
        raise ValueError("--write png with --no-render leaves nothing to write")
    return outputs, True


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
    from pointseg.segmentation.frame import check_frame_choices
    from pointseg.segmentation.inference import SlidingConfig

    check_frame_choices(args.up, args.units, args.walls)
    voxel = parse_voxel(args.voxel)
    parse_write(args.write, not args.no_render)     # refused before the checkpoint or the scan is read
    # Validated here (ValueError naming the option) before the checkpoint or the scan is read.
    sliding = SlidingConfig(stride=args.stride, repeats=args.repeats, batch_size=args.batch_size,
                            tile_size=args.tile_size)
    s = segment(args.scan, args.checkpoint, args.out, args.device, args.overwrite, sliding,
                args.no_color, render=not args.no_render, progress=not args.quiet,
                up=args.up, units=args.units, voxel=voxel, walls=args.walls,
                write=args.write, las_codes=args.las_codes, probabilities=args.probabilities,
                stream=args.stream, resume=args.resume)
    top = sorted(s["histogram"].items(), key=lambda kv: -kv[1])[:5]
    print(f"[segment] {s['points']:,} points with {s['model']} in {s['timings']['total_s']:.1f} s "
          f"({s['points_per_s']:,.0f} points/s predicting); most frequent: "
          + ", ".join(f"{c} {100 * v / s['points']:.1f}%" for c, v in top))
    if "metrics" in s:
        m = s["metrics"]
        print(f"[segment] against the scan's labels: OA {100 * m['oa']:.2f}  mIoU {100 * m['miou']:.2f}")
    print(f"[segment] wrote {s['out_dir']}/ ({', '.join(s['outputs'])})")
    return 0


def _say(line: str) -> None:
    print(f"[segment] {line}")


def segment(scan_path: str | Path | None = None, checkpoint: str | Path | None = None,
            out_dir: str | Path | None = None, device: str = "auto", overwrite: bool = False,
            sliding: SlidingConfig | None = None, color_policy: str | None = None, render: bool = True,
            render_size: tuple[int, int] = (480, 360), progress: bool = True, up: str = "auto",
            units: str = "auto", voxel: float | str | None = "auto", walls: str = "auto",
            write: str | None = None, las_codes: str | Path | None = None,
            probabilities: bool = False, stream: bool = False, resume: bool = False,
            chunk_points: int = 1_000_000) -> dict[str, Any]:
    """Segment one scan file and write its outputs (default: the bundled sample room with the
    bundled checkpoint); returns the summary, with ``out_dir`` and the ``outputs`` written.

    ``write``: ``--write`` (None: every output, the PNG only when ``render``); ``las_codes``: a
    ``--las-codes`` file; ``probabilities``: also write the per-class probabilities; ``stream``:
    stream the scan through tiles on disk (:mod:`pointseg.segmentation.stream`; automatic for
    scans over ``STREAM_POINTS``), ``resume`` an interrupted streamed run."""
    from pointseg.atomic import check_replaceable
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT, load_model, segment_scan
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
    work = stream_work_folder(out_dir)
    if not (stream or resume) and scan_path.suffix.lower() != ".npz":
        stream = _large_enough_to_stream(scan_path)
    if (stream or resume) and probabilities:
        raise ValueError("--probabilities is not available for a streamed scan (C values per point; scans "
                         "over 20 M points are streamed): leave it out, or leave out --stream / --resume")

    t = time.perf_counter()
    model = load_model(checkpoint, device)
    timings["load_model_s"] = time.perf_counter() - t
    if stream or resume:
        return _segment_streamed(scan_path, checkpoint, model, out_dir, work, overwrite, sliding, color_policy,
                                 render, render_size, progress, up, units, voxel, walls, write, las_codes,
                                 resume, chunk_points, timings, t_start)
    t = time.perf_counter()
    with warnings.catch_warnings():
        # the reader's warning about NaN points becomes the note below: one line, pointseg's own
        warnings.simplefilter("ignore", RuntimeWarning)
        # a model trained on your scans names the field its labels are in (class map in the checkpoint)
        scan = read_scan(scan_path, label_field=model.ckpt.get("label_field") or None)
    timings["read_scan_s"] = time.perf_counter() - t
    if scan.num_points == 0:
        raise ValueError(f"{scan_path}: the scan holds no points")
    # Everything the scan output needs is checked before the (long) segmentation.
    outputs, scan_out = _plan_outputs(scan_path, model, write, render, las_codes)
    notes: list[str] = []
    if scan.dropped:
        notes.append(f"{scan.dropped} point(s) with NaN/inf coordinates were dropped")
        _say(f"note: {notes[-1]}")
    seg = segment_scan(model, scan, sliding, color_policy=color_policy, progress=progress, up=up, units=units,
                       voxel=voxel, notes=notes, say=_say, walls=walls, probabilities=probabilities)
    timings.update(seg.timings)
    summary: dict[str, Any] = {"scan": str(scan_path), "points": scan.num_points, "dropped_points": scan.dropped,
                               "origin": None if scan.origin is None else scan.origin.tolist(),
                               "checkpoint": str(checkpoint), **seg.summary}
    try:
        _write_outputs(out_dir, overwrite, scan, seg, model, summary, timings, "png" in outputs, render_size,
                       t_start, write=outputs, scan_out=scan_out, probabilities=probabilities)
    except OSError as e:
        if isinstance(e, (FileExistsError, FileNotFoundError, NotADirectoryError)):
            raise
        raise ValueError(f"{out_dir}: cannot write the outputs: {e.strerror or e}") from None
    summary["out_dir"] = str(out_dir)
    return summary


def stream_work_folder(out_dir: Path) -> Path:
    """Where a streamed run keeps its tiles until its outputs are written: ``OUT.stream-work``."""
    return out_dir.with_name(out_dir.name + ".stream-work")


def _large_enough_to_stream(scan_path: Path) -> bool:
    """Whether the file holds more than ``STREAM_POINTS`` points: from its header, or for a text
    file (no header to count) from its size at the length of its first lines; a file that cannot
    be opened in chunks is left to the whole-scan reader, which names what is wrong."""
    from pointseg.io.chunks import open_chunks
    from pointseg.segmentation.stream import STREAM_POINTS
    try:
        if scan_path.suffix.lower() in (".xyz", ".txt"):
            with open(scan_path, "rb") as f:
                head = f.read(1 << 16)
            line = max(1.0, len(head) / max(1, head.count(b"\n")))
            return scan_path.stat().st_size / line > STREAM_POINTS
        return open_chunks(scan_path).count > STREAM_POINTS
    except (ValueError, OSError):
        return False


def _segment_streamed(scan_path: Path, checkpoint: Path, model: LoadedModel, out_dir: Path, work: Path,
                      overwrite: bool, sliding: SlidingConfig | None, color_policy: str | None, render: bool,
                      render_size: tuple[int, int], progress: bool, up: str, units: str, voxel: Any, walls: str,
                      write: str | None, las_codes: str | Path | None, resume: bool, chunk_points: int,
                      timings: dict[str, float], t_start: float) -> dict[str, Any]:
    """:func:`segment` for a scan streamed through tiles on disk; the work folder stays until the
    outputs are written, so an interrupted run continues with ``--resume``."""
    import shutil

    from pointseg.io.chunks import open_chunks
    from pointseg.segmentation.stream import Interrupted, StreamRun

    source = open_chunks(scan_path, label_field=model.ckpt.get("label_field") or None)
    if source.count == 0:
        raise ValueError(f"{scan_path}: the scan holds no points")
    outputs, scan_out = _plan_outputs(scan_path, model, write, render, las_codes)
    if not resume and work.exists():
        raise FileExistsError(f"{work} holds an unfinished streamed run of this output: pass --resume to "
                              "continue it, or remove that folder to start again")
    _say(f"streaming {scan_path.name} ({source.count:,} points) through tiles in {work}")
    run = StreamRun(model, source, work, sliding=sliding, color_policy=color_policy, up=up, units=units,
                    voxel=voxel, walls=walls, chunk_points=chunk_points, progress=progress, say=_say,
                    checkpoint=str(checkpoint), resume=resume)
    try:
        res = run.run()
    except (KeyboardInterrupt, Interrupted):
        _say(f"interrupted: {work} keeps every finished tile; the same command with --resume continues")
        raise
    timings.update(res.timings)
    summary: dict[str, Any] = {"scan": str(scan_path), "points": res.points, "dropped_points": res.rows - res.points,
                               "origin": run.state["origin"], "checkpoint": str(checkpoint), **res.summary}
    try:
        _write_streamed_outputs(out_dir, overwrite, source, run, res, model, summary, timings, outputs, scan_out,
                                render_size, t_start, chunk_points)
    except OSError as e:
        if isinstance(e, (FileExistsError, FileNotFoundError, NotADirectoryError)):
            raise
        raise ValueError(f"{out_dir}: cannot write the outputs: {e.strerror or e}") from None
    shutil.rmtree(work)           # the run's own folder (state.json, tiles); the outputs are written
    summary["out_dir"] = str(out_dir)
    return summary


def _write_streamed_outputs(out_dir: Path, overwrite: bool, source: Any, run: Any, res: Any, model: LoadedModel,
                            summary: dict[str, Any], timings: dict[str, float], write: frozenset[str],
                            scan_out: dict[str, Any] | None, render_size: tuple[int, int], t_start: float,
                            chunk_points: int) -> None:
    """The outputs of :func:`_write_outputs` for a streamed scan, each written in chunks of the
    file's rows: labels, the class-coloured PLY, the scan in its own format; the PNG and the page
    show the evenly spaced sample the frame was decided on (every point of the scan would not fit)."""
    import numpy as np

    from pointseg.atomic import atomic_dir
    from pointseg.io.scans import LabelledPlyWriter, Scan
    from pointseg.segmentation.stream import read_rows

    name = Path(summary["scan"]).stem
    classes = model.classes
    shift = None if run.state["shift"] is None else np.asarray(run.state["shift"])
    origin = None if run.state["origin"] is None else np.asarray(run.state["origin"])
    gt_complete = res.confusion is not None and int(res.confusion.sum()) == res.points
    every = int(run.state["sample_every"])      # the frame's sample: what the picture and the page show
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        # one pass over the file's rows: labels.npy (the points kept), the PLY, the sample's labels
        labels_file = None
        if "labels" in write:
            labels_file = open(tmp / f"{name}.labels.npy", "wb")
            np.lib.format.write_array_header_1_0(labels_file, {"descr": "<i8", "fortran_order": False,
                                                               "shape": (res.points,)})
        ply = None
        if "ply" in write:
            ply = LabelledPlyWriter(tmp / f"{name}.ply", res.points, classes, labels=gt_complete, pred=True,
                                    model=str(model.ckpt.get("preset")), origin=origin).__enter__()
        sample_xyz, sample_rgb, sample_pred, sample_gt, sample_conf = [], [], [], [], []
        try:
            for ch in source.chunks(chunk_points):
                lab = read_rows(res.labels_rows, np.int32, ch.start, ch.stop)
                kept = lab >= 0
                if labels_file is not None:
                    lab[kept].astype(np.int64).tofile(labels_file)
                xyz = ch.xyz[kept]
                local = (xyz - shift if shift is not None else xyz).astype(np.float32)
                gt = read_rows(res.gt_rows, np.int32, ch.start, ch.stop)[kept] if res.gt_rows else None
                if ply is not None:
                    ply.write(local, None, gt if gt_complete else None, lab[kept])
                pick = np.arange(ch.start, ch.stop)[kept] % every == 0
                sample_conf.append(read_rows(res.conf_rows, np.float32, ch.start, ch.stop)[kept][pick])
                sample_xyz.append(local[pick])
                sample_rgb.append(None if ch.rgb is None else ch.rgb[kept][pick])
                sample_pred.append(lab[kept][pick])
                sample_gt.append(None if gt is None else gt[pick])
        except BaseException as e:
            if ply is not None:
                ply.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            if labels_file is not None:
                labels_file.close()
        if ply is not None:
            ply.__exit__(None, None, None)
        timings["write_s"] = time.perf_counter() - t
        if "scan" in write and scan_out is not None:
            from pointseg.io.write_back import write_scan_chunked
            t = time.perf_counter()
            wb = write_scan_chunked(source.path, tmp / scan_out["name"],
                                    lambda a, b: read_rows(res.labels_rows, np.int32, a, b).astype(np.int64),
                                    lambda a, b: read_rows(res.conf_rows, np.float32, a, b), classes,
                                    codes=scan_out["codes"], model=str(model.ckpt.get("preset")))
            timings["scan_write_s"] = time.perf_counter() - t
            summary["scan_output"] = wb.to_dict()
            for line in wb.notes:
                _say(f"note: {line}")
        if "png" in write or "html" in write:
            rgb = None if any(c is None for c in sample_rgb) else np.concatenate(sample_rgb)
            gt = None if any(g is None for g in sample_gt) else np.concatenate(sample_gt)
            view = Scan(np.concatenate(sample_xyz), rgb, path=Path(summary["scan"]), origin=origin)
            pred = np.concatenate(sample_pred)
            note = (f"the picture and the page show every {run.state['sample_every']:,}th point "
                    f"({len(pred):,} of {res.points:,})")
            summary.setdefault("notes", []).append(note)
            if "png" in write:
                from dataclasses import replace

                from pointseg.viewer.render import render_png
                t = time.perf_counter()
                render_png(replace(view, label=gt, pred=pred), tmp / f"{name}.png", mode="panels",
                           classes=classes, size=render_size, confusion=res.confusion)
                timings["render_s"] = time.perf_counter() - t
            if "html" in write:
                from pointseg.viewer.html import write_html
                t = time.perf_counter()
                write_html(tmp / f"{name}.html", view.xyz, view.rgb, pred, gt, classes,
                           confidence=np.concatenate(sample_conf),
                           title=f"pointseg — {name}", model=str(model.ckpt.get("preset")), scan=str(summary["scan"]),
                           summary={"checkpoint": summary["checkpoint"], "note": note}, confusion=res.confusion)
                timings["html_s"] = time.perf_counter() - t
        _finish_summary(tmp, name, summary, timings, res.points, t_start, "json" in write)


def _plan_outputs(scan_path: Path, model: LoadedModel, write: str | None, render: bool,
                  las_codes: str | Path | None) -> tuple[frozenset[str], dict[str, Any] | None]:
    """The outputs to write, and for the scan output its file name and LAS code table, refused
    (one line) before any work when the scan cannot be written back as asked."""
    from pointseg.io.write_back import (SCAN_OUTPUT_SUFFIXES, check_scan_output, las_code_table,
                                        load_las_codes, output_name)
    outputs, explicit = parse_write(write, render)
    override = load_las_codes(las_codes, model.classes) if las_codes is not None else None
    if "scan" not in outputs:
        return outputs, None
    if not explicit and scan_path.suffix.lower() not in SCAN_OUTPUT_SUFFIXES:
        return outputs - {"scan"}, None       # a prepared room (.npz): no format of the user's to keep
    codes = None
    if scan_path.suffix.lower() in (".las", ".laz"):
        codes = las_code_table(model.classes, model.ckpt.get("las_codes"), override)
    check_scan_output(scan_path, codes)
    return outputs, {"name": output_name(scan_path, frozenset({f"{scan_path.stem}.ply"})), "codes": codes}


def _write_outputs(out_dir: Path, overwrite: bool, scan: Scan, seg: Segmentation, model: LoadedModel,
                   summary: dict[str, Any], timings: dict[str, float], render: bool,
                   render_size: tuple[int, int], t_start: float, *, write: frozenset[str] | None = None,
                   scan_out: dict[str, Any] | None = None, probabilities: bool = False) -> None:
    """All outputs into a temporary folder that replaces ``out_dir`` only when complete.

    ``write``: which outputs (None: labels, ply, png when ``render``, html and json);
    ``scan_out``: the scan output's file name and LAS codes (:func:`_plan_outputs`), with 'scan'
    in ``write``; ``probabilities``: write ``seg.probabilities`` too."""
    from dataclasses import replace

    import numpy as np

    from pointseg.atomic import atomic_dir
    from pointseg.io.scans import write_labelled_ply
    name, pred = scan.name, seg.labels
    if write is None:
        write = frozenset({"labels", "ply", "html", "json"} | ({"png"} if render else set()))
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        t = time.perf_counter()
        if "labels" in write:
            np.save(tmp / f"{name}.labels.npy", pred.astype(np.int64))
        if "ply" in write:
            # a PLY label property names a class for every point: none when some have no ground truth
            gt = seg.ground_truth
            write_labelled_ply(tmp / f"{name}.ply", scan.xyz, None,
                               gt if gt is None or gt.min(initial=0) >= 0 else None, model.classes, pred=pred,
                               model=str(model.ckpt.get("preset")), origin=scan.origin)
        timings["write_s"] = time.perf_counter() - t
        if "scan" in write and scan_out is not None:
            _write_scan_output(tmp, scan, seg, model, scan_out, summary, timings)
        if probabilities and seg.probabilities is not None:
            from pointseg.io.write_back import write_probabilities
            write_probabilities(tmp / f"{name}.probabilities.npy", seg.probabilities, scan.kept)
            summary["probabilities"] = {"file": f"{name}.probabilities.npy", "dtype": "float16",
                                        "shape": [len(scan.kept) if scan.kept is not None else scan.num_points,
                                                  model.classes.num_classes],
                                        "classes": list(model.classes.names),
                                        "rows": "the scan file's points in order; NaN rows for points "
                                                "dropped for NaN/inf coordinates"}
        if render and "png" in write:
            from pointseg.viewer.render import render_png
            t = time.perf_counter()
            # the scan object itself goes down, with the segmentation's ground truth and prediction
            render_png(replace(scan, label=seg.ground_truth, pred=pred), tmp / f"{name}.png", mode="panels",
                       classes=model.classes, size=render_size, confusion=seg.confusion)
            timings["render_s"] = time.perf_counter() - t
        # The page needs no renderer (the browser draws it), so --no-render keeps it.
        if "html" in write:
            from pointseg.viewer.html import write_html
            t = time.perf_counter()
            write_html(tmp / f"{name}.html", scan.xyz, scan.rgb, pred, seg.ground_truth, model.classes,
                       confidence=seg.confidence, title=f"pointseg — {name}", model=str(model.ckpt.get("preset")), scan=str(summary["scan"]),
                       summary={"checkpoint": summary["checkpoint"]}, confusion=seg.confusion)
            timings["html_s"] = time.perf_counter() - t
        _finish_summary(tmp, name, summary, timings, scan.num_points, t_start, "json" in write)


def _finish_summary(tmp: Path, name: str, summary: dict[str, Any], timings: dict[str, float], points: int,
                    t_start: float, write_json: bool) -> None:
    """The summary's timings, points per second of the prediction, peak memory and outputs, and
    ``NAME.json`` when asked for."""
    import json
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings"] = timings
    summary["points_per_s"] = points / max(1e-9, timings["predict_s"])
    summary["peak_rss_mb"] = _peak_rss_mb()
    summary["outputs"] = sorted(p.name for p in tmp.iterdir() if not p.name.startswith("."))
    if write_json:
        summary["outputs"] = sorted(summary["outputs"] + [f"{name}.json"])
        (tmp / f"{name}.json").write_text(json.dumps(summary, indent=1))


def _write_scan_output(tmp: Path, scan: Scan, seg: Segmentation, model: LoadedModel, scan_out: dict[str, Any],
                       summary: dict[str, Any], timings: dict[str, float]) -> None:
    """The scan in its own format with label and confidence added (io.write_back)."""
    from pointseg.io.write_back import write_scan
    if scan.path is None or seg.confidence is None:
        raise ValueError("the scan output needs the scan's file and the prediction's confidence")
    t = time.perf_counter()
    wb = write_scan(scan.path, tmp / scan_out["name"], seg.labels, seg.confidence, model.classes,
                    kept=scan.kept, codes=scan_out["codes"], model=str(model.ckpt.get("preset")))
    timings["scan_write_s"] = time.perf_counter() - t
    summary["scan_output"] = wb.to_dict()
    for line in wb.notes:
        _say(f"note: {line}")


def _peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports kilobytes)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
