"""Segmentation checkpoints: the payload a segmentation model is saved with (preset, model config,
weights, class table, the input recipe), the bundled ones by name, and rebuilding a model from one.
The format itself (atomic writes, ``weights_only`` reading, training state) is the engine's
(:mod:`pointseg.engine.checkpoint`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..classes import ClassTable
from ..data.recipe import BlockRecipe
from ..engine.checkpoint import load_checkpoint as load_checkpoint_file


def model_payload(preset: str, model: torch.nn.Module, classes: ClassTable,
                  input_spec: dict[str, Any]) -> dict[str, Any]:
    net = model.module if hasattr(model, "module") else model
    cfg = net.cfg  # SegGCN / DGCNN config dataclass
    state = net.state_dict()
    return {
        "kind": "segmentation",
        "architecture": getattr(net, "architecture", "seg-gcn"),
        "preset": preset,
        "model_config": asdict(cfg),
        "model": state,
        "classes": classes.to_dict(),
        "input": input_spec,
    }


def check_input_recipe(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> BlockRecipe:
    """The checkpoint's input recipe, refused (naming the field) when this pointseg cannot make it."""
    return BlockRecipe.from_spec(ckpt.get("input", {}), str(path))


def sliding_for(ckpt: dict[str, Any], sliding: Any = None) -> Any:
    """The sliding-block settings for a checkpoint: what the caller left unset (``None``) comes
    from its input recipe (block size, points per block, stride)."""
    from dataclasses import replace
    from .inference import SlidingConfig
    sliding = sliding or SlidingConfig()
    recipe = check_input_recipe(ckpt)
    changes = {name: getattr(recipe, name) for name in ("block_size", "num_points", "stride")
               if getattr(sliding, name) is None}
    return replace(sliding, **changes) if changes else sliding


# Checkpoints shipped in pointseg/assets, by the name ``--checkpoint`` accepts.
NAMED_CHECKPOINTS: dict[str, str] = {
    "dgcnn-s3dis": "dgcnn_s3dis_area5.pt",        # dgcnn.pytorch fold 5 (Area 5 held out), MIT
    "resgcn7-synthetic": "demo_checkpoint.pt",    # ResGCN-7 trained on synthetic rooms only
}


@dataclass
class LoadedModel:
    """A segmentation checkpoint ready to run: the network on ``device``, its class table and the
    checkpoint dict (input recipe, preset, provenance)."""

    network: torch.nn.Module
    classes: ClassTable
    ckpt: dict[str, Any]
    device: torch.device


def load_model(checkpoint: str | Path, device: str = "auto", expect_classes: ClassTable | None = None
               ) -> LoadedModel:
    """The checkpoint (a path or a bundled name) built and on ``device`` (``--device``: auto, cpu,
    cuda, cuda:N); ``expect_classes``: refuse a model trained for another class table."""
    from ..engine.device import resolve_device
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location=dev)
    model, classes = build_from_checkpoint(ckpt, checkpoint, expect_classes=expect_classes)
    return LoadedModel(model.to(dev), classes, ckpt, dev)


def load_checkpoint(name_or_path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint file, or a bundled one by name (``NAMED_CHECKPOINTS``), read safely."""
    try:
        return load_checkpoint_file(resolve_checkpoint(name_or_path), map_location)
    except FileNotFoundError as e:      # the engine's refusal, with the names a user may give instead
        raise FileNotFoundError(f"{e} (bundled by name: {', '.join(NAMED_CHECKPOINTS)})") from None


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A bundled checkpoint's path for a name of ``NAMED_CHECKPOINTS``, else the path itself."""
    key = str(name_or_path)
    if key in NAMED_CHECKPOINTS and not Path(key).exists():
        from ..assets import asset
        return asset(NAMED_CHECKPOINTS[key])
    return Path(name_or_path)


def build_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint",
                          expect_classes: ClassTable | None = None,
                          expect_preset: str | None = None):
    """Rebuild the segmentation model of a checkpoint (weights loaded, eval mode)."""
    from ..models import architecture, model_config
    if ckpt.get("kind") != "segmentation":
        raise ValueError(f"{path}: holds a {ckpt.get('kind')!r} model, not a segmentation model")
    missing = [k for k in ("model", "classes", "model_config") if not isinstance(ckpt.get(k), dict)]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(repr(k) for k in missing)} (or holds "
                         "something else there); not a usable segmentation checkpoint")
    try:
        classes = ClassTable.from_dict(ckpt["classes"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: checkpoint class table is malformed: {e}") from None
    if expect_classes is not None and classes.names != expect_classes.names:
        raise ValueError(f"{path}: trained for {classes.num_classes} classes {list(classes.names)}, "
                         f"but {expect_classes.num_classes} classes {list(expect_classes.names)} are expected")
    if expect_preset is not None and ckpt["preset"] != expect_preset:
        raise ValueError(f"{path}: holds preset {ckpt['preset']!r}, expected {expect_preset!r}")
    arch = architecture(str(ckpt.get("architecture", "seg-gcn")))
    check_input_recipe(ckpt, path)
    try:
        # checkpoints written before the one vocabulary are read as they are (no warning)
        cfg = model_config(arch.config, ckpt["model_config"], str(path), warn=False)
        model = arch.model(cfg)
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: model config/weights do not fit this pointseg: {str(e).splitlines()[0]}") from None
    if cfg.out_channels != classes.num_classes:
        raise ValueError(f"{path}: model predicts {cfg.out_channels} classes but its class table has "
                         f"{classes.num_classes}")
    return model.eval(), classes
