"""Throughput of ``pointseg segment`` on a large synthetic room, with its peak memory.

Runs ``segment`` in a fresh subprocess (so the peak resident memory is the segmentation's own,
measured with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed memory is returned at once) and
prints points per second of the prediction and of the whole command::

    PYTHONPATH=. python tools/bench_segment.py                       # 1 M points, bundled checkpoint
    PYTHONPATH=. python tools/bench_segment.py --points 200000 --checkpoint runs/x/best.pt
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--checkpoint", default=str(ROOT / "pointseg" / "assets" / "demo_checkpoint.pt"))
    ap.add_argument("--stride", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()

    from pointseg.classes import S3DIS
    from pointseg.data.prepared import PreparedRooms
    from pointseg.data.s3dis_raw import prepare_s3dis
    from pointseg.data.synth import write_synthetic
    from pointseg.io.scans import write_labelled_ply

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_synthetic(tmp / "raw", rooms=1, seed=args.seed, areas=(5,), points=args.points, progress=False)
        prepare_s3dis(tmp / "raw", tmp / "prep", progress=False)
        room = next(PreparedRooms(tmp / "prep").iter_rooms()).room
        scan = tmp / "room.ply"
        write_labelled_ply(scan, room.xyz, room.rgb, room.label, S3DIS)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(ROOT)}
        code = ("import resource, sys, json; from pointseg.cli import main; rc = main(sys.argv[1:]); "
                "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code, "segment", str(scan), "--checkpoint", args.checkpoint,
                            "--out", str(tmp / "out"), "--stride", str(args.stride), "--quiet", "--no-render"],
                           env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            sys.exit(r.stderr)
        peak_kb = int(r.stdout.split("PEAK_KB")[1].split()[0])
        summary = json.loads((tmp / "out" / "room.json").read_text())
    tm = summary["timings"]
    print(f"room: {summary['points']:,} points, model {summary['model']}, {summary['blocks']} blocks, "
          f"stride {args.stride} m, CPU threads {os.cpu_count()}")
    print(f"{'predict':<10}{tm['predict_s']:8.1f} s {summary['points'] / tm['predict_s']:>12,.0f} points/s")
    print(f"{'command':<10}{wall:8.1f} s {summary['points'] / wall:>12,.0f} points/s  (process start, model load, read, write)")
    print(f"peak resident memory {peak_kb / 1024:,.0f} MB")
    if "metrics" in summary:
        print(f"OA {100 * summary['metrics']['oa']:.2f}  mIoU {100 * summary['metrics']['miou']:.2f}")


if __name__ == "__main__":
    main()
