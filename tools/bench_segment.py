"""Throughput and peak memory of ``pointseg segment`` on a building floor of N points, for several N.

The floor (:mod:`pointseg.data.floor`) is synthetic rooms at real S3DIS density (about 1 M points
per 40-50 m^2 room; more points mean more rooms, never denser ones) laid side by side, written as
LAS 1.2 point format 2 with colours and the ground truth, room by room (memory bounded by one
room: a 10 M-point floor took 5 s and 165 MB here, so 50 M points take about half a minute).
Floors are cached in ``--cache`` (default ``$TMPDIR/pointseg-bench-floors``) by points, seed and
density, so re-runs reuse them.

Each size runs, in a fresh subprocess (so the peak resident memory is the segmentation's own,
measured with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed memory is returned at once)::

    pointseg segment FLOOR.las --out OUT --quiet --no-render --write labels,json,scan --up +z \\
        [--checkpoint C] [--stride S] [SEGMENT_ARGS...]

and one table is printed: points, points per second of the prediction and of the whole command,
peak resident memory, every timing of the command's JSON summary in its order (in memory:
load_model, read_scan, frame, predict (which includes frame), write, scan_write, total; a streamed
run has its own keys), OA / mIoU; then the ratios of each size to the smallest, so growth with
size is visible::

    PYTHONPATH=. python tools/bench_segment.py                    # 1 M and 4 M points, default checkpoint
    PYTHONPATH=. python tools/bench_segment.py --points 200000 --points 400000
    PYTHONPATH=. python tools/bench_segment.py --points 10000000 --points 50000000 \\
        --segment-args "--tile-size 8" --cache ~/floors
    PYTHONPATH=. python tools/bench_segment.py --checkpoint default --checkpoint preset:resgcn-28

``--checkpoint`` (repeatable) takes a path, ``default`` (segment's default checkpoint), the name of
a bundled asset (``demo_checkpoint``), or ``preset:NAME``: that preset with random weights and the
default checkpoint's input spec, for speed only (its OA means nothing). ``--segment-args`` is split
as a shell would (``shlex``) and appended to the command.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POINTS = (1_000_000, 4_000_000)
FLOOR_VERSION = 1     # bump when the floor generator's output changes, so cached floors are rebuilt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, action="append", default=None,
                    help=f"floor size in points (repeatable; default {' and '.join(map(str, DEFAULT_POINTS))})")
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="path, 'default', a bundled asset name, or preset:NAME (repeatable)")
    ap.add_argument("--stride", type=float, default=None, help="default: segment's own default")
    ap.add_argument("--segment-args", default="", help="extra arguments for pointseg segment, e.g. '--tile-size 8'")
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--density", type=float, default=None,
                    help="points per m^2 of a room's floor area (default: S3DIS's, 22000)")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "pointseg-bench-floors",
                    help="folder of built floors, reused by later runs (default: %(default)s)")
    args = ap.parse_args()
    sizes = sorted(set(args.points or DEFAULT_POINTS))
    if sizes[0] < 1:
        ap.error("--points must be >= 1")
    extra = shlex.split(args.segment_args)

    from pointseg.data.floor import S3DIS_DENSITY
    density = args.density or S3DIS_DENSITY
    args.cache.mkdir(parents=True, exist_ok=True)
    floors = {n: build_floor(args.cache, n, args.seed, density) for n in sizes}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for k, name in enumerate(args.checkpoint or ["default"]):
            checkpoint = resolve_checkpoint(name, tmp / f"ck{k}.pt")
            rows = []
            for n in sizes:
                rows.append(bench_one(floors[n], checkpoint, args.stride, extra, tmp / f"out{k}_{n}"))
            print_table(name, rows, extra)


def build_floor(cache: Path, points: int, seed: int, density: float) -> Path:
    """The cached floor of ``points`` points, built when missing."""
    from pointseg.data.floor import write_floor_las
    path = cache / f"floor_{points}_s{seed}_d{density:g}_v{FLOOR_VERSION}.las"
    if path.exists():
        print(f"floor {points:,} points: cached {path}", flush=True)
        return path
    t = time.perf_counter()
    rooms = write_floor_las(path, points, seed=seed, density=density)
    x1 = max(r.box[2] for r in rooms)
    y1 = max(r.box[3] for r in rooms)
    print(f"floor {points:,} points: {len(rooms)} room{'s' * (len(rooms) != 1)} on {x1:.0f} x {y1:.0f} m, built in "
          f"{time.perf_counter() - t:.1f} s (the last one {rooms[-1].points:,} of its ~{rooms[-1].planned:,} points) "
          f"-> {path} ({path.stat().st_size / 2**20:,.0f} MiB)", flush=True)
    return path


def resolve_checkpoint(name: str, scratch: Path) -> str:
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT
    if name == "default":
        return str(DEFAULT_CHECKPOINT)
    if name.startswith("preset:"):
        from pointseg.classes import ClassTable
        from pointseg.engine.checkpoint import save_checkpoint
        from pointseg.segmentation.checkpoint import load_checkpoint, model_payload
        from pointseg.models.presets import build_model
        ref = load_checkpoint(DEFAULT_CHECKPOINT)
        classes = ClassTable.from_dict(ref["classes"])
        import torch
        torch.manual_seed(0)                   # the same random weights from run to run
        model = build_model(name.split(":", 1)[1], out_channels=classes.num_classes)
        save_checkpoint(scratch, model_payload(name.split(":", 1)[1], model, classes, ref["input"]))
        return str(scratch)
    if Path(name).exists():
        return name
    from pointseg.assets import asset
    return str(asset(name if name.endswith(".pt") else f"{name}.pt"))


def bench_one(scan: Path, checkpoint: str, stride: float | None, extra: list[str], out: Path) -> dict:
    """One ``pointseg segment`` run in a fresh process: its JSON summary, with ``wall_s`` (the
    command as a whole, process start included) and ``peak_kb`` (the child's ru_maxrss)."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(ROOT)}
    code = ("import resource, sys, json; from pointseg.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "segment", str(scan), "--checkpoint", checkpoint,
           "--out", str(out), "--quiet", "--no-render", "--write", "labels,json,scan", "--up", "+z"]
    if stride is not None:
        cmd += ["--stride", str(stride)]
    cmd += extra
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0 or "PEAK_KB" not in r.stdout:
        sys.exit(f"{shlex.join(cmd[3:])}\nfailed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    summary = json.loads((out / f"{scan.stem}.json").read_text())
    summary["wall_s"] = wall
    summary["peak_kb"] = int(r.stdout.split("PEAK_KB")[1].split()[0])
    summary["load_average"] = os.getloadavg()[0]
    return summary


def _timing_keys(rows: list[dict]) -> list[str]:
    """Every timing key of the runs, in the order the summaries list them (a key only some runs
    have goes after the key it follows there)."""
    keys: list[str] = []
    for s in rows:
        at = 0
        for k in s.get("timings", {}):
            if k in keys:
                at = keys.index(k) + 1
            else:
                keys.insert(at, k)
                at += 1
    return keys


def print_table(label: str, rows: list[dict], extra: list[str]) -> None:
    s0 = rows[0]
    loads = ", ".join(f"{s['load_average']:.1f}" for s in rows)
    print(f"\n[{label}] model {s0.get('model')}, stride {s0.get('sliding', {}).get('stride')} m, "
          f"CPU threads {os.cpu_count()}, load average {loads}"
          + (f", segment args: {shlex.join(extra)}" if extra else ""))
    keys = _timing_keys(rows)
    cols = ([("points", 12), ("blocks", 8), ("pred pts/s", 11), ("cmd pts/s", 10), ("peak MB", 8)]
            + [(k[:-2] if k.endswith("_s") else k, max(7, len(k) - 1)) for k in keys] + [("wall", 7), ("OA", 6), ("mIoU", 6)])
    print("".join(f"{c:>{w + 1}}" for c, w in cols) + "   (times in s)")
    for s in rows:
        m = s.get("metrics") or {}
        cells = [f"{s['points']:,}", f"{s.get('blocks', '-')}", f"{predict_rate(s):,.0f}",
                 f"{s['points'] / s['wall_s']:,.0f}", f"{s['peak_kb'] / 1024:,.0f}"]
        cells += [f"{s['timings'][k]:.1f}" if k in s.get("timings", {}) else "-" for k in keys]
        cells += [f"{s['wall_s']:.1f}"]
        cells += [f"{100 * m[k]:.1f}" if k in m else "-" for k in ("oa", "miou")]
        print("".join(f"{c:>{w + 1}}" for c, (_, w) in zip(cells, cols)))
    if "predict_s" in keys and "frame_s" in keys:
        print("(predict includes frame: framing and subsampling)")
    if len(rows) > 1:
        print(f"growth from {s0['points']:,} points (ratio to the smallest size):")
        print(f"{'points':>12}{'x points':>10}{'pred pts/s':>12}{'cmd pts/s':>11}{'peak MB':>9}{'wall':>8}")
        for s in rows[1:]:
            print(f"{s['points']:>12,}{s['points'] / s0['points']:>10.2f}"
                  f"{predict_rate(s) / predict_rate(s0):>12.2f}"
                  f"{(s['points'] / s['wall_s']) / (s0['points'] / s0['wall_s']):>11.2f}"
                  f"{s['peak_kb'] / s0['peak_kb']:>9.2f}{s['wall_s'] / s0['wall_s']:>8.2f}")


def predict_rate(s: dict) -> float:
    """Points per second of the prediction: the summary's own figure, else points / predict_s."""
    if "points_per_s" in s:
        return float(s["points_per_s"])
    return s["points"] / max(1e-9, s.get("timings", {}).get("predict_s", float("nan")))


if __name__ == "__main__":
    main()
