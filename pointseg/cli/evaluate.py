"""``pointseg evaluate CKPT --data PREPARED_DIR [--area 5]``, ``pointseg evaluate CKPT --scans FILE ...``
(labelled scans, through the checkpoint's class map) and ``pointseg evaluate --pool A1.json ...``."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="checkpoint (.pt) to evaluate, or a bundled one by name "
                                                "(dgcnn-s3dis, resgcn7-synthetic)")
    p.add_argument("--data", help="folder of prepared rooms (pointseg prepare-s3dis output)")
    p.add_argument("--scans", nargs="+", metavar="FILE",
                   help="labelled scan files instead of prepared rooms: each is segmented as `pointseg segment` "
                        "does and scored on its label field through the checkpoint's class map (a model "
                        "trained with data.source: scans)")
    p.add_argument("--area", type=int, default=5, help="test area (default 5)")
    p.add_argument("--stride", type=float, default=None,
                   help="sliding-block stride in metres (default: the checkpoint's input recipe, 0.5)")
    p.add_argument("--repeats", type=int, default=1, help="random block draws averaged per point")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rooms", nargs="+", help="only these rooms (names like office_1 or Area_5_office_1)")
    p.add_argument("--no-block-level", action="store_true", help="skip the block-level (reference) metrics")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", dest="json_out", help="write the full report (with confusion matrices) here")
    p.add_argument("--pool", nargs="+", metavar="REPORT",
                   help="pool per-area JSON reports (6-fold) instead of evaluating")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pointseg.segmentation.evaluate import evaluate_rooms, format_report, pool_reports, write_report
    from pointseg.segmentation.inference import SlidingConfig

    if args.pool:
        report = pool_reports(args.pool)
    elif args.scans:
        if not args.checkpoint:
            raise ValueError("give a CHECKPOINT with --scans")
        sliding = SlidingConfig(stride=args.stride, repeats=args.repeats, batch_size=args.batch_size)
        report = evaluate_scans(args.checkpoint, args.scans, args.device, sliding, progress=not args.quiet)
    else:
        if not args.checkpoint or not args.data:
            raise ValueError("give a CHECKPOINT and --data PREPARED_DIR (or --scans FILE ..., or --pool REPORT ...)")
        from pointseg.segmentation.checkpoint import load_checkpoint
        if isinstance(load_checkpoint(args.checkpoint).get("class_map"), dict):
            # its classes are the user's, not the prepared rooms' S3DIS classes
            raise ValueError(f"{args.checkpoint}: trained on your own scans (it has a class map); evaluate it "
                             "on labelled scans with --scans FILE ...")
        sliding = SlidingConfig(stride=args.stride, repeats=args.repeats, batch_size=args.batch_size)
        report = evaluate_rooms(args.checkpoint, args.data, args.area, args.device, sliding,
                                block_level=not args.no_block_level, progress=not args.quiet,
                                rooms=args.rooms)
    print(format_report(report))
    if args.json_out:
        write_report(report, args.json_out)
        print(f"report written to {args.json_out}")
    else:
        fr = report.get("full_resolution", {})
        print(json.dumps({k: fr.get(k) for k in ("oa", "macc", "miou")}))
    return 0


def evaluate_scans(checkpoint: str, files: list[str], device: str, sliding: object,
                   progress: bool = True) -> dict:
    """Segment every labelled scan as ``segment`` does and pool the confusion matrices (every
    original point with a mapped label value; ignored values left out)."""
    import time
    import warnings

    import numpy as np

    from pointseg.segmentation.segment import load_model, segment_scan
    from pointseg.io.scans import read_scan
    from pointseg.metrics import SegMetrics

    model = load_model(checkpoint, device)
    field = model.ckpt.get("label_field") or None
    k = model.classes.num_classes
    total, per_file, t0 = np.zeros((k, k), dtype=np.int64), {}, time.perf_counter()
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # NaN points: segment drops them
            scan = read_scan(f, label_field=field)
        seg = segment_scan(model, scan, sliding, progress=progress)
        if "metrics" not in seg.summary:
            raise ValueError(f"{f}: no labels to evaluate against"
                             + (f" (label field {field!r} of the checkpoint)" if field else ""))
        m = seg.summary["metrics"]
        total += np.asarray(m["confusion"], dtype=np.int64)
        per_file[str(f)] = {"points": scan.num_points, "oa": m["oa"], "miou": m["miou"]}
    return {"checkpoint": str(checkpoint), "preset": model.ckpt.get("preset"), "scans": list(map(str, files)),
            "classes": model.classes.to_dict(), "seconds": time.perf_counter() - t0,
            "full_resolution": SegMetrics(total, model.classes.names).to_dict(), "files": per_file}
