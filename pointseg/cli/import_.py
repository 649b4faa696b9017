"""``pointseg import FORMAT SOURCE --out DEST.pt``: convert another project's checkpoint.

Formats: see ``pointseg.convert.IMPORTERS`` (``pointseg import --list``). The source is read with
``torch.load(weights_only=True)`` only; the mapping is strict (every source tensor used once,
every model tensor filled, shapes checked) and nothing is written unless it succeeds.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", nargs="?", help="source format (dgcnn-pytorch, deepgcns; --list shows all)")
    p.add_argument("source", nargs="?", help="the checkpoint file to convert")
    p.add_argument("--out", help="pointseg checkpoint to write (.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--test-area", type=int, help="S3DIS area the source was NOT trained on (recorded)")
    p.add_argument("--block", choices=("res", "plain", "dense"),
                   help="deepgcns: block kind when the shapes cannot tell (res and plain look alike)")
    p.add_argument("--k", type=int, help="neighbours the source was trained with (default: the format's)")
    p.add_argument("--list", action="store_true", help="list the known formats")


def run(args: argparse.Namespace) -> int:
    from pointseg.convert import IMPORTERS, import_checkpoint, importer
    from pointseg.models import count_parameters
    if args.list:
        for name, imp in sorted(IMPORTERS.items()):
            print(f"{name:<16} {imp.description}")
        return 0
    if not args.format or not args.source or not args.out:
        raise ValueError("usage: pointseg import FORMAT SOURCE --out DEST.pt (--list shows the formats)")
    importer(args.format)             # unknown format: fail before reading anything
    if args.test_area is not None and not 1 <= args.test_area <= 6:
        raise ValueError(f"--test-area must be an S3DIS area 1..6, got {args.test_area}")
    if args.k is not None and args.k < 1:
        raise ValueError(f"--k must be positive, got {args.k}")
    res = import_checkpoint(args.format, args.source, args.out, overwrite=args.overwrite,
                            test_area=args.test_area, block=args.block, k=args.k)
    for line in res.summary:
        print(f"[import] {line}")
    print(f"[import] wrote {args.out}: {res.preset}, {count_parameters(res.model):,} parameters, "
          f"input {res.input_spec['block_size']} m blocks of {res.input_spec['num_points']} points, "
          f"source sha256 {res.provenance['source_sha256'][:12]}...")
    return 0
