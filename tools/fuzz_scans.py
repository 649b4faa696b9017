"""Fuzz every scan reader of ``pointseg.io.scans`` with seeded mutations of valid files.

    python tools/fuzz_scans.py --cases 2000 --time-limit 600 [--seed 0] [--timeout 10]

Seed files (one valid file per reader: PLY ascii + binary, PCD ascii + binary, .xyz, .txt,
.npy, .npz, .las when laspy is installed) are mutated by byte flips, cuts at random offsets,
header edits (counts, types, keywords), inserted and duplicated bytes. Each case is read by
``read_scan`` in a worker process (address space limited, killed after ``--timeout`` s) and
classified as

* ``clean``: ValueError / FileNotFoundError whose message names the file;
* ``read``: a scan consistent with what the file says (point count = the header's count where
  the format has one, finite float32 coordinates, uint8 colours, non-negative labels, the exact
  original content when the bytes did not change);
* ``wrong``: a read that is not (a silent wrong read); ``traceback``: any other exception, or an
  error that does not name the file; ``hang``: the worker ran past the timeout.

Prints the counts per outcome and per format; exit 1 if any case was wrong, a traceback or a hang.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_POINTS = 60


def _cloud(seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-2, 2, (N_POINTS, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (N_POINTS, 3)).astype(np.uint8)
    label = rng.integers(0, 13, N_POINTS).astype(np.int64)
    return xyz, rgb, label


def write_seed_files(folder: Path) -> dict[str, Path]:
    """One valid file per reader, all holding the same points."""
    from pointseg.classes import S3DIS
    from pointseg.io.rooms import Room, save_room
    from pointseg.io.scans import write_labelled_ply
    folder.mkdir(parents=True, exist_ok=True)
    xyz, rgb, label = _cloud()
    files: dict[str, Path] = {}
    files["ply_binary"] = write_labelled_ply(folder / "binary.ply", xyz, rgb, label, S3DIS)
    head = ["ply", "format ascii 1.0", f"element vertex {N_POINTS}", "property float x", "property float y",
            "property float z", "property uchar red", "property uchar green", "property uchar blue",
            "property uchar label", "end_header"]
    rows = [f"{a:.6f} {b:.6f} {c:.6f} {r} {g} {bl} {lb}" for (a, b, c), (r, g, bl), lb in zip(xyz, rgb, label)]
    (folder / "ascii.ply").write_text("\n".join(head + rows) + "\n")
    files["ply_ascii"] = folder / "ascii.ply"
    packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2]
    pcd_head = ["# .PCD v0.7", "VERSION 0.7", "FIELDS x y z rgb label", "SIZE 4 4 4 4 4", "TYPE F F F U I",
                "COUNT 1 1 1 1 1", f"WIDTH {N_POINTS}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0",
                f"POINTS {N_POINTS}"]
    rows = [f"{a:.6f} {b:.6f} {c:.6f} {p} {lb}" for (a, b, c), p, lb in zip(xyz, packed, label)]
    (folder / "ascii.pcd").write_text("\n".join(pcd_head + ["DATA ascii"] + rows) + "\n")
    files["pcd_ascii"] = folder / "ascii.pcd"
    rec = np.empty(N_POINTS, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("label", "<i4")])
    rec["x"], rec["y"], rec["z"], rec["rgb"], rec["label"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], packed, label
    (folder / "binary.pcd").write_bytes(("\n".join(pcd_head + ["DATA binary"]) + "\n").encode() + rec.tobytes())
    files["pcd_binary"] = folder / "binary.pcd"
    (folder / "cloud.xyz").write_text("\n".join(f"{a:.6f} {b:.6f} {c:.6f}" for a, b, c in xyz) + "\n")
    files["xyz"] = folder / "cloud.xyz"
    (folder / "cloud.txt").write_text("x,y,z,r,g,b,label\n" + "\n".join(
        f"{a:.6f},{b:.6f},{c:.6f},{r},{g},{bl},{lb}" for (a, b, c), (r, g, bl), lb in zip(xyz, rgb, label)) + "\n")
    files["txt"] = folder / "cloud.txt"
    np.save(folder / "cloud.npy", np.concatenate([xyz, rgb, label[:, None]], axis=1).astype(np.float64))
    files["npy"] = folder / "cloud.npy"
    save_room(folder / "room.npz", Room("room", xyz, rgb, label.astype(np.uint8)))
    files["npz"] = folder / "room.npz"
    try:
        import laspy
        hdr = laspy.LasHeader(point_format=3, version="1.2")
        hdr.scales = np.array([0.001, 0.001, 0.001])
        hdr.offsets = np.zeros(3)
        las = laspy.LasData(hdr)
        las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        las.red, las.green, las.blue = (rgb[:, i].astype(np.uint16) * 257 for i in range(3))
        las.write(str(folder / "cloud.las"))
        files["las"] = folder / "cloud.las"
    except ImportError:
        pass
    return files


# ----------------------------------------------------------------------------- mutations

_HEADER_EDITS = [b"4294967296", b"1000000000000", b"-1", b"0", b"99999", b"1e9", b"nan", b"list uchar int",
                 b"double", b"char", b"\xff\xfe", b"", b" ", b"\n", b"binary_big_endian", b"ascii",
                 b"binary", b"element face 3", b"61", b"59", b"x"]


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One seeded mutation of ``data`` and its description."""
    b = bytearray(data)
    kind = rng.choice(["flip", "cut", "header", "insert", "duplicate", "flips"])
    n = len(b)
    header_end = min(n, max(16, data.find(b"end_header") + 10, data.find(b"DATA") + 12, 128))
    if kind == "flip":
        i = int(rng.integers(0, n))
        b[i] = int(rng.integers(0, 256))
        return bytes(b), f"flip byte {i}"
    if kind == "flips":
        idx = rng.integers(0, n, int(rng.integers(2, 12)))
        for i in idx:
            b[int(i)] ^= 1 << int(rng.integers(0, 8))
        return bytes(b), f"flip bits at {sorted(int(i) for i in idx)}"
    if kind == "cut":
        i = int(rng.integers(0, n))
        return bytes(b[:i]), f"cut at {i}"
    if kind == "insert":
        i = int(rng.integers(0, n))
        junk = rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8).tobytes()
        return bytes(b[:i]) + junk + bytes(b[i:]), f"insert {len(junk)} bytes at {i}"
    if kind == "duplicate":
        i = int(rng.integers(0, n))
        j = min(n, i + int(rng.integers(1, 64)))
        return bytes(b[:j]) + bytes(b[i:j]) + bytes(b[j:]), f"duplicate {i}:{j}"
    # header edit: replace a token (number or word) inside the header
    head = bytes(b[:header_end])
    toks = [m for m in re.finditer(rb"[A-Za-z_]+|-?\d+(\.\d+)?", head)]
    if not toks:
        i = int(rng.integers(0, n))
        return bytes(b[:i]), f"cut at {i}"
    m = toks[int(rng.integers(0, len(toks)))]
    rep = _HEADER_EDITS[int(rng.integers(0, len(_HEADER_EDITS)))]
    return bytes(b[:m.start()]) + rep + bytes(b[m.end():]), f"header {m.group()!r} -> {rep!r}"


# ----------------------------------------------------------------------------- checking

def declared_count(path: Path, data: bytes) -> int | None:
    """The point count the file's own header declares (independent of the readers), if any."""
    suffix = path.suffix.lower()
    if suffix == ".ply":
        m = re.search(rb"(?m)^element vertex (\d+)\s*$", data[:data.find(b"end_header") + 1 or 4096])
        return int(m.group(1)) if m else None
    if suffix == ".pcd":
        m = re.search(rb"(?m)^POINTS (\d+)\s*$", data[:data.find(b"DATA") + 1 or 4096])
        return int(m.group(1)) if m else None
    if suffix == ".npy":
        m = re.search(rb"'shape': \((\d+),", data[:256])
        return int(m.group(1)) if m else None
    if suffix == ".las" and len(data) >= 111:
        return int(np.frombuffer(data[107:111], "<u4")[0])
    return None


def check_scan(path: Path, data: bytes, original: bytes, reference) -> tuple[str, str]:
    """Read ``path`` (holding ``data``) and classify the outcome."""
    from pointseg.io.scans import read_scan
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = read_scan(path)
    except (ValueError, FileNotFoundError) as e:
        if path.name in str(e) and "\n" not in str(e).strip():
            return "clean", str(e)[:200]
        return "traceback", f"error without the file name or on several lines: {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - the point is to count these
        return "traceback", "".join(traceback.format_exception_only(type(e), e)).strip()[:300]
    problems = []
    n = s.num_points
    if s.xyz.dtype != np.float32 or s.xyz.shape != (n, 3) or not np.all(np.isfinite(s.xyz)) or n == 0:
        problems.append("coordinates not finite float32 (N, 3)")
    if s.rgb is not None and (s.rgb.dtype != np.uint8 or s.rgb.shape != (n, 3)):
        problems.append("colours not uint8 (N, 3)")
    for lab in (s.label, s.pred):
        if lab is not None and (lab.shape != (n,) or (lab.size and lab.min() < 0)):
            problems.append("labels not (N,) non-negative")
    declared = declared_count(path, data)
    if declared is not None and n + s.dropped != declared:
        problems.append(f"read {n} + {s.dropped} dropped points, header declares {declared}")
    if data == original and reference is not None:
        if n != len(reference.xyz) or not np.array_equal(s.xyz, reference.xyz):
            problems.append("unchanged file read differently")
    if problems:
        return "wrong", "; ".join(problems)
    return "read", f"{n} points"


# ----------------------------------------------------------------------------- running

def make_cases(files: dict[str, Path], cases: int, seed: int) -> list[tuple[str, int]]:
    """``cases`` (format, case seed) pairs dealt to the formats in turn."""
    names = sorted(files)
    return [(names[i % len(names)], seed * 1_000_003 + i) for i in range(cases)]


def run_case(files: dict[str, Path], fmt: str, case_seed: int, work: Path) -> tuple[str, str, str]:
    from pointseg.io.scans import read_scan
    src = files[fmt]
    original = src.read_bytes()
    rng = np.random.default_rng(case_seed)
    data, how = mutate(original, rng)
    path = work / f"case{case_seed}{src.suffix}"
    path.write_bytes(data)
    try:
        outcome, detail = check_scan(path, data, original, read_scan(src))
    finally:
        path.unlink(missing_ok=True)
    return outcome, how, detail


def _worker(conn, files: dict[str, Path], work: str, mem_limit: int) -> None:
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
    except (ImportError, ValueError, OSError):
        pass
    import pointseg.io.scans  # noqa: F401  (imports do not count towards a case's timeout)
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            conn.send(run_case(files, job[0], job[1], Path(work)))
        except BaseException as e:  # noqa: BLE001
            conn.send(("traceback", "worker", f"{type(e).__name__}: {e}"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--time-limit", type=float, default=600.0, help="stop starting cases after this many s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds before a case counts as a hang")
    ap.add_argument("--mem-limit-gb", type=float, default=4.0, help="address-space limit of the worker")
    ap.add_argument("--show", type=int, default=10, help="print this many failing cases")
    args = ap.parse_args(argv)
    if args.cases < 1 or args.time_limit <= 0 or args.timeout <= 0:
        ap.error("--cases, --time-limit and --timeout must be positive")
    counts: Counter = Counter()
    per_format: dict[str, Counter] = {}
    failures: list[str] = []
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="pointseg-fuzz-") as tmp:
        files = write_seed_files(Path(tmp) / "seeds")
        work = Path(tmp) / "work"
        work.mkdir()
        mem = int(args.mem_limit_gb * 2**30)

        def start():
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(b, files, str(work), mem), daemon=True)
            p.start()
            if not a.poll(300) or a.recv() != "ready":
                raise RuntimeError("fuzz worker did not start")
            return p, a

        proc, conn = start()
        done = 0
        for fmt, cs in make_cases(files, args.cases, args.seed):
            if time.perf_counter() - t0 > args.time_limit:
                break
            conn.send((fmt, cs))
            if conn.poll(args.timeout):
                try:
                    outcome, how, detail = conn.recv()
                except EOFError:
                    outcome, how, detail = "traceback", "?", "worker died (killed for memory?)"
                    proc, conn = start()
            else:
                outcome, how, detail = "hang", "?", f"no answer in {args.timeout} s"
                proc.kill()
                proc.join()
                proc, conn = start()
            if not proc.is_alive():
                proc, conn = start()
            done += 1
            counts[outcome] += 1
            per_format.setdefault(fmt, Counter())[outcome] += 1
            if outcome not in ("clean", "read") and len(failures) < args.show:
                failures.append(f"{fmt} case {cs}: {outcome}: {how}: {detail}")
        conn.send(None)
        proc.join(5)
    dt = time.perf_counter() - t0
    print(f"fuzz_scans: {done} cases in {dt:.1f} s (seed {args.seed}, timeout {args.timeout} s)")
    keys = ("clean", "read", "traceback", "hang", "wrong")
    print("  " + "  ".join(f"{k}={counts[k]}" for k in keys))
    for fmt in sorted(per_format):
        print(f"  {fmt:<11}" + "  ".join(f"{k}={per_format[fmt][k]}" for k in keys))
    for f in failures:
        print("  FAIL " + f)
    return 1 if counts["traceback"] or counts["hang"] or counts["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
