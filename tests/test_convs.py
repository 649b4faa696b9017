"""Convolutions: dense and sparse paths agree, EdgeConv matches PyG, gradients are right."""
import pytest
import torch
from torch_geometric.nn import EdgeConv as PygEdgeConv

from pointseg.nn import EdgeConv, GINConv, MRConv, SAGEConv, dilated_knn, make_conv


def dense_to_edge_index(idx):
    """(B, N, k) neighbour indices -> edge_index over the flattened batch."""
    B, N, k = idx.shape
    offset = (torch.arange(B) * N).view(B, 1, 1)
    j = (idx + offset).reshape(-1)
    i = (torch.arange(B * N)).repeat_interleave(k)
    return torch.stack([j, i])


def flat(x):
    """(B, C, N) -> (B*N, C)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def straightforward_edge_conv(conv, x, idx):
    """Reference formulation: gather [x_i, x_j - x_i] per edge, conv on every edge, act, norm, max."""
    B, C, N = x.shape
    k = idx.shape[-1]
    xj = torch.gather(x.unsqueeze(2).expand(B, C, N, N), 3, idx.unsqueeze(1).expand(B, C, N, k))
    xi = x.unsqueeze(-1).expand(B, C, N, k)
    e = torch.cat([xi, xj - xi], dim=1)                                  # (B, 2C, N, k)
    h = torch.einsum("oc,bcnk->bonk", conv.mlp.lin.weight, e) + conv.mlp.lin.bias.view(1, -1, 1, 1)
    return conv.mlp.post(h).amax(-1)


@pytest.mark.parametrize("train", [True, False])
def test_sparse_edge_conv_matches_pyg_edge_conv(train):
    x = torch.randn(40, 5)
    idx = dilated_knn(x.t().unsqueeze(0), 6)
    ei = dense_to_edge_index(idx)
    ours = EdgeConv(5, 7, act="relu", norm="batch")
    lin = torch.nn.Linear(10, 7)
    bn = torch.nn.BatchNorm1d(7)
    # PyG's EdgeConv re-initialises its nn on construction: copy weights afterwards.
    pyg = PygEdgeConv(torch.nn.Sequential(lin, torch.nn.ReLU(), bn), aggr="max")
    with torch.no_grad():
        lin.weight.copy_(ours.mlp.lin.weight)
        lin.bias.copy_(torch.randn(7))
        ours.mlp.lin.bias.copy_(lin.bias)
        bn.weight.copy_(torch.rand(7) + 0.5)
        bn.bias.copy_(torch.randn(7))
        ours.mlp.norm.norm.weight.copy_(bn.weight)
        ours.mlp.norm.norm.bias.copy_(bn.bias)
    ours.train(train), pyg.train(train)
    if not train:   # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
        ours.mlp.norm.norm.running_mean.copy_(bn.running_mean)
        ours.mlp.norm.norm.running_var.copy_(bn.running_var)
    torch.testing.assert_close(ours(x, ei), pyg(x, ei), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("order", ["conv-act-norm", "conv-norm-act"])
@pytest.mark.parametrize("train", [True, False])
def test_edge_conv_equals_straightforward_edge_formulation(order, train):
    x = torch.randn(2, 6, 64, dtype=torch.float64)
    idx = dilated_knn(x, 8, 2)
    conv = EdgeConv(6, 9, order=order).double().train(train)
    ref = EdgeConv(6, 9, order=order).double().train(train)
    ref.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(x, idx), straightforward_edge_conv(ref, x, idx))
    torch.testing.assert_close(conv.mlp.norm.norm.running_mean, ref.mlp.norm.norm.running_mean)


@pytest.mark.parametrize("name", ["edge", "mr", "sage", "rsage", "gin"])
@pytest.mark.parametrize("train", [True, False])
def test_dense_and_sparse_paths_agree(name, train):
    x = torch.randn(2, 4, 30)
    idx = dilated_knn(x, 5)
    conv = make_conv(name, 4, 6).train(train)
    dense = conv(x, idx)
    sparse = conv(flat(x), dense_to_edge_index(idx))
    assert dense.shape == (2, 6, 30)
    torch.testing.assert_close(flat(dense), sparse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["edge", "mr", "sage", "rsage", "gin"])
def test_gradcheck_float64(name):
    x = torch.randn(1, 3, 12, dtype=torch.float64, requires_grad=True)
    idx = dilated_knn(x.detach(), 3)
    conv = make_conv(name, 3, 4, norm=None, act="leakyrelu").double()
    assert torch.autograd.gradcheck(lambda t: conv(t, idx), (x,))
    xs = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    ei = dense_to_edge_index(idx)
    assert torch.autograd.gradcheck(lambda t: conv(t, ei), (xs,))


def test_mr_conv_relative_max():
    # MRConv on a path graph: x_i = i, neighbours {i, i+1}: max_j(x_j - x_i) = 1 except at the end.
    x = torch.arange(5.0).view(1, 1, 5)
    idx = torch.tensor([[[i, min(i + 1, 4)] for i in range(5)]])
    conv = MRConv(1, 1, act=None, norm=None)
    with torch.no_grad():
        conv.mlp.lin.weight.copy_(torch.tensor([[0.0, 1.0]]))
        conv.mlp.lin.bias.zero_()
    assert conv(x, idx).flatten().tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_gin_sums_neighbours_with_self_weight():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    ei = torch.tensor([[1, 2, 0], [0, 0, 1]])     # 1->0, 2->0, 0->1
    conv = GINConv(1, 1, act=None, norm=None, eps=0.5, train_eps=False)
    with torch.no_grad():
        conv.mlp.lin.weight.fill_(1.0)
        conv.mlp.lin.bias.zero_()
    assert conv(x, ei).flatten().tolist() == [1.5 * 1 + 2 + 4, 1.5 * 2 + 1, 1.5 * 4]


def test_isolated_nodes_get_finite_output():
    x = torch.randn(5, 3)
    ei = torch.tensor([[1], [0]])                  # only node 0 has a neighbour
    for name in ["edge", "mr", "sage", "gin"]:
        out = make_conv(name, 3, 4, norm=None)(x, ei)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("call, msg", [
    (lambda c: c(torch.randn(2, 3, 10), torch.zeros(2, 10, 4)), "int64"),
    (lambda c: c(torch.randn(2, 3, 10), torch.zeros(2, 9, 4, dtype=torch.long)), r"\(2, 10, \*\)"),
    (lambda c: c(torch.randn(2, 3, 10), torch.full((2, 10, 4), 10)), "outside"),
    (lambda c: c(torch.randn(10, 3), torch.zeros(3, 5, dtype=torch.long)), r"\(2, \*\)"),
    (lambda c: c(torch.randn(2, 5, 10), torch.zeros(2, 10, 4, dtype=torch.long)), "channels"),
])
def test_bad_graph_input_raises_clear_value_error(call, msg):
    with pytest.raises(ValueError, match=msg):
        call(EdgeConv(3, 4))


def test_unknown_conv_name_is_refused():
    with pytest.raises(ValueError, match="conv must be one of"):
        make_conv("gat2", 3, 4)
