"""Training runs: best-by-validation checkpoints (atomic, ``weights_only``-loadable), TensorBoard
logs, a tqdm bar, and mean ± std of the test / validation metric over runs."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pointseg.atomic import atomic_path

from .model import GraphNet, GraphNetConfig, count_parameters
from .data import dataset_family
from .presets import default_preset, get_preset
from .tasks import Task, make_task

CKPT_FORMAT = "pointseg-graphs/1"
LOWER_IS_BETTER = {"rmse", "mae"}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["layers=3", "aggr=mean", "learn_t=false"]`` -> typed dict (int / float / bool / None / str)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        low = v.lower()
        if low in ("true", "false"):
            val: Any = low == "true"
        elif low in ("none", "null"):
            val = None
        else:
            try:
                val = int(v)
            except ValueError:
                try:
                    val = float(v)
                except ValueError:
                    val = v
        out[k.strip()] = val
    return out


def _better(metric: str, a: float, b: float) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def gnn_of(model: torch.nn.Module) -> GraphNet:
    return model.gnn if hasattr(model, "gnn") else model


def save_checkpoint(path: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    """Plain dicts / tensors / strings / numbers only, so ``torch.load(weights_only=True)`` reads it."""
    payload = {"format": CKPT_FORMAT, **info,
               "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file is a user error
        raise ValueError(f"{path} is not a readable graphs checkpoint: {e}") from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a pointseg graphs checkpoint (format {CKPT_FORMAT})")
    return ck


OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
# every training option a preset or --train-set may give (read by run_training and the tasks)
TRAIN_OPTIONS = ("lr", "epochs", "optimizer", "weight_decay", "warmup_epochs", "batch_size", "parts",
                 "eval_parts", "eval_repeats", "predictor_layers", "use_labels", "label_rate", "label_iters",
                 "loss", "weight_decay_scope", "normalize_features", "use_node_attr", "folds", "smiles_column", "target",
                 "skip_invalid_smiles")


WEIGHT_DECAY_SCOPES = ("all", "first")


def param_groups(model: torch.nn.Module, train_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Optimiser parameter groups for train options ``weight_decay`` and ``weight_decay_scope``:
    ``all`` (every parameter) or ``first`` (only the GNN's first layer, Kipf & Welling's L2 on the first
    GCN layer; every other parameter gets none)."""
    wd = float(train_cfg.get("weight_decay", 0.0))
    scope = str(train_cfg.get("weight_decay_scope", "all")).lower()
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


def make_optimizer(model: torch.nn.Module, train_cfg: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    """Train options ``optimizer`` (adam | rmsprop; RevGAT's reference uses RMSprop), ``weight_decay`` and
    ``weight_decay_scope`` (see :func:`param_groups`)."""
    name = str(train_cfg.get("optimizer", "adam")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"train option optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name](param_groups(model, train_cfg), lr=lr)


def warmup_lr(lr: float, epoch: int, warmup: int) -> float:
    """Learning rate of 1-based ``epoch``: linear warm-up ``lr * epoch / warmup`` over the first ``warmup``
    epochs, then ``lr``."""
    return lr * epoch / warmup if 0 < warmup and epoch <= warmup else lr


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
    family = dataset_family(dataset, root)
    set_threads(threads, family, device)
    if preset_name is None:
        preset_name = default_preset(dataset, family)
        print(f"preset {preset_name} (default for {dataset}, family {family}; choose another with --preset)")
    preset = {**get_preset(preset_name), "name": preset_name}
    train_cfg = {**preset["train"], **(train_overrides or {})}
    unknown = sorted(set(train_cfg) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown} (known: {', '.join(TRAIN_OPTIONS)})")
    dev = torch.device(device)
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
    epochs = int(epochs if epochs is not None else train_cfg.get("epochs", 100))
    lr = float(lr if lr is not None else train_cfg.get("lr", 0.01))
    if runs < 1 or epochs < 1:
        raise ValueError(f"--runs and --epochs must be >= 1, got {runs}, {epochs}")
    out = Path(out) if out is not None else Path("runs") / "graphs" / f"{Path(dataset).stem}-{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and any(out.glob("run*/best.pt")) and not overwrite:
        raise FileExistsError(f"{out} already holds checkpoints (pass --overwrite or another --out)")
    from torch.utils.tensorboard import SummaryWriter
    valid_scores, test_scores = [], []
    for r in range(runs):
        torch.manual_seed(seed + r)
        task.gen.manual_seed(seed + r)
        if folds:
            task.set_fold(r)
        model = task.build(cfg).to(dev)
        opt = make_optimizer(model, train_cfg, lr)
        warmup = int(train_cfg.get("warmup_epochs", 0))
        writer = SummaryWriter(str(out / "tb" / f"run{r}"))
        best = {"valid": float("nan"), "test": float("nan"), "train": float("nan"), "epoch": -1}
        losses: list[float] = []
        bar = tqdm(range(1, epochs + 1), desc=f"{dataset} run{r} ({r + 1} of {runs})", disable=not progress, leave=False)
        for epoch in bar:
            for group in opt.param_groups:
                group["lr"] = warmup_lr(lr, epoch, warmup)
            loss = task.train_epoch(model, opt)
            losses.append(loss)
            res = task.evaluate(model)
            writer.add_scalar("loss/train", loss, epoch)
            for split, v in res.items():
                writer.add_scalar(f"{task.metric}/{split}", v, epoch)
            if _better(task.metric, res["valid"], best["valid"]) or best["epoch"] < 0:
                best = {**res, "epoch": epoch}
                save_checkpoint(out / f"run{r}" / "best.pt", model, dict(
                    dataset=dataset, root=str(root), preset=preset_name, model_config=cfg.to_dict(),
                    train_config=dict(train_cfg), metric=task.metric, family=task.family, epoch=epoch, run=r,
                    valid=float(res["valid"]), test=float(res["test"]), train=float(res["train"]),
                    params=count_parameters(gnn_of(model))))
            bar.set_postfix(loss=f"{loss:.4f}", valid=f"{res['valid']:.4f}", best=f"{best['valid']:.4f}")
        writer.close()
        valid_scores.append(best["valid"])
        test_scores.append(best["test"])
        print(f"run{r}{f' (fold {r} of {folds})' if folds else ''}: best epoch {best['epoch']} | train {best['train']:.4f} valid {best['valid']:.4f} "
              f"test {best['test']:.4f} | loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    v, t = np.array(valid_scores), np.array(test_scores)
    what = f"{runs} of {folds} folds" if folds else f"{runs} run{'s' if runs > 1 else ''}"
    print(f"test {task.metric} {t.mean():.4f} ± {t.std():.4f} | valid {v.mean():.4f} ± {v.std():.4f} "
          f"({what}, runs run0..run{runs - 1}, {count_parameters(gnn_of(task.build(cfg)))} parameters, out {out})")
    return dict(valid=valid_scores, test=test_scores, metric=task.metric, out=str(out), losses=losses)


def evaluate_checkpoint(path: str | Path, root: str | None = None, device: str = "cpu") -> dict[str, float]:
    ck = load_checkpoint(path)
    task = make_task(ck["dataset"], root or ck["root"], ck["train_config"], torch.device(device))
    cfg = GraphNetConfig.from_dict(ck["model_config"])
    model = task.build(cfg).to(device)
    model.load_state_dict(ck["state_dict"])
    if task.num_folds():
        task.set_fold(int(ck["run"]))                    # run r was trained and tested on fold r
    res = task.evaluate(model)
    print(f"{ck['dataset']} {ck['preset']} (epoch {ck['epoch']}, run {ck['run']}): " +
          " | ".join(f"{k} {task.metric} {v:.4f}" for k, v in res.items()))
    return res
