"""``init:`` — start training from a segmentation checkpoint (fine-tuning) and ``freeze:``.

Every tensor of the new model whose name and shape match the checkpoint's is loaded; the rest
keep their fresh initialisation and are named (typically the classifier when the class count
differs: 13 S3DIS classes -> the user's). Only segmentation checkpoints are accepted, read with
``weights_only`` loading like every checkpoint (:func:`pointseg.engine.checkpoint.load_checkpoint`).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint

# ``freeze: [backbone]``: everything but the per-point prediction MLP, by architecture.
PREDICTION_PREFIXES: dict[str, tuple[str, ...]] = {"seg-gcn": ("prediction.",), "dgcnn": ("head.", "classifier.")}


def load_init(name: str, preset: str) -> dict[str, Any]:
    """The ``init`` checkpoint (a path or a bundled name) for the config's model ``preset``,
    refused in one line unless it holds a segmentation model of the same architecture (checked
    before any data is read, so nothing is written)."""
    from ..models.presets import preset_architecture
    ckpt = load_checkpoint(name)
    if ckpt.get("kind") != "segmentation" or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"config init={name!r}: holds a {ckpt.get('kind')!r} checkpoint, not a segmentation "
                         "model; init needs a segmentation checkpoint (pointseg train / import, or "
                         "dgcnn-s3dis, resgcn7-synthetic)")
    _check_architecture(ckpt, preset_architecture(preset), name)
    return ckpt


def _check_architecture(ckpt: dict[str, Any], arch: str, name: str) -> None:
    theirs = str(ckpt.get("architecture", "seg-gcn"))
    if theirs != arch:
        raise ValueError(f"config init={name!r}: holds a {ckpt.get('preset')!r} model ({theirs}), the config's "
                         f"model is a {arch} network; set model: {ckpt.get('preset')}")


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"


def init_from(model: nn.Module, ckpt: dict[str, Any], name: str) -> tuple[list[str], dict[str, Any]]:
    """Load the tensors of ``ckpt`` that fit ``model``; returns the lines to print and a record
    for the checkpoint (``kept`` count, ``reinitialised`` names)."""
    _check_architecture(ckpt, getattr(model, "architecture", "seg-gcn"), name)
    src: dict[str, torch.Tensor] = ckpt["model"]
    own = model.state_dict()
    state, kept, fresh = dict(own), [], []
    for k, v in own.items():
        s = src.get(k)
        if isinstance(s, torch.Tensor) and s.shape == v.shape:
            state[k] = s.to(v.dtype)
            kept.append(k)
        else:
            fresh.append(f"{k} ({_shape(s) if isinstance(s, torch.Tensor) else 'absent'} -> {_shape(v)})")
    if not kept:
        raise ValueError(f"config init={name!r}: no tensor of the checkpoint fits the config's model "
                         f"({ckpt.get('preset')!r} weights)")
    model.load_state_dict(state)
    loaded = sum(own[k].numel() for k in kept if own[k].is_floating_point())
    lines = [f"init {name}: {len(kept)} of {len(own)} tensors loaded ({loaded:,} values), "
             f"{len(fresh)} re-initialised" + (": " + ", ".join(fresh) if fresh else "")]
    unused = [k for k in src if k not in own]
    if unused:
        lines.append(f"init {name}: {len(unused)} checkpoint tensor(s) have no place in this model: "
                     + ", ".join(unused[:5]) + (" ..." if len(unused) > 5 else ""))
    record = {"checkpoint": name, "preset": ckpt.get("preset"), "kept": len(kept),
              "reinitialised": [f.split(" ")[0] for f in fresh], "provenance": ckpt.get("provenance", {})}
    return lines, record


def freeze(model: nn.Module, prefixes: list[str]) -> str:
    """Stop gradients of the parameters under ``prefixes`` (``backbone``: all but the prediction
    MLP); BatchNorm statistics still follow the new data. Returns the line to print."""
    arch = getattr(model, "architecture", "seg-gcn")
    head = PREDICTION_PREFIXES.get(arch, ())
    names = [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if p != "backbone" and not any(n.startswith(p) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ValueError(f"config freeze: {p!r} names no parameter (top-level names: {', '.join(tops)}; "
                             "or 'backbone')")
    count = 0
    for n, par in model.named_parameters():
        if any((p == "backbone" and not n.startswith(head)) or (p != "backbone" and n.startswith(p))
               for p in prefixes):
            par.requires_grad_(False)
            count += par.numel()
    return f"freeze {', '.join(prefixes)}: {count:,} parameters fixed"
