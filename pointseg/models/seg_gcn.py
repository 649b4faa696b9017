r"""DeepGCN for point-cloud semantic segmentation (the reference ``sem_seg_dense`` network):
see :class:`SegGCN` for the architecture.

The fusion part of the prediction input is the same for every point of a cloud, so the first
prediction layer computes ``W [f; x] + b = (W_f f + b) + W_x x`` with ``W_f f + b`` once per cloud
(``(B, 512, 1)``, broadcast over the points inside the batched GEMM) instead of concatenating a
``(B, 1024 + C, N)`` tensor: exact (the sum is the pre-activation, before ReLU and BatchNorm),
the same weight tensor and state-dict keys, about a third fewer FLOPs in that layer forward and
backward. ``split_global = False`` selects the concatenated form (the reference benchmark uses it).

Every layer is conv -> ReLU -> BatchNorm as in the reference (``order="conv-norm-act"`` selects
BatchNorm before ReLU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..nn import GCNBlock, DilatedKnn, MLP, make_conv
from ..nn.checks import check_features, trusted_inputs
from ..nn.global_max import GlobalMax
from ..nn.mlp import ConvNormAct


@dataclass
class SegGCNConfig:
    """Architecture of a segmentation DeepGCN; presets in ``pointseg.models.presets``."""

    # The graph networks' vocabulary (graphs.model.GraphNetConfig): backbone, layers, out_channels,
    # weight_tied; the old names (block, n_blocks, num_classes, rev_tied) are read by
    # pointseg.models.model_config.
    backbone: Literal["plain", "res", "dense", "rev"] = "res"   # rev: reversible (pointseg.nn.reversible)
    layers: int = 28              # head + layers - 1 backbone blocks
    channels: int = 64
    conv: Literal["edge", "mr", "sage", "gin", "gen", "gat", "gcn"] = "edge"
    k: int = 16
    act: str = "relu"
    norm: str = "batch"
    bias: bool = True
    order: Literal["conv-act-norm", "conv-norm-act"] = "conv-act-norm"
    stochastic: bool = True
    epsilon: float = 0.2
    dropout: float = 0.3
    in_channels: int = 9
    out_channels: int = 13        # classes
    knn_channels: tuple[int, int] = (0, 3)   # input channels [start, stop) the head's kNN is computed on
    fusion_channels: int = 1024
    knn_backend: Literal["torch", "cluster"] = "torch"
    groups: int = 2               # channel groups of reversible blocks
    rev_norm: str = "layer"       # norm inside reversible branches (BatchNorm is refused there)
    weight_tied: bool = False     # weight-tied reversible backbone (one set of branch weights)


class SegGCN(nn.Module):
    r"""The DeepGCNs segmentation network ("DeepGCNs: Can GCNs Go as Deep as CNNs?", the
    ``sem_seg_dense`` reference): a head convolution, ``L - 1 = layers - 1`` dynamic GCN blocks,
    a global fusion and a point-wise prediction MLP:

    .. math::
        h^0 = \mathrm{conv}\big(x, \mathcal{G}_{k}(x_{:3})\big), \qquad
        h^l = \mathcal{F}_l\big(h^{l-1}, \mathcal{G}_{k, d_l}(h^{l-1})\big) \;
        \begin{cases} + \, h^{l-1} & \text{res} \\ \| \, h^{l-1} & \text{dense} \end{cases}

    .. math::
        g = \max_{n} \mathrm{MLP}_{\text{fuse}}\big([h^0 \| \dots \| h^{L-1}]\big)_n, \qquad
        y_n = \mathrm{MLP}_{\text{pred}}\big([g \,\|\, h^0_n \| \dots \| h^{L-1}_n]\big)

    where :math:`\mathcal{G}_{k,d}(h)` is the dilated kNN graph recomputed on each block's input
    (dilation :math:`d_l = l` for ``res`` / ``dense`` and reversible backbones, 1 for ``plain``;
    stochastic dilation with probability ``epsilon`` in training), ``conv`` is the chosen
    convolution (EdgeConv by default), :math:`\mathrm{MLP}_{\text{fuse}}` maps to
    ``fusion_channels`` (1024) and :math:`\mathrm{MLP}_{\text{pred}}` is 512 -> 256 -> dropout ->
    classes. With ``backbone="rev"`` the fusion sees only :math:`h^0` and the last block's output (the
    "rev fusion" deviation: no other block output stays alive).

    Args:
        cfg: the architecture (:class:`SegGCNConfig`: block kind, depth ``layers``, width
            ``channels``, ``conv``, ``k``, act / norm / order, ``epsilon``, ``dropout``,
            ``in_channels``, ``out_channels``, ...); None: the ResGCN-28 defaults.
        **overrides: fields of :class:`SegGCNConfig` replacing those of ``cfg``.

    Shapes:
        - **input:** ``x (B, in_channels, N)`` (S3DIS: the 9 block channels; the first
          ``knn_channels`` are the coordinates of the head's kNN)
        - **output:** per-point logits ``(B, out_channels, N)``
    """

    architecture = "seg-gcn"      # the name checkpoints record (pointseg.models.presets.ARCHITECTURES)
    # W_f f computed once per cloud (see the module docstring); False: the concatenated input
    split_global: bool = True

    def __init__(self, cfg: SegGCNConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = cfg or SegGCNConfig()
        if overrides:
            cfg = SegGCNConfig(**{**cfg.__dict__, **overrides})
        self.cfg = cfg
        if cfg.layers < 1:
            raise ValueError(f"layers must be >= 1, got {cfg.layers}")
        cfg.knn_channels = tuple(int(v) for v in cfg.knn_channels)
        lo, hi = cfg.knn_channels
        if not 0 <= lo < hi <= cfg.in_channels:
            raise ValueError(f"knn_channels must satisfy 0 <= start < stop <= in_channels={cfg.in_channels}, "
                             f"got {cfg.knn_channels}")
        c = cfg.channels
        conv_kw = dict(act=cfg.act, norm=cfg.norm, bias=cfg.bias, order=cfg.order)
        self.knn = DilatedKnn(cfg.k, 1, cfg.stochastic, cfg.epsilon, backend=cfg.knn_backend)
        self.head = make_conv(cfg.conv, cfg.in_channels, c, **conv_kw)
        self.backbone = nn.ModuleList()
        width = c
        feat_dims = [c]
        if cfg.backbone == "rev":
            from ..nn.reversible import build_reversible_point_backbone  # optional family
            if cfg.layers > 1:
                self.backbone = build_reversible_point_backbone(cfg)
            # Deviation (named "rev fusion"): the fusion sees the head's and the last block's features
            # only; concatenating every block's output would keep all activations alive.
            feat_dims += [c] if cfg.layers > 1 else []
        else:
            for i in range(cfg.layers - 1):
                dilation = 1 if cfg.backbone == "plain" else 1 + i
                knn = DilatedKnn(cfg.k, dilation, cfg.stochastic, cfg.epsilon, backend=cfg.knn_backend)
                blk = GCNBlock(make_conv(cfg.conv, width, c, **conv_kw), kind=cfg.backbone, knn=knn)
                self.backbone.append(blk)
                width = blk.out_channels
                feat_dims.append(width)
        fusion_in = sum(feat_dims)
        self.feature_channels = fusion_in
        self.fusion = MLP([fusion_in, cfg.fusion_channels], **conv_kw)
        self.pool = GlobalMax()
        self.prediction = MLP([fusion_in + cfg.fusion_channels, 512, 256, cfg.out_channels],
                              dropout=cfg.dropout, last_plain=True, **conv_kw)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def features(self, x: Tensor) -> list[Tensor]:
        """Per-block features ``[(B, C_l, N)]``: the head's output then each block's."""
        lo, hi = self.cfg.knn_channels
        feats = [self.head(x, self.knn(x[:, lo:hi]))]
        if self.cfg.backbone == "rev":
            if self.cfg.layers > 1:
                feats.append(self.backbone(feats[-1]))
        else:
            for blk in self.backbone:
                feats.append(blk(feats[-1]))
        return feats

    def forward(self, x: Tensor) -> Tensor:
        check_features(x, "x", dims=(3,))
        if x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"x must have {self.cfg.in_channels} channels (B, C, N), got shape {tuple(x.shape)}")
        with trusted_inputs():           # validated once above: no per-block host syncs
            feats = torch.cat(self.features(x), dim=1)
            fusion = self.pool(self.fusion(feats))                             # (B, F, 1)
            first = self.prediction[0]
            if not self.split_global or not isinstance(first, ConvNormAct):
                return self.prediction(torch.cat([fusion.expand(-1, -1, feats.shape[2]), feats], dim=1))
            h = first.post(self._first_prediction_linear(first, fusion, feats))
            for layer in list(self.prediction)[1:]:
                h = layer(h)
            return h

    @staticmethod
    def _first_prediction_linear(first: ConvNormAct, fusion: Tensor, feats: Tensor) -> Tensor:
        """``W [fusion; feats] + b`` with the per-cloud term ``W_f fusion + b`` computed once."""
        w, bias = first.lin.weight, first.lin.bias
        nf, B = fusion.shape[1], feats.shape[0]
        const = torch.bmm(w[:, :nf].expand(B, -1, -1), fusion)            # (B, out, 1)
        if bias is not None:
            const = const + bias.view(1, -1, 1)
        # the per-cloud term enters as the broadcast input of one batched GEMM over the points
        return torch.baddbmm(const, w[:, nf:].expand(B, -1, -1), feats)
