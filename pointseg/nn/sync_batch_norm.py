r"""Batch normalisation with statistics shared by every process of a ``torchrun`` job.

N processes on a global batch then compute what one process computes on that batch (plain
DDP normalises each process's shard on its own). Enabled per module by
``enable_sync_batchnorm(model)``; inactive outside a process group of more than one process.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_synced(bn: nn.Module) -> bool:
    return bool(getattr(bn, "sync_stats", False)) and bn.training and world()[1] > 1


def synced_batch_norm(x: Tensor, bn: nn.BatchNorm1d) -> Tensor:
    """BatchNorm over the channel axis of ``x (B, C, L)`` with statistics from every process.

    Sums are all-reduced with the differentiable collective, so gradients flow through the
    global mean and variance exactly as in single-process BatchNorm on the global batch.
    Running statistics are updated like ``nn.BatchNorm1d`` (unbiased variance, momentum).
    """
    from torch.distributed.nn.functional import all_reduce
    c = x.shape[1]
    n_local = torch.tensor([float(x.numel() // c)], device=x.device, dtype=x.dtype)
    stats = torch.cat([x.sum(dim=(0, 2)), (x * x).sum(dim=(0, 2)), n_local])
    stats = all_reduce(stats)
    s, ss, n = stats[:c], stats[c:2 * c], stats[2 * c]
    mean = s / n
    var = ss / n - mean * mean
    with torch.no_grad():
        m = bn.momentum if bn.momentum is not None else 0.1
        bn.running_mean.mul_(1 - m).add_(m * mean.detach())
        bn.running_var.mul_(1 - m).add_(m * var.detach() * n / max(float(n) - 1, 1.0))
        bn.num_batches_tracked.add_(1)
    y = (x - mean.view(1, c, 1)) * torch.rsqrt(var.view(1, c, 1) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(1, c, 1) + bn.bias.view(1, c, 1)
    return y


def enable_sync_batchnorm(model: nn.Module) -> int:
    """Mark every BatchNorm1d of ``model`` for synchronised statistics; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.sync_stats = True
            n += 1
    return n
