"""Throughput of ``pointseg segment`` on a large synthetic room, with its peak memory.

Runs ``segment`` in a fresh subprocess (so the peak resident memory is the segmentation's own,
measured with ``MALLOC_MMAP_THRESHOLD_=131072`` so that freed memory is returned at once) and
prints points per second of the prediction and of the whole command, at the command's default
settings (stride, voxel, frame estimation) unless ``--stride`` is given::

    PYTHONPATH=. python tools/bench_segment.py                       # 1 M points, default checkpoint
    PYTHONPATH=. python tools/bench_segment.py --checkpoint default --checkpoint preset:resgcn-28
    PYTHONPATH=. python tools/bench_segment.py --points 200000 --checkpoint runs/x/best.pt

``--checkpoint`` (repeatable) takes a path, ``default`` (segment's default checkpoint), the name of
a bundled asset (``demo_checkpoint``), or ``preset:NAME``: that preset with random weights and the
default checkpoint's input spec, for speed only (its OA means nothing).
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
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="path, 'default', a bundled asset name, or preset:NAME (repeatable)")
    ap.add_argument("--stride", type=float, default=None, help="default: segment's own default")
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
        for k, name in enumerate(args.checkpoint or ["default"]):
            bench_one(scan, resolve_checkpoint(name, tmp / f"ck{k}.pt"), name, args.stride, tmp / f"out{k}")


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


def bench_one(scan: Path, checkpoint: str, label: str, stride: float | None, out: Path) -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(ROOT)}
    code = ("import resource, sys, json; from pointseg.cli import main; rc = main(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, "segment", str(scan), "--checkpoint", checkpoint,
           "--out", str(out), "--quiet", "--no-render"]
    if stride is not None:
        cmd += ["--stride", str(stride)]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(r.stderr)
    peak_kb = int(r.stdout.split("PEAK_KB")[1].split()[0])
    summary = json.loads((out / "room.json").read_text())
    tm = summary["timings"]
    load = os.getloadavg()[0]
    print(f"[{label}] room: {summary['points']:,} points ({summary.get('network_points', summary['points']):,} "
          f"to the network, voxel {summary.get('voxel')}), model {summary['model']}, {summary['blocks']} blocks, "
          f"stride {summary['sliding']['stride']} m, CPU threads {os.cpu_count()}, load average {load:.1f}")
    print(f"{'predict':<10}{tm['predict_s']:8.1f} s {summary['points'] / tm['predict_s']:>12,.0f} points/s")
    print(f"{'command':<10}{wall:8.1f} s {summary['points'] / wall:>12,.0f} points/s  "
          "(process start, model load, read, frame, predict, write)")
    print(f"peak resident memory {peak_kb / 1024:,.0f} MB")
    if "metrics" in summary:
        print(f"OA {100 * summary['metrics']['oa']:.2f}  mIoU {100 * summary['metrics']['miou']:.2f}")


if __name__ == "__main__":
    main()
