"""All-or-nothing tensor mapping: every source tensor used once, every target filled, shapes checked."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import Tensor

Transform = Callable[[Tensor], Tensor]


def squeeze_conv(t: Tensor) -> Tensor:
    """A 1x1 ``Conv1d`` / ``Conv2d`` weight ``(out, in, 1[, 1])`` as a ``(out, in)`` matrix."""
    if t.dim() > 2 and all(s == 1 for s in t.shape[2:]):
        return t.reshape(t.shape[0], t.shape[1])
    return t


@dataclass
class TensorMap:
    """``target key -> (source key, transform)`` plus source keys that duplicate another."""

    targets: dict[str, tuple[str, Transform]] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)     # duplicate source key -> canonical

    def add(self, target: str, source: str, transform: Transform = squeeze_conv) -> None:
        self.targets[target] = (source, transform)


def strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """Drop ``DataParallel``'s ``module.`` prefix when every key has it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return dict(state)


def check_sources(source: Mapping[str, Tensor], tmap: TensorMap, what: str) -> None:
    """Names the first source key that is not a tensor or not in the map, then the first one
    the map needs that the source lacks."""
    for k, v in source.items():
        if not isinstance(v, Tensor):
            raise ValueError(f"source key {k!r} holds a {type(v).__name__}, not a tensor: not {what}")
    used = {s for s, _ in tmap.targets.values()}
    for k in source:
        if k not in used and k not in tmap.duplicates:
            raise ValueError(f"source key {k!r} does not fit {what}")
    for tgt, (src, _) in tmap.targets.items():
        if src not in source:
            raise ValueError(f"source has no key {src!r} (needed for {tgt!r}): not {what}")


def apply_map(source: Mapping[str, Tensor], tmap: TensorMap, target: Mapping[str, Tensor],
              what: str) -> dict[str, Tensor]:
    """The target state dict built from ``source`` by ``tmap``, or ``ValueError`` naming the first
    key that does not fit (unknown source key, missing source key, unequal duplicate, shape)."""
    check_sources(source, tmap, what)
    for k in tmap.targets:
        if k not in target:
            raise ValueError(f"internal: target key {k!r} is not in the pointseg model")
    for k in target:
        if k not in tmap.targets:
            raise ValueError(f"internal: target key {k!r} of the pointseg model has no source")
    for dup, canon in tmap.duplicates.items():
        if dup not in source:
            raise ValueError(f"source has no key {dup!r} (the duplicate of {canon!r}): not {what}")
        a, b = source[dup], source[canon]
        if a.shape != b.shape or not torch.equal(a, b):
            raise ValueError(f"source keys {dup!r} and {canon!r} should hold the same tensor but differ")
    out: dict[str, Tensor] = {}
    for tgt, (src, fn) in tmap.targets.items():
        t = fn(source[src])
        want = target[tgt]
        if tuple(t.shape) != tuple(want.shape):
            raise ValueError(f"source key {src!r} has shape {tuple(source[src].shape)}, but {tgt!r} "
                             f"needs {tuple(want.shape)}")
        out[tgt] = t.detach().clone().to(want.dtype).contiguous()
    return out
