"""S3DIS segmentation as a :class:`~pointseg.engine.task.Task`: the reference training recipe of the
segmentation DeepGCNs.

Adam (lr 1e-3), StepLR (20 epochs, x0.5), 100 epochs, batch 16, cross-entropy on every point of
4096-point blocks. Validation on whole rooms held out of the *training* areas (never the test area)
after every epoch; ``best.pt`` is chosen by validation mIoU.

The shuffling of epoch ``e`` is a permutation drawn from ``(seed, e)`` (:class:`GlobalBatchSampler`),
so the trainer's exact resume holds. (With ``data.workers > 0`` the point shuffling inside a block
happens in worker processes and is not part of that guarantee.) Under ``torchrun`` each process
takes ``batch_size / P`` blocks of every global batch, so P processes follow the single-process run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from ..classes import ClassTable
from ..config import save_config, to_dict
from ..metrics import SegMetrics, confusion_matrix
from ..models import build_model, count_parameters
from ..data.class_map import IGNORE, ClassMap
from .checkpoint import model_payload
from .config import TrainConfig, check_resume_config
from ..engine.device import autocast
from .init_weights import freeze, init_from, load_init
from ..engine.task import Task


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of one epoch: a permutation drawn from ``(seed, epoch)``, cut into global batches
    (the last incomplete one dropped); process ``rank`` takes its contiguous share of each; the
    first ``start`` batches are skipped (resume)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be divisible by the {world_size} processes")
        if n < batch_size:
            raise ValueError(f"the training split has {n} blocks, fewer than batch_size={batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.n // self.batch_size - self.start

    def __iter__(self) -> Iterator[list[int]]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        local = self.batch_size // self.world_size
        for b in range(self.start, self.n // self.batch_size):
            g = perm[b * self.batch_size:(b + 1) * self.batch_size]
            yield g[self.rank * local:(self.rank + 1) * local].tolist()


@torch.no_grad()
def evaluate_blocks(model: torch.nn.Module, ds: Dataset, classes: ClassTable, device: torch.device,
                    batch_size: int = 8, amp: str = "none", progress: bool = False) -> SegMetrics:
    """Block-level metrics (how the reference code scored): every point of every block once."""
    from tqdm import tqdm
    model.eval()
    cm = np.zeros((classes.num_classes, classes.num_classes), dtype=np.int64)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    for x, y in tqdm(loader, desc="validate", leave=False, disable=not progress):
        with autocast(device, amp):
            pred = model(x.to(device)).argmax(1).cpu().numpy()
        y = y.numpy()
        scored = y != IGNORE            # points whose label value the class map ignores
        cm += confusion_matrix(y[scored], pred[scored], classes.num_classes)
    return SegMetrics(cm, classes.names)


def input_spec(cfg: TrainConfig) -> dict[str, Any]:
    """The input recipe a checkpoint records whole: what ``segment`` must cut for the model."""
    return cfg.data.recipe.to_spec()


OPTIMIZERS = {"adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
              "sgd": lambda params, o: torch.optim.SGD(params, lr=o.lr, momentum=0.9, weight_decay=o.weight_decay)}


class SegmentationTask(Task):
    r"""Semantic segmentation of S3DIS-style blocks (or synthetic rooms cut the same way).

    Each point of a block of :math:`N` points with 9 input channels gets one of :math:`C` classes; the
    loss is the mean cross-entropy over every point of the batch,
    :math:`\mathcal{L} = -\frac{1}{BN}\sum_{b,i} \log \mathrm{softmax}(f(X_b))_{i, y_{b,i}}`,
    and ``best.pt`` is chosen by the validation mean IoU
    :math:`\mathrm{mIoU} = \frac{1}{C}\sum_c \frac{TP_c}{TP_c + FP_c + FN_c}` over the validation blocks.

    Args:
        cfg (TrainConfig): the run's config (model preset and overrides, data, optimizer, batch size).

    Shapes:
        - **batch:** blocks :math:`(B/P, 9, N)` and labels :math:`(B/P, N)` on each of :math:`P` processes
        - **model output:** logits :math:`(B/P, C, N)`
        - **metrics:** :meth:`pointseg.metrics.SegMetrics.to_dict` (``oa``, ``miou``, per-class IoU, confusion)
    """

    kind, selection_metric, higher_is_better, resumable, items = "segmentation", "miou", True, True, "blocks"

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def setup(self, device: torch.device, rank: int = 0, world_size: int = 1, progress: bool = True) -> None:
        from .datasets import build_datasets
        super().setup(device, rank, world_size, progress)
        cfg = self.cfg
        # init and class map are refused before any scan is read or any block written
        self.init_ckpt = load_init(cfg.init, cfg.model) if cfg.init else None
        self.init_record: dict[str, Any] | None = None
        self.class_map = ClassMap.load(cfg.data.class_map) if cfg.data.source == "scans" else None
        self.train_ds, self.val_ds, self.classes = build_datasets(cfg.data, progress=progress,
                                                                  cache=self.out / "blocks")
        self.sampler = GlobalBatchSampler(len(self.train_ds), cfg.batch_size, cfg.seed, rank, world_size)
        # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
        # run (which creates its iterator mid-epoch) would diverge from an uninterrupted one.
        self.loader = DataLoader(self.train_ds, batch_sampler=self.sampler, num_workers=cfg.data.workers,
                                 pin_memory=device.type == "cuda",
                                 generator=torch.Generator().manual_seed(cfg.seed))

    def build_model(self) -> nn.Module:
        try:
            model = build_model(self.cfg.model, in_channels=9, out_channels=self.classes.num_classes,
                                **self.cfg.model_overrides)
        except TypeError as e:
            raise ValueError(f"config model_overrides={self.cfg.model_overrides!r}: {e}") from None
        if self.init_ckpt is not None:
            lines, self.init_record = init_from(model, self.init_ckpt, self.cfg.init)
            if self.cfg.freeze:
                lines.append(freeze(model, self.cfg.freeze))
            if self.rank == 0:
                print("\n".join(f"[train] {line}" for line in lines))
        return model

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        o = self.cfg.optim
        if o.name not in OPTIMIZERS:
            raise ValueError(f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")
        return OPTIMIZERS[o.name](model.parameters(), o)

    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.cfg.optim.step_size,
                                               gamma=self.cfg.optim.gamma)

    def train_batches(self, model: nn.Module, epoch: int, start: int = 0) -> DataLoader:
        self.sampler.set_epoch(epoch, start)
        return self.loader

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        logits = model(x).float()
        if not bool((y != IGNORE).any()):
            return logits.sum() * 0.0     # every point ignored: a zero step keeps processes in step
        return F.cross_entropy(logits, y, ignore_index=IGNORE)

    def count(self, batch: tuple[Tensor, Tensor]) -> int:
        return batch[0].shape[0] * self.world_size

    def evaluate(self, model: nn.Module) -> dict[str, Any] | None:
        if not len(self.val_ds):
            return None
        return evaluate_blocks(model, self.val_ds, self.classes, self.device, amp=self.cfg.amp).to_dict()

    def epoch_scalars(self, loss: float, metrics: dict[str, Any] | None) -> dict[str, float]:
        return {} if metrics is None else {"val/oa": _nan(metrics["oa"]), "val/miou": _nan(metrics["miou"])}

    def epoch_line(self, epoch: int, metrics: dict[str, Any] | None) -> str | None:
        if metrics is None:
            return None
        return (f"[train] epoch {epoch}: val OA {100 * _nan(metrics['oa']):.2f} "
                f"mIoU {100 * _nan(metrics['miou']):.2f}")

    def banner(self, model: nn.Module, device: torch.device, world_size: int) -> str:
        return (f"[train] {self.cfg.model}: {count_parameters(model):,} parameters on {device} x{world_size}; "
                f"{len(self.train_ds)} training blocks, {len(self.val_ds)} validation blocks; out {self.out}")

    @property
    def out(self) -> Path:
        return Path(self.cfg.out_dir.format(name=self.cfg.name))

    def write_run_files(self, out: Path) -> None:
        save_config(self.cfg, out / "config.yaml")

    def checkpoint_payload(self, model: nn.Module) -> dict[str, Any]:
        payload = model_payload(self.cfg.model, model, self.classes, input_spec(self.cfg))
        payload["train_config"] = to_dict(self.cfg)
        if self.class_map is not None:
            # segment / evaluate / view then use the user's classes, and score labelled scans
            payload["class_map"] = self.class_map.to_dict()
            payload["label_field"] = self.cfg.data.label_field
        if self.init_record is not None:
            payload["init"] = self.init_record
        return payload

    def check_resume(self, ckpt: dict[str, Any], where: Any) -> list[str]:
        if ckpt.get("preset") != self.cfg.model:
            raise ValueError(f"{where}: was trained as {ckpt.get('preset')!r}, config asks for {self.cfg.model!r}")
        return check_resume_config(self.cfg, ckpt.get("train_config"), where)


def _nan(v: float | None) -> float:
    """``SegMetrics.to_dict`` writes NaN as None (JSON); back to a float for printing and logging."""
    return float("nan") if v is None else float(v)
