"""Multi-process training (``torchrun``): device choice per rank, process-group set-up and
collective helpers.

Order matters on several GPUs: each rank picks its GPU from ``LOCAL_RANK`` and makes it the
current CUDA device *before* the process group exists, because NCCL collectives that take no
tensor (``barrier``, ``all_gather_object``) run on the current device; without it every rank
would sit on ``cuda:0``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from ..nn.sync_batch_norm import enable_sync_batchnorm, world

__all__ = ["world", "device_for_rank", "select_device", "init_from_env", "enable_sync_batchnorm",
           "all_reduce_sum"]


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={raw!r} must be >= 0")
    return value


def device_for_rank(requested: torch.device, env: Mapping[str, str] | None = None) -> torch.device:
    """The device this process trains on, from the requested one and the ``torchrun`` environment.

    CPU stays CPU. For CUDA with ``WORLD_SIZE > 1`` every process takes ``cuda:LOCAL_RANK``
    (one GPU per process on each node); asking for one explicit ``cuda:N`` then is refused, as
    it would put every rank on the same GPU. A single process keeps ``cuda:N`` and resolves plain
    ``cuda`` to ``cuda:0``.
    """
    env = os.environ if env is None else env
    if requested.type != "cuda":
        return requested
    world_size = _env_int(env, "WORLD_SIZE", 1)
    if world_size <= 1:
        return torch.device("cuda", requested.index if requested.index is not None else 0)
    if requested.index is not None:
        raise ValueError(f"--device {requested}: with WORLD_SIZE={world_size} processes every rank would "
                         "use that one GPU; pass --device cuda (or auto) to give each rank cuda:LOCAL_RANK")
    if "LOCAL_RANK" not in env:
        raise ValueError(f"WORLD_SIZE={world_size} but LOCAL_RANK is not set; launch with torchrun")
    local = _env_int(env, "LOCAL_RANK", 0)
    count = torch.cuda.device_count()
    if local >= count:
        raise ValueError(f"LOCAL_RANK={local} but this node has {count} CUDA device(s); "
                         f"run at most {count} processes per node (torchrun --nproc-per-node)")
    return torch.device("cuda", local)


def select_device(requested: torch.device) -> torch.device:
    """:func:`device_for_rank`, made the current CUDA device (call before :func:`init_from_env`)."""
    device = device_for_rank(requested)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU.

    ``device`` is what :func:`select_device` returned (already the current CUDA device)."""
    if _env_int(os.environ, "WORLD_SIZE", 1) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world()


def all_reduce_sum(t: Tensor) -> Tensor:
    if world()[1] > 1:
        t = t.clone()
        dist.all_reduce(t)
    return t
