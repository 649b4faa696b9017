r"""DGCNN for point-cloud semantic segmentation (the S3DIS network of dgcnn.pytorch), from
``pointseg.nn``: see :class:`DGCNN` for the architecture.

``conv7``'s input repeats one global vector on every point, so (``split_global=True``)
:math:`W[g; x_i] = W_g g + W_x x_i` with :math:`W_g g` computed once per cloud: identical values
and gradients, BatchNorm statistics unchanged, ``(B, 1216, N)`` never formed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from ..nn import ConvNormAct, DilatedKnn, Pointwise
from ..nn.checks import check_features
from ..nn.edge_mlp_conv import EdgeMLPConv
from ..nn.global_max import GlobalMax
from ..nn.mlp import pointwise_linear


@dataclass
class DGCNNConfig:
    """Architecture of the DGCNN segmentation network; the ``dgcnn`` preset is the defaults."""

    in_channels: int = 9
    out_channels: int = 13                   # classes
    k: int = 20
    knn_channels: tuple[int, int] = (6, 9)       # channels [start, stop) the first stage's kNN uses
    stages: tuple[tuple[int, ...], ...] = ((64, 64), (64, 64), (64,))
    emb_channels: int = 1024
    head_channels: tuple[int, ...] = (512, 256)
    dropout: float = 0.5
    act: str = "leakyrelu"
    norm: str = "batch"
    bias: bool = False
    order: Literal["conv-act-norm", "conv-norm-act"] = "conv-norm-act"
    split_global: bool = True                # W_g g once per cloud in conv7 (see module doc)
    knn_backend: Literal["torch", "cluster"] = "torch"


class DGCNN(nn.Module):
    r"""The segmentation network of "Dynamic Graph CNN for Learning on Point Clouds" as
    dgcnn.pytorch trains it on S3DIS (the shallow baseline of the DeepGCNs paper): three EdgeConv
    stages, a global embedding, a point-wise head:

    .. math::
        h^s_i = \max_{j \in \mathcal{N}_k(i)} \mathrm{MLP}_s\big([h^{s-1}_j - h^{s-1}_i \,\|\, h^{s-1}_i]\big),
        \quad s = 1, 2, 3, \qquad h^0 = x

    .. math::
        g = \max_n \mathrm{conv6}\big([h^1 \| h^2 \| h^3]\big)_n, \qquad
        y_n = \mathrm{conv9}\Big(\mathrm{drop}\big(\mathrm{conv8}(\mathrm{conv7}([g \,\|\, h^1_n \| h^2_n \| h^3_n]))\big)\Big)

    where :math:`\mathcal{N}_k(i)` are the ``k`` nearest neighbours of :math:`i` in its stage's
    input, the point itself included (the first stage searches the channel slice ``knn_channels``:
    the room-normalised xyz, channels 6-8, for S3DIS); the edge MLPs are ``[64, 64]``, ``[64, 64]``,
    ``[64]`` (:class:`~pointseg.nn.EdgeMLPConv`); ``conv6`` maps the 192 stage channels to
    ``emb_channels``, ``conv7`` -> 512, ``conv8`` -> 256, ``conv9`` -> classes (no bias, no norm).
    Every other layer is conv (no bias) -> BatchNorm -> LeakyReLU(0.2).

    Args:
        cfg: the architecture (:class:`DGCNNConfig`); None: the ``dgcnn`` preset (983,552 parameters).
        **overrides: fields of :class:`DGCNNConfig` replacing those of ``cfg``.

    Shapes:
        - **input:** ``x (B, in_channels, N)`` (S3DIS: the nine block channels); optionally
          ``neighbours``, the three stages' neighbour indices ``[(B, N, k)] * 3`` used instead of
          computing them (to reproduce another implementation's exact graph, e.g. at distance ties)
        - **output:** per-point logits ``(B, out_channels, N)``
    """

    architecture = "dgcnn"

    def __init__(self, cfg: DGCNNConfig | None = None, **overrides) -> None:
        super().__init__()
        cfg = cfg or DGCNNConfig()
        if overrides:
            cfg = DGCNNConfig(**{**cfg.__dict__, **overrides})
        cfg.knn_channels = tuple(int(v) for v in cfg.knn_channels)
        cfg.stages = tuple(tuple(int(c) for c in s) for s in cfg.stages)
        cfg.head_channels = tuple(int(c) for c in cfg.head_channels)
        self.cfg = cfg
        lo, hi = cfg.knn_channels
        if not 0 <= lo < hi <= cfg.in_channels:
            raise ValueError(f"knn_channels must satisfy 0 <= start < stop <= in_channels={cfg.in_channels}, "
                             f"got {cfg.knn_channels}")
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
        self.pool = GlobalMax()
        head = [cfg.emb_channels + self.feature_channels, *cfg.head_channels]
        self.head = nn.ModuleList(ConvNormAct(head[i], head[i + 1], **kw) for i in range(len(head) - 1))
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = Pointwise(head[-1], cfg.out_channels, bias=cfg.bias)                 # conv9

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def graphs(self, x: Tensor) -> list[Tensor]:
        """The neighbour indices each stage would use, computed stage by stage (eval semantics)."""
        out = []
        h = x
        lo, hi = self.cfg.knn_channels
        for i, stage in enumerate(self.stages):
            g = self.knn(h[:, lo:hi] if i == 0 else h)
            out.append(g)
            h = stage(h, g)
        return out

    def features(self, x: Tensor, neighbours: Sequence[Tensor] | None = None) -> list[Tensor]:
        """Per-stage point features ``[(B, C_s, N)]``."""
        if neighbours is not None and len(neighbours) != len(self.stages):
            raise ValueError(f"neighbours must hold {len(self.stages)} index tensors, got {len(neighbours)}")
        lo, hi = self.cfg.knn_channels
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
        glob = self.pool(self.embed(feats))
        h = self._first_head_layer(glob, feats)
        for layer in self.head[1:]:
            h = layer(h)
        return self.classifier(self.dropout(h))


class FoldedDGCNN:
    r"""An eval-mode :class:`DGCNN` prepared for inference: BatchNorm folded into every 1x1 conv
    (:mod:`pointseg.nn.folded`), channel-last activations, and each max taken before the bias and
    activation it commutes with:

    * EdgeConv stages: ``[a | b] = h W'`` in one GEMM; an edge's first-layer activation is
      ``act(a_i + b_j)``; the last edge layer's shift and activation follow the max over ``j``
      (a one-layer stage is ``act(a_i + max_j b_j)``);
    * ``conv6`` + global max: ``g = act(max_n (f_n W_6') + t_6)``, the ``(B, N, 1024)`` embedding
      is never stored or normalised (it is computed ``HEAD_ROWS`` points at a time and reduced);
    * ``conv7`` takes ``g W_g' + t_7`` as the per-cloud bias of ``f W_x'`` (as ``split_global``);
      ``conv7``-``conv9`` run ``HEAD_ROWS`` points at a time, so their activations stay in cache.

    Same function as the module up to float rounding (summation order, the folded products); the
    kNN graphs are the module's own kNN module (so a patched kNN, e.g. the compact evaluation's
    multiset kNN, is used the same way). Built by :meth:`from_model`, which returns None when a
    layer is not foldable (training mode, another norm or activation, ``conv-act-norm``).

    ``forward(x (B, N, C_in) float, channel-last)`` -> logits ``(B, N, classes)``.
    """

    def __init__(self, model: DGCNN, stages, embed, head_g, head, classifier) -> None:
        self.model = model
        self.stages, self.embed, self.head_g, self.head, self.classifier = stages, embed, head_g, head, classifier
        self.dtype = embed.weight_t.dtype

    @classmethod
    def from_model(cls, model: nn.Module) -> "FoldedDGCNN | None":
        from ..nn.folded import FoldedEdgeMLP, fold_layer
        if type(model) is not DGCNN or any(mod.training for mod in model.modules()) or model.knn.dilation != 1:
            return None
        stages = [FoldedEdgeMLP.from_module(s) for s in model.stages]
        embed = fold_layer(model.embed)
        first = model.head[0]
        e = model.cfg.emb_channels
        w = first.lin.weight
        head_g = fold_layer(first, w[:, :e])
        head = [fold_layer(first, w[:, e:])] + [fold_layer(layer) for layer in model.head[1:]]
        classifier = fold_layer(model.classifier)
        if any(p is None for p in (*stages, embed, head_g, *head, classifier)):
            return None
        # conv7's bias belongs to the per-cloud term only (it is added once)
        head[0].shift = torch.zeros_like(head[0].shift)
        return cls(model, stages, embed, head_g, head, classifier)

    @torch.no_grad()
    def __call__(self, x: Tensor, knn=None) -> Tensor:
        """Logits ``(B, N, classes)`` of ``x (B, N, C_in)``; ``knn`` (default: the model's kNN
        module) maps stage features ``(B, C, N)`` to neighbour indices ``(B, N, k)``."""
        from ..nn.folded import HEAD_ROWS, act_
        m = self.model
        knn = knn or m.knn
        if x.dim() != 3 or x.shape[2] != m.cfg.in_channels:
            raise ValueError(f"x must be (B, N, {m.cfg.in_channels}) channel-last, got {tuple(x.shape)}")
        x = x.to(self.dtype)
        B, N, _ = x.shape
        lo, hi = m.cfg.knn_channels
        widths = [s.out_channels for s in self.stages]
        feats = x.new_empty(B, N, sum(widths))
        h, off = x, 0
        for i, stage in enumerate(self.stages):
            g = knn((x[:, :, lo:hi] if i == 0 else h).transpose(1, 2))
            out = feats[:, :, off:off + widths[i]]
            h = stage(h, g, out)
            off += widths[i]
        flat = feats.view(B * N, -1)
        # conv6 -> BatchNorm -> act -> max over the points: act(max_n (f W6') + t6)
        emb = self.embed
        gmax = x.new_empty(B, emb.out_channels)
        for b in range(B):
            best = None
            for s in range(b * N, (b + 1) * N, HEAD_ROWS):
                v = torch.mm(flat[s:min((b + 1) * N, s + HEAD_ROWS)], emb.weight_t).amax(0)
                best = v if best is None else torch.maximum(best, v, out=best)
            gmax[b] = best
        glob = emb.act_(gmax.add_(emb.shift))
        const = torch.addmm(self.head_g.shift, glob, self.head_g.weight_t)       # (B, C7): once per cloud
        logits = x.new_empty(B, N, self.classifier.out_channels)
        out_rows = logits.view(B * N, -1)
        first, rest = self.head[0], self.head[1:]
        for b in range(B):
            for s in range(b * N, (b + 1) * N, HEAD_ROWS):
                e = min((b + 1) * N, s + HEAD_ROWS)
                z = act_(torch.addmm(const[b], flat[s:e], first.weight_t), first.slope)
                for layer in rest:
                    z = layer.act_(torch.addmm(layer.shift, z, layer.weight_t))
                torch.addmm(self.classifier.shift, z, self.classifier.weight_t, out=out_rows[s:e])
        return logits
