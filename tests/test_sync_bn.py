"""Synced BatchNorm: float64 statistics whatever the input dtype; one running-statistics rule
(momentum or cumulative average) shared with the fast EdgeConv path, equal to nn.BatchNorm1d."""
import pytest
import torch
from torch import nn

from pointseg.nn.edge_reduce import edge_reduce, edge_reduce_reference
from pointseg.nn.mlp import ConvNormAct
from pointseg.nn.sync_batch_norm import synced_batch_norm, update_running_stats


def _bn(c, momentum=0.1):
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision_input_gives_float64_statistics(dtype):
    # (8, 64, 65536): 524288 values per channel; their fp16 sum overflows (max 65504)
    g = torch.Generator().manual_seed(0)
    x64 = (torch.randn(8, 64, 65536, generator=g, dtype=torch.float64) * 2 + 3)
    x = x64.to(dtype)
    ref_in = x.double()                     # the same (rounded) values, in float64
    bn_lo, bn_ref = _bn(64), _bn(64).double()
    y = synced_batch_norm(x, bn_lo)
    y_ref = bn_ref(ref_in)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    assert torch.isfinite(bn_lo.running_var).all()
    torch.testing.assert_close(bn_lo.running_mean.double(), bn_ref.running_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn_lo.running_var.double(), bn_ref.running_var, rtol=1e-5, atol=1e-5)
    # output: only the final rounding to the input dtype separates it from float64
    eps = torch.finfo(dtype).eps
    err = (y.double() - y_ref).abs().max().item()
    assert err <= 4 * eps * y_ref.abs().max().item()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_synced_path_running_stats_equal_batchnorm1d(momentum):
    bn, ref = _bn(5, momentum), _bn(5, momentum)
    g = torch.Generator().manual_seed(2)
    for step in range(4):
        x = torch.randn(3, 5, 17, generator=g, dtype=torch.float64).float() * (step + 1) + step
        y = synced_batch_norm(x, bn)
        torch.testing.assert_close(y, ref(x), rtol=1e-5, atol=1e-5)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_fast_edge_path_running_stats_equal_batchnorm1d(momentum):
    torch.manual_seed(3)
    fast = ConvNormAct(6, 8, norm="batch", act="relu")
    ref = ConvNormAct(6, 8, norm="batch", act="relu")
    ref.load_state_dict(fast.state_dict())
    for layer in (fast, ref):
        bn = layer.norm.norm
        bn.momentum = momentum
    g = torch.Generator().manual_seed(4)
    for step in range(3):
        a = torch.randn(2, 8, 20, generator=g) + step
        b = torch.randn(2, 8, 20, generator=g)
        idx = torch.randint(0, 20, (2, 20, 4), generator=g)
        edge_reduce(a, b, idx, fast)
        edge_reduce_reference(a, b, idx, ref)       # nn.BatchNorm1d on the materialised edges
    bf, br = fast.norm.norm, ref.norm.norm
    assert int(bf.num_batches_tracked) == int(br.num_batches_tracked) == 3
    torch.testing.assert_close(bf.running_mean, br.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bf.running_var, br.running_var, rtol=1e-5, atol=1e-6)


def test_running_stats_accept_a_tensor_count_without_host_sync():
    bn, ref = nn.BatchNorm1d(3, momentum=None), nn.BatchNorm1d(3, momentum=None)
    x = torch.randn(4, 3, 9)
    ref(x)
    update_running_stats(bn, x.mean((0, 2)), x.var((0, 2), unbiased=False), torch.tensor(36.0))
    torch.testing.assert_close(bn.running_var, ref.running_var)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
