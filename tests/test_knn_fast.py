"""The fast dilated kNN (chunked matmul + compiled multi-rank selection) gives the neighbours of
the straightforward full-matrix top-k formulation."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pointseg.nn import native
from pointseg.nn.knn import _knn_select_torch, dilated_knn, dilated_knn_graph
from pointseg.nn.reference import reference_knn

ROOT = Path(__file__).resolve().parents[1]


def stable_ranks(dist: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Oracle: full stable sort (ties by lower index), then the kept ranks."""
    return torch.argsort(dist, dim=-1, stable=True).index_select(-1, ranks)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_select_equals_stable_sort_with_many_ties(dtype):
    if not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.failure()}")
    g = torch.Generator().manual_seed(0)
    dist = torch.randint(0, 50, (37, 300), generator=g).to(dtype)     # heavy exact ties
    dist[:, 5] = -torch.inf
    dist[3] = 7.0                                                     # a constant row
    dist[4, :] = -dist[4, :]                                          # negative values
    for ranks in (torch.arange(16), torch.arange(0, 16 * 9, 9), torch.tensor([0, 1, 2, 150, 299]),
                  torch.randperm(300, generator=g)[:16].sort().values):
        assert torch.equal(native.rank_select(dist, ranks), stable_ranks(dist, ranks))


def test_rank_select_exact_when_sampled_threshold_is_too_low():
    """Rows built so that the strided sample holds the smallest values: the filtered pass keeps
    too few candidates and the kernel must fall back to the full row."""
    if not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.failure()}")
    n = 4096
    dist = torch.rand(8, n) + 10.0
    dist[:, :: n // 256] = torch.rand(8, 256) * 1e-3
    ranks = torch.arange(0, 400, 4)
    assert torch.equal(native.rank_select(dist, ranks), stable_ranks(dist, ranks))


def test_rank_select_rejects_bad_ranks():
    if not native.available():
        pytest.skip(f"compiled kernels unavailable: {native.failure()}")
    with pytest.raises(ValueError, match="bad ranks"):
        native.rank_select(torch.rand(2, 10), torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="bad ranks"):
        native.rank_select(torch.rand(2, 10), torch.tensor([0, 10]))


@pytest.mark.parametrize("k,dilation", [(4, 1), (5, 3), (8, 8), (10, 20)])
def test_dilated_knn_equals_full_matrix_topk(k, dilation):
    torch.manual_seed(1)
    x = torch.randn(2, 6, 200, dtype=torch.float64)    # float64: no rounding near-ties
    got = dilated_knn(x, k, dilation)
    want = reference_knn(x, k, dilation)
    assert got.shape == (2, 200, k)
    assert torch.equal(got[..., 0], torch.arange(200).expand(2, 200))    # self at rank 0
    assert torch.equal(got, want)


def test_float32_neighbours_equal_up_to_ties():
    torch.manual_seed(2)
    x = torch.randn(2, 16, 500)
    got, want = dilated_knn(x, 16, 4), reference_knn(x, 16, 4)
    xt = x.transpose(1, 2).double()
    d = torch.cdist(xt, xt) ** 2
    dg, dw = d.gather(2, got), d.gather(2, want)
    # same rank by rank up to float32 round-off of the distances
    torch.testing.assert_close(dg, dw, rtol=1e-4, atol=1e-4)
    assert (got == want).float().mean() > 0.99


def test_topk_selection_path_equals_compiled_path_and_chunking_is_invisible():
    torch.manual_seed(3)
    x = torch.randn(2, 5, 300, dtype=torch.float64)
    a = _knn_select_torch(x, 6, 4, None, 2**30, use_native=False)
    b = _knn_select_torch(x, 6, 4, None, 2**30)
    c = _knn_select_torch(x, 6, 4, None, 30_000)                 # ~ a dozen rows per chunk
    assert torch.equal(a, b) and torch.equal(b, c)


def test_stochastic_dilation_draws_the_same_ranks_as_the_reference():
    x = torch.randn(1, 3, 200, dtype=torch.float64)
    for seed in range(6):
        torch.manual_seed(seed)
        got = dilated_knn(x, 5, 4, stochastic=True, epsilon=0.5, training=True)
        torch.manual_seed(seed)
        want = reference_knn(x, 5, 4, stochastic=True, epsilon=0.5, training=True)
        assert torch.equal(got, want)


def test_sparse_knn_graph_equals_per_cloud_reference():
    torch.manual_seed(4)
    pos = torch.randn(90, 3, dtype=torch.float64)
    batch = torch.tensor([1] * 40 + [0] * 50)[torch.randperm(90)]
    ei = dilated_knn_graph(pos, 4, batch, dilation=2)
    for c in (0, 1):
        members = (batch == c).nonzero().squeeze(1)
        want = members[reference_knn(pos[members].t().unsqueeze(0), 4, 2)[0]]
        got = ei[0].view(90, 4)[members]
        assert torch.equal(got, want)


def test_missing_compiler_falls_back_with_one_warning(tmp_path):
    code = (
        "import warnings, torch\n"
        "warnings.simplefilter('always')\n"
        "from pointseg.nn import native\n"
        "from pointseg.nn.knn import dilated_knn\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    x = torch.randn(1, 3, 64)\n"
        "    a = dilated_knn(x, 4, 2); b = dilated_knn(x, 4, 2)\n"
        "    assert not native.available()\n"
        "    assert sum('native CPU kernels unavailable' in str(m.message) for m in w) == 1, [str(m.message) for m in w]\n"
        "print('ok')\n"
    )
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "POINTSEG_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_knn_equals_reference():
    torch.manual_seed(5)
    x = torch.randn(2, 6, 300, dtype=torch.float64, device="cuda")
    assert torch.equal(dilated_knn(x, 8, 3).cpu(), reference_knn(x.cpu(), 8, 3))


@pytest.mark.skipif(not native.available(), reason="no C++ compiler: only the torch path exists")
def cpu_has(flag: str) -> bool:
    return flag in native._cpu_identity().split()


def test_every_kernel_build_gives_the_same_results(tmp_path, monkeypatch):
    """The CPU-specific build (-march=native: vector filter and edge passes), an AVX2-only build
    (where this CPU has AVX2: its own vector selection) and the portable fallbacks agree exactly
    with each other (the torch path is compared with the loaded build above)."""
    import ctypes

    torch.manual_seed(8)
    x = torch.randn(2, 16, 700)
    x[:, :, 100:140] = x[:, :, 100:101]                      # exact ties
    dup = torch.randint(-1, 2, (2, 3, 1003)).float()         # 27 positions: ~37-fold ties
    few = torch.randint(-6, 7, (1, 64, 4096)).float()
    few[:, :, ::16] = 0.0                                    # the sample keeps too few: full rows
    a, b = torch.randn(2, 40, 700), torch.randn(2, 40, 700)  # 2 full 16-channel blocks + 8
    p, q = torch.randn(40, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    kd = ((8, 1), (8, 3), (16, 10))

    def results():
        out = [dilated_knn(x, k, d) for k, d in kd] + [dilated_knn(x.double(), k, d) for k, d in kd]
        edges = list(native.edge_forward(a, b, out[1], None, True, 0.0, True))
        edges += list(native.edge_backward(a, b, out[1], True, 0.0, p, q))
        out += [dilated_knn(dup, 16, 4), dilated_knn(few, 16, 20),
                native.rank_select(x[0], torch.arange(0, 64, 4))]
        return out, edges

    cxx = native._compiler()
    flag_sets = list(native.FLAG_SETS)
    if cpu_has("avx2") and cpu_has("fma"):
        flag_sets.append(native.FLAGS + ["-mavx2", "-mfma", "-fopenmp"])
    outputs = []
    for i, flags in enumerate(flag_sets):
        path = tmp_path / f"k{i}.so"
        native._build(cxx, flags, path)
        lib = ctypes.CDLL(str(path))
        native._declare(lib)
        monkeypatch.setattr(native, "_lib", lib)
        outputs.append(results())
    for got, edges in outputs[1:]:
        for g, w in zip(got, outputs[0][0]):
            assert torch.equal(g, w)
        for g, w in zip(edges, outputs[0][1]):               # float sums: order may differ
            torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


needs_native = pytest.mark.skipif(not native.available(), reason="symmetric-tile kNN needs the compiled kernels")


@needs_native
@pytest.mark.parametrize("k,dilation", [(16, 1), (8, 8), (8, 27)])
def test_symmetric_tile_knn_equals_full_matrix_topk(k, dilation):
    from pointseg.nn.knn import _knn_symmetric
    torch.manual_seed(10 + dilation)
    x = torch.randn(2, 6, 1100, dtype=torch.float64)
    xt = x.transpose(1, 2)
    sq = (xt * xt).sum(-1).unsqueeze(1)
    keep = torch.arange(0, k * dilation, dilation)
    got = _knn_symmetric(x, xt, sq, keep, 2**16)         # small tiles: many off-diagonal tiles
    assert got is not None                               # the symmetric scheme applies here
    assert torch.equal(got, reference_knn(x, k, dilation))
    assert torch.equal(_knn_select_torch(x, k, dilation, None, 2**20, symmetric=True), got)


@needs_native
def test_symmetric_tile_knn_stochastic_ranks_equal_reference():
    from pointseg.nn.knn import _select_ranks
    x = torch.randn(1, 5, 1200, dtype=torch.float64)
    for seed in range(4):
        torch.manual_seed(seed)
        ranks = _select_ranks(8, 8, True, 1.0, True, x.device)
        got = _knn_select_torch(x, 8, 8, ranks, 2**18, symmetric=True)
        torch.manual_seed(seed)
        want = reference_knn(x, 8, 8, stochastic=True, epsilon=1.0, training=True)
        assert torch.equal(got, want)


@needs_native
@pytest.mark.parametrize("sample_rank", [0, 255])
def test_symmetric_tile_knn_exact_when_threshold_too_low_or_lists_overflow(monkeypatch, sample_rank):
    """Rank 0 of the sample: too few candidates in every row; rank 255 (the sample's maximum):
    nearly every column survives and the per-row lists overflow. Both recompute rows in full."""
    from pointseg.nn import knn as K
    monkeypatch.setattr(K, "_sample_rank", lambda kmax, n: sample_rank)
    torch.manual_seed(11)
    x = torch.randn(2, 4, 1024, dtype=torch.float64)
    xt = x.transpose(1, 2)
    sq = (xt * xt).sum(-1).unsqueeze(1)
    got = K._knn_symmetric(x, xt, sq, torch.arange(0, 40, 4), 2**18)
    assert got is not None and torch.equal(got, reference_knn(x, 10, 4))


@needs_native
def test_symmetric_tile_knn_float32_matches_row_chunk_path_up_to_ties():
    torch.manual_seed(12)
    x = torch.randn(2, 32, 2048)
    a = _knn_select_torch(x, 16, 4, None, 2**22, symmetric=True)
    b = _knn_select_torch(x, 16, 4, None, 2**22, symmetric=False)
    same = (a.sort(-1).values == b.sort(-1).values).all(-1).float().mean()
    assert same > 0.99
    xt = x.transpose(1, 2).double()
    d = torch.cdist(xt, xt) ** 2
    torch.testing.assert_close(d.gather(2, a), d.gather(2, b), rtol=1e-4, atol=1e-4)


needs_fused = pytest.mark.skipif(not native.has_knn_fused(),
                                 reason="the fused kNN needs a kernel build with AVX-512 or AVX2 + FMA")


@needs_fused
@pytest.mark.parametrize("channels", [3, 9, 64])
@pytest.mark.parametrize("k,dilation,n", [(16, 1, 1003), (8, 8, 1003), (4, 27, 999), (4, 4, 37)])
def test_fused_knn_equals_a_stable_sort_of_exact_distances(channels, k, dilation, n):
    # Integer features: every dot product is exact in float32 whatever the summation order, so the
    # oracle is exact, ties included (broken by the lower index, the point itself first).
    g = torch.Generator().manual_seed(channels * 1000 + n)
    x = torch.randint(-6, 7, (2, channels, n), generator=g).float()
    ranks = torch.arange(0, k * dilation, dilation)
    x64 = x.double()
    d = (x64 * x64).sum(1).unsqueeze(1) - 2 * x64.transpose(1, 2) @ x64
    d.diagonal(dim1=1, dim2=2).fill_(-float("inf"))
    want = stable_ranks(d, ranks)
    got = _knn_select_torch(x, k, dilation, None, 2**20, fused=True)
    assert torch.equal(got, want)
    # and the row-chunk path (GEMM, then selection) agrees
    assert torch.equal(_knn_select_torch(x, k, dilation, None, 2**20, fused=False), want)


@needs_fused
def test_fused_knn_keeps_stochastic_ranks_and_matches_the_row_chunk_path_in_float32():
    torch.manual_seed(3)
    x = torch.randn(2, 64, 2048)
    ranks = torch.randperm(16 * 8)[:16].sort().values
    a = _knn_select_torch(x, 16, 8, ranks, 2**22, fused=True)
    b = _knn_select_torch(x, 16, 8, ranks, 2**22, fused=False)
    # the dot products are summed in another order: only float32 near-ties may differ
    assert (a == b).all(-1).float().mean() > 0.999


def exact_knn_ranks(x: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Oracle for integer features (exact in float32 and float64): a stable sort of
    ``|x_j|^2 - 2 q.x_j`` with the point itself first."""
    x64 = x.double()
    d = (x64 * x64).sum(1).unsqueeze(1) - 2 * x64.transpose(1, 2) @ x64
    d.diagonal(dim1=1, dim2=2).fill_(-float("inf"))
    return stable_ranks(d, ranks)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("stochastic", [False, True])
def test_knn_exact_when_the_sampled_threshold_keeps_too_few(fused, stochastic):
    """The strided sample (every 16th of 4096 columns) is 256 copies of the origin, nearer to every
    other point than almost all of the rest, and the row needs 320 ranks: the filtered pass keeps
    too few candidates and the selection must redo the row from all its values."""
    if fused and not native.has_knn_fused():
        pytest.skip("the fused kNN needs a kernel build with AVX-512 or AVX2 + FMA")
    g = torch.Generator().manual_seed(5)
    n, k, d = 4096, 16, 20
    x = torch.randint(-6, 7, (2, 64, n), generator=g).float()
    x[:, :, ::16] = 0.0
    ranks = torch.randperm(k * d, generator=g)[:k].sort().values if stochastic else torch.arange(0, k * d, d)
    want = exact_knn_ranks(x, ranks)
    got = _knn_select_torch(x, k, d, None if not stochastic else ranks, 2**22, fused=fused)
    assert torch.equal(got, want)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("k,dilation", [(16, 1), (16, 4), (8, 27)])
def test_knn_of_heavily_duplicated_points_breaks_ties_by_the_lower_index(fused, k, dilation):
    """27 distinct positions for 1003 points: every row has ties of ~37 at every distance, so
    the candidates at or below the threshold are far more than the ranks need."""
    if fused and not native.has_knn_fused():
        pytest.skip("the fused kNN needs a kernel build with AVX-512 or AVX2 + FMA")
    g = torch.Generator().manual_seed(k * dilation)
    x = torch.randint(-1, 2, (2, 3, 1003), generator=g).float()
    ranks = torch.arange(0, k * dilation, dilation)
    got = _knn_select_torch(x, k, dilation, None, 2**20, fused=fused)
    assert torch.equal(got, exact_knn_ranks(x, ranks))
    assert torch.equal(got[..., 0], torch.arange(1003).expand(2, 1003))    # the point itself first
    assert torch.equal(_knn_select_torch(x.double(), k, dilation, None, 2**20), got)
