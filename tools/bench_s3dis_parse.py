"""Parse speed of the raw-release point files: pointseg's tolerant vectorised parser against two
baselines in the same process, on one synthetic file of ``--points`` lines (``x y z r g b``,
3 decimals, one NUL-corrupted line as in the release).

    python tools/bench_s3dis_parse.py --points 1000000

Baselines: ``np.loadtxt`` (numpy's C reader; it cannot read the corrupted line, so it gets a clean
copy) and line-by-line Python ``float()`` parsing (what "tolerant" parsers often do).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from pointseg.data.s3dis_raw import parse_points


def make_file(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-20, 20, (n, 3))
    rgb = rng.integers(0, 256, (n, 3))
    lines = [f"{a:.3f} {b:.3f} {c:.3f} {r} {g} {bb}" for (a, b, c), (r, g, bb) in zip(xyz, rgb)]
    return ("\n".join(lines) + "\n").encode()


def per_line(data: bytes) -> np.ndarray:
    rows = []
    for ln in data.splitlines():
        parts = ln.replace(b"\x00", b" ").split()
        if len(parts) == 6:
            rows.append([float(p) for p in parts])
    return np.asarray(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=1_000_000)
    args = ap.parse_args()
    clean = make_file(args.points)
    k = clean.index(b"\n", len(clean) // 2) + 1
    line = clean[k:clean.index(b"\n", k)]
    cut = line.rindex(b" ", 0, line.rindex(b" "))
    bad = clean[:k + cut] + b"\x00" + clean[k + cut + 1:]   # '185\x00187': NUL instead of a space

    import io
    res = {}
    t = time.perf_counter(); rows, ev = parse_points(bad, "bench.txt"); res["pointseg, NUL line"] = time.perf_counter() - t
    assert rows.shape == (args.points, 6) and len(ev) == 1
    t = time.perf_counter(); parse_points(clean, "bench.txt"); res["pointseg, clean file"] = time.perf_counter() - t
    t = time.perf_counter(); np.loadtxt(io.BytesIO(clean)); res["np.loadtxt (clean copy)"] = time.perf_counter() - t
    t = time.perf_counter(); per_line(bad); res["per-line Python float()"] = time.perf_counter() - t
    base = res["pointseg, NUL line"]
    print(f"{args.points:,} lines, {len(bad) / 1e6:.1f} MB")
    print(f"{'method':<28}{'seconds':>10}{'x pointseg':>12}")
    for name, s in res.items():
        print(f"{name:<28}{s:>10.2f}{s / base:>12.2f}")


if __name__ == "__main__":
    main()
