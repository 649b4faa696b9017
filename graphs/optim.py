"""Optimizer and learning-rate schedule of a graph run, from its :class:`~graphs.config.GraphTrainConfig`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import GraphTrainConfig
from .model import gnn_of

OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
WEIGHT_DECAY_SCOPES = ("all", "first")


def param_groups(model: nn.Module, train_cfg: GraphTrainConfig) -> list[dict[str, Any]]:
    """Optimiser parameter groups for train options ``weight_decay`` and ``weight_decay_scope``:
    ``all`` (every parameter) or ``first`` (only the GNN's first layer, Kipf & Welling's L2 on the first
    GCN layer; every other parameter gets none)."""
    wd = float(train_cfg.weight_decay)
    scope = train_cfg.weight_decay_scope.lower()
    if scope not in WEIGHT_DECAY_SCOPES:
        raise ValueError(f"train option weight_decay_scope must be one of {WEIGHT_DECAY_SCOPES}, got {scope!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if scope == "all":
        return [{"params": params, "weight_decay": wd}]
    first = getattr(gnn_of(model).backbone, "first", None)
    if first is None:
        raise ValueError("weight_decay_scope=first needs a backbone with a first layer (not this one)")
    ids = {id(p) for p in first.parameters()}
    return [{"params": [p for p in params if id(p) in ids], "weight_decay": wd},
            {"params": [p for p in params if id(p) not in ids], "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, train_cfg: GraphTrainConfig, lr: float) -> torch.optim.Optimizer:
    """Train options ``optimizer`` (adam | rmsprop; RevGAT's reference uses RMSprop), ``weight_decay`` and
    ``weight_decay_scope`` (see :func:`param_groups`)."""
    name = train_cfg.optimizer.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"train option optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](param_groups(model, train_cfg), lr=lr)


def warmup_lr(lr: float, epoch: int, warmup: int) -> float:
    """Learning rate of 1-based ``epoch``: linear warm-up ``lr * epoch / warmup`` over the first ``warmup``
    epochs, then ``lr``."""
    return lr * epoch / warmup if 0 < warmup and epoch <= warmup else lr


def epoch_lr(lr: float, epoch: int, warmup: int = 0, step: int = 0, gamma: float = 0.5) -> float:
    """Learning rate of 1-based ``epoch``: :func:`warmup_lr`, times ``gamma`` for every ``step`` epochs
    completed (``step > 0``; epochs 1..step train at the full rate, as torch's ``StepLR(step, gamma)``)."""
    decay = gamma ** ((epoch - 1) // step) if step > 0 else 1.0
    return warmup_lr(lr, epoch, warmup) * decay


class LinearWarmup(torch.optim.lr_scheduler.LRScheduler):
    """:func:`epoch_lr` as a scheduler stepped after every epoch: epoch ``e`` (1-based) trains with
    ``epoch_lr(lr, e, warmup, step, gamma)`` of each group's initial ``lr`` (by default the warm-up alone;
    ``step > 0`` adds the step decay of the Errica et al. GIN protocol, x0.5 every 50 epochs)."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, step: int = 0, gamma: float = 0.5) -> None:
        if warmup < 0:
            raise ValueError(f"train option warmup_epochs must be >= 0, got {warmup}")
        if step < 0 or not 0.0 < gamma <= 1.0:
            raise ValueError(f"train options lr_step must be >= 0 and lr_gamma in (0, 1], got {step}, {gamma}")
        self.warmup, self.step_size, self.gamma = warmup, step, gamma
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [epoch_lr(base, self.last_epoch + 1, self.warmup, self.step_size, self.gamma)
                for base in self.base_lrs]
