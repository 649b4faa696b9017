"""Graph presets: data only. Each preset names the dataset it was made for (or ``None`` for a
generic preset whose input / output widths come from the dataset), the model overrides of
:class:`graphs.model.GraphNetConfig` and the training settings.

Parameter counts (trainable, GNN only for link prediction) are those of the DeepGCNs / DeeperGCN
reference models and are tested.
"""
from __future__ import annotations

import difflib
import warnings
from typing import Any

from pointseg.config import from_dict
from pointseg.models import count_parameters

from .model import GraphNet, GraphNetConfig

# RevGNN-Deep and -Wide on ogbn-proteins differ only in depth, width and dropout.
_REV_PROTEINS = dict(backbone="rev", groups=2, aggr="max", mlp_layers=2, norm="layer", conv_edge="linear",
                     edge_encoder="linear", edge_channels=8, node_encoder="linear", in_channels=16,
                     onehot_channels=8, out_channels=112)
_REV_PROTEINS_TRAIN = dict(lr=0.001, epochs=2000, parts=10, eval_parts=5)


# name -> {"dataset": str | None, "model": {...}, "train": {...}, "params": int | None}. Named apart from
# the segmentation presets (pointseg.models.PRESETS), whose names never repeat here.
GRAPH_PRESETS: dict[str, dict[str, Any]] = {
    "deepergcn-ogbn-proteins": dict(
        dataset="ogbn-proteins", params=2_374_568,
        model=dict(backbone="res+", layers=112, channels=64, aggr="softmax", learn_t=True, mlp_layers=2,
                   norm="layer", conv_edge="linear", edge_encoder="linear", edge_channels=8,
                   node_encoder="linear", in_channels=16, onehot_channels=8, out_channels=112, dropout=0.1),
        train=dict(lr=0.01, epochs=1000, parts=10, eval_parts=5)),
    "deepergcn-ogbn-products": dict(
        dataset="ogbn-products", params=253_743,
        model=dict(backbone="res+", layers=14, channels=128, aggr="softmax_sg", t=0.1, mlp_layers=1,
                   norm="batch", in_channels=100, out_channels=47, dropout=0.5),
        train=dict(lr=0.01, epochs=500, parts=10, eval_parts=10)),
    "deepergcn-ogbn-arxiv": dict(
        dataset="ogbn-arxiv", params=491_176,
        model=dict(backbone="res+", layers=28, channels=128, aggr="softmax_sg", t=0.1, mlp_layers=1,
                   norm="batch", in_channels=128, out_channels=40, dropout=0.5),
        train=dict(lr=0.01, epochs=500)),
    "deepergcn-ogbg-molhiv": dict(
        dataset="ogbg-molhiv", params=532_232,
        model=dict(backbone="res+", layers=7, channels=256, aggr="softmax", learn_t=True, mlp_layers=1,
                   norm="batch", conv_edge="bond", node_encoder="atom", in_channels=9, out_channels=1,
                   pool="mean", final_act=False, dropout=0.5),
        train=dict(lr=0.01, epochs=300, batch_size=32)),
    "deepergcn-ogbg-ppa": dict(
        dataset="ogbg-ppa", params=2_336_421,
        model=dict(backbone="res+", layers=28, channels=128, aggr="softmax_sg", t=0.01, mlp_layers=2,
                   norm="layer", conv_edge="linear", edge_encoder="linear", edge_channels=7,
                   in_channels=7, out_channels=37, pool="mean", final_act=False, dropout=0.5),
        train=dict(lr=0.01, epochs=200, batch_size=32)),
    "deepergcn-ogbl-collab": dict(
        dataset="ogbl-collab", params=117_383,
        model=dict(backbone="res+", layers=7, channels=128, aggr="softmax", learn_t=True, mlp_layers=1,
                   norm="batch", node_encoder="none", in_channels=128, head="none", dropout=0.0),
        train=dict(lr=0.001, epochs=400, batch_size=64 * 1024, predictor_layers=3)),
    "resmrgcn-28-ppi": dict(
        dataset="ppi", params=14_762_105,
        model=dict(backbone="res", conv="mr", layers=28, channels=256, norm="batch", node_encoder="none",
                   in_channels=50, out_channels=121, head="fusion", head_dropout=0.2),
        train=dict(lr=2e-3, epochs=2000, batch_size=1)),
    "densemrgcn-14-ppi": dict(
        dataset="ppi", params=53_417_593,
        model=dict(backbone="dense", conv="mr", layers=14, channels=256, norm="batch", node_encoder="none",
                   in_channels=50, out_channels=121, head="fusion", head_dropout=0.2),
        train=dict(lr=2e-3, epochs=2000, batch_size=1)),
    # RevGNN (grouped reversible GENConv stacks, activation memory independent of depth).
    "revgnn-deep-ogbn-proteins": dict(
        dataset="ogbn-proteins", params=20_031_384,
        model=dict(_REV_PROTEINS, layers=1001, channels=80, dropout=0.1), train=dict(_REV_PROTEINS_TRAIN)),
    "revgnn-wide-ogbn-proteins": dict(
        dataset="ogbn-proteins", params=68_471_608,
        model=dict(_REV_PROTEINS, layers=448, channels=224, dropout=0.2), train=dict(_REV_PROTEINS_TRAIN)),
    "revgcn-ogbn-arxiv": dict(
        dataset="ogbn-arxiv", params=262_056,
        model=dict(backbone="rev", layers=28, channels=128, groups=2, aggr="softmax_sg", t=0.1, mlp_layers=1,
                   norm="batch", in_channels=128, out_channels=40, dropout=0.5),
        train=dict(lr=0.01, epochs=500)),
    # RevGAT (ogbn-arxiv): GAT 168 -> 3 x 256, 3 reversible GAT layers (2 groups), GAT -> 40. The
    # 168 inputs are the 128 features + the 40-class one-hot of the training labels fed as input
    # (use_labels, one label-reuse iteration), trained as the reference run: RMSprop, 50-epoch warm-up,
    # log(eps + CE) loss.
    "revgat-ogbn-arxiv": dict(
        dataset="ogbn-arxiv", params=2_098_256,
        model=dict(backbone="rev", conv="gat", layers=3, channels=768, groups=2, heads=3, attn_dst=False,
                   gat_residual=True, gat_bias=False, sym_norm=True, edge_drop=0.3, norm="batch",
                   node_encoder="none", in_channels=168, out_channels=40, head="conv", dropout=0.75,
                   input_dropout=0.25),
        train=dict(lr=0.002, epochs=2000, optimizer="rmsprop", warmup_epochs=50, loss="log_ce",
                   use_labels=True, label_iters=1)),
    # Kipf & Welling (ICLR'17) on Planetoid, as published: GCN(dropout(x)) -> ReLU -> dropout -> GCN, 16 hidden
    # channels, dropout 0.5, no bias (their reference layers have none), Adam lr 0.01, L2 5e-4 on the first
    # layer only, 200 epochs; features row-normalised by the Planetoid task. Best epoch by validation accuracy.
    "gcn-2": dict(
        dataset=None, params=None,
        model=dict(backbone="plain", conv="gcn", layers=1, channels=16, node_encoder="none", input_dropout=0.5,
                   norm="none", act="relu", dropout=0.5, head="conv", gcn_bias=False),
        train=dict(lr=0.01, epochs=200, weight_decay=5e-4, weight_decay_scope="first")),
    # GIN on TU graph classification as Errica et al. (ICLR'20, "A Fair Comparison of Graph Neural Networks for
    # Graph Classification") train it: a 2-layer MLP on the node inputs, 4 GIN layers of 64 channels (sum
    # aggregation, learnable eps, MLPs Linear-BN-ReLU x 2), sum readout of every layer with dropout 0.5; Adam lr 0.01
    # halved every 50 epochs, batch 32, at most 1000 epochs, early stopping after 500 epochs without a better
    # validation accuracy. One point of their grid (batch {32, 128}, 4x64 / 4x32 / 1x64 / 2x32 layers, eps learnt
    # or not, sum / mean readout, dropout {0, 0.5}); they select it per fold, here it is fixed.
    "gin-tu": dict(
        dataset=None, params=None,
        model=dict(backbone="gin", conv="gin", layers=4, channels=64, gin_mlp_layers=2, train_eps=True,
                   norm="batch", act="relu", node_encoder="none", head="layer_sum", pool="mean", dropout=0.5),
        train=dict(lr=0.01, epochs=1000, batch_size=32, lr_step=50, lr_gamma=0.5, patience=500)),
    # DeeperGCN's ogbg-molhiv model (the deepergcn-ogbg-molhiv recipe, ROC-AUC 0.786 there) sized from the data:
    # the default for MoleculeNet-style CSV files (532,232 parameters for one target).
    "deepergcn-mol": dict(
        dataset=None, params=None,
        model=dict(backbone="res+", layers=7, channels=256, aggr="softmax", learn_t=True, mlp_layers=1,
                   norm="batch", pool="mean", final_act=False, dropout=0.5),
        train=dict(lr=0.01, epochs=300, batch_size=32)),
    # Generic presets: widths (and encoders) come from the dataset (graphs.tasks.Task.model_config).
    "deepergcn": dict(
        dataset=None, params=None,
        model=dict(backbone="res+", layers=7, channels=128, aggr="softmax", learn_t=True, mlp_layers=1,
                   norm="batch", dropout=0.5),
        train=dict(lr=0.01, epochs=200, batch_size=32, parts=10, eval_parts=10)),
    "revgnn": dict(
        dataset=None, params=None,
        model=dict(backbone="rev", layers=7, channels=64, groups=2, aggr="softmax", learn_t=True, mlp_layers=1,
                   norm="layer", dropout=0.1),
        train=dict(lr=0.01, epochs=200, batch_size=32, parts=10, eval_parts=10)),
    "resgcn-7-graph": dict(
        dataset=None, params=None,
        model=dict(backbone="res", layers=7, channels=64, aggr="mean", mlp_layers=1, norm="batch", dropout=0.5),
        train=dict(lr=0.01, epochs=200, batch_size=32, parts=10, eval_parts=10)),
}


# The preset used when ``--preset`` is omitted, per dataset family (a preset made for exactly the dataset wins).
FAMILY_DEFAULTS = {"planetoid": "gcn-2", "ppi": "resmrgcn-28-ppi", "ogbn": "deepergcn", "ogbg": "deepergcn",
                   "ogbl": "deepergcn", "tu": "gin-tu", "csv": "deepergcn-mol"}


def default_preset(dataset: str, family: str) -> str:
    """The preset made for ``dataset`` if there is one (the first listed), else the family's default."""
    for name, p in GRAPH_PRESETS.items():
        if p["dataset"] is not None and p["dataset"].lower() == dataset.lower():
            return name
    return FAMILY_DEFAULTS[family]


# Old names, accepted with a warning for one release.
RENAMED = {"resgcn-7": "resgcn-7-graph"}     # the segmentation preset resgcn-7 is another network


def get_preset(name: str) -> dict[str, Any]:
    key = name.lower()
    if key in RENAMED:
        warnings.warn(f"graph preset {name!r} is now {RENAMED[key]!r} (the segmentation preset of that "
                      "name is another network); the old name goes in the next release", FutureWarning,
                      stacklevel=2)
        key = RENAMED[key]
    if key not in GRAPH_PRESETS:
        close = difflib.get_close_matches(key, GRAPH_PRESETS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown graph preset {name!r}{hint} (known: {', '.join(GRAPH_PRESETS)})")
    return GRAPH_PRESETS[key]


def preset_model_config(name: str, **overrides: Any) -> GraphNetConfig:
    return from_dict(GraphNetConfig, {**get_preset(name)["model"], **overrides}, what="graph model option")


def build_preset(name: str, **overrides: Any) -> GraphNet:
    return GraphNet(preset_model_config(name, **overrides))


def preset_parameter_count(name: str) -> int | None:
    """Trainable parameters of a fixed-dataset preset (None for generic presets)."""
    if get_preset(name)["dataset"] is None:
        return None
    return count_parameters(build_preset(name))
