"""Input validation shared by the layers: clear ``ValueError``s naming the argument and shape.

Checks of *values* (finiteness, index ranges) read a result back to the host, which on CUDA is a
device synchronisation. A layer called on its own runs them all; a model validates its input
once at its entry and runs its blocks inside :func:`trusted_inputs`, where only the free checks
(type, rank, dtype, shape) run: the blocks' inputs are then the model's own, already-validated
tensors and indices it built itself. ``POINTSEG_DEBUG_CHECKS=1`` keeps every check everywhere.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

_TRUSTED: ContextVar[bool] = ContextVar("pointseg_trusted_inputs", default=False)


@contextlib.contextmanager
def trusted_inputs() -> Iterator[None]:
    """Skip the value checks (host syncs) of the layers called inside; scoped to this context
    (and thread / task), a no-op with ``POINTSEG_DEBUG_CHECKS=1``."""
    if os.environ.get("POINTSEG_DEBUG_CHECKS", "0") not in ("", "0"):
        yield
        return
    token = _TRUSTED.set(True)
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def check_values() -> bool:
    """Whether value checks (that sync with the device) should run here."""
    return not _TRUSTED.get()


def check_features(x: Tensor, name: str = "x", dims: tuple[int, ...] = (2, 3),
                   finite: bool = True) -> None:
    """Floating tensor of an allowed rank, non-empty, optionally all finite."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype} (shape {tuple(x.shape)})")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if finite and check_values() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} NaN/inf value(s) (shape {tuple(x.shape)})")


def check_index(idx: Tensor, name: str, num_nodes: int, shape: tuple[int | None, ...] | None = None) -> None:
    """Integer index tensor with entries in ``[0, num_nodes)``."""
    if not isinstance(idx, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(idx).__name__}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{name} must be an int64/int32 tensor, got dtype {idx.dtype} (shape {tuple(idx.shape)})")
    if shape is not None:
        ok = idx.dim() == len(shape) and all(s is None or s == t for s, t in zip(shape, idx.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}, got {tuple(idx.shape)}")
    if idx.numel() and check_values():
        lo, hi = (int(v) for v in torch.aminmax(idx))          # one pass
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{name} holds indices outside [0, {num_nodes}) (min {lo}, max {hi})")
