"""Multi-process training (``torchrun``): process-group set-up and collective helpers."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

from ..nn.sync_batch_norm import enable_sync_batchnorm, world

__all__ = ["world", "init_from_env", "enable_sync_batchnorm", "all_reduce_sum"]


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world()


def all_reduce_sum(t: Tensor) -> Tensor:
    if world()[1] > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t
