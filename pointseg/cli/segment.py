"""``pointseg segment [SCAN] [--checkpoint CKPT] [--out DIR]``: label every point of a scan."""
from __future__ import annotations

import argparse


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
                   help="the scan's up axis: auto (from its floor/ceiling planes; also turns the walls "
                        "to x/y), +z, -z, +y, -y, +x, -x (a camera frame with y down is -y)")
    p.add_argument("--units", default="auto", metavar="UNIT",
                   help="the scan's length unit: auto (from its height), m, cm or mm")
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
    from pointseg.engine.frame import UNIT_CHOICES, UP_CHOICES
    from pointseg.engine.inference import SlidingConfig
    from pointseg.engine.segment import segment

    if args.up not in UP_CHOICES:
        raise ValueError(f"--up must be one of {', '.join(UP_CHOICES)}, got {args.up!r}")
    if args.units not in UNIT_CHOICES:
        raise ValueError(f"--units must be one of {', '.join(UNIT_CHOICES)}, got {args.units!r}")
    voxel = parse_voxel(args.voxel)
    # Validated here (ValueError naming the option) before the checkpoint or the scan is read.
    sliding = SlidingConfig(stride=args.stride, repeats=args.repeats, batch_size=args.batch_size,
                            tile_size=args.tile_size)
    s = segment(args.scan, args.checkpoint, args.out, args.device, args.overwrite, sliding,
                args.no_color, render=not args.no_render, progress=not args.quiet,
                up=args.up, units=args.units, voxel=voxel)
    top = sorted(s["histogram"].items(), key=lambda kv: -kv[1])[:5]
    print(f"[segment] {s['points']:,} points with {s['model']} in {s['timings']['total_s']:.1f} s "
          f"({s['points_per_s']:,.0f} points/s predicting); most frequent: "
          + ", ".join(f"{c} {100 * v / s['points']:.1f}%" for c, v in top))
    if "metrics" in s:
        m = s["metrics"]
        print(f"[segment] against the scan's labels: OA {100 * m['oa']:.2f}  mIoU {100 * m['miou']:.2f}")
    print(f"[segment] wrote {s['out_dir']}/ (labels .npy, .ply, " + ("" if args.no_render else ".png, ") + ".json)")
    return 0
