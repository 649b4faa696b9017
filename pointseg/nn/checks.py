"""Input validation shared by the layers: clear ``ValueError``s naming the argument and shape."""
from __future__ import annotations

import torch
from torch import Tensor


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
    if finite and not bool(torch.isfinite(x).all()):
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
    if idx.numel():
        lo, hi = (int(v) for v in torch.aminmax(idx))          # one pass
        if lo < 0 or hi >= num_nodes:
            raise ValueError(f"{name} holds indices outside [0, {num_nodes}) (min {lo}, max {hi})")
