"""DEQ-GNN: fixed point, implicit gradients, solver reporting and failures."""
from __future__ import annotations

import pytest
import torch

from pointseg.nn import DilatedKnn, EdgeConv, GINConv, SAGEConv
from pointseg.nn.deq import DEQ, DEQCell, DEQConvergenceError
from pointseg.nn.reversible import RevBranch, _MaskStore
from conftest import saved_bytes

DT = torch.float64


def graph(n=20, e=60):
    return torch.randint(0, n, (2, e), generator=torch.Generator().manual_seed(0))


def contractive_cell(conv, scale=0.05, **branch_kw):
    cell = DEQCell(RevBranch(conv, **branch_kw)).to(DT)
    with torch.no_grad():
        for p in cell.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return cell


def unrolled(cell, x, *args, iters=80):
    h = torch.zeros_like(x)
    for _ in range(iters):
        h = cell(h, x, *args)
    return h


@pytest.mark.parametrize("solver", ["anderson", "broyden", "picard"])
def test_deq_gradient_matches_unrolled_solve_on_a_sparse_graph(solver):
    torch.manual_seed(0)
    x = torch.randn(20, 6, dtype=DT, requires_grad=True)
    ei = graph()
    cell = contractive_cell(GINConv(6, 6, norm=None, act="none"), norm="layer", act="relu")
    deq = DEQ(cell, solver=solver, tol=1e-12, max_iter=300)
    z = deq(x, ei)
    assert deq.forward_info.converged and deq.forward_info.residual <= 1e-12
    loss = lambda h: (h ** 2).sum() + h.sum()
    g = torch.autograd.grad(loss(z), [x, *cell.parameters()])
    assert deq.backward_info.converged
    h = unrolled(cell, x, ei)
    g_ref = torch.autograd.grad(loss(h), [x, *cell.parameters()])
    assert torch.allclose(z, h, atol=1e-10)
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8)


def test_deq_gradient_matches_unrolled_solve_on_a_point_block_with_the_dropout_mask_held_fixed():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 24, dtype=DT, requires_grad=True)
    knn = DilatedKnn(3, 2, stochastic=True, epsilon=1.0).train()
    idx = knn(x)                                   # the graph of X, drawn once, fixed during the solve
    cell = contractive_cell(EdgeConv(4, 4, norm=None, act="none"), scale=0.2, norm="layer", act="relu",
                            dropout=0.3)
    deq = DEQ(cell, tol=1e-12, max_iter=300).train()
    torch.manual_seed(5)
    z = deq(x, idx)
    g = torch.autograd.grad(z.sum(), [x, *cell.parameters()])
    # the unrolled reference must see the dropout mask the DEQ held fixed: replay its seed every step
    # and share one mask store (seeded like the DEQ's) over all steps
    torch.manual_seed(5)
    seed = int(torch.randint(0, 2**62, (1,)))
    store = _MaskStore(seed)

    def f(h):
        with torch.random.fork_rng(), deq._attached(store):
            torch.manual_seed(seed)
            return cell(h, x, idx)
    h = torch.zeros_like(x)
    for _ in range(400):                           # plain iterations contract slowly (~0.9 per step)
        h = f(h)
    assert torch.allclose(z, h, atol=1e-10)
    g_ref = torch.autograd.grad(h.sum(), [x, *cell.parameters()])
    for a, b in zip(g, g_ref):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8)




def test_accelerated_solvers_need_fewer_evaluations_than_plain_iteration():
    torch.manual_seed(0)
    x = torch.randn(20, 6, dtype=DT)
    # weights scaled to contract slowly (plain iteration needs ~150 steps): where acceleration matters
    cell = contractive_cell(GINConv(6, 6, norm=None, act="none"), scale=0.6, norm="layer", act="relu")
    used = {}
    for solver in ("picard", "anderson", "broyden"):
        deq = DEQ(cell, solver=solver, tol=1e-10, max_iter=500)
        with torch.no_grad():
            deq(x, graph())
        assert deq.forward_info.converged
        used[solver] = deq.forward_info.iterations
    assert used["anderson"] < used["picard"] and used["broyden"] < used["picard"], used


def test_deq_memory_does_not_depend_on_iterations():
    x = torch.randn(20, 6, dtype=DT, requires_grad=True)
    ei = graph()
    cell = contractive_cell(SAGEConv(6, 6, norm=None), norm="layer", act="relu")
    sizes = {n: saved_bytes(lambda: DEQ(cell, tol=0.0, max_iter=n, on_fail="warn")(x, ei)) for n in (3, 40)}
    assert sizes[3] == sizes[40] == 2 * x.numel() * 8 + ei.numel() * 8   # z*, x, the graph: nothing per iteration


def test_non_convergence_raises_or_warns_as_configured():
    x = torch.randn(20, 6, dtype=DT)
    cell = contractive_cell(GINConv(6, 6, norm=None, act="none"), norm="layer", act="relu")
    with pytest.raises(DEQConvergenceError, match="did not converge"):
        DEQ(cell, tol=1e-14, max_iter=2)(x, graph())
    deq = DEQ(cell, tol=1e-14, max_iter=2, on_fail="warn")
    with pytest.warns(RuntimeWarning, match="did not converge"):
        deq(x, graph())
    assert not deq.forward_info.converged and deq.forward_info.iterations == 2
    assert deq.forward_info.residual > 1e-14


def test_divergent_solver_raises_even_when_warning_is_allowed():
    x = torch.randn(20, 6, dtype=DT)
    cell = contractive_cell(GINConv(6, 6, norm=None, act="none"), scale=1e3)   # expansive: blows up
    with pytest.raises(DEQConvergenceError):
        DEQ(cell, solver="picard", tol=1e-8, max_iter=500, on_fail="warn")(x, graph())


def test_bad_deq_arguments_are_refused():
    cell = DEQCell(RevBranch(SAGEConv(6, 6, norm=None)))
    with pytest.raises(ValueError, match="solver"):
        DEQ(cell, solver="newton")
    with pytest.raises(ValueError, match="max_iter"):
        DEQ(cell, max_iter=0)
    with pytest.raises(ValueError, match="z0"):
        DEQ(cell)(torch.randn(20, 6), graph(), z0=torch.zeros(20, 5))
    with pytest.raises(ValueError, match="BatchNorm"):
        DEQ(DEQCell(RevBranch(SAGEConv(6, 6, norm="batch")))).train()(torch.randn(20, 6), graph())
