"""Peak memory of one training step against depth: residual vs reversible vs weight-tied vs DEQ.

Every (graph, backbone, depth) runs in a fresh Python process so one run's allocations never
inflate another's peak. One training step = forward, loss, backward, Adam step.

* CPU: the worker is started with ``MALLOC_MMAP_THRESHOLD_=131072`` (design.md §5: otherwise glibc
  keeps freed blocks and resident-memory peaks grow with work done; ``--mmap-threshold`` lowers it
  further, which also keeps the fragmentation of small freed blocks out of the peak); it reports the process's peak
  resident set (``ru_maxrss``) and the step's increment over the resident set just before the step.
* CUDA (``--device cuda``): ``torch.cuda.max_memory_allocated`` during the step, and its increment over
  the allocation before the step.
* CPU, also: the live-allocation peak (glibc ``mallinfo2`` bytes in use, sampled every ~2 ms during
  the step), which the allocator's retention of freed small blocks does not inflate.

Graphs: ``sparse`` is an ogbn-proteins-like synthetic graph (random edges with 8 edge features, node
features = mean of incoming edge features, 112 binary tasks, BCE loss), backbones built from
``GINConv``; ``points`` is a dense point block ``(1, C, N)`` with a dynamic kNN in every layer
(dilation 1), backbones built from ``EdgeConv``, 13-class cross-entropy. For the DEQ the "depth" is the
number of solver iterations (tolerance 0, so it runs them all, forward and backward).

With ``--train-epochs E`` each model is also trained for ``E`` full-batch epochs on data with a
signal (see ``_learnable_data``) and its validation metric is reported and plotted against memory,
as in the RevGNN figure.

Usage (a smoke run by default; the numbers in docs/reversible.md come from the last two lines):
    PYTHONPATH=$PWD python tools/bench_memory.py
    PYTHONPATH=$PWD python tools/bench_memory.py --depths 8,64,256,1001 --out runs/bench_memory
    PYTHONPATH=$PWD python tools/bench_memory.py --depths 2,8,32 --nodes 4000 --points 512 \
        --train-epochs 40 --out runs/bench_memory_metric
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKBONES = ("residual", "reversible", "weight-tied", "deq")
GRAPHS = ("sparse", "points")


# ----------------------------------------------------------------------------------------------
# worker: one step in this process


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _LiveSampler:
    """Samples glibc's bytes in use (``mallinfo2``: heap in use + mmapped) every ~2 ms on a thread and
    keeps the maximum: the live-allocation peak, free of the allocator's retention of freed blocks.
    Short spikes between samples can be missed, so it is a lower bound. None where unavailable."""

    def __init__(self) -> None:
        import ctypes
        import threading

        class MI2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallinfo2.restype = MI2
            self._info = libc.mallinfo2
            self.base = self.now()
        except (OSError, AttributeError):
            self._info = None
            self.base = 0
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        m = self._info()
        return m.uordblks + m.hblkhd

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> "_LiveSampler":
        if self._info is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._info is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.now())

    def increment_mb(self) -> float | None:
        return None if self._info is None else (self.peak - self.base) / 2**20


def _build(spec: dict):
    import torch
    from torch import nn

    from pointseg.nn import DilatedKnn, EdgeConv, GCNBlock, GINConv
    from pointseg.nn.deq import DEQ, DEQCell
    from pointseg.nn.reversible import RevBranch, reversible_stack

    torch.manual_seed(0)
    kind, graph, depth = spec["backbone"], spec["graph"], spec["depth"]
    C, G, k = spec["channels"], spec["groups"], spec["k"]
    sparse = graph == "sparse"

    def conv(c):
        if sparse:
            return GINConv(c, c, act="none", norm=None)
        return EdgeConv(c, c, act="relu", norm="layer")

    def branch_kw():
        return dict(norm="layer", act="relu", dropout=0.1) if sparse else {}

    def knn():
        return None if sparse else DilatedKnn(k, 1)

    if kind == "residual":
        if sparse:   # DeeperGCN res+ block: x + conv(dropout(relu(norm(x))))
            blocks = [GCNBlock(conv(C), "res+", norm="layer", act="relu", dropout=0.1) for _ in range(depth)]
        else:
            blocks = [GCNBlock(conv(C), "res", knn=knn()) for _ in range(depth)]
        backbone = nn.ModuleList(blocks)
    elif kind in ("reversible", "weight-tied"):
        backbone = reversible_stack(lambda l, c: RevBranch(conv(c), knn=knn(), **branch_kw()), depth, C, G,
                                    weight_tied=kind == "weight-tied")
    elif kind == "deq":
        backbone = DEQ(DEQCell(RevBranch(conv(C), **branch_kw())), tol=0.0, max_iter=depth, on_fail="warn")
    else:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {kind!r}")

    in_c, out_c = (8, 112) if sparse else (9, 13)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(in_c, C) if sparse else nn.Conv1d(in_c, C, 1)
            self.backbone = backbone
            self.norm = nn.LayerNorm(C)
            self.head = nn.Linear(C, out_c)
            self.knn = DilatedKnn(k, 1)

        def forward(self, x, edge_index=None):
            h = self.encoder(x)
            if sparse:
                g = edge_index
            else:
                g = self.knn(h)           # the DEQ's graph (and the residual blocks recompute their own)
            if kind == "residual":
                for blk in self.backbone:
                    h = blk(h, g) if sparse else blk(h)
            elif kind == "deq":
                h = self.backbone(h, g)
            else:
                h = self.backbone(h, g) if sparse else self.backbone(h)
            if not sparse:
                h = h.transpose(1, 2)
            out = self.head(torch.relu(self.norm(h)))
            return out if sparse else out.transpose(1, 2)
    return Net()


def _learnable_data(spec: dict):
    """Data with a signal, for ``--train-epochs``: ``(x, edge_index, y)`` for training and for validation.

    sparse: a planted-partition graph (8 communities, 90% of edges inside one), every edge carries the
    one-hot community of its source plus noise, node features = mean of incoming edge features (as
    ogbn-proteins builds them); task t is positive for the communities in a fixed random subset, so the
    112 labels follow the community, which a node's own noisy features only hint at. Validation: a
    random 20% of the nodes (same graph, transductive). points: a block whose 13 classes are slabs along
    x; the features are the coordinates with noise (sigma 0.3 of a slab), so neighbours help. Validation:
    a second block drawn the same way."""
    import torch
    g = torch.Generator().manual_seed(1)
    if spec["graph"] == "sparse":
        n, e, comms = spec["nodes"], spec["nodes"] * spec["degree"], 8
        comm = torch.randint(0, comms, (n,), generator=g)
        dst = torch.randint(0, n, (e,), generator=g)
        members = [torch.nonzero(comm == c).view(-1) for c in range(comms)]
        inside = torch.rand(e, generator=g) < 0.9
        src = torch.randint(0, n, (e,), generator=g)
        for c in range(comms):
            sel = inside & (comm[dst] == c)
            src[sel] = members[c][torch.randint(0, len(members[c]), (int(sel.sum()),), generator=g)]
        ei = torch.stack([src, dst])
        edge_attr = torch.nn.functional.one_hot(comm[src], comms).float() + 1.5 * torch.rand(e, comms, generator=g)
        deg = torch.zeros(n).index_add_(0, dst, torch.ones(e)).clamp_(min=1)
        x = torch.zeros(n, comms).index_add_(0, dst, edge_attr) / deg[:, None]
        y = (torch.rand(comms, 112, generator=g) < 0.5).float()[comm]
        valid = torch.rand(n, generator=g) < 0.2
        return (x, ei, y, ~valid), (x, ei, y, valid)

    def block():
        pos = torch.rand(1, 3, spec["points"], generator=g)
        y = (pos[:, 0] * 13).long().clamp_(max=12)
        x = torch.cat([pos + torch.randn(pos.shape, generator=g) * 0.3 / 13, torch.zeros(1, 6, pos.shape[2])], 1)
        return x, None, y, None
    return block(), block()


def _metric(spec: dict, out, y, mask) -> float:
    """sparse: ROC-AUC averaged over the tasks with both classes among the validation nodes (as OGB's
    ogbn-proteins evaluator does); points: overall accuracy."""
    if spec["graph"] == "sparse":
        from sklearn.metrics import roc_auc_score
        yt, yp = y[mask].cpu().numpy(), out[mask].detach().cpu().numpy()
        both = [t for t in range(yt.shape[1]) if 0 < yt[:, t].sum() < yt.shape[0]]
        return float(sum(roc_auc_score(yt[:, t], yp[:, t]) for t in both) / max(1, len(both)))
    return float((out.argmax(1) == y).float().mean())


def _data(spec: dict):
    import torch
    g = torch.Generator().manual_seed(1)
    if spec["graph"] == "sparse":
        n, e = spec["nodes"], spec["nodes"] * spec["degree"]
        ei = torch.randint(0, n, (2, e), generator=g)
        edge_attr = torch.rand(e, 8, generator=g)
        deg = torch.zeros(n).index_add_(0, ei[1], torch.ones(e)).clamp_(min=1)
        x = torch.zeros(n, 8).index_add_(0, ei[1], edge_attr) / deg[:, None]
        y = (torch.rand(n, 112, generator=g) < 0.3).float()
        return x, ei, y
    x = torch.randn(1, 9, spec["points"], generator=g)
    y = torch.randint(0, 13, (1, spec["points"]), generator=g)
    return x, None, y


def worker(spec: dict) -> dict:
    import torch
    warnings.simplefilter("ignore")
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    model = _build(spec).to(dev).train()
    epochs = spec.get("train_epochs", 0)
    if epochs:
        (x, ei, y, mask), valid = ([t.to(dev) if t is not None else None for t in part] for part in _learnable_data(spec))
    else:
        x, ei, y = (t.to(dev) if t is not None else None for t in _data(spec))
        mask = None
    if spec.get("optimizer", "adam") == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=spec.get("lr", 1e-3))
    else:                                   # plain SGD keeps no per-parameter state
        opt = torch.optim.SGD(model.parameters(), lr=spec.get("lr", 1e-3))
    loss_fn = torch.nn.BCEWithLogitsLoss() if spec["graph"] == "sparse" else torch.nn.CrossEntropyLoss()
    params = sum(p.numel() for p in model.parameters())
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    t0 = time.perf_counter()
    def step():
        opt.zero_grad()
        out = model(x, ei)
        loss = loss_fn(out if mask is None else out[mask], y if mask is None else y[mask])
        loss.backward()
        opt.step()
        return loss

    with _LiveSampler() if dev.type == "cpu" else contextlib.nullcontext() as live:
        loss = step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    live_mb = live.increment_mb() if live is not None else None
    res = dict(spec, params=params, base_mb=base, peak_mb=peak, step_mb=peak - base, live_mb=live_mb,
               seconds=time.perf_counter() - t0, loss=float(loss))
    if epochs:                                  # memory is that of the first step, measured above
        for _ in range(epochs - 1):
            loss = step()
        model.eval()
        with torch.no_grad():
            vx, vei, vy, vmask = valid
            res["valid_metric"] = _metric(spec, model(vx, vei), vy, vmask)
        res["final_loss"] = float(loss)
    return res


# ----------------------------------------------------------------------------------------------
# driver


def run_one(spec: dict, timeout: float, mmap_threshold: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(mmap_threshold))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timeout after {timeout:.0f} s")
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        return dict(spec, error=f"exit {p.returncode}: {tail}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _opt_mb(r: dict) -> float:
    """Gradients (+ Adam's two moments), allocated during the step: 4 (12) bytes per float32 parameter."""
    return (12 if r.get("optimizer", "adam") == "adam" else 4) * r["params"] / 2**20


def table(results: list[dict], device: str) -> str:
    metric = any("valid_metric" in r for r in results)
    what = "peak RSS" if device == "cpu" else "max allocated"
    lines = [f"| graph | backbone | depth | params | {what} (MB) | step increment (MB) | grads (+Adam) (MB) | "
             f"rest: activations + workspace (MB) | rest / shallowest | live malloc peak (MB) | "
             f"live / shallowest | time (s) |" + (" validation metric |" if metric else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if metric else "")]
    first_live: dict[tuple, float] = {}
    first: dict[tuple, float] = {}
    for r in results:
        key = (r["graph"], r["backbone"])
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['graph']} | {r['backbone']} | {r['depth']} | | "
                         f"{r.get('skipped') or r['error']} | | | | | | | |")
            continue
        rest = r["step_mb"] - _opt_mb(r)
        first.setdefault(key, rest)
        ratio = rest / first[key] if first[key] > 0 else float("nan")
        live = r.get("live_mb")
        if live is not None:
            first_live.setdefault(key, live)
            live_s = f"{live:.1f} | {live / first_live[key]:.2f}x" if first_live[key] > 0 else f"{live:.1f} | "
        else:
            live_s = "n/a | "
        lines.append(f"| {r['graph']} | {r['backbone']} | {r['depth']} | {r['params']:,} | {r['peak_mb']:.0f} | "
                     f"{r['step_mb']:.1f} | {_opt_mb(r):.1f} | {rest:.1f} | {ratio:.2f}x | {live_s} | "
                     f"{r['seconds']:.1f} |" + (f" {r['valid_metric']:.4f} |" if metric else ""))
    return "\n".join(lines)


def plot(results: list[dict], path: Path, device: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from pointseg.atomic import atomic_path
    graphs = [g for g in GRAPHS if any(r["graph"] == g for r in results)]
    metric = any("valid_metric" in r for r in results)
    fig, axes = plt.subplots(2 if metric else 1, len(graphs), figsize=(6 * len(graphs), 9 if metric else 4.5),
                             squeeze=False)
    if metric:           # memory against validation metric, one marker per run (the RevGNN figure)
        for ax, g in zip(axes[1], graphs):
            for b in BACKBONES:
                pts = [(r["step_mb"], r["valid_metric"], r["depth"]) for r in results
                       if r["graph"] == g and r["backbone"] == b and "valid_metric" in r]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=b)
                    for mem, val, d in pts:
                        ax.annotate(str(d), (mem, val), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xlabel("step memory increment (MB)")
            ax.set_ylabel("validation ROC-AUC" if g == "sparse" else "validation accuracy")
            ax.set_title(f"{g}: memory against validation metric (labels: depth)")
            ax.grid(True, alpha=0.3)
            ax.legend()
    for ax, g in zip(axes[0], graphs):
        for b in BACKBONES:
            pts = [(r["depth"], r["step_mb"]) for r in results
                   if r["graph"] == g and r["backbone"] == b and "step_mb" in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=b)
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["depth"] for r in results if r["graph"] == g}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("layers (DEQ: solver iterations)")
        ax.set_ylabel(f"step memory increment (MB, {'CPU RSS' if device == 'cpu' else 'CUDA allocated'})")
        ax.set_title(f"{g}: peak memory of one training step")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depths", default="2,8", help="comma-separated depths (default: a smoke run)")
    ap.add_argument("--backbones", default=",".join(BACKBONES))
    ap.add_argument("--graphs", default=",".join(GRAPHS))
    ap.add_argument("--nodes", type=int, default=20000, help="sparse graph: nodes")
    ap.add_argument("--degree", type=int, default=2, help="sparse graph: edges per node")
    ap.add_argument("--points", type=int, default=1024, help="point block: points")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--optimizer", default="adam", choices=("adam", "sgd"),
                    help="adam (default) or plain SGD, which keeps no per-parameter state")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
    ap.add_argument("--max-gb", type=float, default=4.0,
                    help="skip a run whose memory, extrapolated linearly from the two previous depths, exceeds this")
    ap.add_argument("--mmap-threshold", type=int, default=131072,
                    help="MALLOC_MMAP_THRESHOLD_ of the CPU workers (design.md: 131072; lower it to keep glibc "
                         "heap fragmentation from small freed blocks out of the resident-set peak)")
    ap.add_argument("--train-epochs", type=int, default=0,
                    help="also train each model this many full-batch epochs on data with a signal and report a "
                         "validation metric (plotted against memory); memory is still that of the first step")
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate (matters with --train-epochs)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--out", default=None, help="write OUT.md (table) and OUT.png (plot); print only if omitted")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    try:
        depths = sorted({int(d) for d in args.depths.split(",") if d.strip()})
    except ValueError:
        raise SystemExit(f"--depths must be comma-separated integers, got {args.depths!r}")
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    graphs = [g.strip() for g in args.graphs.split(",") if g.strip()]
    for b in backbones:
        if b not in BACKBONES:
            raise SystemExit(f"--backbones: unknown {b!r} (known: {', '.join(BACKBONES)})")
    for g in graphs:
        if g not in GRAPHS:
            raise SystemExit(f"--graphs: unknown {g!r} (known: {', '.join(GRAPHS)})")
    if not depths or depths[0] < 1:
        raise SystemExit("--depths must be positive")
    if args.channels % args.groups:
        raise SystemExit(f"--channels {args.channels} is not divisible by --groups {args.groups}")
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device available")
    from tqdm import tqdm
    jobs = [(g, b, d) for g in graphs for b in backbones for d in depths]
    results: list[dict] = []
    for g, b, d in tqdm(jobs, desc="bench_memory", unit="run"):
        spec = dict(graph=g, backbone=b, depth=d, nodes=args.nodes, degree=args.degree, points=args.points,
                    channels=args.channels, groups=args.groups, k=args.k, device=args.device,
                    threads=args.threads, optimizer=args.optimizer, train_epochs=args.train_epochs, lr=args.lr)
        done = [r for r in results if r["graph"] == g and r["backbone"] == b and "peak_mb" in r]
        if len(done) >= 2:
            (d0, m0), (d1, m1) = [(r["depth"], r["peak_mb"]) for r in done[-2:]]
            est = m1 + (m1 - m0) / (d1 - d0) * (d - d1)
            if est > args.max_gb * 1024:
                results.append(dict(spec, skipped=f"skipped: extrapolated {est / 1024:.1f} GB > --max-gb"))
                continue
        results.append(run_one(spec, args.timeout, args.mmap_threshold))
    text = table(results, args.device)
    header = (f"device {args.device}, MALLOC_MMAP_THRESHOLD_={args.mmap_threshold}; sparse graph {args.nodes} nodes x {args.degree} edges/node, "
              f"point block {args.points} points, k={args.k}; {args.channels} channels, {args.groups} groups; "
              f"one step = forward + backward + {args.optimizer}")
    print(header)
    print(text)
    if args.out:
        from pointseg.atomic import atomic_write_text
        out = Path(args.out)
        atomic_write_text(out.with_suffix(".md"), header + "\n\n" + text + "\n")
        atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1))
        plot(results, out.with_suffix(".png"), args.device)
        print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
