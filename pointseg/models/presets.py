"""Named model presets: data, not code. ``build_model("resgcn-28")`` returns the network.

Each preset names an *architecture* (a model class and its config dataclass, registered in
``ARCHITECTURES``; ``seg-gcn`` when not given) and overrides of that config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from .dgcnn import DGCNN, DGCNNConfig
from .seg_gcn import SegGCN, SegGCNConfig


@dataclass(frozen=True)
class Architecture:
    model: type[nn.Module]
    config: type


# architecture name -> (model class, config class); checkpoints record the name
ARCHITECTURES: dict[str, Architecture] = {
    "seg-gcn": Architecture(SegGCN, SegGCNConfig),
    "dgcnn": Architecture(DGCNN, DGCNNConfig),
}
DEFAULT_ARCHITECTURE = "seg-gcn"

# name -> overrides of the architecture's config ("arch" picks the architecture). Parameter
# counts (9 inputs, 13 classes) are tested.
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
    # DGCNN (dgcnn.pytorch's DGCNN_semseg_s3dis): k=20, emb 1024, kNN of channels 6-8 first
    "dgcnn": dict(arch="dgcnn"),
}


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name]


def preset_architecture(name: str) -> str:
    return _preset(name).get("arch", DEFAULT_ARCHITECTURE)


def _preset(name: str) -> dict[str, Any]:
    key = name.lower()
    if key not in PRESETS:
        import difflib
        close = difflib.get_close_matches(key, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model preset {name!r}{hint} (known: {', '.join(PRESETS)})")
    return PRESETS[key]


def preset_config(name: str, **overrides: Any) -> Any:
    entry = dict(_preset(name))
    cfg_cls = architecture(entry.pop("arch", DEFAULT_ARCHITECTURE)).config
    return cfg_cls(**{**asdict(cfg_cls()), **entry, **overrides})


def build_model(name: str, **overrides: Any) -> nn.Module:
    return architecture(preset_architecture(name)).model(preset_config(name, **overrides))
