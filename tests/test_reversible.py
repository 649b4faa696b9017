"""Grouped reversible layers, the memory-saving stack, weight tying and the reversible SegGCN."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from pointseg.models import build_model, count_parameters
from pointseg.nn import DilatedKnn, EdgeConv, GINConv, MRConv, SAGEConv
from pointseg.nn.reversible import (
    ReversibleLayer, ReversibleStack, RevBranch, reversible_stack,
)
from conftest import saved_bytes

DT = torch.float64


class EdgeAttrConv(nn.Module):
    """Test conv that uses edge features: h_i = W x_i + sum_j relu(x_j + e_ji)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.in_channels = self.out_channels = c
        self.lin = nn.Linear(c, c)

    def forward(self, x, edge_index, edge_attr):
        j, i = edge_index
        msg = torch.relu(x[j] + edge_attr)
        return self.lin(x) + torch.zeros_like(x).index_add(0, i, msg)


def sparse_graph(n=24, e=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (2, e), generator=g)


def grads_both_ways(stack, x, *args, loss=lambda y: (y ** 2).sum() + y.sum(), seed=7, extra=(), **kwargs):
    """Outputs and gradients of the memory-saving path and of plain autograd, same global seed."""
    res = []
    for saving in (True, False):
        stack.memory_saving = saving
        torch.manual_seed(seed)
        y = stack(x, *args, **kwargs)
        targets = [x, *extra, *stack.parameters()]
        res.append((y.detach(), torch.autograd.grad(loss(y), targets)))
    return res


def assert_same(res, tol=1e-8):
    (y1, g1), (y2, g2) = res
    assert torch.allclose(y1, y2, atol=tol, rtol=0)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=tol, rtol=tol), (a - b).abs().max()


@pytest.mark.parametrize("groups", [2, 3])
@pytest.mark.parametrize("dense", [False, True])
def test_inverse_recovers_the_input(groups, dense):
    torch.manual_seed(0)
    c = 4 * groups
    if dense:
        x = torch.randn(2, c, 20, dtype=DT)
        layer = ReversibleLayer([RevBranch(EdgeConv(4, 4, norm="layer"), knn=DilatedKnn(4, 2))
                                 for _ in range(groups)]).to(DT).eval()
        args = ()
    else:
        x = torch.randn(24, c, dtype=DT)
        layer = ReversibleLayer([RevBranch(SAGEConv(4, 4, norm="layer"), norm="layer", act="relu")
                                 for _ in range(groups)]).to(DT).eval()
        args = (sparse_graph(),)
    y = layer(x, *args)
    assert not torch.allclose(y, x)
    assert torch.allclose(layer.inverse(y, *args), x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("conv", [SAGEConv, GINConv, MRConv])
def test_memory_saving_gradients_equal_plain_autograd_on_sparse_graphs(conv):
    torch.manual_seed(1)
    x = torch.randn(24, 9, dtype=DT, requires_grad=True)
    stack = reversible_stack(lambda l, c: RevBranch(conv(c, c, norm="layer"), norm="layer", act="relu",
                                                    dropout=0.3), depth=4, channels=9, groups=3).to(DT).train()
    assert_same(grads_both_ways(stack, x, sparse_graph()))


def test_extra_keyword_arguments_reach_every_branch_and_get_gradients():
    torch.manual_seed(2)
    ei = sparse_graph()
    x = torch.randn(24, 8, dtype=DT, requires_grad=True)
    edge_attr = torch.randn(ei.shape[1], 4, dtype=DT, requires_grad=True)   # e.g. a learned edge embedding
    stack = reversible_stack(lambda l, c: RevBranch(EdgeAttrConv(c), norm="layer", act="relu"),
                             depth=3, channels=8, groups=2).to(DT).train()
    res = grads_both_ways(stack, x, ei, edge_attr=edge_attr, extra=(edge_attr,))
    assert_same(res)
    assert res[0][1][1].abs().sum() > 0          # edge_attr really received a gradient


def test_memory_saving_gradients_equal_plain_autograd_on_dynamic_point_blocks_with_stochastic_dilation():
    torch.manual_seed(3)
    x = torch.randn(2, 8, 40, dtype=DT, requires_grad=True)
    # epsilon=1: every layer takes a random k of its k*d candidates, so a recomputation that did not
    # replay the forward's randomness would see another graph
    stack = reversible_stack(lambda l, c: RevBranch(EdgeConv(c, c, norm="layer"),
                                                    knn=DilatedKnn(4, 2 + l, stochastic=True, epsilon=1.0)),
                             depth=3, channels=8, groups=2).to(DT).train()
    assert_same(grads_both_ways(stack, x, loss=lambda y: (y ** 3).sum()))
    # the randomness is real: another seed gives another output
    stack.memory_saving = True
    torch.manual_seed(123)
    other = stack(x).detach()
    torch.manual_seed(7)
    assert not torch.allclose(other, stack(x).detach())


def test_weight_tied_stack_gradients_and_parameter_count_independent_of_depth():
    def branch(l, c):
        return RevBranch(SAGEConv(c, c, norm="layer"), norm="layer", act="relu", dropout=0.2)
    counts = {d: count_parameters(reversible_stack(branch, d, 8, 2, weight_tied=True)) for d in (1, 5, 50)}
    assert len(set(counts.values())) == 1
    untied = count_parameters(reversible_stack(branch, 5, 8, 2))
    assert untied == 5 * counts[1]
    torch.manual_seed(4)
    x = torch.randn(24, 8, dtype=DT, requires_grad=True)
    stack = reversible_stack(branch, 4, 8, 2, weight_tied=True).to(DT).train()
    assert len(stack.state_dict()) == len(ReversibleLayer([branch(0, 4), branch(0, 4)]).state_dict())
    assert_same(grads_both_ways(stack, x, sparse_graph()))




def test_saved_activations_do_not_grow_with_depth():
    ei = sparse_graph()
    x = torch.randn(24, 8, dtype=DT, requires_grad=True)

    def saved(depth, saving):
        stack = reversible_stack(lambda l, c: RevBranch(GINConv(c, c, norm="layer"), norm="layer", act="relu"),
                                 depth, 8, 2, memory_saving=saving).to(DT).train()
        return saved_bytes(lambda: stack(x, ei))
    # only the stack's output (and the graph it was given)
    assert saved(2, True) == saved(16, True) == x.numel() * 8 + ei.numel() * 8
    assert saved(16, False) > 4 * saved(2, False)                       # plain autograd keeps every layer


def test_intermediate_activations_hold_no_storage_after_forward():
    torch.manual_seed(5)
    x = torch.randn(2, 8, 32, dtype=DT, requires_grad=True)

    def run(saving):
        stack = reversible_stack(lambda l, c: RevBranch(EdgeConv(c, c, norm="layer"), knn=DilatedKnn(4, 1), norm="layer"),
                                 depth=4, channels=8, groups=2, memory_saving=saving).to(DT).train()
        refs = []
        for m in stack.modules():
            if isinstance(m, RevBranch):
                m.register_forward_hook(lambda mod, inp, out: refs.extend([weakref.ref(inp[0]), weakref.ref(out)]))
        y = stack(x)
        gc.collect()
        return y, [r for r in refs if r() is not None]
    y, alive = run(True)
    assert len(alive) == 0
    assert [t.data_ptr() for t in y.grad_fn.saved_tensors] == [y.data_ptr()]
    _, alive_plain = run(False)                       # control: plain autograd keeps them
    assert len(alive_plain) > 0


def test_shared_dropout_draws_one_mask_per_forward_shared_by_all_layers():
    torch.manual_seed(6)
    seen = []

    def branch(l, c):
        b = RevBranch(SAGEConv(c, c, norm="layer"), dropout=0.5)
        b.dropout.register_forward_hook(lambda m, inp, out: seen.append((out != 0).clone()))
        return b
    stack = reversible_stack(branch, 5, 8, 2).train()
    x = torch.randn(24, 8) + 5.0               # no exact zeros in the branch inputs
    stack(x, sparse_graph())
    first = list(seen)
    assert len(first) == 10
    for g in range(2):                          # same mask for every layer of a group
        masks = first[g::2]
        assert all(torch.equal(m, masks[0]) for m in masks)
    assert not torch.equal(first[0], first[1])  # groups draw their own masks
    seen.clear()
    stack(x, sparse_graph())
    assert not torch.equal(seen[0], first[0])   # a new forward draws a new mask
    stack.eval()
    seen.clear()
    stack(x, sparse_graph())
    assert all(m.all() for m in seen)           # no dropout in eval


def test_channels_not_divisible_by_groups_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        reversible_stack(lambda l, c: RevBranch(SAGEConv(c, c, norm="layer")), 2, 10, 3)
    layer = ReversibleLayer([RevBranch(SAGEConv(3, 3, norm=None)) for _ in range(3)])
    with pytest.raises(ValueError, match="not divisible by the 3 groups"):
        layer(torch.randn(10, 8), sparse_graph(10, 20))


def test_batchnorm_in_a_branch_is_refused_unless_handled():
    def bn_branch(l, c):
        return RevBranch(SAGEConv(c, c, norm="batch"))
    with pytest.raises(ValueError, match="BatchNorm"):
        reversible_stack(bn_branch, 2, 8, 2)
    # "once": gradients equal plain autograd and the running statistics move exactly once per step
    torch.manual_seed(8)
    x = torch.randn(24, 8, dtype=DT, requires_grad=True)
    ei = sparse_graph()
    stacks = []
    for saving in (True, False):
        torch.manual_seed(9)
        s = reversible_stack(bn_branch, 3, 8, 2, batchnorm="once", memory_saving=saving).to(DT).train()
        torch.manual_seed(10)
        y = s(x, ei)
        y.square().sum().backward()
        stacks.append(s)
    for a, b in zip(stacks[0].buffers(), stacks[1].buffers()):
        assert torch.equal(a, b)
    for a, b in zip(stacks[0].parameters(), stacks[1].parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-8)
    # "freeze": BatchNorm stays in eval mode, running statistics never change
    s = reversible_stack(bn_branch, 2, 8, 2, batchnorm="freeze").train()
    before = [b.clone() for b in s.buffers()]
    s(torch.randn(24, 8, requires_grad=True), ei).sum().backward()
    assert all(torch.equal(a, b) for a, b in zip(before, s.buffers()))
    with pytest.raises(ValueError, match="batchnorm must be one of"):
        reversible_stack(bn_branch, 2, 8, 2, batchnorm="sometimes")


def test_branch_width_mismatch_and_bad_stack_arguments_are_refused():
    with pytest.raises(ValueError, match="keep its group width"):
        ReversibleLayer([RevBranch(SAGEConv(4, 8)), RevBranch(SAGEConv(4, 8))])
    with pytest.raises(ValueError, match="at least 2 groups"):
        ReversibleLayer([RevBranch(SAGEConv(4, 4))])
    layer = ReversibleLayer([RevBranch(SAGEConv(4, 4, norm=None)) for _ in range(2)])
    with pytest.raises(ValueError, match="depth >= 1"):
        ReversibleStack(layer, depth=0)
    with pytest.raises(ValueError, match="needs a graph"):
        layer(torch.randn(10, 8))


def test_reversible_seggcn_presets_count_and_train():
    c, g, k = 64, 2, 16
    gc_ = c // g

    def expected(layers):
        head = 2 * 9 * c + c + 2 * c                                  # EdgeConv(9->64) + BatchNorm
        branch = 2 * gc_ * gc_ + gc_ + 2 * gc_                        # EdgeConv(32->32) + LayerNorm
        fusion = 2 * c * 1024 + 1024 + 2 * 1024
        pred = (2 * c + 1024) * 512 + 512 + 2 * 512 + 512 * 256 + 256 + 2 * 256 + 256 * 13 + 13
        return head + (layers - 1) * g * branch + fusion + pred
    for name, n in (("revgcn-28", 28), ("revgcn-112", 112)):
        assert count_parameters(build_model(name)) == expected(n)
    # one training step of a short reversible net equals plain autograd through the same layers
    torch.manual_seed(11)
    x = torch.randn(2, 9, 48)
    grads = []
    for saving in (True, False):
        torch.manual_seed(12)
        model = build_model("revgcn-28", layers=5, k=4).train()
        model.backbone.memory_saving = saving
        torch.manual_seed(13)
        out = model(x)
        assert out.shape == (2, 13, 48)
        nn.functional.cross_entropy(out, torch.randint(0, 13, (2, 48))).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="BatchNorm"):
        build_model("revgcn-28", rev_norm="batch")


def test_recomputation_reenters_the_forwards_autocast():
    torch.manual_seed(15)
    x = torch.randn(50, 16, requires_grad=True)
    ei = sparse_graph(50, 200)
    stack = reversible_stack(lambda l, c: RevBranch(SAGEConv(c, c, norm="layer"), norm="layer", act="relu"),
                             4, 16, 2).train()
    res = []
    for saving in (True, False):
        stack.memory_saving = saving
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = stack(x, ei)
        res.append(torch.autograd.grad(y.float().square().sum(), [x, *stack.parameters()]))
    for a, b in zip(*res):      # a float32 recomputation of a bf16 forward is off by O(1) here
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_saving_gradients_equal_plain_autograd_on_cuda_with_stochastic_dilation():
    torch.manual_seed(14)
    x = torch.randn(2, 8, 40, dtype=DT, device="cuda", requires_grad=True)
    stack = reversible_stack(lambda l, c: RevBranch(EdgeConv(c, c, norm="layer"),
                                                    knn=DilatedKnn(4, 2, stochastic=True, epsilon=1.0), dropout=0.3),
                             depth=3, channels=8, groups=2).to(device="cuda", dtype=DT).train()
    assert_same(grads_both_ways(stack, x))
