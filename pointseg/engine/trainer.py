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


@dataclass
class _Run:
    """The state of one :meth:`Trainer.fit`: what is built once, and the counters that ``last.pt``
    saves and ``--resume`` restores."""

    device: torch.device
    rank: int
    world_size: int
    out: Path
    model: torch.nn.Module
    optim: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    result: FitResult
    ddp_model: torch.nn.Module | None = None
    writer: Any = None
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float | None = None
    resume_changes: list[str] = field(default_factory=list)


class Trainer:
    """Runs :meth:`fit` for one task and one set of :class:`FitOptions`.

    :meth:`fit` reads as its steps: :meth:`_start` (device, process group, seeds, model and
    optimizer), :meth:`_resume` or :meth:`_new_run` (the run folder), :meth:`_open_logs`, then per
    epoch :meth:`_train_epoch` and :meth:`_end_of_epoch`, with :meth:`_save` writing ``last.pt`` /
    ``best.pt``.
    """

    def __init__(self, task: Task, opts: FitOptions) -> None:
        self.task, self.opts = task, opts

    def fit(self) -> FitResult:
        from tqdm import tqdm
        task, opts = self.task, self.opts
        run = self._start()
        if opts.resume:
            self._resume(run)
        else:
            self._new_run(run)
        self._open_logs(run)

        stop = interrupted = False
        interrupt = DeferredInterrupt("saving last.pt" if task.resumable else "stopping")
        show = opts.progress and run.rank == 0
        epoch_bar = tqdm(total=opts.epochs, initial=run.epoch, desc=opts.bar_desc,
                         disable=not show or opts.bar != "epochs", leave=False)
        with interrupt:
            while run.epoch < opts.epochs and not stop:
                losses, stop, interrupted, complete = self._train_epoch(run, interrupt, show)
                if stop and not complete:
                    break                       # stopped mid-epoch: last.pt resumes right here
                self._end_of_epoch(run, losses, epoch_bar)
                if not stop and self._interrupt_requested(run, interrupt):
                    interrupted = True
                    break                       # between epochs: last.pt was just written
            if stop and task.resumable:
                self._save(run, "last")
        epoch_bar.close()
        if run.writer is not None:
            run.writer.close()
        if interrupted:
            if task.resumable:
                raise KeyboardInterrupt(f"training interrupted; {run.out / 'last.pt'} resumes it exactly (--resume)")
            raise KeyboardInterrupt("training interrupted")
        if run.world_size > 1:
            torch.distributed.barrier()
        return run.result

    # -- steps of fit

    def _start(self) -> _Run:
        """Device and process group, seeds, the task's set-up, model, optimizer, schedule, scaler."""
        task, opts = self.task, self.opts
        # this rank's GPU (cuda:LOCAL_RANK under torchrun) is made current before the process group
        device = D.select_device(resolve_device(opts.device))
        rank, world_size = D.init_from_env(device)
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
        out = Path(opts.out)
        return _Run(device, rank, world_size, out, model, optim, sched, scaler, FitResult(out))

    def _resume(self, run: _Run) -> None:
        """Restore ``last.pt``: weights, optimizer, schedule, scaler, counters and random state."""
        task = self.task
        last = run.out / "last.pt"
        if run.rank == 0 and run.out.is_dir():
            remove_stale_temporaries(run.out)
        ck = load_checkpoint(last, map_location=run.device)
        if ck.get("kind") != task.kind:
            raise ValueError(f"{last}: holds a {ck.get('kind')!r} run, not a {task.kind!r} one")
        run.resume_changes = sorted(set(ck.get("resume_changes", [])) | set(task.check_resume(ck, last)))
        missing = [k for k in RESUME_STATE if k not in ck]
        if missing:
            raise ValueError(f"{last}: not a training checkpoint (missing {', '.join(missing)})")
        run.model.load_state_dict(ck["model"])
        run.optim.load_state_dict(ck["optimizer"])
        run.sched.load_state_dict(ck["scheduler"])
        run.epoch, run.step_in_epoch, run.global_step = ck["epoch"], ck["step_in_epoch"], ck["global_step"]
        run.best = ck.get("best_score", ck.get("best_miou"))   # best_miou: last.pt of pointseg before the one trainer
        if "scaler" in ck and run.scaler.is_enabled():
            run.scaler.load_state_dict(ck["scaler"])
        set_rng_state(ck["rng"][run.rank] if isinstance(ck["rng"], list) else ck["rng"])

    def _new_run(self, run: _Run) -> None:
        """The run folder of a new run (refused when it holds a resumable run already)."""
        if run.rank != 0:
            return
        if self.task.resumable and (run.out / "last.pt").exists():
            raise FileExistsError(f"{run.out} already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another out_dir")
        try:
            run.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(run.out)
            self.task.write_run_files(run.out)
        except OSError as e:
            raise ValueError(f"{run.out}: cannot write the run folder: {e.strerror or e}") from None

    def _open_logs(self, run: _Run) -> None:
        """DDP wrapping, TensorBoard and the task's banner line (rank 0)."""
        run.ddp_model = run.model
        if run.world_size > 1:
            run.ddp_model = torch.nn.parallel.DistributedDataParallel(
                run.model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
        if run.rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            run.writer = SummaryWriter(str(self.opts.tb_dir or run.out / "tb"))
            line = self.task.banner(run.model, run.device, run.world_size)
            if line:
                print(line)

    def _interrupt_requested(self, run: _Run, interrupt: DeferredInterrupt) -> bool:
        req = interrupt.requested
        if run.world_size > 1:               # every process must stop at the same step
            req = bool(D.all_reduce_sum(torch.tensor(float(req), device=run.device)) > 0)
        return req

    def _train_epoch(self, run: _Run, interrupt: DeferredInterrupt, show: bool
                     ) -> tuple[list[float], bool, bool, bool]:
        """The optimizer steps of one epoch (from ``run.step_in_epoch``), logged as they go;
        ``(losses, stop, interrupted, epoch complete)``."""
        from tqdm import tqdm
        task, opts = self.task, self.opts
        run.ddp_model.train()
        batches = task.train_batches(run.ddp_model, run.epoch, run.step_in_epoch)
        bar = tqdm(batches, desc=f"epoch {run.epoch + 1}/{opts.epochs}", dynamic_ncols=True,
                   disable=not show or opts.bar != "steps")
        t0, seen, taken, losses = time.perf_counter(), 0, 0, []
        stop = interrupted = False
        for loss_v, batch in optimizer_steps(task, run.ddp_model, run.optim, bar, run.device, opts.amp,
                                             run.scaler, run.world_size):
            taken += 1
            run.step_in_epoch += 1
            run.global_step += 1
            seen += task.count(batch)
            losses.append(loss_v)
            if opts.check_finite and not math.isfinite(loss_v):
                raise FloatingPointError(f"loss became {loss_v} at step {run.global_step}")
            rate = seen / max(1e-9, time.perf_counter() - t0)
            bar.set_postfix({"loss": f"{loss_v:.4f}", f"{task.items}_per_s": f"{rate:.2f}"})
            if run.writer is not None:
                run.writer.add_scalar("train/loss", loss_v, run.global_step)
                if run.global_step % opts.log_every == 0:
                    run.writer.add_scalar("train/lr", run.optim.param_groups[0]["lr"], run.global_step)
                    run.writer.add_scalar(f"train/{task.items}_per_s", rate, run.global_step)
            if opts.max_steps and run.global_step >= opts.max_steps:
                stop = True
            elif self._interrupt_requested(run, interrupt):
                stop = interrupted = True
            if stop:
                break
        return losses, stop, interrupted, not stop or _epoch_complete(batches, taken)

    def _end_of_epoch(self, run: _Run, losses: list[float], epoch_bar: Any) -> None:
        """Schedule step, validation, logs, best-by-validation and the checkpoints of the epoch."""
        task = self.task
        run.sched.step()
        run.epoch += 1
        run.step_in_epoch = 0
        epoch_loss = float(np.mean(losses)) if losses else float("nan")
        run.result.epoch_losses.append(epoch_loss)
        metrics = task.evaluate(run.model)
        if run.writer is not None:
            for tag, value in task.epoch_scalars(epoch_loss, metrics).items():
                run.writer.add_scalar(tag, value, run.epoch)
        line = task.epoch_line(run.epoch, metrics) if run.rank == 0 else None
        if line:
            print(line)
        score = _score(task, metrics)
        improved = metrics is not None and (run.best is None or better(task.higher_is_better, score, run.best))
        if improved:
            run.best = score
            run.result.best_epoch, run.result.best_metrics = run.epoch, metrics
        if task.resumable:
            self._save(run, "last", metrics)
        if improved or metrics is None:
            self._save(run, "best", metrics)
        epoch_bar.update(1)
        if metrics is not None:
            epoch_bar.set_postfix({"loss": f"{epoch_loss:.4f}", task.selection_metric: f"{score:.4f}",
                                   "best": f"{run.best if run.best is not None else float('nan'):.4f}"})

    def _save(self, run: _Run, tag: str, metrics: dict[str, Any] | None = None) -> None:
        """``last``: everything --resume needs; ``best``: the model without training state."""
        states = [rng_state()]
        if run.world_size > 1:
            gathered: list[Any] = [None] * run.world_size
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        if run.rank != 0:
            return
        payload = self.task.checkpoint_payload(run.model)
        payload.update(epoch=run.epoch, step_in_epoch=run.step_in_epoch, global_step=run.global_step,
                       best_score=run.best, metrics=metrics or {}, resume_changes=run.resume_changes,
                       provenance={"project": "pointseg", "version": __version__})
        if tag == "last":
            payload.update(optimizer=run.optim.state_dict(), scheduler=run.sched.state_dict(),
                           rng=states if run.world_size > 1 else states[0])
            if run.scaler.is_enabled():
                payload["scaler"] = run.scaler.state_dict()
        try:
            save_checkpoint(run.out / f"{tag}.pt", payload)
        except (OSError, RuntimeError) as e:     # a full disk shows as RuntimeError from torch.save
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{run.out / (tag + '.pt')}: cannot write the checkpoint ({first}); "
                             f"the previous {tag}.pt, if any, is intact") from None


def _epoch_complete(batches: Any, taken: int) -> bool:
    """Whether ``taken`` batches are all of the epoch (one stopped on its last step is complete)."""
    try:
        return taken >= len(batches)
    except TypeError:                       # no length: a stop ends the epoch where it is
        return False
