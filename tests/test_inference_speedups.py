"""Issue 27 item 4: the folded DGCNN inference path (models.dgcnn.FoldedDGCNN, nn.folded) and the
block scoring that uses it (segmentation.forward) against the module's own forward."""
import numpy as np
import pytest
import torch

from pointseg.models.dgcnn import DGCNN, FoldedDGCNN
from pointseg.nn import folded
from pointseg.nn.folded import FoldedEdgeMLP
from pointseg.segmentation import forward
from pointseg.segmentation.compact import compact_scores

CPU = torch.device("cpu")


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Eval mode, BatchNorm statistics and affine parameters far from the identity (some gammas
    negative, so the max-before-activation rule must take the folded sign into account)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
    return model.eval()


def small_dgcnn(dtype=torch.float32, **kw) -> DGCNN:
    torch.manual_seed(0)
    cfg = dict(out_channels=5, k=6, stages=((16, 16), (16, 16), (16,)), emb_channels=48, head_channels=(32, 24))
    cfg.update(kw)
    return randomised(DGCNN(**cfg)).to(dtype)


def random_blocks(b: int, n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((b, n, 9)).astype(dtype)
    x[..., :3] -= 0.5
    return x


def fixed_graphs(graphs):
    it = iter(graphs)
    return lambda feats: next(it)


@pytest.mark.parametrize("kw", [{}, {"bias": True}, {"act": "relu"}, {"stages": ((16, 8, 12), (16,))},
                                {"norm": "none", "bias": True}])
def test_folded_dgcnn_equals_the_module_in_float64_on_the_same_graphs(kw):
    model = small_dgcnn(torch.float64, **kw)
    plan = FoldedDGCNN.from_model(model)
    assert plan is not None
    x = torch.from_numpy(random_blocks(3, 200, dtype=np.float64))
    xc = x.transpose(1, 2).contiguous()
    with torch.no_grad():
        graphs = model.graphs(xc)
        ref = model(xc, neighbours=graphs).transpose(1, 2)
        got = plan(x, knn=fixed_graphs(graphs))
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


def test_folded_dgcnn_with_its_own_knn_equals_the_module_in_float64():
    model = small_dgcnn(torch.float64)
    x = torch.from_numpy(random_blocks(2, 256, seed=3, dtype=np.float64))
    with torch.no_grad():
        ref = model(x.transpose(1, 2).contiguous()).transpose(1, 2)
        got = FoldedDGCNN.from_model(model)(x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))


@pytest.mark.parametrize("native", [True, False])
def test_folded_edge_mlp_paths_equal_the_module(native, monkeypatch):
    """The compiled fused edge pass and the torch chunks, both against EdgeMLPConv (eval)."""
    from pointseg.nn import EdgeMLPConv, dilated_knn
    monkeypatch.setattr(folded, "USE_NATIVE", native)
    monkeypatch.setattr(folded, "EDGE_ROWS", 37)            # chunks that do not divide B N
    torch.manual_seed(1)
    for widths in ([64, 64], [32, 48], [64], [16, 16, 32], [20, 24]):
        conv = randomised(EdgeMLPConv(12, widths), seed=len(widths))
        x = torch.randn(2, 12, 300)
        idx = dilated_knn(x, 9)
        spec = FoldedEdgeMLP.from_module(conv)
        out = torch.full((2, 300, widths[-1] + 5), float("nan"))[:, :, 2:2 + widths[-1]]  # a strided slice
        with torch.no_grad():
            ref = conv(x, idx).transpose(1, 2)
            spec(x.transpose(1, 2), idx, out)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max())), widths


def test_not_foldable_models_keep_the_module_forward():
    assert FoldedDGCNN.from_model(small_dgcnn().train()) is None
    assert FoldedDGCNN.from_model(randomised(DGCNN(out_channels=5, k=6, order="conv-act-norm"))) is None
    assert FoldedDGCNN.from_model(randomised(DGCNN(out_channels=5, k=6, act="gelu"))) is None
    model = randomised(DGCNN(out_channels=5, k=6, norm="layer"))
    assert forward.prepared(model) is None
    blocks = random_blocks(2, 64)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(blocks).transpose(1, 2).contiguous()), 1).transpose(1, 2)
    torch.testing.assert_close(forward.block_scores(model, blocks, CPU, 8), ref)


def test_block_scores_folded_equals_the_module_forward_and_threads_change_nothing(monkeypatch):
    model = small_dgcnn()
    blocks = random_blocks(5, 256, seed=1)
    monkeypatch.setattr(forward, "FOLDED", False)
    ref = forward.block_scores(model, blocks, CPU, 2)
    monkeypatch.setattr(forward, "FOLDED", True)
    assert forward.prepared(model) is not None
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threaded = forward.block_scores(model, blocks, CPU, 2)
        monkeypatch.setattr(forward, "BLOCK_THREADS", False)
        serial = forward.block_scores(model, blocks, CPU, 2)
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before
    assert threaded.shape == ref.shape == (5, 256, 5) and threaded.dtype == torch.float32
    # own float32 kNN on both sides: a near-tie may move a neighbour of a few points
    off = (threaded - ref).abs() > 2e-5
    assert float(off.double().mean()) < 0.005
    assert float((threaded.argmax(-1) != ref.argmax(-1)).double().mean()) < 0.005
    torch.testing.assert_close(threaded, serial, rtol=0, atol=2e-6)


def test_the_prepared_plan_follows_changes_of_the_weights():
    model = small_dgcnn()
    blocks = random_blocks(2, 128, seed=2)
    p1 = forward.prepared(model)
    assert forward.prepared(model) is p1                     # cached
    with torch.no_grad():
        model.embed.norm.norm.running_mean.data.add_(0.5)     # .data: no version bump
        model.head[0].lin.weight.mul_(1.1)
        ref = torch.softmax(model(torch.from_numpy(blocks).transpose(1, 2).contiguous()), 1).transpose(1, 2)
    p2 = forward.prepared(model)
    assert p2 is not p1
    torch.testing.assert_close(forward.block_scores(model, blocks, CPU, 8), ref, rtol=0, atol=2e-5)
    model.train()
    assert forward.prepared(model) is None


def test_compact_scores_through_the_folded_plan_equal_the_module(monkeypatch):
    model = small_dgcnn()
    rng = np.random.default_rng(5)
    feats = [rng.random((n, 9)).astype(np.float32) for n in (1, 5, 40, 90, 41)]
    mults = [rng.integers(1, 4, len(f)) for f in feats]
    monkeypatch.setattr(forward, "FOLDED", False)
    ref = compact_scores(model, feats, mults, CPU, 256)
    monkeypatch.setattr(forward, "FOLDED", True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = compact_scores(model, feats, mults, CPU, 256)
    finally:
        torch.set_num_threads(before)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def real_model_and_blocks():
    from pointseg.assets import asset
    from pointseg.data.block_gen import room_to_blocks
    from pointseg.io.scans import read_scan
    from pointseg.segmentation.checkpoint import load_model
    model = load_model("dgcnn-s3dis", "cpu").network.eval()
    scan = read_scan(asset("sample_room.ply"))
    blocks, _ = room_to_blocks(scan.xyz, scan.rgb, 1.0, 1.0, 4096, min_points=100, rng=0)
    return model, blocks[::7][:6]


def test_real_weights_fold_exactly_on_the_same_graphs(real_model_and_blocks):
    """The imported S3DIS weights: folded equals the module within float32 rounding, same graphs."""
    model, blocks = real_model_and_blocks
    x = torch.from_numpy(blocks[:2].copy())
    xc = x.transpose(1, 2).contiguous()
    with torch.no_grad():
        graphs = model.graphs(xc)
        ref = model(xc, neighbours=graphs).transpose(1, 2)
        got = forward.prepared(model)(x, knn=fixed_graphs(graphs))
    assert float((got - ref).abs().max()) < 1e-3 * float(ref.abs().max())
    assert bool((got.argmax(-1) == ref.argmax(-1)).all())


def test_real_weights_block_scores_agree_on_sample_room_blocks(real_model_and_blocks, monkeypatch):
    """Own kNN on both sides: float32 near-ties may move a few neighbours, not the labels."""
    model, blocks = real_model_and_blocks
    monkeypatch.setattr(forward, "FOLDED", False)
    ref = forward.block_scores(model, blocks, CPU, 8)
    monkeypatch.setattr(forward, "FOLDED", True)
    got = forward.block_scores(model, blocks, CPU, 8)
    agree = float((got.argmax(-1) == ref.argmax(-1)).double().mean())
    assert agree >= 0.999, agree
    assert float((got - ref).abs().mean()) < 1e-4


@pytest.mark.skipif(not __import__("pointseg.nn.native", fromlist=["x"]).available(), reason="no compiled kernels")
def test_every_kernel_build_gives_the_fused_edge_pass_or_declines(tmp_path, monkeypatch):
    """-march=native, AVX2 + FMA only (where this CPU has them) and the portable builds: the fused
    edge MLP equals the torch path, or (no vector build) declines and writes nothing."""
    import ctypes
    from pointseg.nn import EdgeMLPConv, dilated_knn, native
    torch.manual_seed(4)
    conv = randomised(EdgeMLPConv(10, [32, 48, 16]), seed=9)
    spec = FoldedEdgeMLP.from_module(conv)
    x = torch.randn(2, 10, 150)
    idx = dilated_knn(x, 7)
    with torch.no_grad():
        ref = conv(x, idx).transpose(1, 2)
        ab = torch.addmm(spec.node_shift, x.transpose(1, 2).reshape(300, -1), spec.node_t)
    flag_sets = list(native.FLAG_SETS)
    ident = native._cpu_identity().split()
    if "avx2" in ident and "fma" in ident:
        flag_sets.append(native.FLAGS + ["-mavx2", "-mfma", "-fopenmp"])
    done = 0
    for i, flags in enumerate(flag_sets):
        path = tmp_path / f"k{i}.so"
        native._build(native._compiler(), flags, path)
        lib = ctypes.CDLL(str(path))
        native._declare(lib)
        monkeypatch.setattr(native, "_lib", lib)
        out = torch.full((2, 150, 16), float("nan"))
        ok = native.edge_mlp_max(ab[:, :32], ab[:, 32:], idx, spec, out)
        assert ok == native.has_knn_fused()
        if ok:
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
            done += 1
        else:
            assert bool(out.isnan().all())
    assert done >= 1
