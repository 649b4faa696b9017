import pytest
import torch

from pointseg.models import PRESETS, SegGCN, build_model, count_parameters
from conftest import cuda

# Exact trainable-parameter targets of the reference code (design notes §4), 9 inputs, 13 classes.
REFERENCE_COUNTS = {
    "resgcn-28": 3_644_301,
    "plaingcn-28": 3_644_301,
    "densegcn-28": 43_678_605,
    "resgcn-7": 1_403_853,
    "resgcn-56": 6_631_565,
}


@pytest.mark.parametrize("name, count", REFERENCE_COUNTS.items())
def test_preset_parameter_counts_match_reference(name, count):
    assert count_parameters(build_model(name)) == count


def test_dilation_rule_res_grows_plain_stays_one():
    res = build_model("resgcn-7")
    plain = build_model("plaingcn-28")
    assert [b.knn.dilation for b in res.backbone] == [1, 2, 3, 4, 5, 6]
    assert {b.knn.dilation for b in plain.backbone} == {1}
    assert all(b.knn.stochastic and b.knn.epsilon == 0.2 for b in res.backbone)


def test_layer_order_is_conv_relu_bn_by_default_and_selectable():
    m = build_model("resgcn-7")
    head = m.head.mlp
    assert head.order == "conv-act-norm"
    x = torch.randn(1, 9, 128)
    h = head.lin(torch.randn(1, 18, 128))
    head.eval()
    torch.testing.assert_close(head.post(h), head.norm(torch.relu(h)))
    m2 = build_model("resgcn-7", order="conv-norm-act").eval()
    torch.testing.assert_close(m2.head.mlp.post(h), torch.relu(m2.head.mlp.norm(h)))
    assert m2(x).shape == (1, 13, 128)


def test_forward_shape_and_eval_is_deterministic():
    m = SegGCN(layers=4, channels=16, k=4, fusion_channels=32).eval()
    x = torch.randn(2, 9, 100)
    y = m(x)
    assert y.shape == (2, 13, 100)
    assert torch.equal(y, m(x))


def test_small_resgcn_overfits_a_tiny_labelled_cloud():
    torch.manual_seed(0)
    n = 256
    xyz = torch.rand(1, 3, n)
    # labels from geometry: 3 horizontal slabs, a classic floor / furniture / ceiling layout
    labels = (xyz[0, 2] * 3).long().clamp(max=2).unsqueeze(0)
    x = torch.cat([xyz, torch.rand(1, 3, n), xyz], 1)
    m = SegGCN(layers=4, channels=32, k=8, fusion_channels=64, out_channels=3, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():   # batch statistics: 40 steps are too few to settle BN running stats
        acc = (m(x).argmax(1) == labels).float().mean()
    assert acc > 0.9


@pytest.mark.parametrize("shape, msg", [((9, 100), "3-D"), ((1, 6, 100), "9 channels")])
def test_model_rejects_bad_input_shape(shape, msg):
    m = SegGCN(layers=2, channels=8, k=4, fusion_channels=16)
    with pytest.raises(ValueError, match=msg):
        m(torch.randn(*shape))


def test_model_rejects_clouds_smaller_than_its_dilated_neighbourhood():
    m = SegGCN(layers=4, channels=8, k=8, fusion_channels=16)
    with pytest.raises(ValueError, match="exceeds"):
        m(torch.randn(1, 9, 20))


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match="did you mean resgcn-28"):
        build_model("resgcn28")


def test_all_presets_build():
    for name in PRESETS:
        assert count_parameters(build_model(name)) > 0


@cuda
def test_model_runs_on_cuda():
    m = SegGCN(layers=3, channels=16, k=4, fusion_channels=32).cuda()
    y = m(torch.randn(2, 9, 128, device="cuda"))
    y.sum().backward()
    assert y.is_cuda
