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
from .tasks import Task, make_task


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
    dev = resolve_device(device)
    task: Task = make_task(dataset, root, train_cfg, dev)
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
    losses: list[float] = []
    for r in range(runs):
        if folds:
            task.set_fold(r)
        task.run = r
        fit = Trainer(task, FitOptions(
            out=out / f"run{r}", tb_dir=out / "tb" / f"run{r}", epochs=epochs, seed=seed + r, device=str(dev),
            progress=progress, bar="epochs", bar_desc=f"{dataset} run{r} ({r + 1} of {runs})",
            check_finite=False)).fit()          # graph runs have always carried on through a NaN epoch loss
        best, losses = fit.best_metrics, fit.epoch_losses
        valid_scores.append(best["valid"])
        test_scores.append(best["test"])
        print(f"run{r}{f' (fold {r} of {folds})' if folds else ''}: best epoch {fit.best_epoch} | train {best['train']:.4f} valid {best['valid']:.4f} "
              f"test {best['test']:.4f} | loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    v, t = np.array(valid_scores), np.array(test_scores)
    what = f"{runs} of {folds} folds" if folds else f"{runs} run{'s' if runs > 1 else ''}"
    print(f"test {task.metric} {t.mean():.4f} ± {t.std():.4f} | valid {v.mean():.4f} ± {v.std():.4f} "
          f"({what}, runs run0..run{runs - 1}, {count_parameters(gnn_of(task.build(cfg)))} parameters, out {out})")
    return dict(valid=valid_scores, test=test_scores, metric=task.metric, out=str(out), losses=losses)


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
