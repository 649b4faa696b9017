"""``pointseg prepare-s3dis RAW_DIR OUT_DIR``: raw S3DIS release -> one ``.npz`` per room + manifest."""
from __future__ import annotations

import argparse
import logging
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("raw_dir", metavar="RAW_DIR",
                   help="Stanford3dDataset_v1.2_Aligned_Version (or the folder holding it), or `pointseg synth` output")
    p.add_argument("out_dir", metavar="OUT_DIR", help="writes OUT_DIR/Area_k/<room>.npz and manifest.json")
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                   help="parallel processes, one room each (peak memory ~ workers x largest room)")
    p.add_argument("--areas", type=int, nargs="+", metavar="K", help="only these areas (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; repairs still go to the log files")


def run(args: argparse.Namespace) -> int:
    from pointseg.data.s3dis_raw import prepare_s3dis
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    m = prepare_s3dis(args.raw_dir, args.out_dir, workers=args.workers, areas=args.areas,
                      progress=not args.quiet)
    print(f"{m['num_rooms']} rooms, {m['num_points']:,} points -> {args.out_dir} "
          f"({m['num_repaired']} lines repaired, {m['num_dropped']} dropped; see repairs.txt, manifest.json)")
    return 0
