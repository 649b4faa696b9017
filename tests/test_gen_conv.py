"""GENConv: limits of the aggregations, gradients, equality with PyG's GENConv, robustness."""
import pytest
import torch
from torch_geometric.nn import GENConv as PygGENConv
from torch_geometric.utils import scatter

from pointseg.nn import GCNBlock, GENConv, MsgNorm, make_conv


def small_graph(n=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g)
    src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 4, 1])
    dst = torch.tensor([1, 2, 3, 4, 5, 0, 3, 0, 1, 4])
    return x, torch.stack([src, dst])


def aggregate(conv, x, ei):
    return conv.aggregate(conv.message(x, ei, None), ei[1], x.shape[0])


def test_softmax_with_tiny_beta_is_mean_and_large_beta_is_max():
    x, ei = small_graph()
    msg = torch.relu(x[ei[0]]) + 1e-7
    mean = scatter(msg, ei[1], dim=0, dim_size=6, reduce="mean")
    mx = scatter(msg, ei[1], dim=0, dim_size=6, reduce="max")
    small = GENConv(4, 4, aggr="softmax", t=1e-6)
    large = GENConv(4, 4, aggr="softmax", t=1e4)
    assert torch.allclose(aggregate(small, x, ei), mean, atol=1e-5)
    assert torch.allclose(aggregate(large, x, ei), mx, atol=1e-4)
    assert not torch.allclose(mean, mx, atol=1e-3)   # the two limits really differ here


def test_power_mean_with_p_one_is_mean_and_large_p_approaches_max():
    x, ei = small_graph()
    x = x.abs() + 1.0          # messages >= 1 so that m ** 40 stays inside the clamp range
    msg = x[ei[0]] + 1e-7
    mean = scatter(msg, ei[1], dim=0, dim_size=6, reduce="mean")
    mx = scatter(msg, ei[1], dim=0, dim_size=6, reduce="max")
    assert torch.allclose(aggregate(GENConv(4, 4, aggr="power", p=1.0), x, ei), mean, atol=1e-5)
    assert torch.allclose(aggregate(GENConv(4, 4, aggr="power", p=40.0, clamp=(1e-7, 1e30)), x, ei), mx, rtol=0.05)


def test_learnable_beta_and_p_receive_nonzero_gradients():
    x, ei = small_graph()
    for kw, name in ((dict(aggr="softmax", learn_t=True, t=0.5), "t"),
                     (dict(aggr="power", learn_p=True, p=2.0), "p")):
        conv = GENConv(4, 4, norm="none", **kw)
        conv(x, ei).pow(2).sum().backward()
        grad = getattr(conv, name).grad
        assert grad is not None and grad.abs().item() > 0


def test_softmax_sg_stops_gradient_through_weights_but_not_values():
    x, ei = small_graph()
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    for aggr, xx in zip(("softmax", "softmax_sg"), xs):
        conv = GENConv(4, 4, aggr=aggr, t=3.0)
        aggregate(conv, xx, ei).sum().backward()
    assert xs[1].grad is not None and xs[1].grad.abs().sum() > 0
    assert not torch.allclose(xs[0].grad, xs[1].grad)


@pytest.mark.parametrize("aggr,kw", [
    ("softmax", dict(t=1.0, learn_t=True)),
    ("softmax_sg", dict(t=0.1)),
    ("power", dict(p=1.5, learn_p=True)),
    ("mean", {}), ("max", {}),
])
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_matches_pyg_genconv_with_equal_weights(aggr, kw, norm):
    torch.manual_seed(0)
    x, ei = small_graph(n=6, c=8)
    edge_attr = torch.randn(ei.shape[1], 8)
    ours = GENConv(8, 8, aggr=aggr, norm=norm, mlp_layers=2, msg_norm=True, learn_msg_scale=True,
                   clamp=(1e-4, 100.0), **kw)
    pyg_kw = {k: v for k, v in kw.items()}
    pyg = PygGENConv(8, 8, aggr=aggr, norm=norm, num_layers=2, msg_norm=True, learn_msg_scale=True,
                     bias=True, **pyg_kw)
    lins = [m for m in pyg.mlp if isinstance(m, torch.nn.Linear) or m.__class__.__name__ == "Linear"]
    ours_lins = [layer.lin for layer in ours.mlp]
    with torch.no_grad():
        for a, b in zip(ours_lins, lins):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)
        ours.mlp[0].norm.norm.load_state_dict(pyg.mlp[1].state_dict())
    ours.train(), pyg.train()
    out_ours = ours(x, ei, edge_attr)
    out_pyg = pyg(x, ei, edge_attr)
    assert torch.allclose(out_ours, out_pyg, atol=1e-5), (out_ours - out_pyg).abs().max()


def test_isolated_nodes_and_empty_graph_give_no_nan():
    x = torch.randn(5, 4)
    ei = torch.tensor([[0, 1], [1, 0]])                 # nodes 2, 3, 4 isolated
    empty = torch.zeros(2, 0, dtype=torch.long)
    for aggr in ("softmax", "softmax_sg", "power", "mean", "max", "sum"):
        conv = GENConv(4, 4, aggr=aggr, learn_p=aggr == "power", learn_t=aggr == "softmax").eval()
        for g in (ei, empty):
            out = conv(x, g)
            assert torch.isfinite(out).all(), aggr
            conv.train()
            out = conv(x, g)
            out.sum().backward()
            assert all(torch.isfinite(p.grad).all() for p in conv.parameters() if p.grad is not None)
            conv.eval()
        # isolated nodes aggregate to exactly 0
        assert torch.equal(aggregate(conv, x, ei)[2:], torch.zeros(3, 4))


def test_res_plus_block_wraps_genconv_and_edge_encoders_work():
    x, ei = small_graph(c=8)
    conv = make_conv("gen", 8, 8, aggr="softmax", learn_t=True, edge_encoder="linear", edge_dim=3)
    blk = GCNBlock(conv, kind="res+", norm="layer", dropout=0.1)
    out = blk(x, ei, edge_attr=torch.randn(ei.shape[1], 3))
    assert out.shape == (6, 8)
    bond = GENConv(8, 8, edge_encoder="bond")
    out = bond(x, ei, torch.zeros(ei.shape[1], 3, dtype=torch.long))
    assert out.shape == (6, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="edge_attr"):
        bond(x, ei)


def test_dense_input_matches_sparse_input():
    torch.manual_seed(1)
    conv = GENConv(4, 6, aggr="softmax", norm="layer").eval()
    x = torch.randn(2, 4, 5)
    idx = torch.randint(0, 5, (2, 5, 3))
    dense = conv(x, idx)
    flat = x.transpose(1, 2).reshape(10, 4)
    src = (idx + torch.tensor([0, 5]).view(2, 1, 1)).reshape(-1)
    dst = (torch.arange(5).view(1, 5, 1).expand(2, 5, 3) + torch.tensor([0, 5]).view(2, 1, 1)).reshape(-1)
    sparse = conv(flat, torch.stack([src, dst]))
    assert torch.allclose(dense.transpose(1, 2).reshape(10, 6), sparse, atol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="aggr"):
        GENConv(4, 4, aggr="median")
    with pytest.raises(ValueError, match="learn_t"):
        GENConv(4, 4, aggr="softmax_sg", learn_t=True)
    conv = GENConv(4, 4)
    with pytest.raises(ValueError, match="channels"):
        conv(torch.randn(3, 5), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="edge_index"):
        conv(torch.randn(3, 4), torch.tensor([[0], [7]]))


def test_msg_norm_scales_message_to_node_norm():
    mn = MsgNorm(learn_scale=True)
    x, m = torch.randn(3, 4), torch.randn(3, 4)
    out = mn(x, m)
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert mn.scale.requires_grad and not MsgNorm(False).scale.requires_grad
