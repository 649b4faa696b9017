"""Scan readers and the labelled-PLY writer, on small files written here in each format."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from pointseg.classes import S3DIS, ClassTable
from pointseg.io.rooms import Room, save_room
from pointseg.io.scans import (read_labels, read_scan, table_for_names, write_labelled_ply)


def _cloud(n: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-2, 3, (n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    label = rng.integers(0, 13, n).astype(np.int32)
    return xyz, rgb, label


# ----------------------------------------------------------------------------- labelled PLY

def test_labelled_ply_round_trip_keeps_labels_pred_colours_and_class_table(tmp_path):
    xyz, rgb, label = _cloud()
    pred = (label + 1) % 13
    table = ClassTable(("big wall", "floor", "thing") + S3DIS.names[3:],
                       ((1, 2, 3), (4, 5, 6), (7, 8, 9)) + S3DIS.palette[3:], "mine")
    out = write_labelled_ply(tmp_path / "seg.ply", xyz, rgb, label, table, pred=pred, model="ResGCN-28")
    s = read_scan(out)
    np.testing.assert_allclose(s.xyz, xyz)
    np.testing.assert_array_equal(s.rgb, rgb)
    np.testing.assert_array_equal(s.label, label)
    np.testing.assert_array_equal(s.pred, pred)
    assert s.classes == table            # names with spaces, palette and table name survive
    assert s.model == "ResGCN-28"
    assert not list(tmp_path.glob(".*tmp*"))   # no temporary file left behind
    labels, t, model = read_labels(out, len(xyz))
    np.testing.assert_array_equal(labels, pred)     # a labelled PLY's prediction wins
    assert t == table and model == "ResGCN-28"


def test_labelled_ply_without_colours_is_coloured_by_class(tmp_path):
    xyz, _, label = _cloud()
    s = read_scan(write_labelled_ply(tmp_path / "a.ply", xyz, None, label, S3DIS))
    np.testing.assert_array_equal(s.rgb, S3DIS.colors(label))
    assert s.pred is None and s.classes == S3DIS


def test_labelled_ply_refuses_labels_outside_table_and_writes_nothing(tmp_path):
    xyz, rgb, label = _cloud()
    label[3] = 13
    with pytest.raises(ValueError, match="outside the class table"):
        write_labelled_ply(tmp_path / "a.ply", xyz, rgb, label, S3DIS)
    assert list(tmp_path.iterdir()) == []


def test_labelled_ply_refuses_wrong_label_length(tmp_path):
    xyz, rgb, label = _cloud()
    with pytest.raises(ValueError, match="49 entries.*50 points"):
        write_labelled_ply(tmp_path / "a.ply", xyz, rgb, label[:-1], S3DIS)


# ----------------------------------------------------------------------------- every reader

def test_ply_written_by_open3d_keeps_custom_label_property(tmp_path):
    import open3d as o3d
    xyz, rgb, label = _cloud()
    pc = o3d.t.geometry.PointCloud()
    pc.point.positions = o3d.core.Tensor(xyz)
    pc.point.colors = o3d.core.Tensor(rgb.astype(np.float32) / 255)   # float colours in 0..1
    pc.point["label"] = o3d.core.Tensor(label.reshape(-1, 1))
    o3d.t.io.write_point_cloud(str(tmp_path / "o.ply"), pc, write_ascii=True)
    s = read_scan(tmp_path / "o.ply")
    np.testing.assert_array_equal(s.label, label)
    assert np.abs(s.rgb.astype(int) - rgb).max() <= 1
    assert s.classes is None


def test_pcd_with_label_field(tmp_path):
    import open3d as o3d
    xyz, _, label = _cloud()
    pc = o3d.t.geometry.PointCloud()
    pc.point.positions = o3d.core.Tensor(xyz)
    pc.point["label"] = o3d.core.Tensor(label.reshape(-1, 1))
    o3d.t.io.write_point_cloud(str(tmp_path / "a.pcd"), pc)
    s = read_scan(tmp_path / "a.pcd")
    np.testing.assert_allclose(s.xyz, xyz)
    np.testing.assert_array_equal(s.label, label)
    assert s.rgb is None


def test_xyz_whitespace_three_columns(tmp_path):
    xyz, _, _ = _cloud()
    np.savetxt(tmp_path / "a.xyz", xyz, fmt="%.6f")
    s = read_scan(tmp_path / "a.xyz")
    np.testing.assert_allclose(s.xyz, xyz, atol=1e-5)
    assert s.rgb is None and s.label is None


def test_txt_comma_seven_columns_with_header_and_comment(tmp_path):
    xyz, rgb, label = _cloud()
    rows = "\n".join(",".join(f"{v:.6f}" for v in p) + "," + ",".join(str(int(c)) for c in col) + f",{l}"
                     for p, col, l in zip(xyz, rgb, label))
    (tmp_path / "a.txt").write_text("# exported scan\nx,y,z,r,g,b,label\n" + rows + "\n")
    s = read_scan(tmp_path / "a.txt")
    np.testing.assert_allclose(s.xyz, xyz, atol=1e-5)
    np.testing.assert_array_equal(s.rgb, rgb)
    np.testing.assert_array_equal(s.label, label)


def test_txt_six_columns_with_unit_float_colours_are_scaled(tmp_path):
    xyz, rgb, _ = _cloud()
    np.savetxt(tmp_path / "a.txt", np.c_[xyz, rgb / 255.0], fmt="%.6f")
    s = read_scan(tmp_path / "a.txt")
    assert np.abs(s.rgb.astype(int) - rgb).max() <= 1


@pytest.mark.parametrize("cols", [3, 6, 7])
def test_npy_arrays(tmp_path, cols):
    xyz, rgb, label = _cloud()
    arr = np.c_[xyz, rgb, label][:, :cols].astype(np.float64)
    np.save(tmp_path / "a.npy", arr)
    s = read_scan(tmp_path / "a.npy")
    np.testing.assert_allclose(s.xyz, xyz)
    assert (s.rgb is not None) == (cols >= 6)
    if cols == 7:
        np.testing.assert_array_equal(s.label, label)


def test_las_with_colour_and_label_extra_dimension(tmp_path):
    import laspy                       # a dependency: .las needs no extra
    xyz, rgb, label = _cloud()
    hdr = laspy.LasHeader(point_format=3, version="1.2")
    hdr.add_extra_dim(laspy.ExtraBytesParams(name="label", type=np.uint8))
    hdr.scales = np.array([0.001, 0.001, 0.001])
    las = laspy.LasData(hdr)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.red, las.green, las.blue = (rgb.astype(np.uint16) * 257).T   # 16-bit colours
    las.label = label.astype(np.uint8)
    las.classification = np.full(len(xyz), 2, np.uint8)   # ASPRS "ground": not a room label
    las.write(str(tmp_path / "a.las"))
    s = read_scan(tmp_path / "a.las")
    np.testing.assert_allclose(s.xyz, xyz, atol=1e-3)
    np.testing.assert_array_equal(s.rgb, rgb)
    np.testing.assert_array_equal(s.label, label)


def _laz_backend() -> bool:
    import laspy
    return bool(laspy.LazBackend.detect_available())


@pytest.mark.skipif(not _laz_backend(), reason="needs the lazrs LAZ backend (pip install 'pointseg[las]')")
def test_laz_reads_with_the_lazrs_backend(tmp_path):
    import laspy
    xyz, _, _ = _cloud()
    las = laspy.LasData(laspy.LasHeader(point_format=3, version="1.2"))
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.write(str(tmp_path / "a.laz"))
    np.testing.assert_allclose(read_scan(tmp_path / "a.laz").xyz, xyz, atol=1e-2)


def test_laz_without_a_backend_is_one_clear_error(tmp_path, monkeypatch):
    import laspy
    # As on a machine without lazrs/laszip: laspy finds no backend to decompress with.
    monkeypatch.setattr(laspy.LazBackend, "detect_available", classmethod(lambda cls: ()))
    xyz, _, _ = _cloud()
    las = laspy.LasData(laspy.LasHeader(point_format=3, version="1.2"))
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.write(str(tmp_path / "a.las"))
    data = bytearray((tmp_path / "a.las").read_bytes())
    data[104] |= 0x80          # point data format byte: bit 7 marks LAZ-compressed points
    (tmp_path / "a.laz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"a\.laz: reading LAZ needs a LAZ backend"):
        read_scan(tmp_path / "a.laz")


def test_prepared_room_npz(tmp_path):
    xyz, rgb, label = _cloud()
    save_room(tmp_path / "office_1.npz", Room("office_1", xyz, rgb, label.astype(np.uint8), S3DIS.names))
    s = read_scan(tmp_path / "office_1.npz")
    np.testing.assert_array_equal(s.label, label)
    assert s.classes == S3DIS and s.name == "office_1"


def test_table_for_unknown_names_keeps_s3dis_colours_and_makes_distinct_others():
    t = table_for_names(["floor", "car", "tree", "chair"])
    assert t.palette[0] == S3DIS.palette[1] and t.palette[3] == S3DIS.palette[8]
    assert len(set(t.palette)) == 4


# ----------------------------------------------------------------------------- bad input

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        read_scan(tmp_path / "nope.ply")


def test_unknown_extension(tmp_path):
    (tmp_path / "a.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"a\.obj.*unknown scan format"):
        read_scan(tmp_path / "a.obj")


@pytest.mark.parametrize("name,content,match", [
    ("empty.xyz", "", "no points"),
    ("comments.txt", "# nothing\n", "no points"),
    ("garbage.ply", "not a ply file", "not a PLY"),
    ("zero.ply", "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                 "property float z\nend_header\n", "no vertices"),
    ("badline.txt", "0 0 0\n1 1 oops\n", "cannot parse"),
    ("cols.txt", "0 0 0 1\n1 1 1 2\n", "4 columns"),
    ("garbage.pcd", "hello", "not a PCD"),
])
def test_unreadable_or_empty_scans_name_the_file(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        read_scan(tmp_path / name)
    assert name in str(e.value)


def test_truncated_binary_ply_is_refused(tmp_path):
    xyz, rgb, label = _cloud()
    p = write_labelled_ply(tmp_path / "a.ply", xyz, rgb, label, S3DIS)
    data = p.read_bytes()
    p.write_bytes(data[:-40])
    with pytest.raises(ValueError, match="truncated"):
        read_scan(p)


def test_one_dimensional_npy_is_labels_not_a_scan(tmp_path):
    np.save(tmp_path / "pred.npy", np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="--labels"):
        read_scan(tmp_path / "pred.npy")


def test_label_file_length_and_range_checked(tmp_path):
    np.save(tmp_path / "p.npy", np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="10 entries.*12 points"):
        read_labels(tmp_path / "p.npy", 12)
    np.save(tmp_path / "q.npy", np.array([0, 1, 13]))
    with pytest.raises(ValueError, match="outside the class table"):
        read_labels(tmp_path / "q.npy", 3, S3DIS)
    np.save(tmp_path / "r.npy", np.array([0, -1, 2]))
    with pytest.raises(ValueError, match="negative"):
        read_labels(tmp_path / "r.npy", 3)


def test_ply_labels_outside_its_own_class_table_are_refused(tmp_path):
    xyz, rgb, label = _cloud()
    small = ClassTable(("a", "b"), ((1, 1, 1), (2, 2, 2)))
    p = write_labelled_ply(tmp_path / "a.ply", xyz, rgb, label % 2, small)
    # Drop class 1 from the header: the file's labels now exceed its own table.
    p.write_bytes(p.read_bytes().replace(b"comment class 1 b 2 2 2\n", b""))
    with pytest.raises(ValueError, match="a.ply.*outside the class table"):
        read_scan(p)


def test_non_finite_points_are_dropped_counted_and_masked(tmp_path):
    xyz, rgb, label = _cloud()
    xyz[[4, 9]] = [np.nan, 0, 0]
    xyz[20, 2] = np.inf
    np.save(tmp_path / "a.npy", np.c_[xyz, rgb, label])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = read_scan(tmp_path / "a.npy")
    assert any("dropped 3 of 50" in str(x.message) for x in w)
    assert s.dropped == 3 and s.num_points == 47
    assert s.kept.sum() == 47 and not s.kept[[4, 9, 20]].any()
    np.testing.assert_array_equal(s.label, label[s.kept])
    assert np.isfinite(s.xyz).all()


def test_all_non_finite_is_an_error(tmp_path):
    np.save(tmp_path / "a.npy", np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="all 5 points"):
        read_scan(tmp_path / "a.npy")


# --- large coordinates ---------------------------------------------------------------------------

REAL_LAS = Path(os.environ.get("POINTSEG_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "real_scans" / "aerial_sample.las"


@pytest.mark.skipif(not REAL_LAS.is_file(), reason=f"real LAS not found at {REAL_LAS} (shared/real_scans)")
def test_a_georeferenced_las_keeps_millimetres_in_local_coordinates():
    """UTM northings of 5.16e6 m keep only 0.5 m in float32: the scan is shifted to local
    coordinates (origin + xyz is the file's position to the millimetre)."""
    import laspy
    las = laspy.read(str(REAL_LAS))
    truth = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    scan = read_scan(REAL_LAS)
    assert scan.origin is not None and np.abs(scan.xyz).max() < 1e3
    assert np.abs(scan.xyz.astype(np.float64) + scan.origin - truth).max() < 1e-3
    assert len(np.unique(scan.xyz[:, 1])) > 5000            # float32 of the raw northing: 131 values


def test_utm_text_is_shifted_and_the_labelled_ply_carries_the_origin(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform([362_330.0, 5_157_700.0, 106.0], [362_342.0, 5_157_880.0, 120.0], size=(500, 3))
    txt = tmp_path / "utm.txt"
    np.savetxt(txt, xyz, fmt="%.3f")
    scan = read_scan(txt)
    assert np.abs(scan.xyz.astype(np.float64) + scan.origin - np.round(xyz, 3)).max() < 1e-3
    ply = write_labelled_ply(tmp_path / "utm.ply", scan.xyz, None, None, S3DIS, pred=np.zeros(500, int),
                             origin=scan.origin)
    back = read_scan(ply)
    assert np.array_equal(back.origin, scan.origin) and np.array_equal(back.xyz, scan.xyz)


def test_small_coordinates_are_not_shifted(tmp_path):
    txt = tmp_path / "room.txt"
    np.savetxt(txt, np.random.default_rng(1).uniform(0, 5, size=(100, 3)), fmt="%.4f")
    assert read_scan(txt).origin is None
