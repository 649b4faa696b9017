r"""Grouped reversible layers (RevGNN, Li et al. ICML'21) with activation memory independent of depth.

A :class:`ReversibleLayer` splits its input into :math:`G` channel groups
:math:`X = [X_1, \dots, X_G]` and couples them additively with one branch :math:`F_i` per group:

.. math::
    Y_0 = \sum_{i \ge 2} X_i, \qquad Y_i = X_i + F_i(Y_{i-1}) \quad (i = 1, \dots, G)

so the input is recovered exactly (up to float round-off) from the output, in reverse order:

.. math::
    X_i = Y_i - F_i(Y_{i-1}) \quad (i = G, \dots, 2), \qquad X_1 = Y_1 - F_1\Big(\sum_{i \ge 2} X_i\Big).

A :class:`ReversibleStack` runs ``depth`` such layers through **one** custom autograd function:
the forward keeps no intermediate activation (each layer's input is dropped as soon as its output
exists; only the stack's output is saved), the backward rebuilds each layer's input by inversion and
re-evaluates each branch with gradients, one branch at a time. Peak activation memory is therefore
that of one branch, whatever the depth (compute: one extra forward).

Randomness. Recomputation must see the same random draws as the forward:

* dropout: :class:`SharedDropout` draws **one mask per forward** (per group) and every layer reuses it,
  as in RevGNN; the mask lives in the stack's per-call store, so recomputation reuses it too;
* any other randomness (stochastic dilation of a dynamic kNN, an ordinary ``nn.Dropout``): in training
  mode each branch call ``(layer l, group i)`` runs under its own generator seed
  ``base + l*G + i``, with one ``base`` drawn per forward (the global generator is forked, so the
  caller's stream only advances by that one draw). The backward replays the same seeds. This records
  the randomness of every layer in O(1) memory; the alternative, storing every layer's kNN indices
  (``B*N*k`` int64, i.e. ``8k`` bytes per point per layer — twice a 64-channel float32 group),
  would grow linearly with depth and defeat the purpose.

Graphs: sparse ``x (N, C)`` with ``edge_index`` (and any extra keyword arguments such as ``edge_attr``,
handed unchanged to every branch) or dense point blocks ``x (B, C, N)`` whose branches own a
:class:`~pointseg.nn.knn.DilatedKnn` and rebuild their graph from their own group input.

BatchNorm inside a branch would update its running statistics on the forward and again on every
recomputation; the stack refuses it (``batchnorm="error"``, the default) unless told how to handle it:
``"once"`` keeps batch statistics in training and restores the running statistics after each
recomputation (so they are updated exactly once per step), ``"freeze"`` keeps every branch BatchNorm in
eval mode (running statistics only, never updated). LayerNorm / GroupNorm / no norm need nothing.

Known limit: the inversion is exact in real arithmetic; in float32 the rebuilt input differs from the
forward's by round-off, so a dynamic kNN recomputed from a rebuilt group input (only the first group's
input :math:`Y_0` is rebuilt; every other branch input is an exact layer output) may break a near-tie
differently. The float64 tests show gradients equal to plain autograd to 1e-8.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from .checks import check_features
from .graph import channel_dim
from .knn import DilatedKnn
from .mlp import act_layer, norm_layer

BATCHNORM_MODES = ("error", "once", "freeze")


# --------------------------------------------------------------------------------------------
# shared dropout and per-call randomness


class _MaskStore:
    """Dropout masks of one stack call: one mask per (group, shape, p), drawn on first use.

    With a ``seed`` the masks come from their own generator: they are drawn inside the first
    layer's seeded branch call, and drawing them from that call's stream would shift every later
    draw of the branch (an edge drop, say) when the backward recomputes it with the mask stored.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.masks: dict[tuple, Tensor] = {}
        self.seed = seed
        self.generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self.generators:
            self.generators[device] = torch.Generator(device).manual_seed((self.seed + 0x9E3779B97F4A7C15) % 2**63)
        return self.generators[device]

    def mask(self, key: tuple, like: Tensor, p: float) -> Tensor:
        m = self.masks.get(key)
        if m is None:
            m = torch.empty_like(like).bernoulli_(1.0 - p, generator=self._generator(like.device)).div_(1.0 - p)
            self.masks[key] = m
        return m


class SharedDropout(nn.Module):
    r"""Dropout whose mask is drawn once per forward of the enclosing reversible stack / DEQ and
    shared by every layer (RevGNN). ``y = x * m / (1 - p)``, ``m ~ Bernoulli(1 - p)`` of ``x``'s shape.

    Outside a stack (no mask store attached) it behaves like ``nn.Dropout``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._store: _MaskStore | None = None
        self._group = 0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self._store is None:     # a fresh mask, drawn exactly as a stack would draw it
            return x * torch.empty_like(x).bernoulli_(1.0 - self.p).div_(1.0 - self.p)
        key = (self._group, tuple(x.shape), x.dtype, x.device, self.p)
        return x * self._store.mask(key, x.detach(), self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run the body with the generators of the CPU (and ``device``) seeded to ``seed``; restore after."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


class _AutocastState:
    """The autocast setting of a forward, re-entered around recomputations in the backward
    (otherwise a bf16 / fp16 forward would be recomputed in float32 and not invert exactly)."""

    def __init__(self, device: torch.device) -> None:
        self.device_type = device.type
        self.enabled = torch.is_autocast_enabled(self.device_type)
        self.dtype = torch.get_autocast_dtype(self.device_type) if self.enabled else None

    def __call__(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


# --------------------------------------------------------------------------------------------
# branch and layer


class RevBranch(nn.Module):
    r"""The branch :math:`F` of a reversible (or DEQ) layer: the pre-activation residual branch of a
    ``res+`` block without its skip connection,

    .. math::  F(x) = \mathrm{conv}\big(\mathrm{drop}(\sigma(\mathrm{norm}(x))),\ G(x)\big)

    where :math:`G(x)` is the dilated kNN of ``x`` itself (dynamic branch, ``knn`` given) or the graph
    passed in. ``norm=None, act=None, dropout=0`` gives a plain dynamic/static conv (the point-cloud
    branch, whose conv carries its own activation and norm).

    Shapes: dense ``(B, C, N)`` or sparse ``(N, C)`` in, same representation with ``conv.out_channels``
    channels out.
    """

    def __init__(self, conv: nn.Module, knn: DilatedKnn | None = None, norm: str | None = None,
                 act: str | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv, self.knn = conv, knn
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.norm = norm_layer(norm, self.in_channels)
        self.act = act_layer(act)
        self.dropout = SharedDropout(dropout)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, x: Tensor, graph: Tensor | None = None, batch: Tensor | None = None,
                **conv_kwargs: Any) -> Tensor:
        if self.knn is not None:
            graph = self.knn(x, batch) if x.dim() == 2 else self.knn(x)
        elif graph is None:
            raise ValueError("a static reversible branch needs a graph (neighbour indices or edge_index)")
        return self.conv(self.dropout(self.act(self.norm(x))), graph, **conv_kwargs)

    def extra_repr(self) -> str:
        return f"dynamic={self.knn is not None}"


BranchCall = Callable[[int, nn.Module, Tensor], Tensor]


class ReversibleLayer(nn.Module):
    r"""One grouped reversible layer: ``G = len(branches)`` channel groups, additive coupling
    (see the module docstring). Each branch maps ``C/G`` channels to ``C/G`` channels.

    ``forward(x, *args, **kwargs)`` and ``inverse(y, *args, **kwargs)`` pass ``args`` / ``kwargs``
    (graph, ``edge_attr``, ``batch``, ...) unchanged to every branch.
    Shapes: ``(N, C)`` or ``(B, C, N)`` in and out.
    """

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(branches) < 2:
            raise ValueError(f"a reversible layer needs at least 2 groups (branches), got {len(branches)}")
        self.branches = nn.ModuleList(branches)
        self.groups = len(branches)
        for i, f in enumerate(branches):
            cin, cout = getattr(f, "in_channels", None), getattr(f, "out_channels", None)
            if cin is not None and cout is not None and cin != cout:
                raise ValueError(f"branch {i} maps {cin} -> {cout} channels; a reversible branch must keep "
                                 f"its group width")
        widths = {getattr(f, "in_channels", None) for f in branches} - {None}
        if len(widths) > 1:
            raise ValueError(f"all branches of a reversible layer must have the same width, got {sorted(widths)}")
        self.group_channels = widths.pop() if widths else None

    def reset_parameters(self) -> None:
        for f in self.branches:
            if hasattr(f, "reset_parameters"):
                f.reset_parameters()

    def split(self, x: Tensor) -> list[Tensor]:
        check_features(x, "x", dims=(2, 3), finite=False)
        c = x.shape[channel_dim(x)]
        if c % self.groups:
            raise ValueError(f"x has {c} channels, not divisible by the {self.groups} groups of the "
                             f"reversible layer (shape {tuple(x.shape)})")
        if self.group_channels is not None and c != self.groups * self.group_channels:
            raise ValueError(f"x has {c} channels; this reversible layer expects {self.groups} groups of "
                             f"{self.group_channels} = {self.groups * self.group_channels} (shape {tuple(x.shape)})")
        return list(x.chunk(self.groups, dim=channel_dim(x)))

    def couple(self, x: Tensor, call: BranchCall) -> Tensor:
        """Forward coupling; ``call(i, F_i, h)`` evaluates branch ``i`` (lets the stack seed it)."""
        xs = self.split(x)
        h = xs[1]
        for t in xs[2:]:
            h = h + t
        ys = []
        for i, (xi, f) in enumerate(zip(xs, self.branches)):
            h = xi + call(i, f, h)
            ys.append(h)
        return torch.cat(ys, dim=channel_dim(x))

    def uncouple(self, y: Tensor, call: BranchCall) -> Tensor:
        """Inverse coupling (exact up to round-off)."""
        ys = self.split(y)
        xs: list[Tensor] = [y] * self.groups
        for i in range(self.groups - 1, 0, -1):
            xs[i] = ys[i] - call(i, self.branches[i], ys[i - 1])
        h = xs[1]
        for t in xs[2:]:
            h = h + t
        xs[0] = ys[0] - call(0, self.branches[0], h)
        return torch.cat(xs, dim=channel_dim(y))

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.couple(x, lambda i, f, h: f(h, *args, **kwargs))

    def inverse(self, y: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return self.uncouple(y, lambda i, f, h: f(h, *args, **kwargs))

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


# --------------------------------------------------------------------------------------------
# the stack and its memory-saving autograd function


class _CallArgs:
    """The non-tensor state of one call (seed, mask store, autocast) and where the tensors among
    its ``args`` / ``kwargs`` go back: those travel through autograd separately."""

    def __init__(self, args: tuple, kwargs: dict, seed: int | None, store: _MaskStore,
                 device: torch.device) -> None:
        self.seed, self.store, self.device = seed, store, device
        self.autocast = _AutocastState(device)
        self.arg_slots = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        self.kw_slots = [k for k, v in kwargs.items() if isinstance(v, Tensor)]
        self.args, self.kwargs = list(args), dict(kwargs)

    def tensors(self) -> list[Tensor]:
        return [self.args[i] for i in self.arg_slots] + [self.kwargs[k] for k in self.kw_slots]

    def bind(self, tensors: Sequence[Tensor]) -> tuple[list, dict]:
        args, kwargs = list(self.args), dict(self.kwargs)
        n = len(self.arg_slots)
        for i, t in zip(self.arg_slots, tensors[:n]):
            args[i] = t
        for k, t in zip(self.kw_slots, tensors[n:]):
            kwargs[k] = t
        return args, kwargs


class _Call(_CallArgs):
    """Everything one stack call needs besides the tensors autograd tracks."""

    def __init__(self, stack: "ReversibleStack", args: tuple, kwargs: dict, seed: int | None,
                 store: _MaskStore, device: torch.device) -> None:
        super().__init__(args, kwargs, seed, store, device)
        self.stack = stack

    def seed_of(self, layer: int, group: int) -> int | None:
        return None if self.seed is None else self.seed + layer * 1024 + group

    def runner(self, layer: int, args: Sequence, kwargs: dict) -> BranchCall:
        def call(i: int, f: nn.Module, h: Tensor) -> Tensor:
            with _seeded(self.seed_of(layer, i), self.device):
                return f(h, *args, **kwargs)
        return call


class _ReversibleFunction(torch.autograd.Function):
    """Forward without saving activations; backward by inversion + per-branch recomputation."""

    @staticmethod
    def forward(ctx, call: _Call, n_args: int, x: Tensor, *inputs: Tensor) -> Tensor:  # type: ignore[override]
        arg_tensors, params = inputs[:n_args], inputs[n_args:]
        args, kwargs = call.bind(arg_tensors)
        h = x
        for l, layer in enumerate(call.stack.sequence()):
            h = layer.couple(h, call.runner(l, args, kwargs))   # the previous h is dropped here
        ctx.call, ctx.n_args, ctx.n_params = call, n_args, len(params)
        ctx.params = params
        ctx.save_for_backward(h, *arg_tensors)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor) -> tuple:  # type: ignore[override]
        call: _Call = ctx.call
        y, *arg_tensors = ctx.saved_tensors
        params = ctx.params
        # gradients flow to args / kwargs tensors that need them (e.g. a learned edge embedding)
        arg_in = [t.detach().requires_grad_(t.requires_grad) for t in arg_tensors]
        args, kwargs = call.bind(arg_in)
        wants = [p for p in params if p.requires_grad] + [t for t in arg_in if t.requires_grad]
        slot = {id(t): n for n, t in enumerate(wants)}
        grads: list[Tensor | None] = [None] * len(wants)
        stack = call.stack
        dim = channel_dim(y)
        seq = list(stack.sequence())
        with call.stack._attached(call.store):
            for l in range(len(seq) - 1, -1, -1):
                layer = seq[l]
                run = call.runner(l, args, kwargs)
                ys = layer.split(y.detach())
                gys = list(gy.chunk(layer.groups, dim=dim))
                xs: list[Tensor] = [y] * layer.groups

                def step(i: int, inp: Tensor) -> tuple[Tensor, Tensor | None]:
                    """F_i(inp) recomputed with gradients; back-propagates ``gys[i]`` through it into the
                    parameter / argument gradients; returns F_i's value and the gradient w.r.t. ``inp``."""
                    inp = inp.detach().requires_grad_(True)
                    local = [p for p in layer.branches[i].parameters() if id(p) in slot]
                    targets = [inp] + local + [t for t in arg_in if t.requires_grad]
                    # BatchNorm saves its running statistics for the backward: restore them only after
                    with stack._bn_guard(layer.branches[i]):
                        with torch.enable_grad(), call.autocast():
                            out = run(i, layer.branches[i], inp)
                        got = torch.autograd.grad(out, targets, gys[i], allow_unused=True)
                    for t, g in zip(targets[1:], got[1:]):
                        if g is not None:
                            n = slot[id(t)]
                            grads[n] = g if grads[n] is None else grads[n] + g
                    return out.detach(), got[0]

                for i in range(layer.groups - 1, 0, -1):
                    f, g_in = step(i, ys[i - 1])
                    xs[i] = ys[i] - f
                    if g_in is not None:
                        gys[i - 1] = gys[i - 1] + g_in
                h = xs[1]
                for t in xs[2:]:
                    h = h + t
                f, g0 = step(0, h)
                xs[0] = ys[0] - f
                gxs = [gys[0]] + [g if g0 is None else g + g0 for g in gys[1:]]
                y = torch.cat(xs, dim=dim)
                gy = torch.cat(gxs, dim=dim)
        n_p = sum(1 for p in params if p.requires_grad)
        g_params, g_args = iter(grads[:n_p]), iter(grads[n_p:])
        out_params = [next(g_params) if p.requires_grad else None for p in params]
        out_args = [next(g_args) if t.requires_grad else None for t in arg_in]
        return (None, None, gy, *out_args, *out_params)


class ReversibleStack(nn.Module):
    r"""``depth`` grouped reversible layers run as one memory-saving autograd function.

    Args:
        layers: the :class:`ReversibleLayer` s, applied in order; or a single layer together with
            ``depth`` for a **weight-tied** stack (WT-RevGNN): the same branch weights at every layer,
            so the parameter count does not depend on ``depth``.
        depth: number of layers of a weight-tied stack (must be None for an untied list).
        memory_saving: True (default) runs the custom autograd function; False runs plain autograd
            through the same layers with the same randomness (reference / double-backward).
        batchnorm: ``"error"`` | ``"once"`` | ``"freeze"``: how BatchNorm inside a branch is handled
            (see the module docstring).

    ``forward(x, *args, **kwargs)``: ``x (N, C)`` or ``(B, C, N)``; ``args`` / ``kwargs`` go to every
    branch (a static graph, ``edge_attr``, ``batch``). Returns the last layer's output, same shape.
    """

    def __init__(self, layers: Sequence[ReversibleLayer] | ReversibleLayer, depth: int | None = None,
                 memory_saving: bool = True, batchnorm: str = "error") -> None:
        super().__init__()
        if batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
        if isinstance(layers, ReversibleLayer):
            if depth is None or depth < 1:
                raise ValueError(f"a weight-tied reversible stack needs depth >= 1, got {depth!r}")
            self.layers = nn.ModuleList([layers])
            self.tied = True
            self.depth = int(depth)
        else:
            layers = list(layers)
            if depth is not None:
                raise ValueError("depth is only for a weight-tied stack (one layer); got a list of layers")
            if not layers:
                raise ValueError("a reversible stack needs at least one layer")
            for n, layer in enumerate(layers):
                if not isinstance(layer, ReversibleLayer):
                    raise ValueError(f"layer {n} is a {type(layer).__name__}, not a ReversibleLayer")
            self.layers = nn.ModuleList(layers)
            self.tied = False
            self.depth = len(layers)
        self.memory_saving = memory_saving
        self.batchnorm = batchnorm
        bns = [name for name, m in self.layers.named_modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bns and batchnorm == "error":
            raise ValueError(
                f"BatchNorm inside a reversible branch ({bns[0]}{' and others' if len(bns) > 1 else ''}): its "
                "running statistics would be updated on the forward and again on every recomputation. Use "
                "LayerNorm / GroupNorm / no norm in the branches, or pass batchnorm='once' (batch statistics, "
                "running statistics updated once per step) or batchnorm='freeze' (eval-mode statistics).")
        if batchnorm == "freeze":
            self.train(self.training)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def train(self, mode: bool = True) -> "ReversibleStack":
        super().train(mode)
        if self.batchnorm == "freeze":
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def sequence(self) -> Iterator[ReversibleLayer]:
        """The layers in application order (the tied layer ``depth`` times)."""
        if self.tied:
            for _ in range(self.depth):
                yield self.layers[0]
        else:
            yield from self.layers

    @contextlib.contextmanager
    def _attached(self, store: _MaskStore) -> Iterator[None]:
        """Point every SharedDropout of the branches at this call's mask store (group-indexed)."""
        for layer in self.layers:
            for i, f in enumerate(layer.branches):
                for m in f.modules():
                    if isinstance(m, SharedDropout):
                        m._store, m._group = store, i
        try:
            yield
        finally:
            for m in self.modules():
                if isinstance(m, SharedDropout):
                    m._store = None

    @contextlib.contextmanager
    def _bn_guard(self, branch: nn.Module) -> Iterator[None]:
        """In ``once`` mode, undo the running-statistics update of a recomputation."""
        if self.batchnorm != "once":
            yield
            return
        bns = [m for m in branch.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None} for m in bns]
        try:
            yield
        finally:
            with torch.no_grad():
                for m, s in zip(bns, saved):
                    for k, b in s.items():
                        getattr(m, k).copy_(b)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        check_features(x, "x", dims=(2, 3), finite=False)
        # one base seed per forward (training only: eval-mode branches draw no random numbers)
        seed = int(torch.randint(0, 2**62, (1,))) if self.training else None
        store = _MaskStore(seed)
        call = _Call(self, args, kwargs, seed, store, x.device)
        with self._attached(store):
            if not self.memory_saving:
                h = x
                for l, layer in enumerate(self.sequence()):
                    h = layer.couple(h, call.runner(l, args, kwargs))
                return h
            arg_tensors = call.tensors()
            params = [p for p in self.parameters()]
            return _ReversibleFunction.apply(call, len(arg_tensors), x, *arg_tensors, *params)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, tied={self.tied}, memory_saving={self.memory_saving}"


# --------------------------------------------------------------------------------------------
# builders


def reversible_stack(make_branch: Callable[[int, int], nn.Module], depth: int, channels: int,
                     groups: int = 2, weight_tied: bool = False, **stack_kwargs: Any) -> ReversibleStack:
    """A stack of ``depth`` layers with ``groups`` branches each, ``make_branch(layer, group_channels)``
    building one branch (called once per group and layer; once per group when ``weight_tied``)."""
    if groups < 2:
        raise ValueError(f"groups must be >= 2, got {groups}")
    if channels % groups:
        raise ValueError(f"channels={channels} is not divisible by groups={groups}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    gc = channels // groups
    if weight_tied:
        return ReversibleStack(ReversibleLayer([make_branch(0, gc) for _ in range(groups)]),
                               depth=depth, **stack_kwargs)
    return ReversibleStack([ReversibleLayer([make_branch(l, gc) for _ in range(groups)])
                            for l in range(depth)], **stack_kwargs)


def build_reversible_point_backbone(cfg: Any) -> ReversibleStack:
    """The reversible backbone of :class:`~pointseg.models.SegGCN` (``backbone="rev"``).

    ``layers - 1`` layers of ``cfg.groups`` dynamic branches; layer ``l`` (0-based) rebuilds the
    dilated kNN of each group input with dilation ``1 + l`` (the ``res`` rule) and stochastic dilation
    as configured; each branch is ``conv(C/G -> C/G)`` with the net's activation and ``cfg.rev_norm``
    (LayerNorm by default: BatchNorm is not legal inside a reversible branch).
    """
    from .block import make_conv

    def branch(l: int, gc: int) -> nn.Module:
        knn = DilatedKnn(cfg.k, 1 + l, cfg.stochastic, cfg.epsilon, backend=cfg.knn_backend)
        conv = make_conv(cfg.conv, gc, gc, act=cfg.act, norm=cfg.rev_norm, bias=cfg.bias, order=cfg.order)
        return RevBranch(conv, knn=knn)

    return reversible_stack(branch, cfg.layers - 1, cfg.channels, cfg.groups,
                            weight_tied=getattr(cfg, "weight_tied", False))
