"""Bad input and faults end in one clear error naming the file or argument: never a traceback,
a hang, unbounded memory, garbage read as data, or something of the user's deleted."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from pointseg.classes import S3DIS
from pointseg.io.scans import read_labels, read_scan, write_labelled_ply

N = 20


def _cloud(n=N):
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (n, 3)).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8),
            rng.integers(0, 13, n))


def _ascii_ply(xyz, rgb, label, declared=None, final_newline=True, extra_header=()):
    head = ["ply", "format ascii 1.0", *extra_header, f"element vertex {declared or len(xyz)}",
            "property float x", "property float y", "property float z", "property uchar red",
            "property uchar green", "property uchar blue", "property uchar label", "end_header"]
    rows = [f"{a} {b} {c} {r} {g} {bb} {lb}" for (a, b, c), (r, g, bb), lb in zip(xyz, rgb, label)]
    return "\n".join(head + rows) + ("\n" if final_newline else "")


# ----------------------------------------------------------------------------- item 1: lying PLY / PCD

def test_truncated_ascii_ply_is_refused_not_padded(tmp_path):
    xyz, rgb, label = _cloud()
    text = _ascii_ply(xyz, rgb, label)
    p = tmp_path / "cut.ply"
    p.write_text(text[:len(text) - 60])          # cut inside the last lines
    with pytest.raises(ValueError, match="cut.ply"):
        read_scan(p)


def test_ascii_ply_declaring_more_points_than_present_is_refused(tmp_path):
    xyz, rgb, label = _cloud()
    p = tmp_path / "more.ply"
    p.write_text(_ascii_ply(xyz, rgb, label, declared=N + 5))
    with pytest.raises(ValueError, match=r"more.ply.*(declares|holds)"):
        read_scan(p)


def test_ascii_ply_without_final_newline_reads_the_last_value_whole(tmp_path):
    xyz, rgb, label = _cloud()
    label[-1] = 1
    p = tmp_path / "nonl.ply"
    p.write_text(_ascii_ply(xyz, rgb, label, final_newline=False))
    s = read_scan(p)
    assert s.num_points == N and s.label[-1] == 1
    np.testing.assert_array_equal(s.label, label)


def test_ascii_ply_value_outside_its_type_is_refused(tmp_path):
    xyz, rgb, label = _cloud()
    text = _ascii_ply(xyz, rgb, label).splitlines()
    parts = text[-1].split()
    parts[3] = "300"                             # uchar red
    text[-1] = " ".join(parts)
    p = tmp_path / "range.ply"
    p.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match="range.ply.*red"):
        read_scan(p)


def test_binary_ply_with_a_face_element_first_and_a_list_property(tmp_path):
    xyz, rgb, label = _cloud()
    head = ("ply\nformat binary_little_endian 1.0\nelement face 2\nproperty list uchar int vertex_indices\n"
            f"element vertex {N}\nproperty float x\nproperty float y\nproperty float z\n"
            "property list uchar float extra\nproperty uchar label\nend_header\n").encode()
    faces = b"".join(np.uint8(3).tobytes() + np.array([0, 1, 2], "<i4").tobytes() for _ in range(2))
    verts = b"".join(p.astype("<f4").tobytes() + np.uint8(1).tobytes() + np.float32(9).tobytes()
                     + np.uint8(lb).tobytes() for p, lb in zip(xyz, label))
    p = tmp_path / "faces.ply"
    p.write_bytes(head + faces + verts)
    s = read_scan(p)
    np.testing.assert_array_equal(s.xyz, xyz)
    np.testing.assert_array_equal(s.label, label)
    p.write_bytes(head + faces + verts[:-3])
    with pytest.raises(ValueError, match="faces.ply.*truncated"):
        read_scan(p)


def test_ply_with_a_non_utf8_property_name_is_one_line(tmp_path):
    p = tmp_path / "bad.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float \xff\xfe\nend_header\n0\n")
    with pytest.raises(ValueError, match="bad.ply.*not ASCII"):
        read_scan(p)


def test_pcd_with_a_header_only_or_lying_points(tmp_path):
    head = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 1\nPOINTS 3\nDATA ascii\n"
    p = tmp_path / "head.pcd"
    p.write_text(head)
    with pytest.raises(ValueError, match="head.pcd"):
        read_scan(p)
    p.write_text(head + "0 0 0\n1 1 1\n")
    with pytest.raises(ValueError, match="head.pcd.*declares 3"):
        read_scan(p)
    p.write_text(head.replace("POINTS 3", "POINTS 4294967296000"))
    with pytest.raises(ValueError, match="head.pcd"):
        read_scan(p)
    p.write_text(head + "0 0 0\n1 1 1\n2 2 2")     # no final newline: still three whole points
    assert read_scan(p).xyz[-1].tolist() == [2, 2, 2]


# ----------------------------------------------------------------------------- item 3: special files

def test_a_fifo_is_refused_without_blocking(tmp_path):
    p = tmp_path / "pipe.ply"
    os.mkfifo(p)
    with pytest.raises(ValueError, match="pipe.ply.*not a regular file"):
        read_scan(p)


@pytest.mark.parametrize("name", ["zero.ply", "zero.pcd", "zero.txt", "zero.npy"])
def test_a_symlink_to_dev_zero_is_refused(tmp_path, name):
    if not os.path.exists("/dev/zero"):
        pytest.skip("needs /dev/zero")
    p = tmp_path / name
    p.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=f"{name}.*not a regular file"):
        read_scan(p)


def test_npy_declaring_1e12_rows_is_refused_before_allocating(tmp_path):
    p = tmp_path / "huge.npy"
    np.save(p, np.zeros((2, 3), np.float32))
    data = p.read_bytes().replace(b"(2, 3)", b"(1000000000000, 3)".ljust(6))
    header_len = data.index(b"\n") + 1
    p.write_bytes(data[:header_len] + data[header_len:])
    with pytest.raises(ValueError, match="huge.npy"):
        read_scan(p)


def test_npz_renamed_npy_is_one_line(tmp_path):
    np.savez(tmp_path / "a.npz", xyz=np.zeros((3, 3)))
    os.replace(tmp_path / "a.npz", tmp_path / "a.npy")
    with pytest.raises(ValueError, match=r"a.npy.*not a .npy file.*npz"):
        read_scan(tmp_path / "a.npy")


def _las(tmp_path, name="a.las"):
    laspy = pytest.importorskip("laspy", reason="LAS tests need laspy")
    hdr = laspy.LasHeader(point_format=3, version="1.2")
    hdr.scales = np.array([0.001] * 3)
    hdr.offsets = np.zeros(3)
    las = laspy.LasData(hdr)
    xyz = _cloud()[0]
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    p = tmp_path / name
    las.write(str(p))
    return p


def test_las_with_a_huge_point_count_is_refused(tmp_path):
    p = _las(tmp_path)
    data = bytearray(p.read_bytes())
    data[107:111] = np.uint32(4_000_000_000).tobytes()   # legacy point count (LAS 1.2)
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="a.las"):
        read_scan(p)


def test_las_scale_overflowing_to_inf_is_refused(tmp_path):
    p = _las(tmp_path)
    data = bytearray(p.read_bytes())
    data[131:139] = np.float64(1e308).tobytes()         # x scale factor
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="a.las.*scale"):
        read_scan(p)


# ----------------------------------------------------------------------------- item 10: errors name the file

def test_random_npz_with_pickled_data_names_the_file(tmp_path):
    p = tmp_path / "obj.npz"
    np.savez(p, xyz=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        read_scan(p)


def test_labels_file_that_is_a_fifo_is_refused(tmp_path):
    p = tmp_path / "l.npy"
    os.mkfifo(p)
    with pytest.raises(ValueError, match="l.npy.*not a regular file"):
        read_labels(p, 3)


# ----------------------------------------------------------------------------- item 4: checkpoints, HDF5, synth

@pytest.mark.parametrize("drop", ["model", "classes", "model_config"])
def test_checkpoint_without_a_required_key_is_one_line(tmp_path, drop):
    import torch
    from pointseg.engine.checkpoint import save_checkpoint
    from pointseg.segmentation.checkpoint import build_from_checkpoint, load_checkpoint
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT
    ck = load_checkpoint(DEFAULT_CHECKPOINT)
    ck.pop(drop)
    save_checkpoint(tmp_path / "c.pt", {k: v for k, v in ck.items() if k not in ("format", "version")})
    with pytest.raises(ValueError, match=f"c.pt.*{drop}"):
        build_from_checkpoint(load_checkpoint(tmp_path / "c.pt"), tmp_path / "c.pt")
    del torch


def test_checkpoint_asking_for_1e9_points_per_block_is_refused():
    from pointseg.segmentation.checkpoint import sliding_for
    with pytest.raises(ValueError, match="input.num_points"):
        sliding_for({"input": {"num_points": 1_000_000_000}})


def test_hdf5_whose_data_is_a_group_is_one_line(tmp_path):
    h5py = pytest.importorskip("h5py")
    from pointseg.data.s3dis_blocks import S3DISBlocks
    root = tmp_path / "blocks"
    root.mkdir()
    with h5py.File(root / "ply_data_all_0.h5", "w") as f:
        f.create_group("data")
        f["label"] = np.zeros((1, 4), np.uint8)
    (root / "all_files.txt").write_text("blocks/ply_data_all_0.h5\n")
    (root / "room_filelist.txt").write_text("Area_1_a\n")
    with pytest.raises(ValueError, match="ply_data_all_0.h5.*'data' is a Group"):
        S3DISBlocks(root)


def test_synth_with_1e12_points_is_refused_by_name(tmp_path):
    from pointseg.data.synth import write_synthetic
    with pytest.raises(ValueError, match="--points"):
        write_synthetic(tmp_path / "s", rooms=1, points=1_000_000_000_000, progress=False)
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- items 4 / 9: training config

@pytest.mark.parametrize("override,key", [
    ("batch_size=0", "batch_size"), ("log_every=0", "log_every"), ("epochs=-1", "epochs"),
    ("epochs=0", "epochs"), ("max_steps=-3", "max_steps"), ("optim.step_size=0", "optim.step_size"),
    ("data.block_size=0", "data.block_size"), ("device=", "device"),
])
def test_nonsense_training_config_is_refused_by_key(override, key):
    from pointseg.config import load_config
    from pointseg.segmentation.config import TrainConfig, validate_config
    cfg = load_config(TrainConfig, None, [override])
    with pytest.raises(ValueError, match=f"config {key}="):
        validate_config(cfg)


@pytest.mark.parametrize("name", ["tpu", "", "cuda:x"])
def test_unsupported_device_is_one_line(name):
    from pointseg.engine.device import resolve_device
    with pytest.raises(ValueError, match="--device"):
        resolve_device(name)


# ----------------------------------------------------------------------------- item 6: output safety

def _segment_outputs(folder, name="room"):
    from pointseg.atomic import atomic_dir
    with atomic_dir(folder, overwrite=True) as tmp:
        (tmp / f"{name}.json").write_text("{}")


def test_overwrite_refuses_a_folder_holding_the_users_files(tmp_path):
    from pointseg.atomic import atomic_dir
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(FileExistsError, match="thesis.tex"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "a.json").write_text("{}")
    assert (out / "thesis.tex").read_text() == "mine"


def test_overwrite_never_replaces_a_file_with_a_folder(tmp_path):
    from pointseg.atomic import atomic_dir
    out = tmp_path / "out"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="not a folder pointseg wrote"):
        with atomic_dir(out, overwrite=True) as tmp:
            (tmp / "a.json").write_text("{}")
    assert out.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_overwrite_replaces_pointsegs_own_outputs(tmp_path):
    from pointseg.atomic import atomic_dir
    out = tmp_path / "out"
    _segment_outputs(out)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.json").write_text("{}")
    assert (out / "new.json").exists() and not (out / "room.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_appearing_while_writing_is_left_alone(tmp_path):
    from pointseg.atomic import atomic_dir
    out = tmp_path / "out"
    with pytest.raises(FileExistsError, match="appeared while"):
        with atomic_dir(out) as tmp:
            (tmp / "a.json").write_text("{}")
            out.mkdir()
            (out / "users.txt").write_text("mine")
    assert (out / "users.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_segment_onto_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    import errno
    import tempfile
    from pointseg.cli.segment import segment

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    xyz, rgb, label = _cloud(300)
    scan = write_labelled_ply(tmp_path / "small.ply", xyz * 2, rgb, label, S3DIS)
    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    with pytest.raises(ValueError, match=r"out.*cannot write the outputs: Read-only file system"):
        segment(scan, out_dir=tmp_path / "out", device="cpu", render=False, progress=False)


# ----------------------------------------------------------------------------- item 8: stale temporaries

def test_stale_temporary_folder_of_a_killed_run_is_removed_on_the_next_run(tmp_path):
    import socket
    import subprocess
    import sys
    from pointseg.atomic import atomic_dir
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / ".blocks.ab12cd34.tmp"
    stale.mkdir()
    (stale / ".pointseg-writer").write_text(f"{dead} {socket.gethostname()}\n")
    (stale / "ply_data_all_0.h5").write_bytes(b"partial")
    users = tmp_path / ".blocks.mine.tmp"             # same pattern, not written by pointseg
    users.mkdir()
    with atomic_dir(tmp_path / "blocks") as tmp:
        (tmp / "all_files.txt").write_text("")
    assert not stale.exists()
    assert users.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".blocks.mine.tmp", "blocks"]


def test_blocks_cache_is_keyed_on_every_parameter_that_shapes_the_blocks(tmp_path, monkeypatch):
    import pointseg.segmentation.datasets as DS
    from pointseg.segmentation.config import DataConfig
    made = []
    monkeypatch.setattr(DS, "_blocks_from_prepared", lambda prepared, blocks, cfg, progress: made.append(blocks))
    base = dict(source="rooms", root=str(tmp_path / "prepared"))
    a = DS.ensure_blocks(DataConfig(**base), progress=False)
    b = DS.ensure_blocks(DataConfig(**base, block_size=2.0), progress=False)
    c = DS.ensure_blocks(DataConfig(**base, num_points=1024), progress=False)
    assert len({a, b, c}) == 3


def test_non_utf8_yaml_config_names_the_file(tmp_path):
    from pointseg.config import load_config
    from pointseg.segmentation.config import TrainConfig
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"epochs: 2\nname: \xff\xfe\n")
    with pytest.raises(ValueError, match="bad.yaml.*not UTF-8"):
        load_config(TrainConfig, p)


def test_non_utf8_all_files_txt_names_the_file_and_line(tmp_path):
    from pointseg.data.s3dis_blocks import S3DISBlocks
    root = tmp_path / "blocks"
    root.mkdir()
    (root / "all_files.txt").write_bytes(b"blocks/a.h5\n\xff\xfe.h5\n")
    (root / "room_filelist.txt").write_text("Area_1_a\n")
    with pytest.raises(ValueError, match=r"all_files.txt:2: not UTF-8"):
        S3DISBlocks(root)


def test_las_declaring_billions_of_variable_length_records_is_refused_at_once(tmp_path):
    p = _las(tmp_path)
    data = bytearray(p.read_bytes())
    data[100:104] = np.uint32(4_000_000_000).tobytes()
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="a.las.*variable-length records"):
        read_scan(p)


def test_fuzz_case_that_hung_laspy_is_a_clean_error(tmp_path):
    # A header edit (one byte replaced by ten) found by tools/fuzz_scans.py --seed 7 (case 7000426).
    p = _las(tmp_path)
    data = p.read_bytes()
    i = data.index(b"P", 4)
    p.write_bytes(data[:i] + b"4294967296" + data[i + 1:])
    with pytest.raises(ValueError, match="a.las"):
        read_scan(p)


def test_view_screenshot_onto_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    import errno
    import tempfile
    from pointseg.cli import main
    xyz, rgb, label = _cloud(300)
    scan = write_labelled_ply(tmp_path / "small.ply", xyz * 2, rgb, label, S3DIS)
    out = tmp_path / "shot.png"

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(out))
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(["view", str(scan), "--screenshot", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0] and str(out) in err[0], err
    assert not out.exists()
