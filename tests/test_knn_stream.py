"""Stochastic dilation consumes the global random stream as the reference code does: one
torch.rand(1) per stochastic call (dilation 1 and eval mode included), then torch.randperm(k*d)
when the draw falls below epsilon in training."""
import pytest
import torch

from pointseg.nn.knn import dilated_knn


def _stream_after(fn):
    torch.manual_seed(123)
    fn()
    return torch.rand(4)


@pytest.mark.parametrize("dilation,training,epsilon", [(1, True, 0.0), (1, False, 1.0), (3, False, 1.0),
                                                       (3, True, 0.0)])
def test_a_call_without_random_ranks_consumes_one_uniform_draw(dilation, training, epsilon):
    x = torch.randn(1, 3, 40)
    after = _stream_after(lambda: dilated_knn(x, 4, dilation, stochastic=True, epsilon=epsilon,
                                              training=training))
    expect = _stream_after(lambda: torch.rand(1))
    assert torch.equal(after, expect)


@pytest.mark.parametrize("dilation", [1, 3])
def test_a_call_with_random_ranks_also_draws_the_permutation(dilation):
    x = torch.randn(1, 3, 40)
    after = _stream_after(lambda: dilated_knn(x, 4, dilation, stochastic=True, epsilon=1.0, training=True))
    expect = _stream_after(lambda: (torch.rand(1), torch.randperm(4 * dilation)))
    assert torch.equal(after, expect)


def test_non_stochastic_knn_draws_nothing():
    x = torch.randn(1, 3, 40)
    assert torch.equal(_stream_after(lambda: dilated_knn(x, 4, 3, training=True)), _stream_after(lambda: None))
