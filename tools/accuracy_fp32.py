r"""Float32 accuracy of the fast EdgeConv path against float64, next to the straightforward
(edge-tensor) formulation in float32: prints the cases of :mod:`pointseg.nn.precision`
(one EdgeConv, 64 -> 64 channels, k=16, inputs offset by 10-100; a deep residual EdgeConv stack).

    PYTHONPATH=$PWD python tools/accuracy_fp32.py [--depth 28] [--points 1024] [--seeds 6]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pointseg.nn.precision import deep_stack, deep_stack_median, one_edge_conv  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=28)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=6)
    args = ap.parse_args(argv)
    print("case                              fast fp32   reference fp32   (max rel. error vs float64)")
    f, r = one_edge_conv(args.points)
    print(f"one EdgeConv, offsets 10-100      {f:9.2e}   {r:14.2e}")
    f, r = deep_stack(args.depth, args.points)
    print(f"residual EdgeConv x{args.depth:<3d} (fixed knn) {f:9.2e}   {r:14.2e}")
    f, r, pairs = deep_stack_median(args.seeds, depth=args.depth, points=args.points)
    print(f"  same, relative L2, median of {args.seeds} seeds {f:9.2e}   {r:14.2e}   "
          f"(per seed fast/ref: {' '.join(f'{a / b:.2f}' for a, b in pairs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
