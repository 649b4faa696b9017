"""``deepgcns``: the checkpoint the official DeepGCNs code writes (github.com/lightaime/deep_gcns_torch,
``examples/sem_seg_dense/train.py``): a dict with ``epoch``, ``state_dict`` (``module.`` prefix
optional), ``best_value`` and optionally ``optimizer_state_dict`` / ``scheduler_state_dict``
(ignored). A bare state dict is accepted too.

The network is ``DenseDeepGCN``: ``head.gconv.nn.{0,2}`` (EdgeConv: 1x1 conv with bias, ReLU,
BatchNorm), ``backbone.i.body.gconv.nn.{0,2}``, ``fusion_block.{0,2}``, ``prediction.{0,1}.{0,2}``
and ``prediction.3.0`` (the classifier, after dropout). Its edge features are
``[x_i, x_j - x_i]``, the order of pointseg's EdgeConv, and its layer order conv -> ReLU -> BN
is ``SegGCN``'s default, so weights map without permutation.

Depth is the number of backbone blocks + 1 and width the head's output channels; ``dense`` is
recognised from backbone inputs that grow by the width per block. ``res`` and ``plain`` blocks
hold identical tensors, so the shapes cannot tell them apart: ``res`` is assumed (the published
ResGCN-28) unless ``backbone="plain"`` is given.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..classes import S3DIS
from ..data.recipe import S3DIS_RECIPE
from ..models import SegGCN, preset_config
from .importer import ImportResult, Importer
from .strict import TensorMap, apply_map, check_sources, strip_prefix

WHAT = "a DenseDeepGCN checkpoint (deep_gcns_torch sem_seg_dense)"
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
IGNORED = ("optimizer_state_dict", "scheduler_state_dict", "optimizer", "scheduler")
PRESET_OF = {"res": "resgcn-28", "plain": "plaingcn-28", "dense": "densegcn-28"}


def _conv_block(tm: TensorMap, target: str, source: str) -> None:
    """A reference ``BasicConv`` (conv ``.0`` with bias, ReLU ``.1``, BatchNorm ``.2``)."""
    tm.add(f"{target}.lin.weight", f"{source}.0.weight")
    tm.add(f"{target}.lin.bias", f"{source}.0.bias")
    for f in BN_FIELDS:
        tm.add(f"{target}.norm.norm.{f}", f"{source}.2.{f}")


def tensor_map(n_backbone: int) -> TensorMap:
    tm = TensorMap()
    _conv_block(tm, "head.mlp", "head.gconv.nn")
    for i in range(n_backbone):
        _conv_block(tm, f"backbone.{i}.conv.mlp", f"backbone.{i}.body.gconv.nn")
    _conv_block(tm, "fusion.0", "fusion_block")
    _conv_block(tm, "prediction.0", "prediction.0")
    _conv_block(tm, "prediction.1", "prediction.1")
    tm.add("prediction.3.lin.weight", "prediction.3.0.weight")
    tm.add("prediction.3.lin.bias", "prediction.3.0.bias")
    return tm


def _state_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"holds a {type(obj).__name__}, not {WHAT}")
    if "state_dict" in obj:
        extra = [k for k in obj if k not in ("state_dict", "epoch", "best_value", *IGNORED)]
        if extra:
            raise ValueError(f"checkpoint entry {extra[0]!r} does not fit {WHAT}")
        obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ValueError(f"'state_dict' holds a {type(obj).__name__}, not a state dict")
    return strip_prefix(obj)


def infer_architecture(state: dict[str, Any], block: str | None) -> dict[str, Any]:
    idx = sorted({int(m.group(1)) for k in state if (m := re.match(r"backbone\.(\d+)\.", k))})
    if idx != list(range(len(idx))):
        raise ValueError(f"backbone blocks are numbered {idx[:5]}..., expected 0..{len(idx) - 1}")
    head = state.get("head.gconv.nn.0.weight")
    if head is None:
        first = next(iter(state), None)
        raise ValueError(f"source key {first!r} does not fit {WHAT} (no 'head.gconv.nn.0.weight')")
    width, in_channels = int(head.shape[0]), int(head.shape[1]) // 2
    ins = [int(state[f"backbone.{i}.body.gconv.nn.0.weight"].shape[1]) // 2 for i in idx
           if f"backbone.{i}.body.gconv.nn.0.weight" in state]
    dense = len(ins) > 1 and all(c == width * (i + 1) for i, c in enumerate(ins))
    inferred = "dense" if dense else "res"
    if block is not None:
        if block not in PRESET_OF:
            raise ValueError(f"--block must be one of {sorted(PRESET_OF)}, got {block!r}")
        if (block == "dense") != dense:
            raise ValueError(f"--block {block} contradicts the tensor shapes (they say "
                             f"{'dense' if dense else 'res or plain'})")
        inferred = block
    num_classes = int(state["prediction.3.0.weight"].shape[0]) if "prediction.3.0.weight" in state else 0
    fusion = int(state["fusion_block.0.weight"].shape[0]) if "fusion_block.0.weight" in state else 1024
    return dict(block=inferred, layers=len(idx) + 1, channels=width, in_channels=in_channels,
                num_classes=num_classes, fusion_channels=fusion, block_given=block is not None)


def convert(obj: Any, options: dict[str, Any]) -> ImportResult:
    state = _state_dict(obj)
    arch = infer_architecture(state, options.get("block"))
    tm = tensor_map(arch["layers"] - 1)
    check_sources(state, tm, WHAT)
    if arch["num_classes"] != S3DIS.num_classes:
        raise ValueError(f"source key 'prediction.3.0.weight' predicts {arch['num_classes']} classes; "
                         f"the S3DIS class table of this format has {S3DIS.num_classes}")
    k = int(options.get("k") or 16)
    preset = PRESET_OF[arch["block"]]
    cfg = preset_config(preset, backbone=arch["block"], layers=arch["layers"], channels=arch["channels"],
                        in_channels=arch["in_channels"], out_channels=arch["num_classes"],
                        fusion_channels=arch["fusion_channels"], k=k)
    model = SegGCN(cfg)
    model.load_state_dict(apply_map(state, tm, model.state_dict(), WHAT))
    name = {"res": "ResGCN", "plain": "PlainGCN", "dense": "DenseGCN"}[arch["block"]]
    how = "given" if arch["block_given"] else ("inferred" if arch["block"] == "dense"
                                               else "assumed: res and plain have the same tensors; "
                                                    "pass --block plain for a PlainGCN")
    spec = replace(S3DIS_RECIPE, knn_channels=tuple(range(*cfg.knn_channels))).to_spec()
    provenance = {"project": "DeepGCNs (github.com/lightaime/deep_gcns_torch)", "network": "DenseDeepGCN",
                  "licence": "see the DeepGCNs authors' release of these weights (not recorded in the file)",
                  "epoch": int(obj.get("epoch", -1)) if isinstance(obj, dict) and "state_dict" in obj else None}
    summary = [f"{name}-{arch['layers']}: block {arch['block']} ({how}), depth {arch['layers']}, "
               f"width {arch['channels']}, {arch['in_channels']} inputs, {arch['num_classes']} classes, k={k}"]
    return ImportResult(f"{name.lower()}-{arch['layers']}", model.eval(), S3DIS, spec, provenance, summary)


IMPORTER = Importer("deepgcns", "checkpoint of deep_gcns_torch examples/sem_seg_dense/train.py (DenseDeepGCN)",
                    convert)
