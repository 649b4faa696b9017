r"""One script that checks every CUDA path of pointseg on a GPU and prints a pass/fail table.

Rows (each independent; a failure is reported, not raised):

* ``knn``: dilated kNN on CUDA equals the CPU result (compared by the distances of the chosen
  neighbours, so exact ties may pick different points);
* ``edgeconv``: the fast EdgeConv path on CUDA (forward, input and parameter gradients, running
  statistics) equals the straightforward edge-tensor formulation of ``pointseg/nn/reference.py``;
* ``amp-bf16`` / ``amp-fp16``: 20 training steps of ResGCN-28 under autocast (GradScaler for
  fp16) stay finite and the loss falls;
* ``rev-memory``: ``torch.cuda.max_memory_allocated`` of a reversible stack's training step is
  flat in depth (8 vs 256 layers, parameters and their gradients excluded);
* ``nccl``: a one-process ``torchrun`` job with the NCCL backend runs a DDP step, all_gather_object
  and a barrier on the device chosen from ``LOCAL_RANK``;
* ``bench``: the CUDA row of ``tools/bench_resgcn.py --quick``.

About 2-4 minutes on one GPU. Without CUDA every row reports ``skipped (no CUDA)`` and the script
exits 0; with CUDA it exits 1 when a row fails. Never run in CI.

    PYTHONPATH=$PWD python tools/gpu_check.py
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":      # run from a checkout: pointseg lies next to tools/
    sys.path.insert(0, str(ROOT))

from pointseg.models import build_model  # noqa: E402
from pointseg.nn import EdgeConv  # noqa: E402
from pointseg.nn.knn import dilated_knn  # noqa: E402
from pointseg.nn.reference import ReferenceEdgeConv  # noqa: E402

Result = tuple[bool, str]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_knn(device: torch.device, points: int = 4096) -> Result:
    """CUDA kNN vs CPU kNN: the squared distances of the chosen neighbours, rank by rank."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, points, generator=g)
    worst = 0.0
    for d in (1, 4):
        cpu = dilated_knn(x, 16, d)
        dev = dilated_knn(x.to(device), 16, d).cpu()
        x64 = x.double().transpose(1, 2)                      # (B, N, C)

        def dist(idx: torch.Tensor) -> torch.Tensor:
            nb = torch.stack([x64[b][idx[b]] for b in range(x.shape[0])])      # (B, N, k, C)
            return (nb - x64.unsqueeze(2)).pow(2).sum(-1)
        d_cpu, d_dev = dist(cpu), dist(dev)
        err = float((d_cpu - d_dev).abs().max() / d_cpu.abs().max())
        same = float((cpu == dev).double().mean())
        if err > 1e-4:
            return False, f"dilation {d}: neighbour distances differ by {err:.2e} (rel.), {same:.4f} of indices equal"
        worst = max(worst, err)
    return True, f"distances equal to {worst:.1e} (dilation 1 and 4, {points} points)"


def check_edge_conv(device: torch.device) -> Result:
    """Fast path vs edge-tensor reference on ``device``, float64, training mode, mixed-sign gammas."""
    torch.manual_seed(0)
    conv = EdgeConv(8, 16).double()
    bn = conv.mlp.norm.norm
    with torch.no_grad():
        bn.weight.uniform_(-1, 1)
        bn.bias.uniform_(-1, 1)
    ref = ReferenceEdgeConv(copy.deepcopy(conv))
    conv, ref = conv.to(device).train(), ref.to(device).train()
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 8, 512, generator=g, dtype=torch.float64) + 5).to(device)
    idx = dilated_knn(x, 12)
    w = torch.randn(2, 16, 512, generator=g, dtype=torch.float64).to(device)
    outs = []
    for m in (conv, ref):
        xi = x.clone().requires_grad_(True)
        y = m(xi, idx)
        (y * w).sum().backward()
        outs.append([y.detach(), xi.grad] + [p.grad for p in m.parameters()] + [
            m.mlp.norm.norm.running_mean, m.mlp.norm.norm.running_var])
    worst = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(*outs))
    ok = worst < 1e-9
    return ok, f"max rel. difference {worst:.1e} (float64; output, grads, running stats)"


def check_amp(device: torch.device, amp: str, preset: str = "resgcn-28", points: int = 2048,
              steps: int = 20, **overrides) -> Result:
    """``steps`` Adam steps on one fixed batch under autocast: finite losses and a falling loss."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    torch.manual_seed(0)
    model = build_model(preset, in_channels=9, out_channels=13, **overrides).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, points, generator=g).to(device)
    y = torch.randint(0, 13, (2, points), generator=g).to(device)
    losses = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
    finite = all(map(lambda v: v == v and abs(v) != float("inf"), losses))
    params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    ok = finite and params_finite and losses[-1] < losses[0]
    return ok, (f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {steps} steps"
                + ("" if finite and params_finite else "; NON-FINITE loss or parameters"))


def check_rev_memory(device: torch.device) -> Result:
    """Peak CUDA memory of one reversible training step, parameters and gradients excluded."""
    from pointseg.nn.knn import DilatedKnn
    from pointseg.nn.reversible import RevBranch, reversible_stack

    def peak(depth: int) -> int:
        torch.manual_seed(0)
        stack = reversible_stack(lambda l, gc: RevBranch(EdgeConv(gc, gc, norm=None), knn=DilatedKnn(16)),
                                 depth, 64, 2).to(device).train()
        x = torch.randn(1, 64, 4096, device=device, requires_grad=True)
        param_bytes = sum(p.numel() * p.element_size() for p in stack.parameters())
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        stack(x).square().mean().backward()
        _sync(device)
        used = torch.cuda.max_memory_allocated(device) - base - param_bytes   # grads: one copy of params
        del stack, x
        torch.cuda.empty_cache()
        return used
    p8, p256 = peak(8), peak(256)
    ok = p256 <= 1.25 * p8 + 8 * 2**20
    return ok, f"peak {p8 / 2**20:.1f} MiB at depth 8, {p256 / 2**20:.1f} MiB at depth 256"


def nccl_worker() -> int:
    """Run by ``torchrun`` (see :func:`check_nccl`)."""
    import torch.distributed as dist

    from pointseg.engine import distributed as D
    device = D.select_device(torch.device("cuda"))
    dist.init_process_group("nccl")
    try:
        model = torch.nn.parallel.DistributedDataParallel(
            build_model("resgcn-7", in_channels=9, out_channels=13).to(device), device_ids=[device.index])
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(1, 9, 1024, device=device)
        y = torch.randint(0, 13, (1, 1024), device=device)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        got = [None] * dist.get_world_size()
        dist.all_gather_object(got, {"rank": dist.get_rank(), "device": str(torch.cuda.current_device())})
        dist.barrier()
        print(f"NCCL-OK device={device} gathered={got}")
    finally:
        dist.destroy_process_group()
    return 0


def check_nccl(device: torch.device) -> Result:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
           str(Path(__file__).resolve()), "--nccl-worker"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    except subprocess.TimeoutExpired:
        return False, "torchrun timed out after 180 s"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("NCCL-OK")), None)
    if proc.returncode != 0 or line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return False, f"exit {proc.returncode}: {tail[0][:160]}"
    return True, line[len("NCCL-OK "):][:160]


def check_bench(device: torch.device) -> Result:
    cmd = [sys.executable, str(ROOT / "tools" / "bench_resgcn.py"), "--device", "cuda", "--quick",
           "--skip-knn"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    except subprocess.TimeoutExpired:
        return False, "bench_resgcn.py timed out after 240 s"
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return False, f"exit {proc.returncode}: {tail[0][:160]}"
    rows = [ln.strip() for ln in proc.stdout.splitlines() if "cuda" in ln.lower()]
    return True, " | ".join(rows)[:400] or proc.stdout.strip().splitlines()[-1][:200]


ROWS: dict[str, Callable[[torch.device], Result]] = {
    "knn": check_knn,
    "edgeconv": check_edge_conv,
    "amp-bf16": lambda d: check_amp(d, "bf16"),
    "amp-fp16": lambda d: check_amp(d, "fp16"),
    "rev-memory": check_rev_memory,
    "nccl": check_nccl,
    "bench": check_bench,
}


def run_rows(names: list[str]) -> list[tuple[str, str, str, float]]:
    """``(row, status, detail, seconds)``; status ``pass`` / ``FAIL`` / ``skipped (no CUDA)``."""
    out = []
    has_cuda = torch.cuda.is_available()
    for name in names:
        if not has_cuda:
            out.append((name, "skipped (no CUDA)", "", 0.0))
            continue
        t0 = time.perf_counter()
        try:
            ok, detail = ROWS[name](torch.device("cuda"))
            status = "pass" if ok else "FAIL"
        except Exception as exc:  # a row's crash is its failure, the table goes on
            status, detail = "FAIL", f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc(file=sys.stderr)
        out.append((name, status, detail, time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pass/fail table of pointseg's CUDA paths")
    ap.add_argument("--only", nargs="+", choices=list(ROWS), help="run only these rows")
    ap.add_argument("--nccl-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.nccl_worker:
        return nccl_worker()
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"device: no CUDA (torch {torch.__version__}); every row is skipped")
    rows = run_rows(args.only or list(ROWS))
    print(f"{'row':<12} {'status':<18} {'time':>7}  detail")
    for name, status, detail, sec in rows:
        print(f"{name:<12} {status:<18} {sec:6.1f}s  {detail}")
    return 1 if any(s == "FAIL" for _, s, _, _ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
