"""GATConv: PyG's GATConv with the same weights, the RevGAT options, gradients, bad input."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import GATConv as PyGGATConv

from pointseg.nn import GATConv, make_conv


def graph(n: int = 30, e: int = 120, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, e), generator=g)
    return torch.randn(n, 7, generator=g, dtype=torch.float64), ei


@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_equals_pyg_gatconv_with_the_same_weights(concat, residual):
    torch.manual_seed(0)
    x, ei = graph()
    x.requires_grad_(True)
    ours = GATConv(7, 4, heads=3, concat=concat, residual=residual).double()
    with torch.no_grad():
        ours.bias.normal_()
    ref = PyGGATConv(7, 4, heads=3, concat=concat, residual=residual, add_self_loops=False).double()
    ref.load_state_dict(ours.state_dict())
    out, want = ours(x, ei), ref(x, ei)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-10)
    g1 = torch.autograd.grad(out.square().sum(), [x, ours.att_src, ours.lin.weight])
    g2 = torch.autograd.grad(want.square().sum(), [x, ref.att_src, ref.lin.weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_without_target_attention_the_softmax_sees_only_source_terms():
    torch.manual_seed(1)
    x, ei = graph()
    conv = GATConv(7, 5, heads=2, attn_dst=False, bias=False).double()
    assert conv.att_dst is None
    # oracle: per target, softmax over its in-edges of LeakyReLU(a_s . W x_j), written as a loop
    h = conv.lin(x).view(-1, 2, 5)
    s = torch.nn.functional.leaky_relu((h * conv.att_src).sum(-1), 0.2)
    want = torch.zeros(x.shape[0], 2, 5, dtype=x.dtype)
    for i in range(x.shape[0]):
        src = ei[0][ei[1] == i]
        if src.numel():
            a = torch.softmax(s[src], dim=0)
            want[i] = (a.unsqueeze(-1) * h[src]).sum(0)
    torch.testing.assert_close(conv(x, ei), want.reshape(x.shape[0], 10))


def test_edge_drop_renormalises_over_kept_edges_and_only_in_training():
    torch.manual_seed(2)
    x, ei = graph(e=300)
    conv = GATConv(7, 3, heads=1, edge_drop=0.5).double()
    conv.eval()
    torch.testing.assert_close(conv(x, ei), conv(x, ei))
    conv.train()
    torch.manual_seed(5)
    a = conv(x, ei)
    torch.manual_seed(5)
    keep = torch.rand(ei.shape[1]) >= 0.5
    torch.testing.assert_close(a, conv.eval()(x, ei[:, keep]))


def test_make_conv_gat_out_channels_is_the_total_width():
    conv = make_conv("gat", 16, 24, heads=3)
    assert conv.out_channels == 24 and conv.head_channels == 8
    with pytest.raises(ValueError, match="divisible by heads"):
        make_conv("gat", 16, 25, heads=3)


def test_isolated_nodes_get_residual_and_bias_only():
    x = torch.randn(4, 3, dtype=torch.float64)
    ei = torch.tensor([[0, 1], [1, 0]])
    conv = GATConv(3, 2, heads=2, residual=True).double()
    with torch.no_grad():
        conv.bias.fill_(0.5)
    out = conv(x, ei)
    torch.testing.assert_close(out[2:], conv.res(x[2:]) + 0.5)


def test_bad_input_is_refused():
    conv = GATConv(3, 2)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        conv(torch.randn(1, 3, 5), torch.zeros(1, 5, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        conv(torch.randn(4, 3), torch.tensor([[0, 9], [1, 0]]))
    with pytest.raises(ValueError, match="edge_drop"):
        GATConv(3, 2, edge_drop=1.0)


def test_symmetric_norm_scales_messages_by_source_and_output_by_target_degree():
    torch.manual_seed(3)
    x, ei = graph()
    plain = GATConv(7, 3, heads=2, bias=False).double()
    normed = GATConv(7, 3, heads=2, bias=False, sym_norm=True).double()
    normed.load_state_dict(plain.state_dict())
    n = x.shape[0]
    d_out = torch.bincount(ei[0], minlength=n).clamp(min=1).double()
    d_in = torch.bincount(ei[1], minlength=n).clamp(min=1).double()
    # scaling x_j by d_out^-1/2 scales h_j (linear, no bias) but also the attention logits, so the
    # oracle recomputes the attention on unscaled features and scales the values only
    h = plain.lin(x).view(n, 2, 3)
    logit = torch.nn.functional.leaky_relu((h * plain.att_src).sum(-1)[ei[0]] + (h * plain.att_dst).sum(-1)[ei[1]], 0.2)
    want = torch.zeros(n, 2, 3, dtype=x.dtype)
    for i in range(n):
        m = ei[1] == i
        if m.any():
            a = torch.softmax(logit[m], dim=0).unsqueeze(-1)
            want[i] = (a * h[ei[0][m]] * d_out[ei[0][m]].pow(-0.5).view(-1, 1, 1)).sum(0) * d_in[i].sqrt()
    torch.testing.assert_close(normed(x, ei), want.reshape(n, 6))
