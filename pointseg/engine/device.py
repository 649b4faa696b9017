"""Device resolution and mixed precision: which device a ``--device`` name means and the
autocast context of an ``amp`` setting (CUDA only; a no-op elsewhere)."""
from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: unsupported device type {dev.type!r} (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return dev


def autocast(device: torch.device, amp: str):
    if amp == "none" or device.type != "cuda":
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ValueError(f"amp must be none, bf16 or fp16, got {amp!r}")
    return torch.autocast("cuda", dtype=dtype)
