"""Counting a model's parameters, the figure the design notes give for every preset."""
from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, trainable: bool = True) -> int:
    """Parameters of ``model`` (only those with ``requires_grad`` when ``trainable``): the exact
    targets of design notes §4, e.g. ResGCN-28 3,644,301."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
