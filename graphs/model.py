r"""One graph network builder for every task: encoder -> backbone -> head, all layers from ``pointseg.nn``.

* **encoder**: ``linear`` (``Linear(C_in, C)``, optionally with the last ``onehot_channels`` input
  columns first mapped by their own ``Linear``, as DeeperGCN does with the ogbn-proteins species),
  ``atom`` (OGB ``AtomEncoder``) or ``none`` (the first convolution takes ``C_in``). Edge features
  get a model-level encoder (``linear`` / ``bond`` / ``none``) and / or a per-conv one (``conv_edge``).
* **backbone**: looked up by name in :data:`BACKBONES` (``res+``, ``res``, ``plain``, ``dense``, ``rev``).
  A backbone is built as ``BACKBONES[name](cfg, make_conv, in_channels)`` where ``make_conv(c_in, c_out)``
  builds one configured convolution; it returns a module with ``out_channels`` and
  ``forward(x, edge_index, batch=None, **conv_kwargs) -> list[Tensor]`` (per-layer features, last =
  output). New backbones (e.g. a reversible one) plug in with :func:`register_backbone`.
* **head**: ``linear`` (optionally after graph ``pool``ing), ``layer_sum`` (GIN's readout: the sum over
  layers of a ``Linear`` of each layer's pooled features, each term dropped out), ``conv`` (one more convolution to the
  outputs on the graph, RevGAT's last GAT layer), ``fusion`` (the DeepGCNs PPI head: a 1x1
  fusion of all layer features to 1024 channels, max over *channels* — one scalar per node, the
  reference quirk — concatenated to the features, then 512 -> 256 -> classes), or ``none``
  (node embeddings, for link prediction).

Kipf & Welling's 2-layer GCN (preset ``gcn-2``) is ``conv="gcn"``, ``backbone="plain"``, ``layers=1``,
``node_encoder="none"``, ``input_dropout=0.5``, ``norm=None`` and ``head="conv"``:
``GCN(dropout(x)) -> ReLU -> dropout -> GCN``.

The ``res+`` backbone is DeeperGCN's: ``h = conv_0(h)``; ``h = h + conv_l(dropout(ReLU(norm(h))))``
for ``l >= 1``; then ``dropout(ReLU(norm(h)))`` (ReLU dropped with ``final_act=False``, as in the
molecule / ppa reference models). ``res`` / ``plain`` / ``dense`` follow DeepGCNs: each GENConv is
followed by norm -> ReLU -> dropout; convolutions that carry their own norm and activation
(``mr``, ``edge``, ``sage``, ``gin``) are used as they are.

The ``gin`` backbone is the GIN graph classifier of Xu et al. (ICLR'19) as Errica et al. (ICLR'20) run it
on the TU datasets: a 2-layer MLP on the node inputs, then ``layers`` :class:`GINLayer` s (sum aggregation,
learnable :math:`\epsilon`, 2-layer MLPs with BatchNorm), all layer outputs read out by ``head="layer_sum"``.

The ``rev`` backbone is RevGNN's (:mod:`pointseg.nn.reversible`): ``layers`` grouped reversible layers
on the encoded features (no separate first conv), each group branch ``conv(drop(ReLU(norm(h))))`` with
``C/G -> C/G`` convolutions and one dropout mask per forward shared by all layers, then the ``res+``
ending ``dropout(ReLU(norm(h)))``. With ``node_encoder="none"`` a first bare convolution maps the
input to ``C`` (RevGAT: GAT, reversible GAT layers, ``head="conv"``). Activation memory does not
grow with depth; it returns only its output.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from pointseg.nn import GCNBlock, GINConv, MLP, make_conv
from pointseg.nn.mlp import ConvNormAct, act_layer, norm_layer
from pointseg.nn.reversible import RevBranch, reversible_stack


@dataclass
class GraphNetConfig:
    """Architecture of a graph network; presets in ``graphs.presets`` are overrides of it. Filled by
    :func:`pointseg.config.from_dict` (typed, unknown options refused by name)."""

    backbone: str = "res+"          # a key of BACKBONES
    conv: str = "gen"               # a pointseg.nn.make_conv name
    layers: int = 7
    channels: int = 128
    in_channels: int = 0            # node input width (from the dataset)
    out_channels: int = 0           # tasks / classes (from the dataset)
    # GENConv
    aggr: str = "softmax"
    t: float = 1.0
    learn_t: bool = False
    p: float = 1.0
    learn_p: bool = False
    msg_norm: bool = False
    learn_msg_scale: bool = False
    mlp_layers: int = 1
    conv_edge: str | None = None    # per-conv edge encoder of GENConv: linear | bond | None
    # GATConv (conv="gat"): heads share the layer's channels; RevGAT: no target attention, residual, no bias
    heads: int = 1
    attn_dst: bool = True
    gat_residual: bool = False
    gat_bias: bool = True
    sym_norm: bool = False
    attn_dropout: float = 0.0
    edge_drop: float = 0.0
    # GCNConv (conv="gcn"): output bias (Kipf & Welling's reference layers have none); cache the normalised
    # graph (only for one fixed full-batch graph)
    gcn_bias: bool = True
    gcn_cached: bool = False
    # GIN (backbone="gin"): learnable epsilon; point-wise layers of each GIN layer's MLP (GINConv's own + the rest)
    train_eps: bool = True
    gin_mlp_layers: int = 2
    # blocks
    norm: str = "batch"
    act: str = "relu"
    dropout: float = 0.5
    final_act: bool = True          # res+: ReLU after the final norm
    # rev (RevGNN): channel groups of the reversible coupling; one set of branch weights for all layers
    groups: int = 2
    weight_tied: bool = False
    # encoders
    node_encoder: Literal["linear", "atom", "none"] = "linear"
    input_dropout: float = 0.0      # dropout on the raw node features
    onehot_channels: int = 0        # trailing one-hot input columns with their own Linear (ogbn-proteins)
    edge_encoder: Literal["linear", "bond", "none"] = "none"   # the model-level edge encoder
    edge_channels: int = 0          # raw edge feature width (linear edge encoders)
    # head
    head: Literal["linear", "fusion", "conv", "layer_sum", "none"] = "linear"
    pool: str | None = None         # mean | sum | max (graph-level tasks)
    virtual_node: bool = False
    fusion_channels: int = 1024
    head_dropout: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def uses_edge_features(self) -> bool:
        return self.conv == "gen" and (self.conv_edge is not None or self.edge_encoder != "none")


ConvFactory = Callable[[int, int], nn.Module]
BackboneBuilder = Callable[[GraphNetConfig, ConvFactory, int], nn.Module]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator adding a backbone builder ``(cfg, make_conv, in_channels) -> module`` to :data:`BACKBONES`."""
    def deco(fn: BackboneBuilder) -> BackboneBuilder:
        BACKBONES[name] = fn
        return fn
    return deco


class ConvPost(nn.Module):
    """``dropout(act(norm(conv(x))))``: a bare GENConv turned into a DeepGCNs layer."""

    def __init__(self, conv: nn.Module, norm: str | None, act: str | None, dropout: float) -> None:
        super().__init__()
        self.conv = conv
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.norm, self.act, self.dropout = norm_layer(norm, conv.out_channels), act_layer(act), nn.Dropout(dropout)

    def forward(self, x: Tensor, graph: Tensor, **kw: Any) -> Tensor:
        return self.dropout(self.act(self.norm(self.conv(x, graph, **kw))))


def _has_own_post(cfg: GraphNetConfig) -> bool:
    return cfg.conv not in ("gen", "gat", "gcn")    # mr / edge / sage / gin carry their own norm and activation


class ResPlusBackbone(nn.Module):
    """DeeperGCN's pre-activation residual stack (with an optional virtual node)."""

    def __init__(self, cfg: GraphNetConfig, conv: ConvFactory, in_channels: int) -> None:
        super().__init__()
        c = cfg.channels
        self.first = conv(in_channels, c)
        self.blocks = nn.ModuleList(GCNBlock(conv(c, c), kind="res+", norm=cfg.norm, act=cfg.act,
                                             dropout=cfg.dropout) for _ in range(cfg.layers - 1))
        self.final_norm = norm_layer(cfg.norm, c)
        self.final_act = act_layer(cfg.act if cfg.final_act else None)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_channels = c
        self.virtual_node = cfg.virtual_node
        if cfg.virtual_node:
            self.vn_embedding = nn.Parameter(torch.zeros(1, c))
            self.vn_mlps = nn.ModuleList(MLP([c, c], act=cfg.act, norm=cfg.norm, order="conv-norm-act")
                                         for _ in range(cfg.layers - 1))

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **kw: Any) -> list[Tensor]:
        vn = None
        if self.virtual_node:
            if batch is None:
                batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            vn = self.vn_embedding.expand(int(batch.max()) + 1 if batch.numel() else 1, -1)
            x = x + vn[batch]
        h = self.first(x, edge_index, **kw)
        feats = [h]
        for i, blk in enumerate(self.blocks):
            if vn is None:
                h = blk(h, edge_index, **kw)
            else:
                h2 = blk.dropout(blk.act(blk.norm(h)))
                vn = self.dropout(self.vn_mlps[i](global_add_pool(h2, batch, size=vn.shape[0]) + vn))
                h = h + blk.conv(h2 + vn[batch], edge_index, **kw)
            feats.append(h)
        feats[-1] = self.dropout(self.final_act(self.final_norm(h)))
        return feats


class StackBackbone(nn.Module):
    """DeepGCNs stack: a first layer ``C_in -> C`` then ``layers - 1`` plain / res / dense blocks."""

    def __init__(self, cfg: GraphNetConfig, conv: ConvFactory, in_channels: int, kind: str) -> None:
        super().__init__()
        c = cfg.channels

        def layer(cin: int, cout: int) -> nn.Module:
            m = conv(cin, cout)
            return m if _has_own_post(cfg) else ConvPost(m, cfg.norm, cfg.act, cfg.dropout)

        self.first = layer(in_channels, c)
        self.blocks = nn.ModuleList()
        width = c
        for _ in range(cfg.layers - 1):
            blk = GCNBlock(layer(width, c), kind=kind)
            self.blocks.append(blk)
            width = blk.out_channels
        self.out_channels = width
        self.layer_widths = [self.first.out_channels] + [b.out_channels for b in self.blocks]

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **kw: Any) -> list[Tensor]:
        feats = [self.first(x, edge_index, **kw)]
        for blk in self.blocks:
            feats.append(blk(feats[-1], edge_index, **kw))
        return feats


class GINLayer(nn.Module):
    r"""One GIN layer with an MLP of ``mlp_layers`` point-wise layers (Xu et al., "How Powerful are Graph
    Neural Networks?"; the layer of Errica et al.'s GIN):

    .. math::
        h_i = \mathrm{MLP}\Big((1 + \epsilon)\, x_i + \sum_{j \in \mathcal{N}(i)} x_j\Big), \qquad
        \mathrm{MLP} = (\mathrm{ReLU} \circ \mathrm{BN} \circ \mathrm{Linear})^{L}

    The first MLP layer is :class:`pointseg.nn.GINConv`'s own (order ``conv-norm-act``); the other
    ``L - 1`` are :class:`pointseg.nn.mlp.ConvNormAct` layers on its output, so the sum aggregation is
    computed once, by ``GINConv``.

    Args:
        in_channels (int): width :math:`C` of :math:`x`.
        out_channels (int): width :math:`C_{out}` of :math:`h` (every MLP layer's width).
        mlp_layers (int): :math:`L \ge 1`.
        norm (str | None): ``batch`` (as the reference), ``layer`` or ``None``.
        act (str | None): the activation.
        train_eps (bool): learn :math:`\epsilon` (initialised to 0) or keep it at 0.

    Shapes:
        - **input:** ``x`` :math:`(N, C)`, ``edge_index`` :math:`(2, E)`
        - **output:** :math:`(N, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, mlp_layers: int = 2, norm: str | None = "batch",
                 act: str | None = "relu", train_eps: bool = True) -> None:
        super().__init__()
        if mlp_layers < 1:
            raise ValueError(f"gin_mlp_layers must be >= 1, got {mlp_layers}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv = GINConv(in_channels, out_channels, act=act, norm=norm, order="conv-norm-act", train_eps=train_eps)
        self.mlp = nn.ModuleList(ConvNormAct(out_channels, out_channels, act, norm, order="conv-norm-act")
                                 for _ in range(mlp_layers - 1))

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        for layer in self.mlp:
            layer.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, **kw: Any) -> Tensor:
        h = self.conv(x, edge_index)
        for layer in self.mlp:
            h = layer(h)
        return h


class GINBackbone(nn.Module):
    r"""The GIN graph classifier's node stack (Xu et al.; Errica et al.'s ``GIN``): a 2-layer MLP on the inputs,
    then ``cfg.layers`` :class:`GINLayer` s of width :math:`C` = ``cfg.channels``:

    .. math::
        h^{(0)} = \mathrm{MLP}_0(x), \qquad h^{(l)}_i = \mathrm{MLP}_l\Big((1 + \epsilon_l)\, h^{(l-1)}_i
        + \sum_{j \in \mathcal{N}(i)} h^{(l-1)}_j\Big), \quad l = 1..L

    Every :math:`h^{(l)}` is returned, :math:`h^{(0)}` included: GIN reads out all of them
    (``head="layer_sum"``), since the sum of node features after :math:`l` layers sees only :math:`l`-hop
    structure.

    Args:
        cfg (GraphNetConfig): ``layers`` (:math:`L \ge 0`), ``channels``, ``gin_mlp_layers``, ``train_eps``,
            ``norm``, ``act``; ``conv`` must be ``gin``.
        conv (ConvFactory): unused (GIN's layers carry their own MLPs).
        in_channels (int): the node input width.

    Shapes:
        - **input:** ``x`` :math:`(N, C_{in})`, ``edge_index`` :math:`(2, E)`
        - **output:** ``L + 1`` tensors :math:`(N, C)`
    """

    def __init__(self, cfg: GraphNetConfig, conv: ConvFactory, in_channels: int) -> None:
        super().__init__()
        if cfg.conv != "gin":
            raise ValueError(f"the gin backbone uses GIN layers: set conv='gin' (got {cfg.conv!r})")
        c = cfg.channels
        self.first = MLP([in_channels, c, c], act=cfg.act, norm=cfg.norm, order="conv-norm-act")
        self.blocks = nn.ModuleList(GINLayer(c, c, cfg.gin_mlp_layers, cfg.norm, cfg.act, cfg.train_eps)
                                    for _ in range(cfg.layers))
        self.out_channels = c
        self.layer_widths = [c] * (cfg.layers + 1)

    def reset_parameters(self) -> None:
        self.first.reset_parameters()
        for blk in self.blocks:
            blk.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **kw: Any) -> list[Tensor]:
        feats = [self.first(x)]
        for blk in self.blocks:
            feats.append(blk(feats[-1], edge_index))
        return feats


register_backbone("res+")(ResPlusBackbone)
for _kind in ("res", "plain", "dense"):
    register_backbone(_kind)(lambda cfg, conv, cin, _k=_kind: StackBackbone(cfg, conv, cin, _k))
register_backbone("gin")(GINBackbone)


class RevBackbone(nn.Module):
    r"""RevGNN: ``cfg.layers`` grouped reversible layers of width ``C = cfg.channels`` (``G = cfg.groups``).

    Layer ``l``: split ``h`` into ``G`` groups, :math:`Y_0 = \sum_{i\ge2} X_i`,
    :math:`Y_i = X_i + F_{l,i}(Y_{i-1})` with :math:`F(y) = \mathrm{conv}(\mathrm{drop}(\mathrm{ReLU}(\mathrm{norm}(y))))`
    and ``conv`` a ``C/G -> C/G`` convolution from ``make_conv`` (GENConv edge encoders map the
    full-width edge embedding to ``C/G``, as in the reference). Output: ``dropout(act(norm(h)))``.
    BatchNorm in the branches runs in the stack's ``batchnorm="once"`` mode (running statistics updated
    once per step despite the backward's recomputation). ``weight_tied`` shares one layer's branches
    across all layers (WT-RevGNN).

    Shapes: ``x (N, C)`` -> ``[h (N, C)]`` (only the output: intermediate features are never stored).
    """

    def __init__(self, cfg: GraphNetConfig, conv: ConvFactory, in_channels: int) -> None:
        super().__init__()
        c, g = cfg.channels, cfg.groups
        if g < 2 or c % g:
            raise ValueError(f"rev backbone: channels={c} must be divisible by groups={g} (>= 2)")
        if cfg.virtual_node or cfg.head == "fusion":
            raise ValueError("the rev backbone supports neither virtual_node nor the fusion head "
                             "(it keeps only its output features)")
        own_post = _has_own_post(cfg)

        def branch(layer: int, gc: int) -> nn.Module:
            if own_post:        # mr / edge / sage / gin carry their own norm and activation
                return RevBranch(conv(gc, gc), dropout=cfg.dropout)
            return RevBranch(conv(gc, gc), norm=cfg.norm, act=cfg.act, dropout=cfg.dropout)

        has_bn = cfg.norm == "batch"
        self.stack = reversible_stack(branch, cfg.layers, c, g, weight_tied=cfg.weight_tied,
                                      batchnorm="once" if has_bn else "error")
        self.final_norm = norm_layer(cfg.norm, c)
        self.final_act = act_layer(cfg.act if cfg.final_act else None)
        self.dropout = nn.Dropout(cfg.dropout)
        # node_encoder="none" (RevGAT): a first bare convolution to C, as the reference's first GAT layer
        self.first = conv(in_channels, c) if cfg.node_encoder == "none" else None
        self.blocks, self.out_channels = nn.ModuleList(), c

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor | None = None, **kw: Any) -> list[Tensor]:
        if self.first is not None:
            x = self.first(x, edge_index, **kw)
        h = self.stack(x, edge_index, **kw)
        return [self.dropout(self.final_act(self.final_norm(h)))]


register_backbone("rev")(RevBackbone)


class FusionHead(nn.Module):
    """DeepGCNs PPI head on the concatenated features of every layer (see module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, fusion: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.fusion = MLP([in_channels, fusion], act="relu", norm=None)
        self.prediction = nn.Sequential(
            MLP([1 + in_channels, 512], act="relu", norm=norm), nn.Dropout(dropout),
            MLP([512, 256], act="relu", norm=norm), nn.Dropout(dropout),
            MLP([256, out_channels], act=None, norm=None))

    def forward(self, feats: Tensor) -> Tensor:
        # The reference takes the max over *channels* (dim 1), so the fusion adds one scalar per node.
        fused = self.fusion(feats).amax(dim=1, keepdim=True)
        return self.prediction(torch.cat([feats, fused], dim=1))


POOLS = {"mean": global_mean_pool, "sum": global_add_pool, "max": global_max_pool}


class LayerSumHead(nn.Module):
    r"""GIN's graph readout over every layer (Xu et al., Eq. 4.2; Errica et al.'s ``GIN``):

    .. math::
        z_G = \sum_{l=0}^{L} \mathrm{dropout}\big(W_l\, \mathrm{pool}_{i \in G}\, h^{(l)}_i + b_l\big)

    Args:
        widths (list[int]): the width of each :math:`h^{(l)}`.
        out_channels (int): classes / targets.
        pool (str): ``sum`` or ``mean`` (``max`` also works) over each graph's nodes.
        dropout (float): dropout on each layer's term, in training only.

    Shapes:
        - **input:** ``L + 1`` tensors :math:`(N, C_l)`, ``batch`` :math:`(N)` (graph of each node)
        - **output:** :math:`(G, C_{out})`
    """

    def __init__(self, widths: list[int], out_channels: int, pool: str, dropout: float) -> None:
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(w, out_channels) for w in widths)
        self.pool, self.dropout = POOLS[pool], dropout

    def reset_parameters(self) -> None:
        for lin in self.lins:
            lin.reset_parameters()

    def forward(self, feats: list[Tensor], batch: Tensor) -> Tensor:
        if len(feats) != len(self.lins):
            raise ValueError(f"layer_sum head: {len(feats)} layer outputs for {len(self.lins)} linear maps")
        size = int(batch.max()) + 1 if batch.numel() else 1
        out = 0
        for h, lin in zip(feats, self.lins):
            out = out + F.dropout(lin(self.pool(h, batch, size)), self.dropout, self.training)
        return out


class GraphNet(nn.Module):
    """Encoder -> backbone (by name) -> head. ``forward(x, edge_index, edge_attr=None, batch=None)``.

    Output: node logits ``(N, out)``; graph logits ``(G, out)`` with ``pool``; node embeddings
    ``(N, C)`` with ``head="none"``.
    """

    def __init__(self, cfg: GraphNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {cfg.backbone!r}")
        # a GIN with no GIN layer is the graph-blind DeepSets model (the MLP on the nodes, pooled)
        if cfg.layers < (0 if cfg.backbone == "gin" else 1) or cfg.channels < 1:
            raise ValueError(f"layers and channels must be >= 1 (gin: layers >= 0), got {cfg.layers}, {cfg.channels}")
        if cfg.in_channels < 1 and cfg.node_encoder != "atom":
            raise ValueError(f"in_channels must be set (got {cfg.in_channels})")
        c = cfg.channels
        # --- encoders
        self.onehot = None
        if cfg.node_encoder == "linear":
            if cfg.onehot_channels:
                self.onehot = nn.Linear(cfg.onehot_channels, cfg.onehot_channels)
            self.node_encoder: nn.Module = nn.Linear(cfg.in_channels, c)
            backbone_in = c
        elif cfg.node_encoder == "atom":
            from ogb.graphproppred.mol_encoder import AtomEncoder
            self.node_encoder = AtomEncoder(c)
            backbone_in = c
        elif cfg.node_encoder == "none":
            self.node_encoder = nn.Identity()
            backbone_in = cfg.in_channels
        else:
            raise ValueError(f"node_encoder must be linear/atom/none, got {cfg.node_encoder!r}")
        if cfg.edge_encoder == "linear":
            self.edge_encoder: nn.Module | None = nn.Linear(cfg.edge_channels, c)
        elif cfg.edge_encoder == "bond":
            from ogb.graphproppred.mol_encoder import BondEncoder
            self.edge_encoder = BondEncoder(c)
        elif cfg.edge_encoder == "none":
            self.edge_encoder = None
        else:
            raise ValueError(f"edge_encoder must be linear/bond/none, got {cfg.edge_encoder!r}")
        # --- backbone
        self.backbone = BACKBONES[cfg.backbone](cfg, self.make_conv, backbone_in)
        width = self.backbone.out_channels
        # --- head
        if cfg.head == "conv" and cfg.pool is not None:
            raise ValueError("head='conv' predicts per node on the graph; it cannot be combined with pool "
                             f"{cfg.pool!r} (use head='linear' for graph-level tasks)")
        if cfg.pool is not None and cfg.pool not in POOLS:
            raise ValueError(f"pool must be one of {sorted(POOLS)} or None, got {cfg.pool!r}")
        if cfg.head == "linear":
            self.head: nn.Module = nn.Linear(width, cfg.out_channels)
        elif cfg.head == "fusion":
            layers = [self.backbone.first.out_channels] + [b.out_channels for b in self.backbone.blocks]
            self.head = FusionHead(sum(layers), cfg.out_channels, cfg.fusion_channels, cfg.norm, cfg.head_dropout)
        elif cfg.head == "layer_sum":
            widths = getattr(self.backbone, "layer_widths", None)
            if widths is None or cfg.pool is None:
                raise ValueError("head='layer_sum' reads out every layer of a graph: it needs pool (sum / mean) and "
                                 f"a backbone that keeps every layer (gin, plain, res, dense), got {cfg.backbone!r}")
            self.head = LayerSumHead(widths, cfg.out_channels, cfg.pool, cfg.dropout)
        elif cfg.head == "conv":
            self.head = self.make_conv(width, cfg.out_channels, head=True)
        elif cfg.head == "none":
            self.head = nn.Identity()
        else:
            raise ValueError(f"head must be linear/fusion/conv/layer_sum/none, got {cfg.head!r}")
        self.out_channels = width if cfg.head == "none" else cfg.out_channels

    def make_conv(self, cin: int, cout: int, head: bool = False) -> nn.Module:
        """One configured convolution; ``head``: the output convolution of ``head="conv"`` (a GAT head
        has one attention head and a bias, RevGAT's last layer with its separate output bias)."""
        cfg = self.cfg
        if cfg.conv == "gat":
            return make_conv("gat", cin, cout, heads=1 if head else cfg.heads, attn_dst=cfg.attn_dst,
                             residual=cfg.gat_residual, bias=head or cfg.gat_bias, sym_norm=cfg.sym_norm,
                             attn_dropout=cfg.attn_dropout, edge_drop=cfg.edge_drop)
        if cfg.conv == "gen":
            edge_dim = cfg.channels if cfg.edge_encoder != "none" else (cfg.edge_channels or cin)
            return make_conv("gen", cin, cout, aggr=cfg.aggr, t=cfg.t, learn_t=cfg.learn_t, p=cfg.p,
                             learn_p=cfg.learn_p, msg_norm=cfg.msg_norm, learn_msg_scale=cfg.learn_msg_scale,
                             norm=cfg.norm, mlp_layers=cfg.mlp_layers, edge_encoder=cfg.conv_edge,
                             edge_dim=edge_dim)
        if cfg.conv == "gcn":
            return make_conv("gcn", cin, cout, bias=cfg.gcn_bias, cached=cfg.gcn_cached)
        return make_conv(cfg.conv, cin, cout, act=cfg.act, norm=cfg.norm)

    def encode(self, x: Tensor) -> Tensor:
        x = F.dropout(x, self.cfg.input_dropout, self.training)
        if self.onehot is not None:
            k = self.cfg.onehot_channels
            x = torch.cat([x[:, :-k], self.onehot(x[:, -k:])], dim=1)
        return self.node_encoder(x)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None,
                batch: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        h = self.encode(x)
        kw: dict[str, Any] = {}
        if cfg.uses_edge_features:
            if edge_attr is None:
                raise ValueError("this model uses edge features but the graph has no edge_attr")
            kw["edge_attr"] = self.edge_encoder(edge_attr) if self.edge_encoder is not None else edge_attr
        feats = self.backbone(h, edge_index, batch=batch, **kw)
        if cfg.head == "fusion":
            return self.head(torch.cat(feats, dim=1))
        if cfg.head == "layer_sum":
            if batch is None:
                batch = torch.zeros(feats[0].shape[0], dtype=torch.long, device=feats[0].device)
            return self.head(feats, batch)
        h = feats[-1]
        if cfg.head == "conv":
            return self.head(h, edge_index, **kw)
        if cfg.pool is not None:
            if batch is None:
                batch = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)
            h = POOLS[cfg.pool](h, batch)
        return self.head(h)


class LinkPredictor(nn.Module):
    """Score of a node pair from the product of its embeddings: MLP(x_i * x_j) -> logit.

    ``layers`` linear maps ``C -> C -> ... -> 1`` with ReLU and dropout between them.
    """

    def __init__(self, channels: int, layers: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.lins = nn.ModuleList([nn.Linear(channels, channels) for _ in range(layers - 1)]
                                  + [nn.Linear(channels, 1)])
        self.dropout = dropout

    def forward(self, x_i: Tensor, x_j: Tensor) -> Tensor:
        h = x_i * x_j
        for lin in self.lins[:-1]:
            h = F.dropout(F.relu(lin(h)), self.dropout, self.training)
        return self.lins[-1](h).squeeze(-1)


def gnn_of(model: nn.Module) -> "GraphNet":
    """The :class:`GraphNet` of a model (a link model's ``gnn``; what presets count)."""
    return model.gnn if hasattr(model, "gnn") else model
