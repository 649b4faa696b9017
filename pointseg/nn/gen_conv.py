r"""Generalized graph convolution (GENConv, DeeperGCN §3) and message normalisation.

For a target node :math:`i` with in-neighbours :math:`j \in \mathcal{N}(i)` and optional edge
features :math:`e_{ji}`:

.. math::
    m_{ji} &= \mathrm{ReLU}(x_j + e_{ji}) + \epsilon \\
    m_i &= \mathrm{AGG}\big(\{m_{ji}\}_{j \in \mathcal{N}(i)}\big) \\
    m_i &\leftarrow s \,\|x_i\|_2 \, m_i / \|m_i\|_2 \quad \text{(MsgNorm, optional)} \\
    x_i' &= \mathrm{MLP}(x_i + m_i)

with the aggregations (per channel)

* ``softmax``:    :math:`\sum_j \mathrm{softmax}_j(\beta m_{ji})\, m_{ji}` (β fixed or learnable);
* ``softmax_sg``: the same with no gradient through the softmax weights (β fixed);
* ``power``:      :math:`\big(\tfrac{1}{|\mathcal{N}(i)|}\sum_j m_{ji}^{p}\big)^{1/p}`, messages and
  the mean clamped to ``clamp`` (p fixed or learnable);
* ``mean`` / ``max`` / ``sum``.

β → 0 gives the mean, β → ∞ the max; p = 1 gives the mean.
The update MLP is ``[C_in, 2 C_in, ..., C_out]`` (``mlp_layers`` linear maps), each hidden layer
linear → norm → ReLU, the last one linear only (as the DeeperGCN reference).

Shapes: sparse ``x (N, C_in)``, ``edge_index (2, E)`` (row 0 = source j, row 1 = target i),
``edge_attr (E, D)`` -> ``(N, C_out)``. Dense ``x (B, C_in, N)`` with neighbour indices
``(B, N, k)`` is accepted too (converted to the sparse form; no edge features).
A node with no in-edges aggregates to 0 (never NaN).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from .graph import check_graph
from .mlp import MLP, Pointwise

AGGREGATIONS = ("softmax", "softmax_sg", "power", "mean", "max", "sum")
EDGE_ENCODERS = (None, "linear", "bond")


class MsgNorm(nn.Module):
    r"""Message normalisation: :math:`m \leftarrow s \cdot \|x\|_2 \cdot m / \|m\|_2` (per node).

    The scale :math:`s` (init 1) is a parameter; it is trained only with ``learn_scale``.
    Shapes: ``x (N, C)``, ``m (N, C)`` -> ``(N, C)``; a zero message stays zero.
    """

    def __init__(self, learn_scale: bool = False) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1), requires_grad=learn_scale)

    def reset_parameters(self) -> None:
        self.scale.data.fill_(1.0)

    def forward(self, x: Tensor, m: Tensor) -> Tensor:
        return F.normalize(m, p=2.0, dim=-1) * x.norm(p=2, dim=-1, keepdim=True) * self.scale


def dense_to_sparse_graph(x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """``x (B, C, N)``, ``idx (B, N, k)`` -> ``x (B*N, C)``, ``edge_index (2, B*N*k)``."""
    B, C, N = x.shape
    k = idx.shape[-1]
    offset = (torch.arange(B, device=idx.device) * N).view(B, 1, 1)
    src = (idx + offset).reshape(-1)
    dst = (torch.arange(N, device=idx.device).view(1, N, 1).expand(B, N, k) + offset).reshape(-1)
    return x.transpose(1, 2).reshape(B * N, C), torch.stack([src, dst])


class GENConv(nn.Module):
    """DeeperGCN's generalized graph convolution; see the module docstring for the maths.

    Args:
        in_channels, out_channels: node feature widths.
        aggr: one of :data:`AGGREGATIONS`.
        t, learn_t: inverse temperature β of the softmax aggregations (``learn_t`` only with ``softmax``).
        p, learn_p: power of the ``power`` aggregation.
        clamp: ``(min, max)`` applied to messages and to their mean in ``power`` aggregation
            (reference: ``(1e-7, 10)``; PyG uses ``(1e-4, 100)``).
        msg_norm, learn_msg_scale: MsgNorm and whether its scale is learned.
        norm: norm of the update MLP's hidden layers (``batch`` | ``layer`` | ``none``).
        mlp_layers: number of linear maps in the update MLP (hidden width ``2 * in_channels``).
        edge_encoder: per-conv encoder of the edge features: None (edge features, if given,
            must already have ``in_channels`` channels), ``linear`` (``Linear(edge_dim, C_in)``)
            or ``bond`` (OGB ``BondEncoder``, integer bond features).
        edge_dim: input width of the ``linear`` edge encoder (default ``in_channels``).
        eps: the constant added to every message.
    """

    def __init__(self, in_channels: int, out_channels: int, aggr: str = "softmax",
                 t: float = 1.0, learn_t: bool = False, p: float = 1.0, learn_p: bool = False,
                 clamp: tuple[float, float] = (1e-7, 10.0), msg_norm: bool = False,
                 learn_msg_scale: bool = False, norm: str | None = "batch", mlp_layers: int = 2,
                 edge_encoder: str | None = None, edge_dim: int | None = None,
                 eps: float = 1e-7, bias: bool = True) -> None:
        super().__init__()
        if aggr not in AGGREGATIONS:
            raise ValueError(f"aggr must be one of {AGGREGATIONS}, got {aggr!r}")
        if learn_t and aggr != "softmax":
            raise ValueError(f"learn_t needs aggr='softmax' (softmax_sg stops gradients), got aggr={aggr!r}")
        if learn_p and aggr != "power":
            raise ValueError(f"learn_p needs aggr='power', got aggr={aggr!r}")
        if edge_encoder not in EDGE_ENCODERS:
            raise ValueError(f"edge_encoder must be one of {EDGE_ENCODERS}, got {edge_encoder!r}")
        if mlp_layers < 1:
            raise ValueError(f"mlp_layers must be >= 1, got {mlp_layers}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.aggr, self.eps, self.clamp = aggr, eps, (float(clamp[0]), float(clamp[1]))
        self.learn_t, self.learn_p = learn_t, learn_p
        self.initial_t, self.initial_p = float(t), float(p)
        # Fixed β / p are plain floats (as in the reference), not parameters or buffers.
        self.t: Tensor | float = nn.Parameter(torch.tensor([float(t)])) if learn_t else float(t)
        self.p: Tensor | float = nn.Parameter(torch.tensor([float(p)])) if learn_p else float(p)
        self.msg_norm = MsgNorm(learn_msg_scale) if msg_norm else None
        self.edge_encoder_kind = edge_encoder
        if edge_encoder == "linear":
            self.edge_encoder: nn.Module | None = nn.Linear(edge_dim or in_channels, in_channels)
        elif edge_encoder == "bond":
            from ogb.graphproppred.mol_encoder import BondEncoder
            self.edge_encoder = BondEncoder(in_channels)
        else:
            self.edge_encoder = None
        channels = [in_channels] + [2 * in_channels] * (mlp_layers - 1) + [out_channels]
        self.mlp = MLP(channels, act="relu", norm=norm, bias=bias, order="conv-norm-act", last_plain=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The reference update MLP uses torch.nn.Linear's default initialisation.
        for m in self.mlp.modules():
            if isinstance(m, Pointwise):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
                if m.bias is not None:
                    bound = 1 / math.sqrt(m.in_channels)
                    nn.init.uniform_(m.bias, -bound, bound)
            elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                m.reset_parameters()
        if isinstance(self.t, nn.Parameter):
            self.t.data.fill_(self.initial_t)
        if isinstance(self.p, nn.Parameter):
            self.p.data.fill_(self.initial_p)
        if self.msg_norm is not None:
            self.msg_norm.reset_parameters()
        if isinstance(self.edge_encoder, nn.Linear):
            self.edge_encoder.reset_parameters()
        elif self.edge_encoder is not None:
            for emb in self.edge_encoder.modules():
                if isinstance(emb, nn.Embedding):
                    nn.init.xavier_uniform_(emb.weight)

    def message(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None) -> Tensor:
        """Per-edge messages ``(E, C_in)``."""
        x_j = x.index_select(0, edge_index[0])
        if edge_attr is not None:
            if self.edge_encoder is not None:
                edge_attr = self.edge_encoder(edge_attr)
            if edge_attr.shape != x_j.shape:
                raise ValueError(f"edge_attr must have shape ({x_j.shape[0]}, {x_j.shape[1]}) after encoding, "
                                 f"got {tuple(edge_attr.shape)}")
            x_j = x_j + edge_attr
        return F.relu(x_j) + self.eps

    def aggregate(self, msg: Tensor, index: Tensor, num_nodes: int) -> Tensor:
        """Aggregate messages ``(E, C)`` onto their targets ``index (E,)`` -> ``(num_nodes, C)``."""
        if self.aggr in ("mean", "max", "sum"):
            return scatter(msg, index, dim=0, dim_size=num_nodes, reduce=self.aggr)
        if self.aggr in ("softmax", "softmax_sg"):
            if self.aggr == "softmax_sg":
                with torch.no_grad():
                    w = softmax(msg * self.t, index, num_nodes=num_nodes, dim=0)
            else:
                w = softmax(msg * self.t, index, num_nodes=num_nodes, dim=0)
            return scatter(msg * w, index, dim=0, dim_size=num_nodes, reduce="sum")
        lo, hi = self.clamp
        out = scatter(msg.clamp(lo, hi).pow(self.p), index, dim=0, dim_size=num_nodes, reduce="mean")
        out = out.clamp(lo, hi).pow(1.0 / self.p)
        # A node without in-edges would get clamp_min ** (1/p); make it 0 like the other aggregations.
        has_in = torch.zeros(num_nodes, 1, dtype=out.dtype, device=out.device)
        has_in.index_fill_(0, index, 1.0)
        return out * has_in

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        check_graph(x, edge_index)
        dense_shape = None
        if x.dim() == 3:
            if edge_attr is not None:
                raise ValueError("GENConv takes edge_attr only with sparse (N, C) input")
            dense_shape = x.shape
            x, edge_index = dense_to_sparse_graph(x, edge_index)
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels, got shape {tuple(x.shape)}")
        if edge_attr is None and self.edge_encoder is not None:
            raise ValueError(f"this GENConv encodes edge features ({self.edge_encoder_kind}) "
                             "but no edge_attr was given")
        m = self.aggregate(self.message(x, edge_index, edge_attr), edge_index[1], x.shape[0])
        if self.msg_norm is not None:
            m = self.msg_norm(x, m)
        out = self.mlp(x + m)
        if dense_shape is not None:
            B, _, N = dense_shape
            out = out.view(B, N, -1).transpose(1, 2)
        return out

    def extra_repr(self) -> str:
        def val(v: Tensor | float) -> float:
            return float(v.detach()) if isinstance(v, Tensor) else float(v)
        extra = f", t={val(self.t):g}, learn_t={self.learn_t}" if self.aggr.startswith("softmax") else ""
        if self.aggr == "power":
            extra += f", p={val(self.p):g}, learn_p={self.learn_p}"
        return f"{self.in_channels}, {self.out_channels}, aggr={self.aggr!r}{extra}"
