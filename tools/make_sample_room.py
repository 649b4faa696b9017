"""Regenerate the bundled sample room ``pointseg/assets/sample_room.ply`` (a labelled PLY).

One synthetic room from a seed the demo checkpoint never saw in training, written with its RGB,
ground-truth ``label`` property and the S3DIS class table in the header::

    python tools/make_sample_room.py            # seed 2026, ~60 k points
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--points", type=int, default=60_000)
    ap.add_argument("--out", default=str(ROOT / "pointseg" / "assets" / "sample_room.ply"))
    args = ap.parse_args()

    from pointseg.classes import S3DIS
    from pointseg.data.prepared import PreparedRooms
    from pointseg.data.s3dis_raw import prepare_s3dis
    from pointseg.data.synth import write_synthetic
    from pointseg.io.scans import write_labelled_ply

    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic(Path(tmp) / "raw", rooms=1, seed=args.seed, areas=(5,), points=args.points, progress=False)
        prepare_s3dis(Path(tmp) / "raw", Path(tmp) / "prepared", progress=False)
        room = next(PreparedRooms(Path(tmp) / "prepared").iter_rooms()).room
    write_labelled_ply(args.out, room.xyz, room.rgb, room.label, S3DIS)
    print(f"wrote {args.out}: {room.num_points:,} points ({room.name}, seed {args.seed})")


if __name__ == "__main__":
    main()
