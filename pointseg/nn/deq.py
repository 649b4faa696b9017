r"""Deep equilibrium GNN (DEQ-GNN, RevGNN §4.3): the output is the fixed point of one weight-tied block,

.. math::  Z^\star = f_\theta(Z^\star, X, G),

found by an accelerated root solver, with gradients by implicit differentiation. With
:math:`J = \partial f / \partial Z` at :math:`Z^\star`, the backward solves a second fixed point

.. math::  u = g + J^\top u \qquad\Big(u = (I - J^\top)^{-1} g,\ g = \partial L / \partial Z^\star\Big)

and returns :math:`\partial L/\partial \theta = u^\top \partial f/\partial \theta`,
:math:`\partial L/\partial X = u^\top \partial f/\partial X`. Neither pass keeps the iterations'
graphs: memory is one evaluation of ``f`` plus the solver's history, whatever the number of
iterations (the "depth").

Solvers: ``"anderson"`` (Anderson acceleration, type II, ``history`` past iterates, Tikhonov
regularisation ``lam``), ``"broyden"`` (limited-memory Broyden on :math:`f(Z) - Z = 0`, ``history``
rank-one updates) or ``"picard"`` (plain iteration :math:`Z \leftarrow f(Z)`). Convergence is
measured by the relative residual :math:`\|f(Z) - Z\| / \|f(Z)\|`; the last solves' residuals and
iteration counts are reported in :attr:`DEQ.forward_info` / :attr:`DEQ.backward_info`.
On non-convergence (or a non-finite iterate) ``on_fail="raise"`` raises :class:`DEQConvergenceError`;
``on_fail="warn"`` warns and continues with the lowest-residual iterate.

Randomness: ``f`` must be a deterministic function for a fixed point to exist, so in training every
evaluation of ``f`` in one call (forward solve and backward) runs under the same generator seed (one
drawn per forward) and every :class:`~pointseg.nn.reversible.SharedDropout` in ``f`` uses one mask per
call: a stochastic-dilation kNN or dropout is drawn once and held fixed during the solve.

Graphs: pass the graph as an argument (``edge_index``, or for point blocks the dilated kNN of
:math:`X`, computed once). A dynamic kNN *inside* the cell, recomputed from :math:`Z`, makes ``f``
piecewise (the graph jumps when neighbour ranks swap) and the solver may cycle without converging.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .checks import check_features
from .reversible import SharedDropout, _CallArgs, _MaskStore, _seeded

SOLVERS = ("anderson", "broyden", "picard")
ON_FAIL = ("raise", "warn")


class DEQConvergenceError(RuntimeError):
    """The fixed-point solver did not reach its tolerance (or produced NaN / inf)."""


@dataclass
class SolverInfo:
    residual: float        # relative residual ||f(z) - z|| / ||f(z)|| of the returned iterate
    iterations: int        # evaluations of f
    converged: bool


def _rel_residual(fz: Tensor, z: Tensor) -> float:
    return float((fz - z).norm() / (fz.norm() + 1e-30))


class _Progress:
    """What every solver tracks: the lowest-residual iterate so far, and when to stop."""

    def __init__(self, z0: Tensor, tol: float) -> None:
        self.shape, self.tol = z0.shape, tol
        self.best, self.best_res = z0, float("inf")

    def done(self, z: Tensor, fz: Tensor, it: int) -> tuple[Tensor, SolverInfo] | None:
        """The solve's result once iterate ``z`` (with value ``fz``) ends it: converged or non-finite."""
        res = _rel_residual(fz, z)
        if not torch.isfinite(fz).all() or res != res:
            return self.best, SolverInfo(float("nan"), it, False)
        if res < self.best_res:
            self.best, self.best_res = z.view(self.shape).clone(), res
        if res <= self.tol:
            return z.view(self.shape), SolverInfo(res, it, True)
        return None

    def failed(self, max_iter: int) -> tuple[Tensor, SolverInfo]:
        return self.best, SolverInfo(self.best_res, max_iter, False)


def picard(f: Callable[[Tensor], Tensor], z0: Tensor, tol: float, max_iter: int) -> tuple[Tensor, SolverInfo]:
    """Plain fixed-point iteration; returns the lowest-residual iterate."""
    z, progress = z0, _Progress(z0, tol)
    for it in range(1, max_iter + 1):
        fz = f(z)
        if (out := progress.done(z, fz, it)) is not None:
            return out
        z = fz
    return progress.failed(max_iter)


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, tol: float, max_iter: int, history: int = 5,
             lam: float = 1e-4, beta: float = 1.0) -> tuple[Tensor, SolverInfo]:
    r"""Anderson acceleration of :math:`z = f(z)`.

    Keeps the last ``m = history`` iterates :math:`z_k` and values :math:`f(z_k)`; the next iterate
    mixes them with weights :math:`\alpha` minimising :math:`\|\sum_k \alpha_k (f(z_k) - z_k)\|^2 +
    \lambda\|\alpha\|^2` subject to :math:`\sum_k \alpha_k = 1`:
    :math:`z_{+} = \beta \sum_k \alpha_k f(z_k) + (1 - \beta) \sum_k \alpha_k z_k`.
    Memory: ``2 m`` copies of ``z``. Returns the lowest-residual iterate.
    """
    shape, n = z0.shape, z0.numel()
    m = max(1, history)
    Z = z0.new_zeros(m, n)
    FZ = z0.new_zeros(m, n)
    progress = _Progress(z0, tol)
    z = z0.reshape(-1)
    for it in range(1, max_iter + 1):
        fz = f(z.view(shape)).reshape(-1)
        if (out := progress.done(z, fz, it)) is not None:
            return out
        k = (it - 1) % m
        Z[k], FZ[k] = z, fz
        n_hist = min(it, m)
        G = FZ[:n_hist] - Z[:n_hist]                                   # residuals (n_hist, n)
        # bordered normal equations of the constrained least squares, solved in float64
        H = torch.zeros(n_hist + 1, n_hist + 1, dtype=torch.float64, device=z.device)
        H[0, 1:] = H[1:, 0] = 1.0
        GG = (G @ G.T).double()                                        # (n_hist, n_hist): cheap to upcast
        # the floor keeps H regular once the residuals reach round-off (e.g. tol=0)
        reg = lam * float(GG.diagonal().mean()) + 1e-12 * float(fz.double().norm()) ** 2 + 1e-300
        H[1:, 1:] = GG + reg * torch.eye(n_hist, dtype=torch.float64, device=z.device)
        rhs = torch.zeros(n_hist + 1, dtype=torch.float64, device=z.device)
        rhs[0] = 1.0
        alpha = torch.linalg.solve(H, rhs)[1:].to(z.dtype)
        if not torch.isfinite(alpha).all():       # degenerate history: take a plain step
            z = fz.clone()
            continue
        z = beta * (alpha @ FZ[:n_hist]) + (1.0 - beta) * (alpha @ Z[:n_hist])
    return progress.failed(max_iter)


def broyden(f: Callable[[Tensor], Tensor], z0: Tensor, tol: float, max_iter: int,
            history: int = 5) -> tuple[Tensor, SolverInfo]:
    r"""Limited-memory ("good") Broyden's method on the root of :math:`g(z) = f(z) - z`.

    The inverse Jacobian of :math:`g` is approximated by :math:`H = -I + U V^	op` with the last
    ``m = history`` rank-one updates; each step is :math:`z_+ = z - H g(z)` and, with
    :math:`s = z_+ - z`, :math:`y = g(z_+) - g(z)`, the update adds
    :math:`u = (s - H y) / (s^	op H y)`, :math:`v = H^	op s` (Sherman-Morrison form of Broyden's
    Jacobian update). Starts as plain iteration (:math:`H = -I`). Memory: ``2 m`` copies of ``z``.
    Returns the lowest-residual iterate.
    """
    shape, n = z0.shape, z0.numel()
    m = max(1, history)
    U = z0.new_zeros(m, n)
    V = z0.new_zeros(m, n)
    used = 0

    def h(x: Tensor) -> Tensor:             # H x = -x + U^T-weighted sum of the stored updates
        return -x + (V[:used] @ x) @ U[:used] if used else -x

    def ht(x: Tensor) -> Tensor:            # H^T x
        return -x + (U[:used] @ x) @ V[:used] if used else -x

    z = z0.reshape(-1)
    fz = f(z.view(shape)).reshape(-1)
    g = fz - z
    progress = _Progress(z0, tol)
    for it in range(1, max_iter + 1):
        if (out := progress.done(z, fz, it)) is not None:
            return out
        if it == max_iter:
            break
        step = -h(g)
        z_new = z + step
        fz = f(z_new.view(shape)).reshape(-1)
        g_new = fz - z_new
        hy = h(g_new - g)
        denom = float(step @ hy)
        if used == m:                    # memory full: restart from H = -I (overwriting the oldest
            used = 0                     # update would break the product form and can diverge)
        if abs(denom) > 1e-30 * float(step @ step) and denom == denom:
            U[used] = (step - hy) / denom
            V[used] = ht(step)
            used += 1
        z, g = z_new, g_new
    return progress.failed(max_iter)


class DEQCell(nn.Module):
    r"""The standard DEQ-GNN map with input injection: :math:`f(Z, X) = X + F(Z)` for a branch ``F``
    (e.g. :class:`~pointseg.nn.reversible.RevBranch`); graph arguments go to ``F``."""

    def __init__(self, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch

    def reset_parameters(self) -> None:
        if hasattr(self.branch, "reset_parameters"):
            self.branch.reset_parameters()

    def forward(self, z: Tensor, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return x + self.branch(z, *args, **kwargs)


class _Run(_CallArgs):
    def __init__(self, deq: "DEQ", args: tuple, kwargs: dict, seed: int | None, store: _MaskStore,
                 device: torch.device) -> None:
        super().__init__(args, kwargs, seed, store, device)
        self.deq = deq

    def f(self, x: Tensor, tensors: list[Tensor]) -> Callable[[Tensor], Tensor]:
        args, kwargs = self.bind(tensors)

        def fz(z: Tensor) -> Tensor:
            with _seeded(self.seed, self.device):
                return self.deq.cell(z, x, *args, **kwargs)
        return fz


class _DEQFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _Run, n_args: int, z0: Tensor, x: Tensor, *inputs: Tensor) -> Tensor:  # type: ignore[override]
        deq = run.deq
        arg_tensors, params = list(inputs[:n_args]), inputs[n_args:]
        z, info = deq.solve(run.f(x, arg_tensors), z0, deq.tol, deq.max_iter, "forward")
        deq.forward_info = info
        ctx.run, ctx.params = run, params
        ctx.save_for_backward(z, x, *arg_tensors)
        return z

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gz: Tensor) -> tuple:  # type: ignore[override]
        run: _Run = ctx.run
        deq = run.deq
        z, x, *arg_tensors = ctx.saved_tensors
        xx = x.detach().requires_grad_(x.requires_grad)
        arg_in = [t.detach().requires_grad_(t.requires_grad) for t in arg_tensors]
        with deq._attached(run.store), torch.enable_grad(), run.autocast():
            zz = z.detach().requires_grad_(True)
            fz = run.f(xx, arg_in)(zz)

            def vjp(u: Tensor) -> Tensor:  # u -> g + J^T u
                return torch.autograd.grad(fz, zz, u, retain_graph=True)[0] + gz

            u, info = deq.solve(vjp, gz, deq.backward_tol, deq.backward_max_iter, "backward")
            deq.backward_info = info
            params = ctx.params
            targets = [t for t in [xx, *arg_in, *params] if t.requires_grad]
            got = iter(torch.autograd.grad(fz, targets, u, allow_unused=True))
        g = [next(got) if t.requires_grad else None for t in [xx, *arg_in, *params]]
        return (None, None, None, *g)


class DEQ(nn.Module):
    r"""Fixed point :math:`Z^\star = f(Z^\star, X, \ldots)` of one weight-tied ``cell``.

    Args:
        cell: module called as ``cell(z, x, *args, **kwargs)``, returning ``z``'s shape (e.g. :class:`DEQCell`).
        solver: ``"anderson"`` | ``"broyden"`` | ``"picard"``.
        tol, max_iter: forward stopping rule (relative residual, evaluations of ``f``).
        backward_tol, backward_max_iter: the implicit-gradient solve (default: the forward's).
        history: Anderson / Broyden memory.
        on_fail: ``"raise"`` (:class:`DEQConvergenceError`) or ``"warn"`` (use the best iterate).

    ``forward(x, *args, z0=None, **kwargs)``: ``x (N, C)`` or ``(B, C, N)``; ``z0`` the initial guess
    (zeros of ``x``'s shape by default). Returns :math:`Z^\star`.
    """

    def __init__(self, cell: nn.Module, solver: str = "anderson", tol: float = 1e-4, max_iter: int = 50,
                 backward_tol: float | None = None, backward_max_iter: int | None = None, history: int = 5,
                 on_fail: str = "raise") -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
        if on_fail not in ON_FAIL:
            raise ValueError(f"on_fail must be one of {ON_FAIL}, got {on_fail!r}")
        for name, v in (("tol", tol), ("backward_tol", backward_tol)):
            if v is not None and not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        for name, v in (("max_iter", max_iter), ("backward_max_iter", backward_max_iter), ("history", history)):
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.cell = cell
        self.solver, self.tol, self.max_iter, self.history = solver, tol, max_iter, history
        self.backward_tol = tol if backward_tol is None else backward_tol
        self.backward_max_iter = max_iter if backward_max_iter is None else backward_max_iter
        self.on_fail = on_fail
        self.forward_info: SolverInfo | None = None
        self.backward_info: SolverInfo | None = None

    def reset_parameters(self) -> None:
        if hasattr(self.cell, "reset_parameters"):
            self.cell.reset_parameters()

    def solve(self, f: Callable[[Tensor], Tensor], z0: Tensor, tol: float, max_iter: int,
              which: str) -> tuple[Tensor, SolverInfo]:
        with torch.no_grad():
            if self.solver == "anderson":
                z, info = anderson(f, z0, tol, max_iter, self.history)
            elif self.solver == "broyden":
                z, info = broyden(f, z0, tol, max_iter, self.history)
            else:
                z, info = picard(f, z0, tol, max_iter)
        if not info.converged:
            tol_ = f"> tol={tol:g}" if info.residual == info.residual else "(non-finite iterate)"
            msg = (f"DEQ {which} solve ({self.solver}) did not converge: relative residual {info.residual:.3g} "
                   f"{tol_} after {info.iterations} iterations; raise max_iter / tol or make the cell more "
                   f"contractive (smaller weights, a norm in the branch)")
            if self.on_fail == "raise" or info.residual != info.residual:
                raise DEQConvergenceError(msg + ("" if self.on_fail == "warn" else ", or pass on_fail='warn'"))
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return z, info

    @contextlib.contextmanager
    def _attached(self, store: _MaskStore) -> Iterator[None]:
        drops = [m for m in self.cell.modules() if isinstance(m, SharedDropout)]
        for m in drops:
            m._store, m._group = store, 0
        try:
            yield
        finally:
            for m in drops:
                m._store = None

    def forward(self, x: Tensor, *args: Any, z0: Tensor | None = None, **kwargs: Any) -> Tensor:
        check_features(x.detach(), "x", dims=(2, 3))
        if z0 is None:
            z0 = torch.zeros_like(x)
        elif z0.shape != x.shape:
            raise ValueError(f"z0 must have x's shape {tuple(x.shape)}, got {tuple(z0.shape)}")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.cell.modules()) and self.training:
            raise ValueError("BatchNorm inside a DEQ cell: every solver iteration would update its running "
                             "statistics and the batch statistics change the map being solved; use LayerNorm "
                             "/ GroupNorm / no norm")
        seed = int(torch.randint(0, 2**62, (1,))) if self.training else None
        store = _MaskStore(seed)
        run = _Run(self, args, kwargs, seed, store, x.device)
        with self._attached(store):
            arg_tensors = run.tensors()
            params = list(self.parameters())
            return _DEQFunction.apply(run, len(arg_tensors), z0.detach(), x, *arg_tensors, *params)

    def extra_repr(self) -> str:
        return (f"solver={self.solver!r}, tol={self.tol}, max_iter={self.max_iter}, "
                f"backward_tol={self.backward_tol}, backward_max_iter={self.backward_max_iter}, "
                f"on_fail={self.on_fail!r}")
