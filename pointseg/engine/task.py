"""The task protocol: what an application tells :class:`~pointseg.engine.trainer.Trainer` so that one
training loop serves S3DIS segmentation and every graph family.

A task owns its data, its model, its loss and its metrics; the trainer owns everything around them
(device and DDP set-up, seeds, AMP, progress bar, TensorBoard, best-by-validation, exact resume,
deferred Ctrl-C, atomic checkpoints). One training run calls, in order::

    task.seed(seed)                                      # after torch / numpy are seeded
    task.setup(device, rank, world_size, progress)       # datasets, loaders
    model = task.build_model()
    optim = task.optimizer(model); sched = task.lr_schedule(optim)
    for epoch in range(start_epoch, epochs):
        for batch in task.train_batches(model, epoch, start):   # start > 0 only when resuming
            loss = task.loss(model, batch)                      # None: nothing to learn from
            ... backward, optimizer step ...
        sched.step()
        metrics = task.evaluate(model)                          # metrics[task.selection_metric] picks best.pt
    payload = task.checkpoint_payload(model)                    # + the trainer's training state
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class Task(ABC):
    """One application's training problem, seen by the trainer.

    Attributes:
        kind (str): the checkpoint kind (``"segmentation"`` or ``"graph"``); readers refuse another.
        selection_metric (str): the key of :meth:`evaluate`'s result that chooses ``best.pt``.
        higher_is_better (bool): direction of ``selection_metric``.
        resumable (bool): the batches of epoch ``e`` are a function of ``(seed, e)`` and can start at
            any step, so the trainer writes ``last.pt`` with the full training state for ``--resume``.
        items (str): what :meth:`count` counts, for the throughput shown and logged.
    """

    kind: str = ""
    selection_metric: str = ""
    higher_is_better: bool = True
    resumable: bool = False
    items: str = "batches"

    def setup(self, device: torch.device, rank: int = 0, world_size: int = 1, progress: bool = True) -> None:
        """Prepare data for this process (called once per run, after the seeds are set)."""
        self.device, self.rank, self.world_size = device, rank, world_size

    def seed(self, seed: int) -> None:
        """Re-seed the task's own random generators (the trainer seeds torch and numpy)."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (on the CPU; the trainer moves it)."""

    @abstractmethod
    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The optimizer of ``model``'s parameters."""

    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """Learning-rate schedule, stepped once after every epoch (default: constant)."""
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)

    @abstractmethod
    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> Iterable[Any]:
        """The training batches of 0-based ``epoch``, skipping the first ``start`` (resume)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor | None:
        """The loss of one batch (``None``: the batch has nothing to learn from; no step is taken)."""

    def count(self, batch: Any) -> int:
        """How many :attr:`items` one batch holds over all processes (throughput)."""
        return 1

    @abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, Any] | None:
        """Metrics after an epoch (``None``: no validation data); must hold :attr:`selection_metric`."""

    def epoch_scalars(self, loss: float, metrics: dict[str, Any] | None) -> dict[str, float]:
        """TensorBoard scalars written once per epoch (tag -> value)."""
        return {}

    def epoch_line(self, epoch: int, metrics: dict[str, Any] | None) -> str | None:
        """A line printed after epoch ``epoch`` (1-based) is evaluated, or ``None``."""
        return None

    def banner(self, model: nn.Module, device: torch.device, world_size: int) -> str | None:
        """A line printed when training starts, or ``None``."""
        return None

    def write_run_files(self, out: Path) -> None:
        """Files a fresh run writes into its folder before training (e.g. its config), on rank 0."""

    @abstractmethod
    def checkpoint_payload(self, model: nn.Module) -> dict[str, Any]:
        """What a checkpoint holds besides the training state: ``kind``, the weights (``model``), the
        model config, the class table or task description, the input recipe and the training config."""

    def check_resume(self, ckpt: dict[str, Any], where: Any) -> list[str]:
        """Refuse a ``last.pt`` that this task's config cannot continue; returns the config keys that
        changed with permission (recorded in the checkpoint)."""
        return []
