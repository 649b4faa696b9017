"""GCNConv equals torch_geometric's GCNConv with the same weights (outputs and gradients), dense and sparse."""
import pytest
import torch
from torch_geometric.nn import GCNConv as PygGCNConv

from pointseg.nn import GCNConv, GCNBlock, make_conv


def _pair(cin=6, cout=5, **kw):
    torch.manual_seed(0)
    ours = GCNConv(cin, cout, **kw).double()
    ref = PygGCNConv(cin, cout, **kw).double()
    ref.load_state_dict(ours.state_dict())          # parameter names are PyG's: lin.weight, bias
    with torch.no_grad():
        if ours.bias is not None:
            ours.bias.uniform_(-1, 1)               # a non-zero bias, so its use is checked too
            ref.bias.copy_(ours.bias)
    return ours, ref


def _graph(n=9, e=30, self_loops=True, seed=1):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    if self_loops:
        ei = torch.cat([ei, torch.tensor([[2, 2, 4], [2, 2, 4]])], 1)   # explicit (duplicate) self-loops
    return ei


def _check_same(ours, ref, x, ei, w=None):
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = ours(x1, ei, w)
    b = ref(x2, ei, w)
    assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-6)
    assert torch.allclose(ours.lin.weight.grad, ref.lin.weight.grad, atol=1e-6)
    if ours.bias is not None:
        assert torch.allclose(ours.bias.grad, ref.bias.grad, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"add_self_loops": False},
                                {"normalize": False}])
def test_sparse_equals_pyg_outputs_and_gradients(kw):
    ours, ref = _pair(**kw)
    x = torch.randn(9, 6, dtype=torch.double)
    _check_same(ours, ref, x, _graph())


def test_improved_doubles_self_loops_as_pyg_does_with_edge_weights():
    # PyG 2.8 applies improved's fill value 2 only when edge weights are passed (without them its loops get
    # weight 1); ours always does, so compare with explicit unit weights.
    ours, ref = _pair(improved=True)
    ei = _graph(self_loops=False)
    x = torch.randn(9, 6, dtype=torch.double)
    _check_same(ours, ref, x, ei, torch.ones(ei.shape[1], dtype=torch.double))
    plain = GCNConv(6, 5).double()
    plain.load_state_dict(ours.state_dict())
    assert not torch.allclose(plain(x, ei), ours(x, ei))


def test_sparse_edge_weights_equal_pyg_including_weighted_self_loops():
    ours, ref = _pair()
    ei = _graph()
    w = torch.rand(ei.shape[1], dtype=torch.double) + 0.1
    _check_same(ours, ref, torch.randn(9, 6, dtype=torch.double), ei, w)


def test_isolated_nodes_get_their_own_feature_and_no_nan():
    ours, ref = _pair()
    x = torch.randn(9, 6, dtype=torch.double)
    ei = torch.tensor([[0, 1], [1, 0]])                          # nodes 2..8 have no edges
    _check_same(ours, ref, x, ei)
    empty = torch.zeros(2, 0, dtype=torch.long)
    _check_same(ours, ref, x, empty)
    out = GCNConv(6, 5, add_self_loops=False).double()(x, empty)
    assert torch.isfinite(out).all()


def test_dense_knn_equals_pyg_on_the_equivalent_edge_index():
    ours, ref = _pair()
    B, N, k = 2, 7, 3
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, N, (B, N, k), generator=g)
    idx[:, :, 0] = torch.arange(N)                             # kNN lists the point itself first
    x = torch.randn(B, 6, N, dtype=torch.double)
    # dense graph of cloud b: edges idx[b, i, t] -> i, offset by b * N in one big graph
    src = (idx + torch.arange(B).view(B, 1, 1) * N).reshape(-1)
    dst = (torch.arange(N).view(1, N, 1).expand(B, N, k) + torch.arange(B).view(B, 1, 1) * N).reshape(-1)
    ei = torch.stack([src, dst])
    xs = x.transpose(1, 2).reshape(B * N, 6)
    x1, x2 = x.clone().requires_grad_(), xs.clone().requires_grad_()
    a = ours(x1, idx)
    b = ref(x2, ei)
    assert a.shape == (B, 5, N)
    assert torch.allclose(a.transpose(1, 2).reshape(B * N, 5), b, atol=1e-6)
    a.square().sum().backward()
    b.square().sum().backward()
    assert torch.allclose(x1.grad.transpose(1, 2).reshape(B * N, 6), x2.grad, atol=1e-6)
    assert torch.allclose(ours.lin.weight.grad, ref.lin.weight.grad, atol=1e-6)


def test_cached_normalisation_is_reused_and_refuses_another_graph_shape():
    ours, ref = _pair(cached=True)
    x = torch.randn(9, 6, dtype=torch.double)
    ei = _graph()
    _check_same(ours, ref, x, ei)
    ours.zero_grad()
    # the cached normalisation of the first graph is used again, even for the same-shape reversed graph
    # (the documented contract), and a graph of another shape is refused
    first = ours(x, ei)
    assert torch.allclose(ours(x, ei.flip(0)), first)
    with pytest.raises(ValueError, match="cached"):
        ours(x, ei[:, :5])
    ours.reset_parameters()                                    # clears the cache
    ours(x, ei[:, :5])


def test_registered_as_gcn_and_usable_in_a_residual_block():
    conv = make_conv("gcn", 8, 8)
    assert isinstance(conv, GCNConv)
    blk = GCNBlock(conv, kind="res")
    x = torch.randn(5, 8)
    out = blk(x, torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert out.shape == (5, 8) and torch.isfinite(out).all()
