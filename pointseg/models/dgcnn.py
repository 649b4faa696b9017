r"""DGCNN for point-cloud semantic segmentation (the S3DIS network of dgcnn.pytorch), from ``pointseg.nn``.

Input ``(B, C_in, N)`` (S3DIS: the nine block channels), output logits ``(B, num_classes, N)``:

1. three EdgeConv stages (:class:`~pointseg.nn.EdgeMLPConv`, edge feature ``[x_j - x_i, x_i]``),
   each on the kNN graph (``k`` neighbours, the point itself included) of its own input; the first
   stage's kNN is computed on the channel slice ``knn_slice`` (the room-normalised xyz, channels
   6-8, for S3DIS); edge MLPs ``[64, 64]``, ``[64, 64]``, ``[64]``; max over neighbours;
2. ``conv6``: 1x1 conv of the concatenated stage outputs (192) to ``emb_channels``, global max
   over points;
3. ``conv7`` on ``[global repeated; stage outputs]`` -> 512, ``conv8`` -> 256, dropout,
   ``conv9`` -> classes (no bias, no norm).

Every layer is conv (no bias) -> BatchNorm -> LeakyReLU(0.2). ``conv7``'s input repeats one
global vector on every point, so (``split_global=True``) :math:`W[g; x_i] = W_g g + W_x x_i` with
:math:`W_g g` computed once per cloud: identical values and gradients, BatchNorm statistics
unchanged, ``(B, 1216, N)`` never formed.

``forward(x, neighbours=None)``: ``neighbours`` may give the three stages' neighbour indices
``[(B, N, k)] * 3`` instead of computing them (to reproduce another implementation's exact graph,
e.g. at distance ties).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn import ConvNormAct, DilatedKnn, Pointwise
from ..nn.checks import check_features
from ..nn.edge_mlp_conv import EdgeMLPConv
from ..nn.mlp import pointwise_linear


@dataclass
class DGCNNConfig:
    """Architecture of the DGCNN segmentation network; the ``dgcnn`` preset is the defaults."""

    in_channels: int = 9
    num_classes: int = 13
    k: int = 20
    knn_slice: tuple[int, int] = (6, 9)       # channels [start, stop) the first stage's kNN uses
    stages: tuple[tuple[int, ...], ...] = ((64, 64), (64, 64), (64,))
    emb_channels: int = 1024
    head_channels: tuple[int, ...] = (512, 256)
    dropout: float = 0.5
    act: str = "leakyrelu"
    norm: str = "batch"
    bias: bool = False
    order: str = "conv-norm-act"
    split_global: bool = True                # W_g g once per cloud in conv7 (see module doc)
    knn_backend: str = "torch"


class DGCNN(nn.Module):
    architecture = "dgcnn"

    def __init__(self, cfg: DGCNNConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = cfg or DGCNNConfig()
        if overrides:
            cfg = DGCNNConfig(**{**cfg.__dict__, **overrides})
        cfg.knn_slice = tuple(int(v) for v in cfg.knn_slice)
        cfg.stages = tuple(tuple(int(c) for c in s) for s in cfg.stages)
        cfg.head_channels = tuple(int(c) for c in cfg.head_channels)
        self.cfg = cfg
        lo, hi = cfg.knn_slice
        if not 0 <= lo < hi <= cfg.in_channels:
            raise ValueError(f"knn_slice must satisfy 0 <= start < stop <= in_channels={cfg.in_channels}, "
                             f"got {cfg.knn_slice}")
        if not cfg.stages or not cfg.head_channels:
            raise ValueError("DGCNN needs at least one EdgeConv stage and one head layer")
        kw = dict(act=cfg.act, norm=cfg.norm, bias=cfg.bias, order=cfg.order)
        self.knn = DilatedKnn(cfg.k, 1, backend=cfg.knn_backend)
        self.stages = nn.ModuleList()
        width = cfg.in_channels
        for widths in cfg.stages:
            self.stages.append(EdgeMLPConv(width, widths, aggr="max", edge_order="diff-first", **kw))
            width = widths[-1]
        self.feature_channels = sum(s[-1] for s in cfg.stages)
        self.embed = ConvNormAct(self.feature_channels, cfg.emb_channels, **kw)               # conv6
        head = [cfg.emb_channels + self.feature_channels, *cfg.head_channels]
        self.head = nn.ModuleList(ConvNormAct(head[i], head[i + 1], **kw) for i in range(len(head) - 1))
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = Pointwise(head[-1], cfg.num_classes, bias=cfg.bias)                 # conv9

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def graphs(self, x: Tensor) -> list[Tensor]:
        """The neighbour indices each stage would use, computed stage by stage (eval semantics)."""
        out = []
        h = x
        lo, hi = self.cfg.knn_slice
        for i, stage in enumerate(self.stages):
            g = self.knn(h[:, lo:hi] if i == 0 else h)
            out.append(g)
            h = stage(h, g)
        return out

    def features(self, x: Tensor, neighbours: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Per-stage point features ``[(B, C_s, N)]``."""
        if neighbours is not None and len(neighbours) != len(self.stages):
            raise ValueError(f"neighbours must hold {len(self.stages)} index tensors, got {len(neighbours)}")
        lo, hi = self.cfg.knn_slice
        feats = []
        h = x
        for i, stage in enumerate(self.stages):
            if neighbours is not None:
                g = neighbours[i]
            else:
                g = self.knn(h[:, lo:hi] if i == 0 else h)
            h = stage(h, g)
            feats.append(h)
        return feats

    def _first_head_layer(self, glob: Tensor, feats: Tensor) -> Tensor:
        """conv7 on ``[glob repeated; feats]``: ``glob (B, E, 1)``, ``feats (B, F, N)``."""
        layer = self.head[0]
        if not self.cfg.split_global:
            return layer(torch.cat([glob.expand(-1, -1, feats.shape[2]), feats], dim=1))
        w = layer.lin.weight
        e = glob.shape[1]
        const = pointwise_linear(glob, w[:, :e], layer.lin.bias)           # (B, out, 1): once per cloud
        return layer.post(pointwise_linear(feats, w[:, e:], None) + const)

    def forward(self, x: Tensor, neighbours: Sequence[Tensor] | None = None) -> Tensor:
        check_features(x, "x", dims=(3,))
        if x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"x must have {self.cfg.in_channels} channels (B, C, N), got shape {tuple(x.shape)}")
        feats = torch.cat(self.features(x, neighbours), dim=1)
        glob = self.embed(feats).amax(dim=2, keepdim=True)
        h = self._first_head_layer(glob, feats)
        for layer in self.head[1:]:
            h = layer(h)
        return self.classifier(self.dropout(h))
