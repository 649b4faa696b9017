"""Block generation as the public release: block grid vs stride, < min_points dropped, sampling,
the 9 channels, per-point room indices, HDF5 layout written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pointseg.data.block_gen import room_normalization, room_to_blocks
from pointseg.data.block_release import make_blocks
from pointseg.io.rooms import Room, save_room
from pointseg.data.s3dis_blocks import BlockRelease


def _room(n: int = 6000, size=(3.0, 2.0, 1.5), seed: int = 0, offset=(10.0, -4.0, 0.3)):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0, 1, (n, 3)) * size
    xyz[0], xyz[1] = 0, size                       # pin the extent exactly
    xyz += offset
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    return xyz.astype(np.float32), rgb


def test_room_normalization_is_min_corner_and_extent() -> None:
    xyz, _ = _room()
    norm = room_normalization(xyz)
    np.testing.assert_allclose(norm.offset, [10.0, -4.0, 0.3], atol=1e-5)
    np.testing.assert_allclose(norm.extent, [3.0, 2.0, 1.5], atol=1e-5)


@pytest.mark.parametrize("stride,expected", [(1.0, 3 * 2), (0.5, 5 * 3)])
def test_block_count_follows_the_release_grid(stride: float, expected: int) -> None:
    # ceil((extent - 1) / stride) + 1 corners per axis: 3 m x 2 m -> 3 x 2 (stride 1), 5 x 3 (0.5).
    xyz, rgb = _room()
    blocks, idx = room_to_blocks(xyz, rgb, stride=stride, num_points=256, rng=0)
    assert blocks.shape == (expected, 256, 9) and idx.shape == (expected, 256)
    assert blocks.dtype == np.float32 and idx.dtype == np.int64


def test_channels_match_the_release_definition() -> None:
    xyz, rgb = _room()
    blocks, idx = room_to_blocks(xyz, rgb, stride=0.5, num_points=512, rng=1)
    norm = room_normalization(xyz)
    shifted = xyz.astype(np.float64)[idx] - norm.offset
    flat = blocks.reshape(-1, 9)
    # x, y centred on (min of the block's points + 0.5): inside [-0.5, 0.5] for a 1 m block.
    assert flat[:, :2].min() >= -0.5 - 1e-5 and flat[:, :2].max() <= 0.5 + 1e-5
    np.testing.assert_allclose(blocks[..., 0] + 0.5, shifted[..., 0] - shifted[..., 0].min(1, keepdims=True),
                               atol=1e-5)
    np.testing.assert_allclose(blocks[..., 2], shifted[..., 2], atol=1e-5)            # z as is (shifted)
    np.testing.assert_allclose(blocks[..., 3:6], rgb[idx] / 255.0, atol=1e-6)          # colour / 255
    np.testing.assert_allclose(blocks[..., 6:9], shifted / norm.extent, atol=1e-5)     # xyz / room max
    assert flat[:, 6:9].min() >= 0 and flat[:, 6:9].max() <= 1 + 1e-6


def test_block_points_lie_inside_their_column_and_order_is_x_then_y() -> None:
    xyz, rgb = _room()
    _, idx = room_to_blocks(xyz, rgb, stride=0.5, num_points=256, rng=2)
    shifted = xyz - xyz.min(0)
    corners = [(i * 0.5, j * 0.5) for i in range(5) for j in range(3)]
    for b, (x0, y0) in enumerate(corners):
        p = shifted[idx[b]]
        assert p[:, 0].min() >= x0 - 1e-5 and p[:, 0].max() <= x0 + 1 + 1e-5
        assert p[:, 1].min() >= y0 - 1e-5 and p[:, 1].max() <= y0 + 1 + 1e-5


def test_columns_with_fewer_than_min_points_are_dropped() -> None:
    rng = np.random.default_rng(3)
    dense = rng.uniform(0, 1, (500, 3)) * [0.9, 0.9, 1]            # column x in [0, 1]
    sparse = rng.uniform(0, 1, (99, 3)) * [0.9, 0.9, 1] + [2.05, 0, 0]   # column x in [2, 3]: 99 points
    xyz = np.concatenate((dense, sparse, [[2.9, 0.95, 1.0]]))      # -> exactly 100 in the last column
    rgb = np.zeros_like(xyz, dtype=np.uint8)
    blocks, _ = room_to_blocks(xyz, rgb, stride=1.0, num_points=128, rng=0)
    assert len(blocks) == 2                                         # middle column (0 points) dropped
    blocks, _ = room_to_blocks(xyz, rgb, stride=1.0, num_points=128, min_points=101, rng=0)
    assert len(blocks) == 1


def test_small_blocks_keep_every_point_and_add_duplicates() -> None:
    xyz, rgb = _room(n=400, size=(0.8, 0.8, 1.0))
    blocks, idx = room_to_blocks(xyz, rgb, stride=1.0, num_points=1024, rng=0)
    assert blocks.shape == (1, 1024, 9)
    assert set(idx[0].tolist()) == set(range(400))


def test_release_sampling_draws_with_replacement_unique_does_not() -> None:
    xyz, rgb = _room(n=3000, size=(0.9, 0.9, 1.0))
    _, idx = room_to_blocks(xyz, rgb, num_points=2048, rng=0, sampling="release")
    assert len(np.unique(idx[0])) < 2048
    _, idx = room_to_blocks(xyz, rgb, num_points=2048, rng=0, sampling="unique")
    assert len(np.unique(idx[0])) == 2048


def test_cover_puts_every_point_in_some_block() -> None:
    xyz, rgb = _room(n=5000)
    _, idx = room_to_blocks(xyz, rgb, stride=1.0, num_points=256, min_points=1, rng=0, cover=True)
    assert set(np.unique(idx).tolist()) == set(range(5000))


def test_same_seed_same_blocks() -> None:
    xyz, rgb = _room()
    a = room_to_blocks(xyz, rgb, stride=0.5, num_points=128, rng=7)
    b = room_to_blocks(xyz, rgb, stride=0.5, num_points=128, rng=7)
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_arguments_are_errors() -> None:
    xyz, rgb = _room(n=200)
    with pytest.raises(ValueError, match="stride"):
        room_to_blocks(xyz, rgb, stride=1.5)
    with pytest.raises(ValueError, match="rgb"):
        room_to_blocks(xyz, rgb[:10])


def _prepared(tmp_path: Path) -> Path:
    root = tmp_path / "prepared"
    for area, name, seed in ((1, "office_1", 0), (1, "hallway_2", 1), (5, "office_3", 2)):
        xyz, rgb = _room(n=3000, seed=seed)
        label = (np.arange(3000) % 13).astype(np.uint8)
        save_room(root / f"Area_{area}" / f"{name}.npz", Room(name, xyz, rgb, label))
    return root


def test_make_blocks_writes_the_release_layout_that_the_reader_reads(tmp_path: Path) -> None:
    out = tmp_path / "indoor3d_sem_seg_hdf5_data"
    s = make_blocks(_prepared(tmp_path), out, stride=1.0, num_points=128, blocks_per_file=4, progress=False)
    assert s["num_blocks"] == 3 * 6
    files = (out / "all_files.txt").read_text().split()
    assert files == [f"indoor3d_sem_seg_hdf5_data/ply_data_all_{k}.h5" for k in range(5)]
    with h5py.File(out / "ply_data_all_0.h5") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (4, 128, 9)
        assert f["label"].dtype == np.uint8 and f["label"].shape == (4, 128)
    rooms = (out / "room_filelist.txt").read_text().split()
    assert rooms == ["Area_1_hallway_2"] * 6 + ["Area_1_office_1"] * 6 + ["Area_5_office_3"] * 6
    release = BlockRelease(out)
    assert release.num_blocks == 18 and release.areas == [1, 5]
    meta = json.loads((out / "blocks.json").read_text())
    assert meta["classes"]["names"][0] == "ceiling" and len(meta["classes"]["palette"]) == 13


def test_make_blocks_labels_follow_the_points(tmp_path: Path) -> None:
    root = tmp_path / "prepared"
    xyz, rgb = _room(n=2000)
    label = (xyz[:, 2] > xyz[:, 2].mean()).astype(np.uint8)   # label readable from z
    save_room(root / "Area_2" / "r_1.npz", Room("r_1", xyz, rgb, label))
    out = tmp_path / "blocks"
    make_blocks(root, out, stride=1.0, num_points=64, progress=False)
    with h5py.File(out / "ply_data_all_0.h5") as f:
        z, lab = f["data"][..., 2], f["label"][:]
    thr = xyz[:, 2].mean() - xyz[:, 2].min()
    np.testing.assert_array_equal(lab, (z > thr).astype(np.uint8))


def test_make_blocks_never_leaves_half_written_output(tmp_path: Path) -> None:
    root = _prepared(tmp_path)
    (root / "Area_5" / "office_3.npz").write_bytes(b"PK\x03\x04 truncated")
    out = tmp_path / "blocks"
    with pytest.raises(ValueError, match="office_3.npz"):
        make_blocks(root, out, num_points=64, progress=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]     # no temporary folder left
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError):
        make_blocks(_prepared(tmp_path / "x"), out, num_points=64, progress=False)
    assert (out / "mine.txt").read_text() == "user file"


def test_prepared_rooms_with_bad_labels_or_no_points_are_errors_naming_the_file(tmp_path: Path) -> None:
    root = tmp_path / "prepared"
    xyz, rgb = _room(n=500)
    label = np.zeros(500, dtype=np.uint8)
    label[7] = 13
    save_room(root / "Area_1" / "bad_1.npz", Room("bad_1", xyz, rgb, label))
    with pytest.raises(ValueError, match="bad_1.npz: labels up to 13"):
        make_blocks(root, tmp_path / "b1", num_points=64, progress=False)
    (root / "Area_1" / "bad_1.npz").unlink()
    save_room(root / "Area_1" / "empty_1.npz", Room("empty_1", np.zeros((0, 3), np.float32)))
    with pytest.raises(ValueError, match="empty_1.npz: empty room"):
        make_blocks(root, tmp_path / "b2", num_points=64, progress=False)
    (tmp_path / "not_prepared").mkdir()
    with pytest.raises(ValueError, match="not_prepared: not a folder of prepared rooms"):
        make_blocks(tmp_path / "not_prepared", tmp_path / "b3", progress=False)
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b3").exists()
