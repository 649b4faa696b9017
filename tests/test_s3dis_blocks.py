"""Block release reader: the exact public layout, lazy reads, splits (test area, 6-fold,
validation of whole rooms from the training areas), options, and every bad-input case."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from pointseg.data.s3dis_blocks import BlockRelease, S3DISBlocks, split_rooms

P = 32   # points per block in the fixtures (the release has 4096; the reader takes any)


def _write_release(root: Path, rooms_per_area: int = 3, blocks_per_room: int = 2, per_file: int = 7,
                   points: int = P, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``indoor3d_sem_seg_hdf5_data`` as published: ply_data_all_k.h5 + all_files.txt (with the
    folder prefix) + room_filelist.txt, rooms in area order."""
    rng = np.random.default_rng(seed)
    rooms = [f"Area_{a}_office_{r}" for a in range(1, 7) for r in range(1, rooms_per_area + 1)]
    names = [r for r in rooms for _ in range(blocks_per_room)]
    n = len(names)
    data = rng.random((n, points, 9)).astype(np.float32)
    label = rng.integers(0, 13, (n, points)).astype(np.uint8)
    root.mkdir(parents=True)
    files = []
    for k, s in enumerate(range(0, n, per_file)):
        with h5py.File(root / f"ply_data_all_{k}.h5", "w") as f:
            f.create_dataset("data", data=data[s:s + per_file])
            f.create_dataset("label", data=label[s:s + per_file])
        files.append(f"{root.name}/ply_data_all_{k}.h5")
    (root / "all_files.txt").write_text("\n".join(files) + "\n")
    (root / "room_filelist.txt").write_text("\n".join(names) + "\n")
    return data, label, names


@pytest.fixture
def release(tmp_path: Path):
    root = tmp_path / "indoor3d_sem_seg_hdf5_data"
    data, label, names = _write_release(root)
    return root, data, label, names


def test_dataset_returns_stored_blocks_channels_first(release) -> None:
    root, data, label, names = release
    ds = S3DISBlocks(root, "all", shuffle_points=False)
    assert len(ds) == len(names)
    for i in (0, 8, len(ds) - 1):                     # across file boundaries
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (9, P)
        assert y.dtype == torch.int64 and y.shape == (P,)
        np.testing.assert_array_equal(x.numpy(), data[i].T)
        np.testing.assert_array_equal(y.numpy(), label[i])
        assert ds.room_of(i) == names[i]


def test_default_block_shape_is_the_release_4096_by_9(tmp_path: Path) -> None:
    root = tmp_path / "blocks"
    _write_release(root, rooms_per_area=1, blocks_per_room=1, points=4096)
    x, y = S3DISBlocks(root, "test")[0]
    assert x.shape == (9, 4096) and y.shape == (4096,)


def test_num_points_and_channels_options(release) -> None:
    root, data, label, _ = release
    ds = S3DISBlocks(root, "test", num_points=10, channels=["x", "y", "z", "x_room", "y_room", "z_room"])
    assert ds.in_channels == 6
    x, y = ds[0]
    assert x.shape == (6, 10) and y.shape == (10,)
    g = int(ds.indices[0])
    # Each returned point is a stored point of that block (with its label).
    stored = np.concatenate((data[g][:, [0, 1, 2, 6, 7, 8]], label[g][:, None]), 1)
    got = np.concatenate((x.numpy().T, y.numpy()[:, None]), 1)
    assert all(any(np.array_equal(r, s) for s in stored) for r in got)
    np.testing.assert_array_equal(ds[0][0].numpy(), x.numpy())    # evaluation subsets are fixed
    assert S3DISBlocks(root, "train", channels=[3, 4, 5]).in_channels == 3
    with pytest.raises(ValueError, match="channel"):
        S3DISBlocks(root, "train", channels=["w"])
    with pytest.raises(ValueError, match="num_points"):
        S3DISBlocks(root, "train", num_points=P + 1)


def test_splits_are_disjoint_whole_rooms_and_test_area_is_held_out(release) -> None:
    root, _, _, names = release
    rel = BlockRelease(root)
    for test_area in range(1, 7):                     # 6-fold: every area in turn
        parts = {s: rel.split(s, test_area=test_area) for s in ("train", "val", "test")}
        rooms = {s: {names[i] for i in idx} for s, idx in parts.items()}
        assert not (rooms["train"] & rooms["val"]) and not (rooms["train"] & rooms["test"])
        assert not (rooms["val"] & rooms["test"])
        assert sum(len(v) for v in parts.values()) == len(names)
        assert all(r.startswith(f"Area_{test_area}_") for r in rooms["test"])
        assert rooms["val"] and not any(r.startswith(f"Area_{test_area}_") for r in rooms["val"])
        # whole rooms: every block of a validation room is in the validation split
        assert len(parts["val"]) == sum(names.count(r) for r in rooms["val"])
        # ~10 % of the 15 training rooms
        assert len(rooms["val"]) == 2


def test_validation_rooms_are_deterministic_and_depend_on_the_seed(release) -> None:
    root, _, _, names = release
    a = split_rooms(names, 5, 0.1, seed=0)["val"]
    assert a == split_rooms(list(reversed(names)), 5, 0.1, seed=0)["val"]    # not on block order
    seeds = {frozenset(split_rooms(names, 5, 0.3, seed=s)["val"]) for s in range(6)}
    assert len(seeds) > 1
    assert split_rooms(names, 5, 0.0)["val"] == set()
    with pytest.raises(ValueError, match="test_area"):
        split_rooms(names, 7)


def test_dataset_survives_pickling_for_dataloader_workers(release) -> None:
    root, data, _, _ = release
    ds = S3DISBlocks(root, "all", shuffle_points=False)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[3][0].numpy(), data[3].T)
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 9, P) and y.shape == (4, P)


def test_training_shuffles_points_but_keeps_point_label_pairs(release) -> None:
    root, data, label, _ = release
    ds = S3DISBlocks(root, "train")
    x, y = ds[0]
    g = int(ds.indices[0])
    order = np.lexsort(x.numpy()[::-1])
    ref = np.lexsort(data[g].T[::-1])
    np.testing.assert_array_equal(x.numpy()[:, order], data[g].T[:, ref])
    np.testing.assert_array_equal(y.numpy()[order], label[g][ref])


# ----------------------------------------------------------------------------- bad input

def test_truncated_hdf5_is_an_error_naming_the_file(release) -> None:
    root = release[0]
    f = root / "ply_data_all_1.h5"
    f.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(ValueError, match="ply_data_all_1.h5"):
        BlockRelease(root)


def test_corrupt_hdf5_is_an_error_naming_the_file(release) -> None:
    root = release[0]
    (root / "ply_data_all_2.h5").write_bytes(b"this is not hdf5" * 100)
    with pytest.raises(ValueError, match="ply_data_all_2.h5"):
        BlockRelease(root)


def test_missing_key_is_an_error_naming_file_and_key(release) -> None:
    root = release[0]
    with h5py.File(root / "ply_data_all_0.h5", "a") as f:
        del f["label"]
    with pytest.raises(ValueError, match="ply_data_all_0.h5.*'label'"):
        BlockRelease(root)


def test_mismatched_data_and_label_shapes_are_an_error(release) -> None:
    root = release[0]
    with h5py.File(root / "ply_data_all_1.h5", "a") as f:
        lab = f["label"][:]
        del f["label"]
        f.create_dataset("label", data=lab[:-1])
    with pytest.raises(ValueError, match="ply_data_all_1.h5.*do not match"):
        BlockRelease(root)


def test_labels_outside_0_to_12_are_an_error_naming_file_and_block(release) -> None:
    root = release[0]
    with h5py.File(root / "ply_data_all_2.h5", "a") as f:
        lab = f["label"][:]
        lab[3, 5] = 13
        f["label"][...] = lab
    with pytest.raises(ValueError, match=r"ply_data_all_2.h5: label 13 at block 3, point 5"):
        BlockRelease(root)


def test_room_list_must_have_one_name_per_block(release) -> None:
    root = release[0]
    lines = (root / "room_filelist.txt").read_text().split()
    (root / "room_filelist.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match="room_filelist.txt.*one name per block"):
        BlockRelease(root)


def test_a_folder_that_is_not_a_release_is_an_error(tmp_path: Path, release) -> None:
    with pytest.raises(ValueError, match="all_files.txt.*not an S3DIS block release"):
        BlockRelease(tmp_path)
    root = release[0]
    with open(root / "all_files.txt", "a") as f:
        f.write("indoor3d_sem_seg_hdf5_data/ply_data_all_99.h5\n")
    with pytest.raises(FileNotFoundError, match=r"all_files.txt:\d+: listed file .*ply_data_all_99.h5"):
        BlockRelease(root)
    with pytest.raises(FileNotFoundError):
        BlockRelease(tmp_path / "nowhere")
