"""``pointseg train``: the reference training recipe for segmentation DeepGCNs.

Adam (lr 1e-3), StepLR (20 epochs, x0.5), 100 epochs, batch 16, cross-entropy on every point
of 4096-point blocks. Validation on whole rooms held out of the *training* areas (never the
test area) after every epoch; ``best.pt`` is chosen by validation mIoU.

Exact resume: the shuffling of epoch ``e`` is a permutation drawn from ``(seed, e)``, every RNG
state is stored in the checkpoint, and a run stopped after step ``s`` (``max_steps``, Ctrl-C)
continues at step ``s + 1`` of the same epoch with the same model, optimizer, scheduler and
RNG states. (With ``data.workers > 0`` the point shuffling inside a block happens in worker
processes and is not part of that guarantee.)

Multi-process: run under ``torchrun --nproc_per_node P``; each process takes ``batch_size / P``
blocks of every global batch and BatchNorm statistics are synchronised, so P processes follow
the single-process run on the same global batch.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..classes import ClassTable
from ..config import save_config, to_dict
from ..models import build_model, count_parameters
from . import distributed as D
from .checkpoint import load_checkpoint, model_payload, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig, check_resume_config, validate_config
from .device import autocast, resolve_device
from ..metrics import SegMetrics, confusion_matrix


def remove_stale_temporaries(folder: Path, stems: tuple[str, ...] = ("last", "best")) -> list[Path]:
    """Delete our own checkpoint temporaries (``.last.XXXX.tmp.pt``) left by a killed run."""
    removed = []
    for stem in stems:
        for p in folder.glob(f".{stem}.*.tmp.pt"):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


class _DeferredInterrupt:
    """Ctrl-C during a step is acted on after the step: the checkpoint then holds a state that
    ``--resume`` continues exactly. A second Ctrl-C interrupts at once (last.pt untouched)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "_DeferredInterrupt":
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\n[train] interrupt: finishing this step and saving last.pt (Ctrl-C again to abort)",
              flush=True)

    def __exit__(self, *exc: Any) -> None:
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


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
        cm += confusion_matrix(y.numpy(), pred, classes.num_classes)
    return SegMetrics(cm, classes.names)


def _input_spec(cfg: TrainConfig) -> dict[str, Any]:
    from ..data.block_gen import BLOCK_CHANNELS
    return {"channels": list(BLOCK_CHANNELS), "num_points": cfg.data.num_points,
            "block_size": cfg.data.block_size, "normalisation": "s3dis-blocks"}


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training; returns the output folder holding ``last.pt`` / ``best.pt``."""
    from tqdm import tqdm
    from .datasets import build_datasets

    validate_config(cfg)
    # this rank's GPU (cuda:LOCAL_RANK under torchrun) is made current before the process group
    device = D.select_device(resolve_device(cfg.device))
    rank, world_size = D.init_from_env(device)
    out = Path(cfg.out_dir.format(name=cfg.name))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    train_ds, val_ds, classes = build_datasets(cfg.data, progress=progress and rank == 0)
    try:
        model = build_model(cfg.model, in_channels=9, num_classes=classes.num_classes, **cfg.model_overrides)
    except TypeError as e:
        raise ValueError(f"config model_overrides={cfg.model_overrides!r}: {e}") from None
    preset = cfg.model
    if world_size > 1 and cfg.sync_bn:
        D.enable_sync_batchnorm(model)
    model.to(device)
    if cfg.optim.name == "adam":
        optim = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    elif cfg.optim.name == "sgd":
        optim = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9,
                                weight_decay=cfg.optim.weight_decay)
    else:
        raise ValueError(f"optim.name must be adam or sgd, got {cfg.optim.name!r}")
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=cfg.optim.step_size, gamma=cfg.optim.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=(cfg.amp == "fp16" and device.type == "cuda"))
    epoch, step_in_epoch, global_step, best = 0, 0, 0, -1.0
    resume_changes: list[str] = []

    if resume:
        last = out / "last.pt"
        if rank == 0 and out.is_dir():
            remove_stale_temporaries(out)
        ck = load_checkpoint(last, map_location=device)
        if ck.get("preset") != preset:
            raise ValueError(f"{last}: was trained as {ck.get('preset')!r}, config asks for {preset!r}")
        resume_changes = sorted(set(ck.get("resume_changes", [])) |
                                set(check_resume_config(cfg, ck.get("train_config"), last)))
        missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step", "rng")
                   if k not in ck]
        if missing:
            raise ValueError(f"{last}: not a training checkpoint (missing {', '.join(missing)})")
        model.load_state_dict(ck["model"])
        optim.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        epoch, step_in_epoch, global_step = ck["epoch"], ck["step_in_epoch"], ck["global_step"]
        best = ck.get("best_miou", -1.0)
        if "scaler" in ck and scaler.is_enabled():
            scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"])
    elif rank == 0:
        if (out / "last.pt").exists():
            raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another out_dir")
        try:
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out)
            save_config(cfg, out / "config.yaml")
        except OSError as e:
            raise ValueError(f"{out}: cannot write the run folder: {e.strerror or e}") from None

    ddp_model = model
    if world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = GlobalBatchSampler(len(train_ds), cfg.batch_size, cfg.seed, rank, world_size)
    # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
    # run (which creates its iterator mid-epoch) would diverge from an uninterrupted one.
    loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=cfg.data.workers,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"))
        n_par = count_parameters(model)
        print(f"[train] {preset}: {n_par:,} parameters on {device} x{world_size}; "
              f"{len(train_ds)} training blocks, {len(val_ds)} validation blocks; out {out}")

    def snapshot(tag: str, metrics: dict[str, Any] | None = None) -> None:
        """``last``: everything --resume needs; ``best``: the model without training state."""
        states = [rng_state()]
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        if rank != 0:
            return
        payload = model_payload(preset, model, classes, _input_spec(cfg))
        payload.update(train_config=to_dict(cfg), epoch=epoch, step_in_epoch=step_in_epoch,
                       global_step=global_step, best_miou=best, metrics=metrics or {},
                       resume_changes=resume_changes)
        if tag == "last":
            payload.update(optimizer=optim.state_dict(), scheduler=sched.state_dict(),
                           rng=states if world_size > 1 else states[0])
            if scaler.is_enabled():
                payload["scaler"] = scaler.state_dict()
        try:
            save_checkpoint(out / f"{tag}.pt", payload)
        except (OSError, RuntimeError) as e:     # a full disk shows as RuntimeError from torch.save
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{out / (tag + '.pt')}: cannot write the checkpoint ({first}); "
                             f"the previous {tag}.pt, if any, is intact") from None

    stop = False
    interrupt = _DeferredInterrupt()
    interrupted = False

    def interrupt_requested() -> bool:
        req = interrupt.requested
        if world_size > 1:               # every process must stop at the same step
            req = bool(D.all_reduce_sum(torch.tensor(float(req), device=device)) > 0)
        return req

    with interrupt:
        while epoch < cfg.epochs and not stop:
            sampler.set_epoch(epoch, step_in_epoch)
            ddp_model.train()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (progress and rank == 0),
                       dynamic_ncols=True)
            t0, seen = time.perf_counter(), 0
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optim.zero_grad(set_to_none=True)
                with autocast(device, cfg.amp):
                    loss = F.cross_entropy(ddp_model(x).float(), y)
                scaler.scale(loss).backward()
                scaler.step(optim)
                scaler.update()
                step_in_epoch += 1
                global_step += 1
                seen += x.shape[0] * world_size
                loss_v = float(D.all_reduce_sum(loss.detach()) / world_size)
                if not math.isfinite(loss_v):
                    raise FloatingPointError(f"loss became {loss_v} at step {global_step}")
                rate = seen / max(1e-9, time.perf_counter() - t0)
                bar.set_postfix(loss=f"{loss_v:.4f}", blocks_per_s=f"{rate:.2f}")
                if writer is not None:
                    writer.add_scalar("train/loss", loss_v, global_step)
                    if global_step % cfg.log_every == 0:
                        writer.add_scalar("train/lr", optim.param_groups[0]["lr"], global_step)
                        writer.add_scalar("train/blocks_per_s", rate, global_step)
                if cfg.max_steps and global_step >= cfg.max_steps:
                    stop = True
                    break
                if interrupt_requested():
                    stop = interrupted = True
                    break
            if stop and step_in_epoch < len(sampler) + sampler.start:
                break                       # stopped mid-epoch: last.pt resumes right here
            sched.step()
            epoch += 1
            step_in_epoch = 0
            metrics = evaluate_blocks(model, val_ds, classes, device, amp=cfg.amp) if len(val_ds) else None
            if rank == 0 and metrics is not None:
                writer.add_scalar("val/oa", metrics.oa, epoch)
                writer.add_scalar("val/miou", metrics.miou, epoch)
                print(f"[train] epoch {epoch}: val OA {100 * metrics.oa:.2f} mIoU {100 * metrics.miou:.2f}")
            improved = metrics is not None and metrics.miou > best
            if improved:
                best = metrics.miou
            snapshot("last", metrics.to_dict() if metrics else None)
            if improved or metrics is None:
                snapshot("best", metrics.to_dict() if metrics else None)
            if not stop and interrupt_requested():
                interrupted = True
                break                       # between epochs: last.pt was just written
        if stop:
            snapshot("last")
    if writer is not None:
        writer.close()
    if interrupted:
        raise KeyboardInterrupt(f"training interrupted; {out / 'last.pt'} resumes it exactly (--resume)")
    if world_size > 1:
        torch.distributed.barrier()
    return out
