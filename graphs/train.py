"""Graph training runs: each run is one :class:`~pointseg.engine.trainer.Trainer` fit of the dataset's
task (best-by-validation ``run<r>/best.pt`` in pointseg's checkpoint format, kind ``graph``; TensorBoard
logs; a tqdm bar), and mean ± std of the test / validation metric over runs (or cross-validation folds)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pointseg.config import from_dict
from pointseg.engine.checkpoint import load_checkpoint
from pointseg.engine.device import resolve_device
from pointseg.engine.trainer import FitOptions, Trainer
from pointseg.models import count_parameters

from .config import GraphTrainConfig
from .data import dataset_family
from .model import GraphNetConfig, gnn_of
from .presets import default_preset, get_preset
from .tasks import GraphTask, make_task


def load_graph_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A pointseg checkpoint of kind ``graph`` (what ``graphs train`` writes); another kind is refused."""
    ck = load_checkpoint(path, map_location=map_location)
    if ck.get("kind") != "graph":
        raise ValueError(f"{path}: holds a {ck.get('kind')!r} model, not a graph model "
                         "(segmentation checkpoints are used by pointseg segment / evaluate)")
    return ck


# Families whose graphs are small enough that torch's intra-op threading costs more than it gains on CPU
# (tools/bench_graph_threads.py; docs/graphs.md): they default to one thread.
SMALL_GRAPH_FAMILIES = ("planetoid", "tu", "csv")


def set_threads(threads: int | None, family: str, device: str) -> None:
    """``torch.set_num_threads``: ``threads`` if given, else 1 for small-graph families on CPU (else untouched)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif family in SMALL_GRAPH_FAMILIES and torch.device(device).type == "cpu" and torch.get_num_threads() != 1:
        torch.set_num_threads(1)
        print("torch threads: 1 (small graphs train faster on one CPU thread; --threads N to change)")


class EarlyStopping:
    """A task seen by the trainer with early stopping on its validation score (the Errica et al. protocol's
    ``Patience``): once ``patience`` epochs in a row have not reached the best validation score so far (a
    tie counts as reaching it, as in that protocol), no more batches are trained and every later
    evaluation returns the last metrics, so the trainer's remaining epochs cost nothing and ``best.pt``
    stays the best validation epoch. Everything else is the wrapped task's (attribute access is forwarded).

    The shared trainer (``pointseg/engine/trainer.py``) has no stopping hook, so the stop is made here.

    Args:
        task (GraphTask): the graph task of one run.
        patience (int): epochs without reaching the best validation score before stopping (>= 1).
    """

    def __init__(self, task: GraphTask, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"train option patience must be >= 1 (0 = no early stopping), got {patience}")
        self.task, self.patience = task, patience
        self.best: float | None = None
        self.waited, self.epoch = 0, 0
        self.stopped_epoch = 0                            # 1-based epoch after which training stopped, 0: never
        self.last: dict[str, float] | None = None
        self.idle = False                                 # the epoch being evaluated trained nothing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def train_batches(self, model: torch.nn.Module, epoch: int, start: int = 0) -> Any:
        return [] if self.stopped_epoch else self.task.train_batches(model, epoch, start)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float] | None:
        if self.stopped_epoch:
            self.idle = True                              # the model has not changed since the stop
            return self.last
        self.epoch += 1
        self.last = metrics = self.task.evaluate(model)
        score = None if metrics is None else metrics.get(self.task.selection_metric)
        if score is not None and not np.isnan(score) and (
                self.best is None or (score >= self.best if self.task.higher_is_better else score <= self.best)):
            self.best, self.waited = float(score), 0
        else:
            self.waited += 1
            if self.waited >= self.patience:
                self.stopped_epoch = self.epoch
        return metrics

    def epoch_scalars(self, loss: float, metrics: dict[str, Any] | None) -> dict[str, float]:
        return {} if self.idle else self.task.epoch_scalars(loss, metrics)    # idle epochs stay out of TensorBoard


def chance_check(scores: dict[str, float], rates: dict[str, float], what: str, metric: str,
                 higher_is_better: bool = True) -> str | None:
    """A warning naming the figures when the ``valid`` or ``test`` score is no better than the chance figure
    of that split (:meth:`GraphTask.chance`: the majority-class rate, a constant score's ROC-AUC, the RMSE of the
    training mean; ``what`` names it); ``None`` when both beat it (NaN scores or figures are not judged)."""
    hits = []
    for split in ("valid", "test"):
        s, c = scores.get(split), rates.get(split)
        if s is None or c is None or np.isnan(s) or np.isnan(c):
            continue
        if (s <= c + 1e-9) if higher_is_better else (s >= c - 1e-9):
            hits.append(f"{split} {metric} {s:.4f} {'<=' if higher_is_better else '>='} {c:.4f}")
    return f"{', '.join(hits)}, the {what}" if hits else None


def run_training(dataset: str, preset_name: str | None, root: str, epochs: int | None = None, runs: int | None = None,
                 device: str = "cpu", out: str | Path | None = None, overrides: dict[str, Any] | None = None,
                 lr: float | None = None, seed: int = 0, overwrite: bool = False,
                 progress: bool = True, train_overrides: dict[str, Any] | None = None,
                 threads: int | None = None) -> dict[str, Any]:
    """Train ``runs`` runs of a preset on ``dataset``; ``overrides`` / ``train_overrides`` are model /
    training options (typed values, as :func:`pointseg.config.apply_overrides` parses ``key=value``)."""
    family = dataset_family(dataset, root)
    set_threads(threads, family, device)
    if preset_name is None:
        preset_name = default_preset(dataset, family)
        print(f"preset {preset_name} (default for {dataset}, family {family}; choose another with --preset)")
    preset = {**get_preset(preset_name), "name": preset_name}
    train_cfg = from_dict(GraphTrainConfig, {**preset["train"], **(train_overrides or {})}, what="training option")
    if epochs is not None:
        train_cfg.epochs = int(epochs)
    if lr is not None:
        train_cfg.lr = float(lr)
    if train_cfg.patience < 0 or train_cfg.lr_step < 0 or not 0.0 < train_cfg.lr_gamma <= 1.0:
        raise ValueError(f"train options patience and lr_step must be >= 0 (0 = off) and lr_gamma in (0, 1], got "
                         f"{train_cfg.patience}, {train_cfg.lr_step}, {train_cfg.lr_gamma}")
    dev = resolve_device(device)
    task: GraphTask = make_task(dataset, root, train_cfg, dev)
    if task.describe():
        print(f"{dataset}: {task.describe()}")
    cfg = task.model_config(preset, overrides or {})
    folds = task.num_folds()
    if runs is None:
        runs = folds or 1
    if folds and runs > folds:
        raise ValueError(f"--runs {runs}: {dataset} is evaluated by {folds}-fold cross-validation, one run per "
                         f"fold, so --runs must be <= {folds}")
    epochs = train_cfg.epochs
    if runs < 1 or epochs < 1:
        raise ValueError(f"--runs and --epochs must be >= 1, got {runs}, {epochs}")
    out = Path(out) if out is not None else Path("runs") / "graphs" / f"{Path(dataset).stem}-{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.glob("run*/best.pt")) and not overwrite:
        raise FileExistsError(f"{out} already holds checkpoints (pass --overwrite or another --out)")
    valid_scores, test_scores = [], []
    chance_rates: list[dict[str, float]] = []
    warnings: list[str] = []
    losses: list[float] = []
    patience = train_cfg.patience
    if patience:
        print(f"early stopping: a run stops after {patience} epochs without reaching its best validation "
              f"{task.metric} (at most {epochs} epochs)")
    for r in range(runs):
        if folds:
            task.set_fold(r)
        task.run = r
        runner: Any = EarlyStopping(task, patience) if patience else task
        fit = Trainer(runner, FitOptions(
            out=out / f"run{r}", tb_dir=out / "tb" / f"run{r}", epochs=epochs, seed=seed + r, device=str(dev),
            progress=progress, bar="epochs", bar_desc=f"{dataset} run{r} ({r + 1} of {runs})",
            check_finite=False)).fit()          # graph runs have always carried on through a NaN epoch loss
        best, losses = fit.best_metrics, fit.epoch_losses
        stopped = runner.stopped_epoch if patience else 0
        if stopped:
            losses = losses[:stopped]                     # the epochs after the stop trained nothing
        valid_scores.append(best["valid"])
        test_scores.append(best["test"])
        stop_note = f" | early stop after epoch {stopped}" if stopped else ""
        print(f"run{r}{f' (fold {r} of {folds})' if folds else ''}: best epoch {fit.best_epoch} | train {best['train']:.4f} valid {best['valid']:.4f} "
              f"test {best['test']:.4f} | loss {losses[0]:.4f} -> {losses[-1]:.4f}{stop_note}")
        chance = task.chance()
        if chance is not None:
            chance_rates.append(chance[0])
            warning = chance_check(best, chance[0], chance[1], task.metric, task.higher_is_better)
            if warning:
                warnings.append(f"run{r}")
                print(f"WARNING run{r} did not learn: {warning}")
    v, t = np.array(valid_scores), np.array(test_scores)
    what = f"{runs} of {folds} folds" if folds else f"{runs} run{'s' if runs > 1 else ''}"
    summary = (f"test {task.metric} {t.mean():.4f} ± {t.std():.4f} | valid {v.mean():.4f} ± {v.std():.4f} "
               f"({what}, runs run0..run{runs - 1}, {count_parameters(gnn_of(task.build(cfg)))} parameters, out {out})")
    mean_warning = None
    if chance_rates:
        # the means over runs against the mean of each run's own figure (folds differ slightly); the figure's
        # name without one fold's class
        mean_chance = {k: float(np.mean([c[k] for c in chance_rates])) for k in ("valid", "test")}
        name = (task.chance() or ({}, ""))[1].split(" (")[0]
        mean_warning = chance_check({"valid": float(v.mean()), "test": float(t.mean())}, mean_chance,
                                    f"mean {name}", task.metric, task.higher_is_better)
    if mean_warning or warnings:
        runs_note = f"; runs at chance: {', '.join(warnings)}" if warnings else ""
        summary += f" | WARNING did not learn: {mean_warning or 'the means beat chance'}{runs_note}"
    print(summary)
    return dict(valid=valid_scores, test=test_scores, metric=task.metric, out=str(out), losses=losses,
                chance=chance_rates, warnings=warnings + ([f"mean: {mean_warning}"] if mean_warning else []))


def evaluate_checkpoint(path: str | Path, root: str | None = None, device: str = "cpu") -> dict[str, float]:
    ck = load_graph_checkpoint(path)
    dev = resolve_device(device)
    task = make_task(ck["dataset"], root or ck["root"], ck["train_config"], dev)
    cfg = from_dict(GraphNetConfig, ck["model_config"], what="graph model option")
    model = task.build(cfg).to(dev)
    model.load_state_dict(ck["model"])
    if task.num_folds():
        task.set_fold(int(ck["run"]))                    # run r was trained and tested on fold r
    res = task.evaluate(model)
    print(f"{ck['dataset']} {ck['preset']} (epoch {ck['epoch']}, run {ck['run']}): " +
          " | ".join(f"{k} {task.metric} {v:.4f}" for k, v in res.items()))
    return res
