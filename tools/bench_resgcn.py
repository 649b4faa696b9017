"""Benchmark: ResGCN-28 (pointseg) against the straightforward reference formulation.

One run measures, side by side in the same process (the machine is shared, so only same-run
ratios mean anything; every number is the median of ``--repeats`` interleaved runs):

* one training step (forward, cross-entropy, backward, Adam step) and one inference pass of
  ResGCN-28 on ``B`` blocks of ``N`` points, for pointseg's model and for the same network in
  the reference formulation (``pointseg/nn/reference.py``; same weights, a deep copy);
* the dilated kNN alone at dilation 1, 8, 27 on 64-channel features: pointseg (compiled
  selection), pointseg with ``torch.topk`` selection, the opt-in symmetric-tile scheme, the
  full-matrix reference, and torch-cluster when it is installed.

Peak memory on CPU is measured in a fresh subprocess per case, run with
``MALLOC_MMAP_THRESHOLD_=131072`` (glibc then returns freed blocks, so resident memory tracks live
memory): peak RSS (VmHWM, reset before the step) minus RSS just before it. On CUDA it is
``torch.cuda.max_memory_allocated`` during the step minus the allocation before it.

    PYTHONPATH=$PWD python tools/bench_resgcn.py                 # full size, CPU (+ CUDA if present)
    PYTHONPATH=$PWD python tools/bench_resgcn.py --quick         # smoke test (N=1024, 7 blocks, 1 repeat)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pointseg.models import build_model  # noqa: E402
from pointseg.nn import native  # noqa: E402
from pointseg.nn.knn import DEFAULT_MEMORY_BUDGET, _knn_select_torch, dilated_knn  # noqa: E402
from pointseg.nn.reference import reference_knn, to_reference  # noqa: E402

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def build_pair(args, device: torch.device):
    torch.manual_seed(0)
    model = build_model("resgcn-28", layers=args.blocks, k=args.k).to(device)
    ref = to_reference(model)
    x = torch.randn(args.batch, 9, args.points, device=device)
    y = torch.randint(0, 13, (args.batch, args.points), device=device)
    return model, ref, x, y


def make_step(model, x, y, mode: str):
    if mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return step
    model.eval()

    def infer() -> None:
        with torch.no_grad():
            model(x)
    return infer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def time_pair(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each function, runs interleaved so that load changes hit all alike."""
    for fn in fns.values():
        fn()                                   # warm-up (kernel compile, allocator, lazy init)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            torch.manual_seed(1)               # same stochastic dilation draws for both
            times[name].append(timed(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """VmHWM of this process's own address space (``ru_maxrss`` would include the parent's
    resident size at fork time, which Linux carries over an exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    try:                                       # Linux >= 4.0: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def child(args) -> None:
    """Peak memory of one case, in this fresh process."""
    device = torch.device(args.device)
    native.load()
    model, ref, x, y = build_pair(args, device)
    net = model if args.child_impl == "pointseg" else ref
    step = make_step(net, x, y, args.child_mode)
    torch.manual_seed(1)
    if device.type == "cuda":
        step()                                 # CUDA: allocator stats are exact, warm up first
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        reset_peak_rss()
        base = rss_bytes()
        step()
        peak = peak_rss_bytes() - base
    print(json.dumps({"peak_bytes": peak}))


def peak_memory(args, device: str, impl: str, mode: str) -> float:
    cmd = [sys.executable, __file__, "--child-impl", impl, "--child-mode", mode, "--device", device,
           "--points", str(args.points), "--batch", str(args.batch), "--k", str(args.k),
           "--blocks", str(args.blocks)]
    env = {**os.environ, **MMAP_ENV, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory subprocess failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def bench_network(args, device: torch.device) -> list[dict]:
    rows = []
    for mode in ("train", "infer"):
        model, ref, x, y = build_pair(args, device)
        t = time_pair({"pointseg": make_step(model, x, y, mode), "reference": make_step(ref, x, y, mode)},
                      device, args.repeats)
        row = {"device": device.type, "case": f"ResGCN-{args.blocks} {mode}", "t_pointseg": t["pointseg"],
               "t_reference": t["reference"]}
        if not args.skip_memory:
            row["m_pointseg"] = peak_memory(args, device.type, "pointseg", mode)
            row["m_reference"] = peak_memory(args, device.type, "reference", mode)
        rows.append(row)
        del model, ref
    return rows


def bench_knn(args, device: torch.device) -> list[dict]:
    rows = []
    torch.manual_seed(0)
    x = torch.randn(args.batch, 64, args.points, device=device)
    try:
        import torch_cluster  # noqa: F401
        have_cluster = True
    except ImportError:
        have_cluster = False
    for d in args.dilations:
        if args.k * d > args.points:
            continue
        fns = {
            "pointseg": lambda: dilated_knn(x, args.k, d),
            "topk-select": lambda: _knn_select_torch(x, args.k, d, None, DEFAULT_MEMORY_BUDGET, use_native=False),
            "reference": lambda: reference_knn(x, args.k, d),
            # the opt-in symmetric-tile scheme (pointseg.nn.knn.SYMMETRIC_GRAM), same kernel build
            "symmetric": lambda: _knn_select_torch(x, args.k, d, None, DEFAULT_MEMORY_BUDGET, symmetric=True),
        }
        if have_cluster:
            fns["torch-cluster"] = lambda: dilated_knn(x, args.k, d, backend="cluster")
        t = time_pair(fns, device, args.repeats)
        a = dilated_knn(x, args.k, d).sort(-1).values
        b = reference_knn(x, args.k, d).sort(-1).values
        same = float((a == b).all(-1).float().mean())
        rows.append({"device": device.type, "case": f"kNN d={d}", "t_pointseg": t["pointseg"],
                     "t_reference": t["reference"], "t_topk": t["topk-select"], "t_sym": t["symmetric"],
                     "t_cluster": t.get("torch-cluster"), "same_rows": same})
    return rows


def fmt_mb(b) -> str:
    return "-" if b is None else f"{b / 2**20:.0f} MB"


def report(rows: list[dict], args) -> None:
    print(f"\nB={args.batch} N={args.points} k={args.k} blocks={args.blocks} repeats={args.repeats} "
          f"threads={torch.get_num_threads()} native={'yes' if native.available() else 'no (' + str(native.failure()) + ')'}")
    print(f"{'device':6} {'case':20} {'pointseg':>10} {'reference':>10} {'speed-up':>9} "
          f"{'mem pointseg':>13} {'mem ref':>10} {'mem ratio':>9}  notes")
    for r in rows:
        sp = r["t_reference"] / r["t_pointseg"]
        mp, mr = r.get("m_pointseg"), r.get("m_reference")
        mratio = f"{mr / mp:.2f}x" if mp and mr else "-"
        notes = ""
        if "t_topk" in r:
            notes = f"topk-select {r['t_topk'] * 1e3:.0f} ms, symmetric-tile {r['t_sym'] * 1e3:.0f} ms"
            if r["t_cluster"] is not None:
                notes += f", torch-cluster {r['t_cluster'] * 1e3:.0f} ms"
            notes += f", same neighbour sets {100 * r['same_rows']:.2f}% of rows"
        print(f"{r['device']:6} {r['case']:20} {r['t_pointseg'] * 1e3:8.0f}ms {r['t_reference'] * 1e3:8.0f}ms "
              f"{sp:8.2f}x {fmt_mb(mp):>13} {fmt_mb(mr):>10} {mratio:>9}  {notes}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--blocks", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dilations", type=int, nargs="+", default=[1, 8, 27])
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (cpu, and cuda when available)")
    ap.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    ap.add_argument("--skip-knn", action="store_true")
    ap.add_argument("--skip-network", action="store_true")
    ap.add_argument("--quick", action="store_true", help="N=1024, 7 blocks, 1 repeat")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--child-impl", help=argparse.SUPPRESS)
    ap.add_argument("--child-mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_impl:
        child(args)
        return
    if args.quick:
        args.points, args.blocks, args.repeats = 1024, 7, 1
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    native.load()
    rows: list[dict] = []
    for dev in devices:
        device = torch.device(dev)
        if not args.skip_network:
            rows += bench_network(args, device)
        if not args.skip_knn:
            rows += bench_knn(args, device)
    report(rows, args)
    print("memory: " + ("skipped" if args.skip_memory else
                        "CPU peak RSS (VmHWM) in a fresh subprocess with MALLOC_MMAP_THRESHOLD_=131072, minus RSS "
                        "before the step; CUDA max_memory_allocated"))
    if args.json:
        from pointseg.atomic import atomic_write_text
        atomic_write_text(args.json, json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                 "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
