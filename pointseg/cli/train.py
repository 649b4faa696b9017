"""``pointseg train CONFIG.yaml [key=value ...] [--resume] [--device DEV]``."""
from __future__ import annotations

import argparse
from pathlib import Path

# Shipped configs are package data (pointseg/configs; the checkout's configs/ links to it), so a
# name works after a plain `pip install .` too.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a YAML config file, or the name of a shipped one in configs/ "
                                  "(e.g. resgcn28_synthetic)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. epochs=10 optim.lr=5e-4 data.root=/data/s3dis")
    p.add_argument("--resume", action="store_true", help="continue the run in out_dir from last.pt")
    p.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                   help="with --resume: accept this config key differing from the run's (recorded in "
                        "the checkpoint); repeat for several keys")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's, else auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def resolve_config_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if cand.exists():
            return cand
    shipped = sorted(c.stem for c in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name!r} not found (shipped configs: {', '.join(shipped)})")


def run(args: argparse.Namespace) -> int:
    from pointseg.config import load_config
    from pointseg.segmentation.config import TrainConfig
    from pointseg.segmentation.train import train

    cfg = load_config(TrainConfig, resolve_config_path(args.config), args.overrides)
    # the flags set the typed fields themselves (no round trip through key=value text)
    if args.device:
        cfg.device = args.device
    if args.allow_change:
        cfg.resume_changes = list(args.allow_change)
    out = train(cfg, resume=args.resume, progress=not args.quiet)
    print(f"[train] done: checkpoints in {out} (best.pt by validation mIoU, last.pt)")
    return 0
