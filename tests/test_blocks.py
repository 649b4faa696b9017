import pytest
import torch

from pointseg.nn import DilatedKnn, EdgeConv, GCNBlock, dilated_knn, make_conv


def test_block_kinds_compose_the_convolution_as_documented():
    x = torch.randn(2, 8, 40)
    idx = dilated_knn(x, 4)
    conv = make_conv("edge", 8, 8).eval()
    f = conv(x, idx)
    assert torch.equal(GCNBlock(conv, "plain").eval()(x, idx), f)
    torch.testing.assert_close(GCNBlock(conv, "res").eval()(x, idx), f + x)
    torch.testing.assert_close(GCNBlock(conv, "res", res_scale=0.5).eval()(x, idx), f + 0.5 * x)
    dense = GCNBlock(conv, "dense").eval()
    assert dense.out_channels == 16
    assert torch.equal(dense(x, idx), torch.cat([x, f], 1))


def test_res_plus_is_pre_activation_residual():
    x = torch.randn(30, 6)
    ei = torch.randint(0, 30, (2, 90))
    conv = make_conv("gin", 6, 6, norm=None, act=None)
    blk = GCNBlock(conv, "res+", norm="layer", act="relu", dropout=0.0)
    expect = x + conv(torch.relu(torch.nn.functional.layer_norm(x, (6,))), ei)
    torch.testing.assert_close(blk(x, ei), expect)


def test_dynamic_block_recomputes_the_graph_from_its_input():
    x = torch.randn(1, 4, 50)
    conv = EdgeConv(4, 4).eval()
    blk = GCNBlock(conv, "res", knn=DilatedKnn(5, 2)).eval()
    torch.testing.assert_close(blk(x), conv(x, dilated_knn(x, 5, 2)) + x)


def test_dynamic_block_on_sparse_batch():
    pos = torch.randn(60, 3)
    batch = torch.tensor([0, 1] * 30)
    blk = GCNBlock(make_conv("edge", 3, 3), "res", knn=DilatedKnn(4)).eval()
    out = blk(pos, batch=batch)
    assert out.shape == (60, 3) and torch.isfinite(out).all()


def test_block_rejects_bad_configuration():
    with pytest.raises(ValueError, match="kind must be one of"):
        GCNBlock(make_conv("edge", 4, 4), "highway")
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        GCNBlock(make_conv("edge", 4, 8), "res")
    with pytest.raises(ValueError, match="static block needs a graph"):
        GCNBlock(make_conv("edge", 4, 4), "res")(torch.randn(1, 4, 10))
