"""The network's forward pass over padded blocks at inference: softmax scores of ``(B, P, 9)`` blocks.

One place for how blocks meet the network (batching, layout, threads), so the sliding inference
(:mod:`pointseg.segmentation.inference`) and the block-level scoring share it.

On the CPU a DGCNN in eval mode runs as its :class:`~pointseg.models.dgcnn.FoldedDGCNN` (BatchNorm
folded into the convs, channel-last, maxima before the bias and activation they commute with; same
scores up to float rounding, docs/performance.md), prepared once per model and re-prepared when a
parameter or buffer changes. With ``torch.get_num_threads() = T > 1`` the batches are spread over
``T`` Python threads that each run one batch on one intra-op thread (torch ops and the compiled
kernels release the GIL): no barrier per op, so a core taken by another process slows its own
thread only. Any other model, or another device, takes the module's own forward as before.
"""
from __future__ import annotations

import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch

# model -> (fingerprint of its tensors, FoldedDGCNN | None)
_prepared: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()
# False: always the module's own forward (benchmarks and tests compare the two)
FOLDED = True
# False: one call with torch's intra-op threads instead of one Python thread per batch
BLOCK_THREADS = True


def _fingerprint(model: torch.nn.Module) -> tuple:
    """Identity, version and a content checksum of every parameter and buffer: an in-place change
    (also through ``.data``, which bumps no version) or a replaced tensor re-prepares the plan.
    About a millisecond for the DGCNN's 1 M parameters."""
    tensors = list(model.state_dict(keep_vars=True).values())
    # numpy: single-threaded, no parallel region per tensor (those cost ms each on a busy machine)
    sums = [float(np.nan_to_num(t.detach().cpu().numpy().sum(dtype=np.float64), nan=1e300)) for t in tensors]
    return (model.training, tuple((id(t), t._version, t.device.type, t.dtype) for t in tensors),
            tuple(sums))


def prepared(model: torch.nn.Module):
    """The model's inference plan (:class:`~pointseg.models.dgcnn.FoldedDGCNN`) or None when it has
    none; cached per model and rebuilt when one of its tensors was changed or replaced."""
    from ..models.dgcnn import DGCNN, FoldedDGCNN
    if not FOLDED or type(model) is not DGCNN or model.training:
        return None
    if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64)
           for t in model.state_dict(keep_vars=True).values() if t.is_floating_point()):
        return None
    key = _fingerprint(model)
    with _lock:
        hit = _prepared.get(model)
        if hit is not None and hit[0] == key:
            return hit[1]
    plan = FoldedDGCNN.from_model(model)
    with _lock:
        _prepared[model] = (key, plan)
    return plan


def _spans(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """Consecutive batches of at most ``batch_size`` blocks, as equal as possible, their number a
    multiple of ``workers`` (while there are blocks enough) so that every worker gets the same work."""
    if n <= 0:
        return []
    count = -(-n // max(1, batch_size))
    if workers > 1:
        count = -(-count // workers) * workers
    count = min(count, n)
    per, extra = divmod(n, count)
    out, s = [], 0
    for i in range(count):
        e = s + per + (1 if i < extra else 0)
        out.append((s, e))
        s = e
    return out


@torch.no_grad()
def block_scores(model: torch.nn.Module, blocks: np.ndarray, device: torch.device,
                 batch_size: int) -> torch.Tensor:
    """Softmax scores ``(B, P, C)`` float32 on the CPU of 9-channel blocks ``(B, P, 9)``."""
    plan = prepared(model) if torch.device(device).type == "cpu" else None
    if plan is None:
        out = []
        for s in range(0, len(blocks), batch_size):
            x = torch.from_numpy(blocks[s:s + batch_size]).to(device).transpose(1, 2).contiguous()
            out.append(torch.softmax(model(x).float(), dim=1).transpose(1, 2).cpu())
        return torch.cat(out)
    src = torch.from_numpy(np.ascontiguousarray(blocks, dtype=np.float32))
    n = len(blocks)
    result = torch.empty(n, blocks.shape[1], plan.classifier.out_channels)

    def job(s: int, e: int):
        def f() -> None:
            result[s:e] = torch.softmax(plan(src[s:e]).float(), dim=-1)
        return f

    run_jobs([job(s, e) for s, e in _spans(n, batch_size, worker_count())])
    return result


def worker_count() -> int:
    """Python threads :func:`run_jobs` spreads work over: torch's intra-op thread count."""
    return torch.get_num_threads() if BLOCK_THREADS else 1


def run_jobs(jobs: Sequence[Callable[[], None]]) -> None:
    """Run independent forwards: with :func:`worker_count` ``> 1`` on that many Python threads, each
    with one intra-op thread (``torch.set_num_threads`` is per thread), else one after the other in
    this thread with its own threads. Exceptions propagate."""
    workers = min(worker_count(), len(jobs))
    if workers <= 1:
        for f in jobs:
            f()
        return

    def work(f: Callable[[], None]) -> None:
        torch.set_num_threads(1)          # this thread's intra-op threads only
        with torch.no_grad():
            f()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(work, f) for f in jobs]:
            fut.result()
