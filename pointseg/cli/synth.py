"""``pointseg synth OUT_DIR --rooms N --seed S``: synthetic rooms in the raw S3DIS layout."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write Area_k/<room>/Annotations/ into")
    p.add_argument("--rooms", type=int, default=12, help="number of rooms (dealt to the areas in turn)")
    p.add_argument("--seed", type=int, default=0, help="room i is drawn from the seed sequence (seed, i)")
    p.add_argument("--areas", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], metavar="K",
                   help="area numbers to deal rooms to (default 1..6)")
    p.add_argument("--points", type=int, default=300_000,
                   help="approximate points per room (sets the density; e.g. 40000 for a small sample room)")
    p.add_argument("--defects", action="store_true",
                   help="add the release's known defects (NUL byte, control byte, junk and duplicate files, "
                        "an unknown class prefix) to every room")
    p.add_argument("--overwrite", action="store_true", help="replace rooms that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pointseg.data.synth import write_synthetic
    rooms = write_synthetic(args.out_dir, rooms=args.rooms, seed=args.seed, areas=args.areas,
                            points=args.points, defects=args.defects, overwrite=args.overwrite,
                            progress=not args.quiet)
    n = sum(r["num_points"] for r in rooms)
    print(f"wrote {len(rooms)} rooms ({n:,} points) under {args.out_dir}")
    return 0
