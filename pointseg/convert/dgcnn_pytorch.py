"""``dgcnn-pytorch``: the state dict of ``DGCNN_semseg_s3dis`` (github.com/AnTao97/dgcnn.pytorch).

Source layout (``module.`` prefix from ``DataParallel`` optional): ``convI.0.weight`` the 1x1
conv (``I = 1..9``; ``conv9`` alone, without BatchNorm), ``convI.1.*`` its BatchNorm, and the same
BatchNorm again as ``bnI.*`` (one module reachable from two attributes): the copies must be equal.
The edge features of that code are ``[x_j - x_i, x_i]``, the order of pointseg's DGCNN, so
weights map without permutation.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..classes import S3DIS
from ..data.recipe import S3DIS_RECIPE
from ..models import DGCNN, DGCNNConfig
from .importer import ImportResult, Importer
from .strict import TensorMap, apply_map, check_sources, strip_prefix

WHAT = "a DGCNN_semseg_s3dis state dict (dgcnn.pytorch)"
BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# source conv index -> pointseg module path of the ConvNormAct it is
LAYERS = {1: "stages.0.layers.0", 2: "stages.0.layers.1", 3: "stages.1.layers.0",
          4: "stages.1.layers.1", 5: "stages.2.layers.0", 6: "embed", 7: "head.0", 8: "head.1"}



def tensor_map() -> TensorMap:
    tm = TensorMap()
    for i, path in LAYERS.items():
        tm.add(f"{path}.lin.weight", f"conv{i}.0.weight")
        for f in BN_FIELDS:
            tm.add(f"{path}.norm.norm.{f}", f"conv{i}.1.{f}")
            tm.duplicates[f"bn{i}.{f}"] = f"conv{i}.1.{f}"
    tm.add("classifier.weight", "conv9.weight")
    return tm


def convert(obj: Any, options: dict[str, Any]) -> ImportResult:
    if not isinstance(obj, dict):
        raise ValueError(f"holds a {type(obj).__name__}, not {WHAT}")
    state = strip_prefix(obj)
    tm = tensor_map()
    check_sources(state, tm, WHAT)
    num_classes = int(state["conv9.weight"].shape[0])
    if num_classes != S3DIS.num_classes:
        raise ValueError(f"source key 'conv9.weight' predicts {num_classes} classes; the S3DIS class table "
                         f"of this format has {S3DIS.num_classes}")
    cfg = DGCNNConfig(in_channels=int(state["conv1.0.weight"].shape[1]) // 2, out_channels=num_classes,
                      k=int(options.get("k") or 20), emb_channels=int(state["conv6.0.weight"].shape[0]))
    model = DGCNN(cfg)
    model.load_state_dict(apply_map(state, tm, model.state_dict(), WHAT))
    # dgcnn.pytorch trains on the S3DIS HDF5 block release
    spec = replace(S3DIS_RECIPE, knn_channels=tuple(range(*cfg.knn_channels))).to_spec()
    provenance = {"project": "dgcnn.pytorch (github.com/AnTao97/dgcnn.pytorch)", "network": "DGCNN_semseg_s3dis",
                  "licence": "MIT, copyright 2020 An Tao (pointseg/assets/LICENSE-dgcnn)"}
    return ImportResult("dgcnn", model.eval(), S3DIS, spec, provenance,
                        [f"DGCNN_semseg_s3dis: k={cfg.k}, emb {cfg.emb_channels}, {cfg.in_channels} inputs, "
                         f"{num_classes} classes; {len(state)} source tensors mapped "
                         f"({len(tm.duplicates)} BatchNorm duplicates checked equal)"])


IMPORTER = Importer("dgcnn-pytorch", "state dict of DGCNN_semseg_s3dis (dgcnn.pytorch, e.g. model_5.t7)", convert)
