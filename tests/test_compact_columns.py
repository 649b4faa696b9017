"""Sparse columns at the cost of their points (engine.compact, issue 27): the compact evaluation
against its exact oracle, the padded block it replaces."""
import numpy as np
import pytest
import torch

from pointseg.data.block_gen import room_normalization, room_to_blocks
from pointseg.segmentation.compact import (bucket_of, compact_limit, compact_scores, compact_supported, cut_columns,
                                     multiset_knn)
from pointseg.segmentation.inference import SlidingConfig, occupied_corners, score_points
from pointseg.models import SegGCN, SegGCNConfig
from pointseg.models.dgcnn import DGCNN
from pointseg.nn.knn import dilated_knn

CPU = torch.device("cpu")


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode with BatchNorm statistics far from the identity, so every layer matters."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_models():
    torch.manual_seed(0)
    return {"dgcnn": randomised(DGCNN(out_channels=5, k=6, stages=((16, 16), (16,)), emb_channels=32,
                                      head_channels=(32,))),
            "resgcn": randomised(SegGCN(SegGCNConfig(out_channels=5, layers=3, channels=8, k=4,
                                                     fusion_channels=16, stochastic=False)))}


def padded(n: int, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """The release's padding of a column of n points: every point once, then random repeats."""
    return np.concatenate((np.arange(n), rng.choice(n, num_points - n, replace=True)))


@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_the_multiset_knn_picks_the_distinct_points_the_padded_blocks_knn_picks(dilation):
    rng = np.random.default_rng(dilation)
    k, num_points = 5, 200
    for n in (1, 2, 7, 30, 50):
        feats = rng.random((n, 4)).astype(np.float32)
        pick = padded(n, num_points, rng)
        ref = dilated_knn(torch.from_numpy(feats[pick].T.copy())[None], k, dilation)[0].numpy()
        mult = torch.from_numpy(np.bincount(pick, minlength=n))[None]
        got = multiset_knn(torch.from_numpy(feats.T.copy())[None], mult, k, dilation)[0].numpy()
        # the padded block's neighbours, as distinct points, for each distinct point's first copy
        assert np.array_equal(pick[ref[:n]], got), f"n={n}"


@pytest.mark.parametrize("name", ["dgcnn", "resgcn"])
def test_compact_scores_equal_the_padded_blocks_votes(name):
    model = tiny_models()[name]
    assert compact_supported(model)
    rng = np.random.default_rng(0)
    num_points = 128
    feats, mults, refs = [], [], []
    for n in (1, 3, 9, 20, 31, 32, 33):     # several per bucket: batched with empty places
        f = rng.random((n, 9)).astype(np.float32)
        pick = padded(n, num_points, rng)
        with torch.no_grad():
            p = torch.softmax(model(torch.from_numpy(f[pick].T.copy())[None]), 1)[0].T.numpy()
        ref = np.zeros((n, 5))
        np.add.at(ref, pick, p)                 # every copy votes for its point
        feats.append(f)
        mults.append(np.bincount(pick, minlength=n))
        refs.append(ref)
    got = compact_scores(model, feats, mults, CPU, max_points=4096)
    for f, m, r, g in zip(feats, mults, refs, got):
        assert g.shape == (len(f), 5)
        np.testing.assert_allclose(g * m[:, None], r, atol=1e-4 * num_points / len(f), rtol=1e-4)


def test_without_compact_columns_the_cut_is_room_to_blocks():
    rng = np.random.default_rng(3)
    xyz = rng.random((3000, 3)) * [4, 3, 2]
    xyz[:2900, :2] *= 0.4                      # a dense corner (covered by several blocks) and sparse rest
    rgb = rng.integers(0, 256, (3000, 3))
    norm = room_normalization(xyz)
    corners = occupied_corners(norm.shift(xyz)[:, :2], norm.extent, 1.0, 0.5)
    ref_blocks, ref_idx = room_to_blocks(xyz, rgb, 1.0, 0.5, 256, min_points=1, rng=np.random.default_rng(9),
                                         cover=True, norm=norm, corners=corners)
    cols = cut_columns(xyz, rgb, 1.0, 0.5, 256, np.random.default_rng(9), norm, corners, compact_max=0)
    assert np.array_equal(cols.indices, ref_idx) and np.array_equal(cols.blocks, ref_blocks)
    assert not cols.compact_indices
    # with compaction the full blocks stay the same blocks (the random stream is consumed alike)
    cols = cut_columns(xyz, rgb, 1.0, 0.5, 256, np.random.default_rng(9), norm, corners, compact_max=64)
    full = np.array([len(np.unique(r)) > 64 for r in ref_idx])
    assert cols.compact_indices and np.array_equal(cols.indices, ref_idx[full])
    assert np.array_equal(cols.blocks, ref_blocks[full])
    for i, m in zip(cols.compact_indices, cols.compact_mults):
        assert len(i) <= 64 and m.sum() == 256 and (m >= 1).all()


def test_a_sparse_and_dense_scan_gets_the_padded_paths_labels_from_fewer_points():
    rng = np.random.default_rng(5)
    dense = rng.random((4000, 3)) * [2, 2, 2.5]
    sparse = rng.random((300, 3)) * [30, 3, 2.5] + [3, 0, 0]     # a thin sparse strip beside it
    xyz = np.concatenate((dense, sparse)).astype(np.float32)
    rgb = rng.integers(0, 256, (len(xyz), 3)).astype(np.uint8)
    model = tiny_models()["dgcnn"]
    cfg = dict(num_points=256, tile_size=4.0, stride=0.5, block_size=1.0)
    ref = score_points(model, xyz, rgb, 5, CPU, SlidingConfig(compact=False, **cfg))
    got = score_points(model, xyz, rgb, 5, CPU, SlidingConfig(**cfg))
    assert got.stats["compact_blocks"] > 50 and ref.stats["compact_blocks"] == 0
    assert got.stats["blocks"] == ref.stats["blocks"]
    assert np.array_equal(got.labels, ref.labels)
    np.testing.assert_allclose(got.confidence, ref.confidence, atol=1e-4)


def test_models_the_rule_does_not_hold_for_keep_the_padded_path():
    from pointseg.nn.global_max import GlobalMax

    class HeightModel(torch.nn.Module):      # no kNN: nothing to count
        def forward(self, x):
            return x[:, :3]
    assert not compact_supported(HeightModel())
    assert not compact_supported(SegGCN(SegGCNConfig(out_channels=3, layers=2, channels=8, k=4, norm="instance")))
    assert not compact_supported(DGCNN(out_channels=3, k=4).train())       # batch statistics
    model = DGCNN(out_channels=3, k=4).eval()
    model.stages[0].aggr = "sum"                                             # a sum counts copies
    assert not compact_supported(model)
    assert isinstance(model.pool, GlobalMax)


def test_buckets_waste_under_a_quarter_and_full_columns_stay_padded():
    assert [bucket_of(n) for n in (1, 16, 17, 33, 64, 65, 927, 3585)] == [16, 16, 24, 40, 64, 80, 1024, 4096]
    assert all(n <= bucket_of(n) <= max(n + 15, n * 5 / 4) for n in range(1, 5000))
    assert compact_limit(4096) == 3584 and bucket_of(compact_limit(4096) + 1) == 4096
