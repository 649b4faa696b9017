r"""Batch normalisation with statistics shared by every process of a ``torchrun`` job, and the
running-statistics rule every BatchNorm path of the project shares.

N processes on a global batch then compute what one process computes on that batch (plain
DDP normalises each process's shard on its own). Enabled per module by
``enable_sync_batchnorm(model)``; inactive outside a process group of more than one process.

Statistics are accumulated in float64 whatever the input dtype: in float16 the sum of
``8 x 65536`` values per channel overflows (NaN output and running variance), and in bfloat16
(8 significant bits) it loses the mean outright. Normalisation itself runs in float32 and the
result is cast back to the input dtype, as autocast's own ``batch_norm`` does.
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


def update_running_stats(bn: nn.BatchNorm1d, mean: Tensor, var: Tensor, count: Tensor | int) -> None:
    r"""``nn.BatchNorm1d``'s training-mode update of ``running_mean`` / ``running_var``.

    ``mean`` and biased ``var`` are the batch statistics over ``count`` values per channel.
    ``num_batches_tracked`` is incremented; the factor is ``momentum`` or, for
    ``momentum=None``, the cumulative average ``1 / num_batches_tracked``; the variance enters
    unbiased (``var * count / (count - 1)``). ``count`` may be a tensor, so no host sync is needed.
    """
    if not bn.track_running_stats or bn.running_mean is None:
        return
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        rm, rv = bn.running_mean, bn.running_var
        mean = mean.detach().to(rm.dtype)
        var = var.detach().to(rv.dtype)
        if isinstance(count, Tensor):
            c = count.detach().to(rv.dtype)
            unbiased = var * (c / (c - 1).clamp_min(1))
        else:
            unbiased = var * (count / max(count - 1, 1))
        if bn.momentum is None:
            f = 1.0 / bn.num_batches_tracked.to(rm.dtype)     # tensor: no sync
            rm.mul_(1 - f).add_(mean * f)
            rv.mul_(1 - f).add_(unbiased * f)
        else:
            f = float(bn.momentum)
            rm.mul_(1 - f).add_(mean, alpha=f)
            rv.mul_(1 - f).add_(unbiased, alpha=f)


def synced_batch_norm(x: Tensor, bn: nn.BatchNorm1d) -> Tensor:
    r"""BatchNorm over the channel axis of ``x (B, C, L)`` with statistics from every process.

    .. math::
        \mu_c = \frac{\sum_r S_{r,c}}{\sum_r n_r}, \quad
        \sigma^2_c = \frac{\sum_r Q_{r,c}}{\sum_r n_r} - \mu_c^2, \quad
        y = \gamma_c \frac{x - \mu_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_c

    with ``S`` and ``Q`` the per-process float64 sums of ``x`` and ``x^2``. Sums are all-reduced
    with the differentiable collective, so gradients flow through the global mean and variance
    exactly as in single-process BatchNorm on the global batch (in one process, or outside a
    process group, no collective runs). Running statistics follow :func:`update_running_stats`.

    Shapes: ``x (B, C, L)`` -> ``(B, C, L)``, same dtype.
    """
    c = x.shape[1]
    xf = x.float()                        # fp16 x*x overflows above 256
    n_local = torch.full((1,), float(x.numel() // c), device=x.device, dtype=torch.float64)
    stats = torch.cat([xf.sum(dim=(0, 2), dtype=torch.float64),
                       (xf * xf).sum(dim=(0, 2), dtype=torch.float64), n_local])
    if world()[1] > 1:
        from torch.distributed.nn.functional import all_reduce
        stats = all_reduce(stats)
    s, ss, n = stats[:c], stats[c:2 * c], stats[2 * c]
    mean = s / n
    var = (ss / n - mean * mean).clamp_min(0.0)
    if bn.training:
        update_running_stats(bn, mean, var, n)
    scale = torch.rsqrt(var + bn.eps).float()
    y = (xf - mean.float().view(1, c, 1)) * scale.view(1, c, 1)
    if bn.affine:
        y = y * bn.weight.float().view(1, c, 1) + bn.bias.float().view(1, c, 1)
    return y.to(x.dtype)


def enable_sync_batchnorm(model: nn.Module) -> int:
    """Mark every BatchNorm1d of ``model`` for synchronised statistics; returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.sync_stats = True
            n += 1
    return n
