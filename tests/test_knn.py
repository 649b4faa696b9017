import importlib.util

import pytest
import torch

from pointseg.nn import DilatedKnn, dilated_knn, dilated_knn_graph
from conftest import cuda


def brute_force_ranked(x):
    """All neighbours of every point sorted by distance, self first: (B, N, N)."""
    d = torch.cdist(x.transpose(1, 2).double(), x.transpose(1, 2).double())
    d.diagonal(dim1=1, dim2=2).fill_(-1.0)
    return d.argsort(dim=-1, stable=True)


def well_separated(B, C, N):
    # Random features with no near-ties, so the neighbour order is unambiguous.
    return torch.randn(B, C, N) * 10


@pytest.mark.parametrize("dilation", [1, 2, 5])
def test_dilated_knn_keeps_every_dth_rank_of_the_true_order(dilation):
    x = well_separated(2, 5, 120)
    k = 6
    idx = dilated_knn(x, k, dilation)
    ranked = brute_force_ranked(x)
    assert idx.shape == (2, 120, k) and idx.dtype == torch.long
    assert torch.equal(idx, ranked[:, :, : k * dilation : dilation])


def test_point_itself_is_rank_zero_even_with_duplicate_points():
    x = torch.randn(1, 3, 50)
    x[:, :, 10] = x[:, :, 11]        # exact duplicates tie at distance 0
    idx = dilated_knn(x, 4)
    assert torch.equal(idx[0, :, 0], torch.arange(50))


def test_chunked_equals_unchunked():
    x = well_separated(2, 8, 300)
    full = dilated_knn(x, 8, 3)
    tiny_budget = dilated_knn(x, 8, 3, memory_budget=2 * 300 * 4 * 3 * 7)  # ~7 rows per chunk
    assert torch.equal(full, tiny_budget)


def test_stochastic_dilation_picks_k_distinct_ranks_of_the_candidates_in_training_only():
    x = well_separated(1, 4, 200)
    k, d = 5, 4
    ranked = brute_force_ranked(x)[:, :, : k * d]
    seen_random = False
    for _ in range(20):
        idx = dilated_knn(x, k, d, stochastic=True, epsilon=1.0, training=True)
        # every neighbour is one of the k*d nearest, k distinct ones per point
        member = (idx[..., :, None] == ranked[..., None, :]).any(-1)
        assert bool(member.all())
        assert all(len(set(row.tolist())) == k for row in idx[0])
        if not torch.equal(idx, ranked[:, :, ::d]):
            seen_random = True
    assert seen_random
    # evaluation (training=False) always uses the deterministic dilation
    idx = dilated_knn(x, k, d, stochastic=True, epsilon=1.0, training=False)
    assert torch.equal(idx, ranked[:, :, ::d])


def test_module_is_stochastic_only_in_training():
    x = well_separated(1, 3, 100)
    knn = DilatedKnn(4, 3, stochastic=True, epsilon=1.0)
    knn.eval()
    assert torch.equal(knn(x), dilated_knn(x, 4, 3))


def test_sparse_knn_handles_unsorted_variable_size_clouds():
    sizes = [30, 55, 41]
    pos = torch.randn(sum(sizes), 3) * 10
    batch = torch.cat([torch.full((n,), b) for b, n in enumerate(sizes)])
    perm = torch.randperm(len(batch))           # interleave the clouds
    pos, batch = pos[perm], batch[perm]
    k, d = 4, 2
    ei = dilated_knn_graph(pos, k, batch, dilation=d)
    assert ei.shape == (2, len(batch) * k)
    for b in range(3):
        members = (batch == b).nonzero().flatten()
        sub = pos[members].t().unsqueeze(0)
        expect = members[brute_force_ranked(sub)[0, :, : k * d : d]]     # (n, k) global ids
        got = ei[0].view(-1, k)[members]
        assert torch.equal(got, expect)
        assert torch.equal(ei[1].view(-1, k)[members][:, 0], members)
        assert bool((batch[got] == b).all())                             # never across clouds


@pytest.mark.parametrize("native", [True, False])
def test_large_cloud_is_processed_in_bounded_chunks(monkeypatch, native):
    # A cloud whose full distance matrix would exceed the budget is done in row chunks:
    # every distance product the search makes stays within the budget.
    import pointseg.nn.knn as knn_mod
    shapes = []
    for name in ("bmm", "baddbmm"):
        real = getattr(torch, name)

        def spy(*a, _real=real, **kw):
            r = _real(*a, **kw)
            shapes.append(tuple(r.shape))
            return r
        monkeypatch.setattr(torch, name, spy)
    n = 2000
    x = torch.randn(1, 3, n)
    budget = 4 * n * 4 * 3 * 100                  # ~100 rows of n floats x 3 buffers
    idx = knn_mod._knn_select_torch(x, 8, 1, None, budget, use_native=native, fused=False)
    assert len(shapes) > 1 and all(s[1] * s[2] * 4 <= budget for s in shapes)
    assert torch.equal(idx, dilated_knn(x, 8))


@pytest.mark.parametrize("bad, msg", [
    (torch.randn(3, 10), "3-D"),
    (torch.randint(0, 5, (1, 3, 10)), "floating"),
    (torch.randn(1, 3, 0), "empty"),
    (torch.tensor([[[0.0, float("nan"), 1.0]]]), "NaN"),
])
def test_bad_features_raise_value_error_naming_shape(bad, msg):
    with pytest.raises(ValueError, match=msg):
        dilated_knn(bad, 1)


def test_k_larger_than_cloud_is_refused():
    with pytest.raises(ValueError, match=r"k\*dilation = 4\*3 = 12 exceeds the 10 points"):
        dilated_knn(torch.randn(1, 3, 10), 4, 3)
    with pytest.raises(ValueError, match="cloud 1"):
        dilated_knn_graph(torch.randn(12, 3), 4, torch.tensor([0] * 8 + [1] * 4), dilation=1 + 1)


@pytest.mark.skipif(importlib.util.find_spec("torch_cluster") is None, reason="torch-cluster not installed (optional extra)")
def test_torch_cluster_backend_matches_torch_backend():
    x = well_separated(2, 3, 150)
    assert torch.equal(dilated_knn(x, 6, 2, backend="cluster"), dilated_knn(x, 6, 2))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        dilated_knn(torch.randn(1, 3, 10), 2, backend="faiss")


@cuda
def test_cuda_matches_cpu():
    x = well_separated(2, 6, 500)
    assert torch.equal(dilated_knn(x.cuda(), 8, 3).cpu(), dilated_knn(x, 8, 3))
