"""``pointseg train``: one segmentation run — :class:`~pointseg.segmentation.task.SegmentationTask`
driven by the shared :class:`~pointseg.engine.trainer.Trainer`.

Exact resume: a run stopped after step ``s`` (``max_steps``, Ctrl-C) continues at step ``s + 1`` of
the same epoch with the same model, optimizer, scheduler and RNG states. Multi-process: run under
``torchrun --nproc_per_node P``; each process takes ``batch_size / P`` blocks of every global batch
and BatchNorm statistics are synchronised, so P processes follow the single-process run.
"""
from __future__ import annotations

from pathlib import Path

from .config import TrainConfig, validate_config
from .task import SegmentationTask
from ..engine.trainer import FitOptions, Trainer


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training; returns the output folder holding ``last.pt`` / ``best.pt``."""
    validate_config(cfg)
    task = SegmentationTask(cfg)
    opts = FitOptions(out=task.out, epochs=cfg.epochs, seed=cfg.seed, device=cfg.device, amp=cfg.amp,
                      max_steps=cfg.max_steps, log_every=cfg.log_every, sync_bn=cfg.sync_bn,
                      progress=progress, resume=resume)
    return Trainer(task, opts).fit().out
