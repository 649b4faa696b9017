"""``pointseg make-blocks PREPARED_DIR OUT_DIR``: prepared rooms -> the S3DIS block release layout."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("prepared_dir", metavar="PREPARED_DIR", help="output of `pointseg prepare-s3dis`")
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="folder for ply_data_all_*.h5, all_files.txt, room_filelist.txt (created)")
    p.add_argument("--stride", type=float, default=0.5, help="block corner step in metres (0.5 train, 1.0 test)")
    p.add_argument("--block-size", type=float, default=1.0, help="block side in metres")
    p.add_argument("--num-points", type=int, default=4096, help="points per block")
    p.add_argument("--min-points", type=int, default=100, help="drop blocks with fewer points")
    p.add_argument("--sampling", choices=["release", "unique"], default="release",
                   help="release: draw with replacement as the public blocks; unique: without replacement "
                        "when a block has more points")
    p.add_argument("--areas", type=int, nargs="+", metavar="K", help="only these areas (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--blocks-per-file", type=int, default=1000)
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pointseg.data.block_release import make_blocks
    s = make_blocks(args.prepared_dir, args.out_dir, stride=args.stride, block_size=args.block_size,
                    num_points=args.num_points, min_points=args.min_points, areas=args.areas,
                    seed=args.seed, blocks_per_file=args.blocks_per_file, sampling=args.sampling,
                    overwrite=args.overwrite, progress=not args.quiet)
    print(f"{s['num_blocks']} blocks from {len(s['rooms'])} rooms in {len(s['files'])} files -> {args.out_dir}")
    return 0
