"""Named model presets: data, not code. ``build_model("resgcn-28")`` returns the network.

Each preset names an *architecture* (a model class and its config dataclass, registered in
``ARCHITECTURES``; ``seg-gcn`` when not given) and overrides of that config.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from ..config import from_dict

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
    "resgcn-28": dict(backbone="res", layers=28),
    "plaingcn-28": dict(backbone="plain", layers=28),
    "densegcn-28": dict(backbone="dense", layers=28),
    "resgcn-7": dict(backbone="res", layers=7),
    "resgcn-14": dict(backbone="res", layers=14),
    "resgcn-56": dict(backbone="res", layers=56),
    "resmrgcn-28": dict(backbone="res", layers=28, conv="mr"),
    # reversible (RevGNN coupling, 2 groups of 32 channels, LayerNorm in the branches, "rev fusion")
    "revgcn-28": dict(backbone="rev", layers=28, groups=2),
    "revgcn-112": dict(backbone="rev", layers=112, groups=2),
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


# Old config keys of the segmentation networks -> the one vocabulary they share with the graph
# networks (graphs.model.GraphNetConfig). Read for one release, with a warning in YAML.
RENAMED_KEYS = {"block": "backbone", "n_blocks": "layers", "num_classes": "out_channels",
                "rev_tied": "weight_tied", "knn_slice": "knn_channels"}


def renamed_keys(values: dict[str, Any], where: str = "model", warn: bool = True) -> dict[str, Any]:
    """``values`` with the old key names of :data:`RENAMED_KEYS` renamed (a ``FutureWarning`` each
    when ``warn``); both an old name and its new one is refused."""
    values = dict(values)
    for old, new in RENAMED_KEYS.items():
        if old in values:
            if warn:
                warnings.warn(f"{where}: '{old}' is now '{new}'; the old name goes in the next release",
                              FutureWarning, stacklevel=3)
            if new in values:
                raise ValueError(f"{where}: both '{old}' and its new name '{new}' are given")
            values[new] = values.pop(old)
    return values


def model_config(cfg_cls: type, values: dict[str, Any], where: str = "model", warn: bool = True) -> Any:
    """``cfg_cls`` from ``values``: the one place a network config is built from data (presets,
    YAML overrides, checkpoints). Old key names are renamed (:func:`renamed_keys`; a checkpoint
    written before the rename is read with ``warn=False``), a seg-gcn ``knn_channels`` count ``n``
    becomes the range ``(0, n)``; then :func:`pointseg.config.from_dict` checks every value's type
    and choice (``Literal`` fields) and refuses unknown keys by name."""
    values = renamed_keys(values, where, warn)
    k = values.get("knn_channels")
    if isinstance(k, int) and not isinstance(k, bool):
        values["knn_channels"] = (0, k)
    return from_dict(cfg_cls, values, what=f"{where} key")


def preset_config(name: str, **overrides: Any) -> Any:
    entry = dict(_preset(name))
    cfg_cls = architecture(entry.pop("arch", DEFAULT_ARCHITECTURE)).config
    overrides = renamed_keys(overrides, f"model {name}")
    return model_config(cfg_cls, {**asdict(cfg_cls()), **entry, **overrides}, f"model {name}", warn=False)


def build_model(name: str, **overrides: Any) -> nn.Module:
    return architecture(preset_architecture(name)).model(preset_config(name, **overrides))
