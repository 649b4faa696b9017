"""Time the viewer's headless path on a synthetic labelled room: read a labelled PLY, voxel
downsampling for display, and PNG rendering (one view and four panels) with Open3D's
OffscreenRenderer on this machine's renderer (Mesa on CPU-only machines).

    PYTHONPATH=$PWD python tools/bench_view.py [--points 1000000] [--size 640x480]

Prints seconds per step; shared machines are noisy, so compare rows of one run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args()
    from pointseg.classes import S3DIS
    from pointseg.io.scans import read_scan, write_labelled_ply
    from test_viewer import make_room
    from pointseg.viewer.render import DEFAULT_MAX_POINTS, parse_size, render_png
    from pointseg.viewer.state import display_subset

    size = parse_size(args.size)
    room = make_room(args.points)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter()
        write_labelled_ply(d / "room.ply", room.xyz, room.rgb, room.label, S3DIS, pred=room.pred)
        rows.append(("write labelled PLY", time.perf_counter() - t))
        t = time.perf_counter()
        scan = read_scan(d / "room.ply")
        rows.append(("read labelled PLY", time.perf_counter() - t))
        t = time.perf_counter()
        sub = display_subset(scan.xyz, (scan.label, scan.pred), DEFAULT_MAX_POINTS)
        rows.append((f"downsample to <= {DEFAULT_MAX_POINTS:,} ({len(sub.index):,})", time.perf_counter() - t))
        for mode in ("gt", "panels"):
            t = time.perf_counter()
            render_png(scan, d / f"{mode}.png", mode=mode, size=size)
            rows.append((f"render --mode {mode} {args.size}", time.perf_counter() - t))
    print(f"{scan.num_points:,} points")
    for name, s in rows:
        print(f"{name:<44} {s:7.2f} s")


if __name__ == "__main__":
    main()
