"""``pointseg models [NAME]``: list presets with exact trainable-parameter counts, or show one."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="a preset to summarise (layer by layer)")
    p.add_argument("--in-channels", type=int, default=9)
    p.add_argument("--num-classes", type=int, default=13)


def run(args: argparse.Namespace) -> int:
    from pointseg.models import PRESETS, build_model, count_parameters
    kw = dict(in_channels=args.in_channels, out_channels=args.num_classes)
    if args.name is None:
        for name in PRESETS:
            print(f"{name} {count_parameters(build_model(name, **kw))}")
        return 0
    model = build_model(args.name, **kw)
    print(f"{args.name}: {count_parameters(model):,} trainable parameters")
    print(model.cfg)
    for name, mod in model.named_children():
        n = count_parameters(mod)
        print(f"  {name:<12} {n:>12,}  {mod.__class__.__name__}")
    print(model)
    return 0
