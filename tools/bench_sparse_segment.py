"""Sparse columns at the cost of their points (issue 27): the padded and the compact evaluation of
the same scans, in one process, one after the other (so the machine's load hits both alike)::

    PYTHONPATH=. python tools/bench_sparse_segment.py                     # the real aerial LAS and the sample room
    PYTHONPATH=. python tools/bench_sparse_segment.py scan.las --checkpoint model.pt

For each scan: seconds predicting, blocks (padded / compact), the speed-up, how many labels the
compact path changes against the padded one (the labels the command gave before), and OA against
the scan's ground truth when it has one. Both runs use the command's defaults (frame, voxel,
stride, seed), so the padded run is exactly what ``pointseg segment`` computed before compaction.
No timing is asserted anywhere; this prints ratios.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
AERIAL = ROOT.parent / "shared" / "real_scans" / "aerial_sample.las"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scans", nargs="*", help="scan files (default: the real aerial LAS and the sample room)")
    ap.add_argument("--checkpoint", default=None, help="default: segment's default checkpoint")
    ap.add_argument("--save", default=None, help="folder to save both label arrays in (NAME.padded/compact.npy)")
    args = ap.parse_args()

    from pointseg.assets import asset
    from pointseg.segmentation.checkpoint import load_model
    from pointseg.segmentation.inference import SlidingConfig
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT, segment_scan
    from pointseg.io.scans import read_scan

    scans = [Path(s) for s in args.scans] or [p for p in (AERIAL, asset("sample_room.ply")) if Path(p).exists()]
    model = load_model(args.checkpoint or DEFAULT_CHECKPOINT, "cpu")
    for path in scans:
        scan = read_scan(path)
        runs = {}
        for name, compact in (("padded", False), ("compact", True)):
            t = time.perf_counter()
            seg = segment_scan(model, scan, SlidingConfig(compact=compact), progress=False)
            runs[name] = (time.perf_counter() - t, seg)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                np.save(Path(args.save) / f"{Path(path).stem}.{name}.npy", seg.labels)
        (tp, sp), (tc, sc) = runs["padded"], runs["compact"]
        diff = int((sp.labels != sc.labels).sum())
        n = len(sp.labels)
        print(f"{Path(path).name}: {n:,} points, load average {os.getloadavg()[0]:.1f}")
        print(f"  padded   {tp:8.1f} s  {sp.summary['blocks']:6d} blocks")
        print(f"  compact  {tc:8.1f} s  {sc.summary['blocks']:6d} blocks  speed-up {tp / tc:.1f}x")
        print(f"  labels changed by compaction: {diff:,} of {n:,} ({100 * diff / n:.3f} %)")
        for name, (_, seg) in runs.items():
            if "metrics" in seg.summary:
                m = seg.summary["metrics"]
                print(f"  {name:<8} OA {100 * m['oa']:.2f}  mIoU {100 * m['miou']:.2f}")


if __name__ == "__main__":
    main()
