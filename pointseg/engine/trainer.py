"""The one training loop, over any :class:`~pointseg.engine.task.Task`.

Device and DDP set-up (``torchrun``: one process per GPU, BatchNorm statistics synchronised), seeds,
AMP (bf16 / fp16 autocast, a gradient scaler for fp16), a tqdm bar, TensorBoard, best-by-validation
``best.pt``, atomic checkpoints in :mod:`pointseg.engine.checkpoint`'s format, and — for resumable
tasks — ``last.pt`` with every RNG state, the optimizer, scheduler and position in the epoch, so a
run stopped after step ``s`` (``max_steps``, Ctrl-C) continues at step ``s + 1`` exactly. Ctrl-C
during a step is acted on after the step.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from . import distributed as D
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .device import autocast, resolve_device
from .task import Task

# What ``last.pt`` must hold for --resume.
RESUME_STATE = ("model", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step", "rng")


@dataclass
class FitOptions:
    """How one run is driven (not what it computes).

    Args:
        out: folder of ``best.pt`` (and ``last.pt`` for resumable tasks).
        epochs: epochs in all (a resumed run continues to this count).
        tb_dir: TensorBoard folder (default ``out / "tb"``).
        bar: ``steps`` (one bar per epoch over its batches) or ``epochs`` (one bar over the epochs).
        check_finite: a non-finite loss stops training with ``FloatingPointError``.
    """

    out: Path
    epochs: int
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    max_steps: int = 0
    log_every: int = 10
    sync_bn: bool = True
    progress: bool = True
    resume: bool = False
    tb_dir: Path | None = None
    bar: str = "steps"
    bar_desc: str = ""
    check_finite: bool = True


@dataclass
class FitResult:
    out: Path
    best_epoch: int = -1                                   # 1-based epoch of best.pt, -1: none
    best_metrics: dict[str, Any] | None = None
    epoch_losses: list[float] = field(default_factory=list)


def better(higher_is_better: bool, a: float, b: float | None) -> bool:
    """Whether score ``a`` beats the best so far ``b`` (``None``: nothing yet); NaN never wins."""
    if a is None or math.isnan(a):
        return False
    if b is None or math.isnan(b):
        return True
    return a > b if higher_is_better else a < b


def remove_stale_temporaries(folder: Path, stems: tuple[str, ...] = ("last", "best")) -> list[Path]:
    """Delete our own checkpoint temporaries (``.last.XXXX.tmp.pt``) left by a killed run."""
    removed = []
    for stem in stems:
        for p in folder.glob(f".{stem}.*.tmp.pt"):
            if p.is_file():
                p.unlink()
                removed.append(p)
    return removed


class DeferredInterrupt:
    """Ctrl-C during a step is acted on after the step: the checkpoint then holds a state that
    ``--resume`` continues exactly. A second Ctrl-C interrupts at once (last.pt untouched)."""

    def __init__(self, saving: str = "saving last.pt") -> None:
        self.requested, self.saving = False, saving
        self._old: Any = None

    def __enter__(self) -> "DeferredInterrupt":
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n[train] interrupt: finishing this step and {self.saving} (Ctrl-C again to abort)",
              flush=True)

    def __exit__(self, *exc: Any) -> None:
        import signal
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _score(task: Task, metrics: dict[str, Any] | None) -> float | None:
    if metrics is None:
        return None
    value = metrics.get(task.selection_metric)
    return float("nan") if value is None else float(value)


def optimizer_steps(task: Task, model: torch.nn.Module, optim: torch.optim.Optimizer, batches: Iterable[Any],
                    device: torch.device, amp: str = "none", scaler: torch.amp.GradScaler | None = None,
                    world_size: int = 1) -> Iterator[tuple[float, Any]]:
    """One optimizer step per batch that has a loss; yields ``(loss averaged over processes, batch)``
    after each step."""
    for batch in batches:
        optim.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss = task.loss(model, batch)
        if loss is None:
            continue
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
        else:
            loss.backward()
            optim.step()
        yield float(D.all_reduce_sum(loss.detach()) / world_size), batch


def train_epoch(task: Task, model: torch.nn.Module, optim: torch.optim.Optimizer, epoch: int = 0) -> float:
    """Epoch ``epoch`` of ``task`` on an existing model and optimizer, without checkpoints or logs (for
    benchmarks and studies); returns the mean loss over its steps (NaN: no step)."""
    model.train()
    losses = [v for v, _ in optimizer_steps(task, model, optim, task.train_batches(model, epoch), task.device)]
    return float(np.mean(losses)) if losses else float("nan")


class Trainer:
    """Runs :meth:`fit` for one task and one set of :class:`FitOptions`."""

    def __init__(self, task: Task, opts: FitOptions) -> None:
        self.task, self.opts = task, opts

    def fit(self) -> FitResult:
        from tqdm import tqdm
        task, opts = self.task, self.opts
        # this rank's GPU (cuda:LOCAL_RANK under torchrun) is made current before the process group
        device = D.select_device(resolve_device(opts.device))
        rank, world_size = D.init_from_env(device)
        out = Path(opts.out)
        torch.manual_seed(opts.seed)
        np.random.seed(opts.seed)
        task.seed(opts.seed)
        task.setup(device, rank, world_size, progress=opts.progress and rank == 0)

        model = task.build_model()
        if world_size > 1 and opts.sync_bn:
            D.enable_sync_batchnorm(model)
        model.to(device)
        optim = task.optimizer(model)
        sched = task.lr_schedule(optim)
        scaler = torch.amp.GradScaler("cuda", enabled=(opts.amp == "fp16" and device.type == "cuda"))
        epoch, step_in_epoch, global_step = 0, 0, 0
        best: float | None = None
        result = FitResult(out)
        resume_changes: list[str] = []

        if opts.resume:
            last = out / "last.pt"
            if rank == 0 and out.is_dir():
                remove_stale_temporaries(out)
            ck = load_checkpoint(last, map_location=device)
            if ck.get("kind") != task.kind:
                raise ValueError(f"{last}: holds a {ck.get('kind')!r} run, not a {task.kind!r} one")
            resume_changes = sorted(set(ck.get("resume_changes", [])) | set(task.check_resume(ck, last)))
            missing = [k for k in RESUME_STATE if k not in ck]
            if missing:
                raise ValueError(f"{last}: not a training checkpoint (missing {', '.join(missing)})")
            model.load_state_dict(ck["model"])
            optim.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            epoch, step_in_epoch, global_step = ck["epoch"], ck["step_in_epoch"], ck["global_step"]
            best = ck.get("best_score", ck.get("best_miou"))   # best_miou: last.pt of pointseg before the one trainer
            if "scaler" in ck and scaler.is_enabled():
                scaler.load_state_dict(ck["scaler"])
            set_rng_state(ck["rng"][rank] if isinstance(ck["rng"], list) else ck["rng"])
        elif rank == 0 and task.resumable and (out / "last.pt").exists():
            raise FileExistsError(f"{out} already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another out_dir")
        elif rank == 0:
            try:
                out.mkdir(parents=True, exist_ok=True)
                remove_stale_temporaries(out)
                task.write_run_files(out)
            except OSError as e:
                raise ValueError(f"{out}: cannot write the run folder: {e.strerror or e}") from None

        ddp_model = model
        if world_size > 1:
            ddp_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        writer = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(opts.tb_dir or out / "tb"))
            line = task.banner(model, device, world_size)
            if line:
                print(line)

        def snapshot(tag: str, metrics: dict[str, Any] | None = None) -> None:
            """``last``: everything --resume needs; ``best``: the model without training state."""
            states = [rng_state()]
            if world_size > 1:
                gathered: list[Any] = [None] * world_size
                torch.distributed.all_gather_object(gathered, states[0])
                states = gathered
            if rank != 0:
                return
            payload = task.checkpoint_payload(model)
            payload.update(epoch=epoch, step_in_epoch=step_in_epoch, global_step=global_step, best_score=best,
                           metrics=metrics or {}, resume_changes=resume_changes,
                           provenance={"project": "pointseg", "version": __version__})
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

        stop = interrupted = False
        interrupt = DeferredInterrupt("saving last.pt" if task.resumable else "stopping")
        show = opts.progress and rank == 0

        def interrupt_requested() -> bool:
            req = interrupt.requested
            if world_size > 1:               # every process must stop at the same step
                req = bool(D.all_reduce_sum(torch.tensor(float(req), device=device)) > 0)
            return req

        epoch_bar = tqdm(total=opts.epochs, initial=epoch, desc=opts.bar_desc, disable=not show or opts.bar != "epochs",
                         leave=False)
        with interrupt:
            while epoch < opts.epochs and not stop:
                ddp_model.train()
                batches = task.train_batches(ddp_model, epoch, step_in_epoch)
                bar = tqdm(batches, desc=f"epoch {epoch + 1}/{opts.epochs}", dynamic_ncols=True,
                           disable=not show or opts.bar != "steps")
                t0, seen, taken, losses = time.perf_counter(), 0, 0, []
                for loss_v, batch in optimizer_steps(task, ddp_model, optim, bar, device, opts.amp, scaler, world_size):
                    taken += 1
                    step_in_epoch += 1
                    global_step += 1
                    seen += task.count(batch)
                    losses.append(loss_v)
                    if opts.check_finite and not math.isfinite(loss_v):
                        raise FloatingPointError(f"loss became {loss_v} at step {global_step}")
                    rate = seen / max(1e-9, time.perf_counter() - t0)
                    bar.set_postfix({"loss": f"{loss_v:.4f}", f"{task.items}_per_s": f"{rate:.2f}"})
                    if writer is not None:
                        writer.add_scalar("train/loss", loss_v, global_step)
                        if global_step % opts.log_every == 0:
                            writer.add_scalar("train/lr", optim.param_groups[0]["lr"], global_step)
                            writer.add_scalar(f"train/{task.items}_per_s", rate, global_step)
                    if opts.max_steps and global_step >= opts.max_steps:
                        stop = True
                    elif interrupt_requested():
                        stop = interrupted = True
                    if stop:
                        break
                if stop and not _epoch_complete(batches, taken):
                    break                       # stopped mid-epoch: last.pt resumes right here
                sched.step()
                epoch += 1
                step_in_epoch = 0
                epoch_loss = float(np.mean(losses)) if losses else float("nan")
                result.epoch_losses.append(epoch_loss)
                metrics = task.evaluate(model)
                if writer is not None:
                    for tag, value in task.epoch_scalars(epoch_loss, metrics).items():
                        writer.add_scalar(tag, value, epoch)
                line = task.epoch_line(epoch, metrics) if rank == 0 else None
                if line:
                    print(line)
                score = _score(task, metrics)
                improved = metrics is not None and (best is None or better(task.higher_is_better, score, best))
                if improved:
                    best = score
                    result.best_epoch, result.best_metrics = epoch, metrics
                if task.resumable:
                    snapshot("last", metrics)
                if improved or metrics is None:
                    snapshot("best", metrics)
                epoch_bar.update(1)
                if metrics is not None:
                    epoch_bar.set_postfix({"loss": f"{epoch_loss:.4f}",
                                           task.selection_metric: f"{score:.4f}",
                                           "best": f"{best if best is not None else float('nan'):.4f}"})
                if not stop and interrupt_requested():
                    interrupted = True
                    break                       # between epochs: last.pt was just written
            if stop and task.resumable:
                snapshot("last")
        epoch_bar.close()
        if writer is not None:
            writer.close()
        if interrupted:
            if task.resumable:
                raise KeyboardInterrupt(f"training interrupted; {out / 'last.pt'} resumes it exactly (--resume)")
            raise KeyboardInterrupt("training interrupted")
        if world_size > 1:
            torch.distributed.barrier()
        return result


def _epoch_complete(batches: Any, taken: int) -> bool:
    """Whether ``taken`` batches are all of the epoch (one stopped on its last step is complete)."""
    try:
        return taken >= len(batches)
    except TypeError:                       # no length: a stop ends the epoch where it is
        return False
