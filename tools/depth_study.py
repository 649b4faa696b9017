"""Depth study (DeepGCNs Fig. 1 / §5): plain vs residual vs dense GCNs at growing depth.

    PYTHONPATH=. python tools/depth_study.py Cora --root data [--depths 2 4 8 16 32 64]
        [--backbones plain res dense] [--epochs 100] [--channels 32] [--out runs/depth_study]
    PYTHONPATH=. python tools/depth_study.py Cora --root data --preset gcn-2 --epochs 200   # GCN, from K&W's model

Trains one network per (backbone, depth) with the same encoder / conv / head (``graphs.model``),
prints a table of the best-validation test metric against depth, and writes two PNGs:
``metric_vs_depth.png`` (one line per backbone) and ``loss_curves.png`` (training loss per epoch,
one panel per backbone, one curve per depth). Any backbone registered in
``graphs.model.BACKBONES`` (e.g. a reversible one) can be named in ``--backbones``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pointseg.graphs.model import BACKBONES  # noqa: E402
from pointseg.graphs.tasks import make_task  # noqa: E402
from pointseg.graphs.presets import get_preset  # noqa: E402
from pointseg.graphs.optim import make_optimizer  # noqa: E402
from pointseg.engine.trainer import better, train_epoch  # noqa: E402
from pointseg.atomic import atomic_path, atomic_write_text  # noqa: E402


def study(dataset: str, root: str, depths: list[int], backbones: list[str], epochs: int, channels: int | None,
          lr: float | None, conv: str | None, aggr: str, dropout: float | None, seed: int,
          preset_name: str | None = None) -> tuple[dict, dict, str]:
    """Best-validation test metric per (backbone, depth). Without a preset: ``linear`` encoder, ``layers =
    depth`` convolutions of ``channels`` with BatchNorm, a linear head, Adam without weight decay. With a preset
    (e.g. ``gcn-2``): its model and training settings (lr, weight decay and its scope), only the backbone and
    the depth changed; with its ``head="conv"`` the head is the last of the ``depth`` convolutions, so depth 2
    of ``plain`` *is* the preset."""
    if preset_name is not None:
        p = get_preset(preset_name)
        preset = {**p, "name": preset_name, "model": dict(p["model"])}
        train = dict(p["train"])
        for key, val in (("conv", conv), ("channels", channels), ("dropout", dropout)):
            if val is not None:
                preset["model"][key] = val
    else:
        preset = {"dataset": None, "name": "depth-study",
                  "model": dict(conv=conv or "gen", aggr=aggr, channels=channels or 16, mlp_layers=1, norm="batch",
                                dropout=0.5 if dropout is None else dropout)}
        train = {"lr": 0.005}
    if lr is not None:
        train["lr"] = lr
    task = make_task(dataset, root, {**train, "epochs": epochs}, torch.device("cpu"))
    scores: dict[tuple[str, int], float] = {}
    curves: dict[tuple[str, int], list[float]] = {}
    jobs = [(b, d) for b in backbones for d in depths]
    head_conv = preset["model"].get("head") == "conv"
    for backbone, depth in tqdm(jobs, desc="depth study"):
        torch.manual_seed(seed)
        layers = depth - 1 if head_conv else depth
        if layers < 1:
            raise ValueError(f"depth {depth} is too shallow for preset {preset_name!r} (its head is a convolution)")
        cfg = task.model_config(preset, dict(backbone=backbone, layers=layers))
        model = task.build(cfg)
        opt = make_optimizer(model, task.train_cfg, task.train_cfg.lr)
        best_valid, best_test, losses = float("nan"), float("nan"), []
        for _ in range(epochs):
            losses.append(train_epoch(task, model, opt))
            res = task.evaluate(model)
            if better(task.higher_is_better, res["valid"], best_valid):
                best_valid, best_test = res["valid"], res["test"]
        scores[(backbone, depth)] = best_test
        curves[(backbone, depth)] = losses
    return scores, curves, task.metric


def table(scores: dict, depths: list[int], backbones: list[str], metric: str) -> str:
    head = f"{'backbone':<10}" + "".join(f"{d:>8}" for d in depths)
    rows = [f"test {metric} (best validation epoch) against depth", head]
    for b in backbones:
        rows.append(f"{b:<10}" + "".join(f"{scores[(b, d)]:>8.4f}" for d in depths))
    return "\n".join(rows)


def plot(scores: dict, curves: dict, depths: list[int], backbones: list[str], metric: str, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for b in backbones:
        ax.plot(depths, [scores[(b, d)] for d in depths], marker="o", label=b)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("layers")
    ax.set_ylabel(f"test {metric}")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "metric_vs_depth.png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    fig, axes = plt.subplots(1, len(backbones), figsize=(4 * len(backbones), 3.2), squeeze=False, sharey=True)
    for ax, b in zip(axes[0], backbones):
        for d in depths:
            ax.plot(curves[(b, d)], label=f"{d} layers")
        ax.set_title(f"{b} GCN")
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("training loss")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out / "loss_curves.png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset")
    p.add_argument("--root", default="data")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--backbones", nargs="+", default=["plain", "res", "dense"])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--preset", default=None, help="take model and training settings from this graph preset "
                                                  "(e.g. gcn-2: Kipf & Welling's GCN, depth 2 = the published model)")
    p.add_argument("--channels", type=int, default=None, help="default 16 (or the preset's)")
    p.add_argument("--lr", type=float, default=None, help="default 0.005 (or the preset's)")
    p.add_argument("--conv", default=None, help="a pointseg.nn.make_conv name, e.g. gen | gcn (default gen, or the preset's)")
    p.add_argument("--aggr", default="mean")
    p.add_argument("--dropout", type=float, default=None, help="default 0.5 (or the preset's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: faster for Planetoid-sized graphs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/depth_study")
    a = p.parse_args(argv)
    unknown = [b for b in a.backbones if b not in BACKBONES]
    if unknown:
        print(f"depth_study: error: unknown backbone(s) {unknown} (known: {sorted(BACKBONES)})", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, a.threads))
    try:
        scores, curves, metric = study(a.dataset, a.root, a.depths, a.backbones, a.epochs, a.channels, a.lr,
                                       a.conv, a.aggr, a.dropout, a.seed, a.preset)
    except (ValueError, FileNotFoundError) as e:
        print(f"depth_study: error: {e}", file=sys.stderr)
        return 2
    text = table(scores, a.depths, a.backbones, metric)
    print(text)
    out = Path(a.out)
    atomic_write_text(out / "table.txt", text + "\n")
    plot(scores, curves, a.depths, a.backbones, metric, out)
    print(f"wrote {out / 'table.txt'}, {out / 'metric_vs_depth.png'}, {out / 'loss_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
