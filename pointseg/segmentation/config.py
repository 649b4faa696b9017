"""Segmentation training configuration: the typed dataclasses ``pointseg train`` fills from YAML
(:func:`pointseg.config.load_config`), their validation, and the check of what ``--resume`` may change.

Kept apart from the trainer so that ``segment`` / ``evaluate`` and the CLI read config types
without importing the training module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import check_choices, to_dict
from ..data.recipe import BlockRecipe


@dataclass
class DataConfig:
    source: Literal["blocks", "rooms", "synthetic", "scans"] = "blocks"
    root: str = "data/s3dis/indoor3d_sem_seg_hdf5_data"
    test_area: int = 5
    val_fraction: float = 0.1         # whole rooms of the training areas
    split_seed: int = 0
    num_points: int = 4096
    block_size: float = 1.0
    stride: float = 0.5               # rooms / synthetic: stride of the generated training blocks
    synth_rooms: int = 12             # synthetic: rooms generated when root is empty
    synth_seed: int = 0
    synth_points: int = 300_000       # synthetic: approximate points per room
    workers: int = 0
    # source scans: your own labelled files (engine.scan_source; README "Train on your own scans")
    train: list[str] = field(default_factory=list)    # training files: paths or globs
    val: list[str] = field(default_factory=list)      # validation files, split by file
    label_field: str = ""             # PLY/PCD property, LAS dimension (classification) or col:N
    class_map: str = ""               # YAML: classes (name -> values, color) and ignore

    no_colour: Literal["gray", "zeros"] = "gray"   # colour channels of training scans without colour

    @property
    def recipe(self) -> BlockRecipe:
        """The block recipe these settings train with (recorded whole in the checkpoint)."""
        return BlockRecipe(block_size=self.block_size, num_points=self.num_points, stride=self.stride,
                           no_colour=self.no_colour)


@dataclass
class OptimConfig:
    name: Literal["adam", "sgd"] = "adam"   # adam (reference), sgd (momentum 0.9)
    lr: float = 1e-3
    weight_decay: float = 0.0
    step_size: int = 20               # epochs between learning-rate decays
    gamma: float = 0.5


@dataclass
class TrainConfig:
    name: str = "resgcn28"
    model: str = "resgcn-28"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 100
    batch_size: int = 16              # global batch (split over processes)
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    amp: Literal["none", "bf16", "fp16"] = "none"   # fp16 / bf16: CUDA only
    out_dir: str = "runs/{name}"
    max_steps: int = 0                # stop (with a checkpoint) after this many steps in all; 0: no limit
    sync_bn: bool = True              # synchronise BatchNorm statistics over processes
    log_every: int = 10
    resume_changes: list[str] = field(default_factory=list)  # config keys --resume may change (--allow-change)
    init: str = ""                    # fine-tune from a segmentation checkpoint (path or bundled name)
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed, or [backbone]


# Keys a resumed run may differ in without changing what it computes.
_RESUME_FREE = {"device", "out_dir", "max_steps", "log_every", "data.workers", "resume_changes", "amp"}


def validate_config(cfg: TrainConfig) -> None:
    """Refuse nonsense values by key before anything is built or written."""
    def need(ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            raise ValueError(f"config {key}={value!r}: {what}")

    need(cfg.epochs >= 1, "epochs", cfg.epochs, "must be >= 1")
    need(cfg.batch_size >= 1, "batch_size", cfg.batch_size, "must be >= 1")
    need(cfg.max_steps >= 0, "max_steps", cfg.max_steps, "must be >= 0 (0: no limit)")
    need(cfg.log_every >= 1, "log_every", cfg.log_every, "must be >= 1")
    need(cfg.optim.step_size >= 1, "optim.step_size", cfg.optim.step_size, "must be >= 1 epoch")
    need(math.isfinite(cfg.optim.lr) and cfg.optim.lr >= 0, "optim.lr", cfg.optim.lr, "must be a number >= 0")
    need(math.isfinite(cfg.optim.gamma) and cfg.optim.gamma > 0, "optim.gamma", cfg.optim.gamma,
         "must be a positive number")
    need(math.isfinite(cfg.optim.weight_decay) and cfg.optim.weight_decay >= 0, "optim.weight_decay",
         cfg.optim.weight_decay, "must be >= 0")
    d = cfg.data
    need(math.isfinite(d.block_size) and d.block_size > 0, "data.block_size", d.block_size, "must be > 0")
    need(math.isfinite(d.stride) and d.stride > 0, "data.stride", d.stride, "must be > 0")
    need(1 <= d.num_points <= 1_000_000, "data.num_points", d.num_points, "must be in 1..1000000")
    need(0 <= d.val_fraction < 1, "data.val_fraction", d.val_fraction, "must be in [0, 1)")
    need(d.workers >= 0, "data.workers", d.workers, "must be >= 0")
    need(d.synth_rooms >= 1, "data.synth_rooms", d.synth_rooms, "must be >= 1")
    need(1000 <= d.synth_points <= 50_000_000, "data.synth_points", d.synth_points, "must be in 1000..50000000")
    check_choices(cfg)          # every Literal field (amp, optim.name, data.source), in one place
    need(bool(cfg.device.strip()), "device", cfg.device, "must be auto, cpu, cuda or cuda:N")
    need(not cfg.freeze or bool(cfg.init), "freeze", cfg.freeze, "needs init: (freezing fresh weights learns nothing)")
    if d.source == "scans":
        need(bool(d.train), "data.train", d.train, "data.source scans needs training files (paths or globs)")
        need(bool(d.label_field.strip()), "data.label_field", d.label_field,
             "data.source scans needs the label field (a property name, classification, or col:N)")
        need(bool(d.class_map.strip()), "data.class_map", d.class_map, "data.source scans needs a class map YAML file")
    else:
        for key in ("train", "val", "label_field", "class_map"):
            need(not getattr(d, key), f"data.{key}", getattr(d, key), "is for data.source: scans")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "model_overrides":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(cfg: TrainConfig, saved: dict[str, Any] | None, where: Path) -> list[str]:
    """Keys in which ``cfg`` differs from the run's saved config; refused unless listed in
    ``cfg.resume_changes`` (``--allow-change KEY``), returned so the checkpoint records them."""
    if not saved:
        return []
    now, then = _flat(to_dict(cfg)), _flat(saved)
    # a key newer than the saved run counts as its default there
    default = _flat(to_dict(TrainConfig()))
    changed = sorted(k for k in set(now) | set(then)
                     if k not in _RESUME_FREE and now.get(k) != then.get(k, default.get(k)))
    refused = [k for k in changed if k not in cfg.resume_changes]
    if refused:
        diffs = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in refused)
        raise ValueError(f"{where}: --resume with a changed config ({diffs}); resume with the run's own "
                         f"config, or pass --allow-change {' --allow-change '.join(refused)} to accept it")
    return changed
