"""Named model presets: data, not code. ``build_model("resgcn-28")`` returns the network."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .seg_gcn import SegGCN, SegGCNConfig

# name -> overrides of SegGCNConfig. Parameter counts (9 inputs, 13 classes) are tested.
PRESETS: dict[str, dict[str, Any]] = {
    "resgcn-28": dict(block="res", n_blocks=28),
    "plaingcn-28": dict(block="plain", n_blocks=28),
    "densegcn-28": dict(block="dense", n_blocks=28),
    "resgcn-7": dict(block="res", n_blocks=7),
    "resgcn-14": dict(block="res", n_blocks=14),
    "resgcn-56": dict(block="res", n_blocks=56),
    "resmrgcn-28": dict(block="res", n_blocks=28, conv="mr"),
    # reversible (RevGNN coupling, 2 groups of 32 channels, LayerNorm in the branches, "rev fusion")
    "revgcn-28": dict(block="rev", n_blocks=28, groups=2),
    "revgcn-112": dict(block="rev", n_blocks=112, groups=2),
}


def preset_config(name: str, **overrides: Any) -> SegGCNConfig:
    key = name.lower()
    if key not in PRESETS:
        import difflib
        close = difflib.get_close_matches(key, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model preset {name!r}{hint} (known: {', '.join(PRESETS)})")
    return SegGCNConfig(**{**asdict(SegGCNConfig()), **PRESETS[key], **overrides})


def build_model(name: str, **overrides: Any) -> SegGCN:
    return SegGCN(preset_config(name, **overrides))
