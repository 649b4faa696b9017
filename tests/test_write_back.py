"""Results written back into the scan's own format (issue 26): every original point, field and header
record kept, the prediction and its confidence added. Each output is read back with another tool
(laspy, Open3D, numpy) and with pointseg's reader and compared with the input file and the labels
given, never with another run."""
from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pointseg.classes import S3DIS, ClassTable
from pointseg.io import write_back as wb
from pointseg.io.scans import read_scan

SHARED = Path(os.environ.get("POINTSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REAL = SHARED / "real_scans"
AERIAL = REAL / "aerial_sample.las"
MOSD = REAL / "mosd_learn0.pcd"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real scans not found at {REAL} (../shared/real_scans)")
try:
    import lazrs  # noqa: F401
    HAVE_LAZRS = True
except ImportError:
    HAVE_LAZRS = False
CODES = {name: 19 + i for i, name in enumerate(S3DIS.names)}      # the documented default


def quiet_read(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return read_scan(path)


def prediction(n: int, seed: int = 0, k: int = 13) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.random(n).astype(np.float32)


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def las_raw(path: Path) -> dict:
    """The LAS file's header fields, VLRs and EVLRs as bytes, parsed here (not by laspy or pointseg)."""
    b = path.read_bytes()
    hsize, offset, nv = struct.unpack_from("<HII", b, 94)
    pos, vlrs = hsize, []
    for _ in range(nv):
        ln = struct.unpack_from("<H", b, pos + 20)[0]
        vlrs.append(b[pos:pos + 54 + ln])
        pos += 54 + ln
    evlrs = []
    if b[25] >= 4:
        start, ne = struct.unpack_from("<QI", b, 235)
        pos = start
        for _ in range(ne):
            ln = struct.unpack_from("<Q", b, pos + 20)[0]
            evlrs.append(b[pos:pos + 60 + ln])
            pos += 60 + ln
    return {"bytes": b, "vlrs": vlrs, "evlrs": evlrs, "offset": offset, "format": b[104] & 0x3F,
            "record_length": struct.unpack_from("<H", b, 105)[0]}


def vlr_key(raw: bytes) -> tuple[bytes, int]:
    return raw[2:18].rstrip(b"\0"), struct.unpack_from("<H", raw, 18)[0]


# ----------------------------------------------------------------------------- LAS / LAZ

def check_las_output(src: Path, out: Path, labels: np.ndarray, conf: np.ndarray, codes=CODES) -> None:
    import laspy
    a, b = laspy.read(src), laspy.read(out)
    assert b.header.version == a.header.version
    assert b.header.point_format.id == a.header.point_format.id
    assert np.array_equal(b.header.scales, a.header.scales) and np.array_equal(b.header.offsets, a.header.offsets)
    assert len(b.points) == len(a.points)
    for d in a.point_format.dimension_names:       # raw X/Y/Z integers, flags, gps_time, extra dims ...
        if d != "classification":
            assert np.array_equal(np.asarray(b[d]), np.asarray(a[d])), d
    table = np.array([codes[n] for n in S3DIS.names])
    assert np.array_equal(np.asarray(b.classification), table[labels])
    assert np.array_equal(np.asarray(b.confidence), conf)
    ra, rb = las_raw(src), las_raw(out)
    # the file's own VLRs and EVLRs byte for byte, in order; the Extra Bytes VLR grows by our
    # descriptors and a LAZ file's laszip VLR describes the new record layout
    mine = {(b"pointseg", 1), (b"LASF_Spec", 0), (b"LASF_Spec", 4), (b"laszip encoded", 22204)}
    kept = [v for v in rb["vlrs"] if vlr_key(v) not in mine or (v in ra["vlrs"] and vlr_key(v)[0] != b"laszip encoded")]
    own = [v for v in ra["vlrs"] if vlr_key(v) not in {(b"LASF_Spec", 4), (b"laszip encoded", 22204)}]
    assert [v for v in kept if vlr_key(v) != (b"LASF_Spec", 4)] == own
    assert rb["evlrs"] == ra["evlrs"]
    table_vlr = next(v for v in rb["vlrs"] if vlr_key(v) == (b"pointseg", 1))
    payload = json.loads(table_vlr[54:])
    assert payload["codes"] == codes and payload["classes"]["names"] == list(S3DIS.names)
    # pointseg's reader: the same coordinates
    assert np.array_equal(quiet_read(out).xyz, quiet_read(src).xyz)


@needs_real
def test_real_las_round_trip_keeps_header_dimensions_and_writes_the_codes(tmp_path):
    import laspy
    n = laspy.read(AERIAL).header.point_count
    labels, conf = prediction(n)
    res = wb.write_scan(AERIAL, tmp_path / "aerial_sample.las", labels, conf, S3DIS)
    check_las_output(AERIAL, res.path, labels, conf)
    a, b = las_raw(AERIAL), las_raw(res.path)
    # public header byte for byte except the point data offset, VLR count and record length
    changed = {i for i in range(227) if a["bytes"][i] != b["bytes"][i]}
    assert changed <= set(range(96, 104)) | {105, 106}, sorted(changed)
    assert b["record_length"] == a["record_length"] + 4            # float32 confidence
    lookup = next(v for v in b["vlrs"] if vlr_key(v) == (b"LASF_Spec", 0))[54:]
    entries = {lookup[i]: lookup[i + 1:i + 16].rstrip(b"\0").decode() for i in range(0, len(lookup), 16)}
    assert entries == {c: name for name, c in CODES.items()}
    # never classified (all 0): no original_classification dimension
    assert "original_classification" not in laspy.read(res.path).point_format.dimension_names


def synthetic_las(path: Path, version: str, point_format: int) -> tuple[np.ndarray, np.ndarray]:
    """A LAS with VLRs laspy would re-encode (WKT with trailing NULs, a lookup with underscores), a
    custom VLR, an extra dimension, flags in the classification byte and a classification; 1.4: an
    EVLR too. Returns (classification, synthetic flags)."""
    import laspy
    h = laspy.LasHeader(point_format=point_format, version=version)
    h.scales, h.offsets = np.array([0.001, 0.001, 0.01]), np.array([500000.0, 4000000.0, 0.0])
    for v in (laspy.VLR("LASF_Projection", 2112, "OGC WKT", b'PROJCS["x"]\x00\x00\x00'),
              laspy.VLR("LASF_Spec", 0, "Classification Lookup", struct.pack("<B15s", 2, b"my_ground")),
              laspy.VLR("acme", 7, "custom", b"\x01\x02\x03")):
        h.vlrs.append(v)
    h.add_extra_dims([laspy.ExtraBytesParams("height", "f8", description="above ground")])
    las = laspy.LasData(h)
    rng = np.random.default_rng(1)
    n = 500
    las.x = 500000 + rng.random(n) * 5
    las.y = 4000000 + rng.random(n) * 5
    las.z = rng.random(n) * 3
    cls = rng.integers(0, 10, n).astype(np.uint8)
    las.classification = cls
    syn = rng.integers(0, 2, n).astype(np.uint8)
    las.synthetic = syn
    las.withheld = 1 - syn
    las.height = rng.random(n)
    las.intensity = rng.integers(0, 65535, n)
    if version == "1.4":
        from laspy.vlrs.vlrlist import VLRList
        las.evlrs = VLRList([laspy.VLR("LASF_Projection", 2112, "wkt", b'GEOGCS["y"]\x00\x00')])
    las.write(str(path))
    return cls, syn


@pytest.mark.parametrize("version,point_format", [("1.2", 3), ("1.4", 6)])
def test_las_vlrs_evlrs_flags_and_original_classification_survive(tmp_path, version, point_format):
    import laspy
    src = tmp_path / "in.las"
    cls, syn = synthetic_las(src, version, point_format)
    labels, conf = prediction(len(cls), 2)
    res = wb.write_scan(src, tmp_path / "out.las", labels, conf, S3DIS)
    check_las_output(src, res.path, labels, conf)
    b = laspy.read(res.path)
    assert np.array_equal(np.asarray(b.original_classification), cls)      # the file's own, never lost
    assert np.array_equal(np.asarray(b.synthetic), syn) and np.array_equal(np.asarray(b.withheld), 1 - syn)
    ra, rb = las_raw(src), las_raw(res.path)
    eb_in = next(v for v in ra["vlrs"] if vlr_key(v) == (b"LASF_Spec", 4))
    eb_out = next(v for v in rb["vlrs"] if vlr_key(v) == (b"LASF_Spec", 4))
    assert eb_out[54:54 + len(eb_in) - 54] == eb_in[54:]                     # the original descriptor as it was
    # the file's Classification Lookup describes its own codes: kept, not replaced
    assert [v for v in rb["vlrs"] if vlr_key(v) == (b"LASF_Spec", 0)] == [
        v for v in ra["vlrs"] if vlr_key(v) == (b"LASF_Spec", 0)]
    assert any("original_classification" in n for n in res.notes)


@needs_real
@pytest.mark.skipif(not HAVE_LAZRS, reason="lazrs not installed (pip install 'pointseg[las]')")
def test_laz_round_trip(tmp_path):
    import laspy
    src = tmp_path / "site.laz"
    las = laspy.read(AERIAL)
    las.write(str(src), do_compress=True)
    labels, conf = prediction(len(las.points), 3)
    res = wb.write_scan(src, tmp_path / "out" / "site.laz", labels, conf, S3DIS)
    assert las_raw(res.path)["bytes"][104] & 0x80              # compressed
    check_las_output(src, res.path, labels, conf)


@needs_real
@pytest.mark.skipif(shutil.which("pdal") is None, reason="pdal not installed (apt-get install pdal)")
def test_pdal_reads_the_classified_las(tmp_path):
    import laspy
    n = laspy.read(AERIAL).header.point_count
    labels, conf = prediction(n)
    res = wb.write_scan(AERIAL, tmp_path / "a.las", labels, conf, S3DIS)
    info = json.loads(subprocess.run(["pdal", "info", "--summary", str(res.path)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["summary"]["num_points"] == n


def test_codes_that_a_small_point_format_cannot_hold_are_refused_in_one_line(tmp_path):
    src = tmp_path / "in.las"
    synthetic_las(src, "1.2", 3)
    big = wb.las_code_table(S3DIS, override={"wall": 64})
    with pytest.raises(ValueError) as e:
        wb.check_scan_output(src, big)
    assert "point format 3 holds classification codes 0-31" in one_line(e.value) and "wall 64" in str(e.value)
    with pytest.raises(ValueError):
        wb.write_scan(src, tmp_path / "out.las", *prediction(500), S3DIS, codes=big)
    assert not (tmp_path / "out.las").exists()


def test_las_codes_file_overrides_and_bad_tables_are_one_line(tmp_path):
    good = tmp_path / "codes.yaml"
    good.write_text("wall: 6\nfloor: 2\n")
    codes = wb.las_code_table(S3DIS, override=wb.load_las_codes(good, S3DIS))
    assert codes["wall"] == 6 and codes["floor"] == 2 and codes["ceiling"] == 19
    (tmp_path / "codes.json").write_text(json.dumps({"chair": 40}))
    assert wb.load_las_codes(tmp_path / "codes.json", S3DIS) == {"chair": 40}
    cases = {"list.yaml": ("- 1\n- 2\n", "not a class-to-code table"),
             "scalar.yaml": ("7\n", "not a class-to-code table"),
             "broken.yaml": ("wall: [1,\n", "cannot parse"),
             "broken.json": ("{wall: 1", "cannot parse"),
             "unknown.yaml": ("roof: 3\n", "'roof' is not in the model's class table"),
             "range.yaml": ("wall: 300\n", "integer 0-255"),
             "float.yaml": ("wall: 2.5\n", "integer 0-255")}
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError) as e:
            wb.load_las_codes(tmp_path / name, S3DIS)
        assert match in one_line(e.value) and name in str(e.value), (name, str(e.value))
    with pytest.raises(ValueError) as e:
        wb.las_code_table(S3DIS, override={"wall": 19})             # ceiling has 19 by default
    assert "'ceiling' and 'wall' both get code 19" in one_line(e.value)
    with pytest.raises(ValueError) as e:
        wb.las_code_table(S3DIS, checkpoint_codes=["a"])
    assert "checkpoint" in one_line(e.value)


def test_a_las_that_cannot_be_parsed_is_one_line_and_nothing_is_written(tmp_path):
    bad = tmp_path / "bad.las"
    bad.write_bytes(b"LASF" + b"\x01\x02" + os.urandom(400))
    with pytest.raises(ValueError) as e:
        wb.write_scan(bad, tmp_path / "out.las", *prediction(10), S3DIS)
    assert str(bad) in one_line(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.las"]


# ----------------------------------------------------------------------------- PCD

@needs_real
def test_real_organised_pcd_keeps_its_grid_nan_points_and_fields(tmp_path):
    import open3d as o3d
    scan = quiet_read(MOSD)
    assert scan.organized == (640, 480) and scan.dropped > 0
    labels, conf = prediction(scan.num_points, 4)
    res = wb.write_scan(MOSD, tmp_path / MOSD.name, labels, conf, S3DIS, kept=scan.kept)
    assert res.label_field == "pred"            # the file's 'label' is its ground truth: kept
    header = res.path.read_bytes()[:1000].decode("ascii", "replace")
    assert "WIDTH 640" in header and "HEIGHT 480" in header and "VIEWPOINT 0 0 0 1 0 0 0" in header
    assert "FIELDS label x y z rgba pred confidence" in header and "DATA binary" in header
    # Open3D: every point in place, the original fields as Open3D reads the input
    a, b = o3d.t.io.read_point_cloud(str(MOSD)), o3d.t.io.read_point_cloud(str(res.path))
    assert len(b.point.positions) == 640 * 480
    pa, pb = a.point.positions.numpy(), b.point.positions.numpy()
    assert np.array_equal(pa, pb, equal_nan=True)
    assert np.array_equal(a.point.colors.numpy(), b.point.colors.numpy())
    assert np.array_equal(a.point["label"].numpy(), b.point["label"].numpy())
    pred, c = b.point["pred"].numpy()[:, 0], b.point["confidence"].numpy()[:, 0]
    assert np.array_equal(pred[scan.kept], labels) and np.all(pred[~scan.kept] == wb.NO_LABEL)
    assert np.array_equal(c[scan.kept], conf) and np.all(np.isnan(c[~scan.kept]))
    # pointseg's reader: same grid, same kept points and coordinates, prediction and ground truth apart
    back = quiet_read(res.path)
    assert back.organized == (640, 480) and np.array_equal(back.kept, scan.kept)
    assert np.array_equal(back.xyz, scan.xyz) and np.array_equal(back.rgb, scan.rgb)
    assert np.array_equal(back.pred, labels) and np.array_equal(back.label, scan.label)
    assert back.classes is None or back.classes.names == S3DIS.names


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_pcd_ascii_and_binary_with_a_multi_value_field(tmp_path, encoding):
    n = 6
    xyz = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 7
    xyz[2] = np.nan
    normal = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    inten = np.arange(n, dtype=np.uint16) * 1000
    head = (f"VERSION .7\nFIELDS x y z normal intensity\nSIZE 4 4 4 4 2\nTYPE F F F F U\nCOUNT 1 1 1 3 1\n"
            f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {encoding}\n")
    rec = np.empty(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("normal", "<f4", (3,)), ("intensity", "<u2")])
    rec["x"], rec["y"], rec["z"], rec["normal"], rec["intensity"] = *xyz.T, normal, inten
    src = tmp_path / "in.pcd"
    if encoding == "ascii":
        rows = [" ".join([repr(float(v)) for v in (*r[:3], *r[3])] + [str(int(r[4]))]) for r in rec.tolist()]
        src.write_bytes(head.encode() + "\n".join(rows).encode() + b"\n")
    else:
        src.write_bytes(head.encode() + rec.tobytes())
    scan = quiet_read(src)
    labels, conf = prediction(scan.num_points, 5)
    res = wb.write_scan(src, tmp_path / "out.pcd", labels, conf, S3DIS, kept=scan.kept)
    out = res.path.read_bytes()
    body = out[out.index(b"DATA binary\n") + len(b"DATA binary\n"):]
    got = np.frombuffer(body, rec.dtype.descr + [("label", "<i4"), ("confidence", "<f4")])
    for f in rec.dtype.names:
        assert np.array_equal(got[f], rec[f], equal_nan=True), f
    assert got["label"][2] == -1 and np.isnan(got["confidence"][2])
    assert np.array_equal(np.delete(got["label"], 2), labels)
    back = quiet_read(res.path)      # written 'label' is named as the prediction in the header
    assert np.array_equal(back.pred, labels) and back.label is None and np.array_equal(back.xyz, scan.xyz)


def test_lzf_decompression_of_literals_and_overlapping_references():
    # literal "abc", then a back reference of length 7 at distance 3 (overlapping): "abcabcabca"
    data = bytes([2]) + b"abc" + bytes([(5 << 5) | 0, 2])
    assert wb.lzf_decompress(data, 10) == b"abcabcabca"
    with pytest.raises(ValueError):
        wb.lzf_decompress(bytes([(1 << 5), 9]), 3)                # reference before the start
    with pytest.raises(ValueError):
        wb.lzf_decompress(data, 11)                               # shorter than declared


# ----------------------------------------------------------------------------- PLY

def ply_with_faces(path: Path, encoding: str, quad: bool) -> dict:
    """vertex x y z nx ny nz red green blue intensity(ushort) label(uchar, ground truth); a face
    element of triangles (and one quad); a custom 'camera' element before the vertices."""
    rng = np.random.default_rng(6)
    n = 8
    v = np.empty(n, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("nx", "f4"), ("ny", "f4"), ("nz", "f4"),
                     ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("intensity", "u2"), ("label", "u1")])
    for f in ("x", "y", "z", "nx", "ny", "nz"):
        v[f] = rng.random(n).astype(np.float32)
    v["x"][3] = np.inf
    for f in ("red", "green", "blue"):
        v[f] = rng.integers(0, 256, n)
    v["intensity"], v["label"] = rng.integers(0, 65536, n), rng.integers(0, 13, n)
    faces = [[0, 1, 2], [2, 3, 4], [4, 5, 6, 7] if quad else [4, 5, 6]]
    props = "".join(f"property {t} {nm}\n" for nm, t in (
        ("x", "float"), ("y", "float"), ("z", "float"), ("nx", "float"), ("ny", "float"), ("nz", "float"),
        ("red", "uchar"), ("green", "uchar"), ("blue", "uchar"), ("intensity", "ushort"), ("label", "uchar")))
    head = (f"ply\nformat {encoding} 1.0\ncomment scanned by acme\nelement camera 1\nproperty float fx\n"
            f"element vertex {n}\n{props}element face {len(faces)}\nproperty list uchar int vertex_indices\n"
            "end_header\n")
    if encoding == "ascii":
        rows = ["500.5"] + [" ".join(repr(float(x)) if isinstance(x, float) else str(x) for x in r) for r in v.tolist()]
        rows += [" ".join(map(str, [len(f)] + f)) for f in faces]
        path.write_bytes(head.encode() + "\n".join(rows).encode() + b"\n")
    else:
        end = "<" if encoding == "binary_little_endian" else ">"
        body = np.array([500.5], end + "f4").tobytes() + v.astype(v.dtype.newbyteorder(end)).tobytes()
        body += b"".join(np.array([len(f)], "u1").tobytes() + np.array(f, end + "i4").tobytes() for f in faces)
        path.write_bytes(head.encode() + body)
    return {"vertex": v, "faces": faces}


@pytest.mark.parametrize("encoding,quad", [("ascii", True), ("binary_big_endian", False),
                                           ("binary_little_endian", True)])
def test_ply_keeps_every_element_and_property(tmp_path, encoding, quad):
    from pointseg.io.cloud_files import parse_ply_header
    src = tmp_path / "mesh.ply"
    truth = ply_with_faces(src, encoding, quad)
    v = truth["vertex"]
    scan = quiet_read(src)
    assert scan.dropped == 1
    labels, conf = prediction(scan.num_points, 7)
    res = wb.write_scan(src, tmp_path / "out.ply", labels, conf, S3DIS, kept=scan.kept, model="dgcnn")
    assert res.label_field == "pred"           # 'label' is the file's ground truth
    with open(res.path, "rb") as f:
        info = parse_ply_header(res.path, f)
        body = f.read()
    assert info["format"] == "binary_little_endian"
    assert [e["name"] for e in info["elements"]] == ["camera", "vertex", "face"]
    assert "scanned by acme" in info["comments"]
    dt = np.dtype(v.dtype.newbyteorder("<").descr + [("pred", "<i4"), ("confidence", "<f4")])
    assert np.frombuffer(body, "<f4", 1)[0] == np.float32(500.5)
    got = np.frombuffer(body, dt, len(v), 4)
    for f in v.dtype.names:
        assert np.array_equal(got[f], v[f]), f
    keep = np.isfinite(v["x"])
    assert np.array_equal(got["pred"][keep], labels) and got["pred"][3] == wb.NO_LABEL
    assert np.array_equal(got["confidence"][keep], conf) and np.isnan(got["confidence"][3])
    face_bytes = b"".join(np.array([len(f)], "u1").tobytes() + np.array(f, "<i4").tobytes() for f in truth["faces"])
    assert body[4 + len(v) * dt.itemsize:] == face_bytes
    back = quiet_read(res.path)
    assert np.array_equal(back.pred, labels) and np.array_equal(back.label, v["label"][keep])
    assert np.array_equal(back.xyz, scan.xyz) and back.classes.names == S3DIS.names and back.model == "dgcnn"
    if not quad:                                  # Open3D reads the triangles and the scalar fields
        import open3d as o3d
        mesh = o3d.io.read_triangle_mesh(str(res.path))
        assert np.array_equal(np.asarray(mesh.triangles), np.array(truth["faces"]))
        pc = o3d.t.io.read_point_cloud(str(res.path))
        assert np.array_equal(pc.point["pred"].numpy()[:, 0][keep], labels)


def test_ply_prediction_is_named_label_when_the_file_has_none(tmp_path):
    from pointseg.io.scans import write_labelled_ply
    xyz = np.random.default_rng(8).random((50, 3)).astype(np.float32)
    src = write_labelled_ply(tmp_path / "plain.ply", xyz, np.full((50, 3), 9, np.uint8), None, S3DIS)
    labels, conf = prediction(50, 8)
    res = wb.write_scan(src, tmp_path / "out.ply", labels, conf, S3DIS)
    assert res.label_field == "label" and res.confidence_field == "confidence"
    back = quiet_read(res.path)            # the header names 'label' as the prediction: not ground truth
    assert back.label is None and np.array_equal(back.pred, labels)
    assert np.array_equal(back.rgb, np.full((50, 3), 9))


# ----------------------------------------------------------------------------- text and .npy

def test_text_lines_are_kept_byte_for_byte_with_two_columns_appended(tmp_path):
    src = tmp_path / "scan.txt"
    lines = ["# exported by acme", "x,y,z,r,g,b", "1.000001,2,3,10,20,30", "", "nan,2,3,1,1,1  // bad",
             "4.5,5.5,6.5,4,5,6 # end", "7,8,9,7,8,9"]
    src.write_bytes(("\r\n".join(lines)).encode())                    # CRLF, no final newline
    scan = quiet_read(src)
    labels, conf = np.array([3, 7, 12]), np.array([0.5, 0.25, 1.0], np.float32)
    res = wb.write_scan(src, tmp_path / "out.txt", labels, conf, S3DIS, kept=scan.kept)
    out = res.path.read_bytes().decode().split("\r\n")
    assert out[0] == lines[0] and out[1] == "x,y,z,r,g,b,label,confidence" and out[3] == ""
    assert out[2] == "1.000001,2,3,10,20,30,3,0.5"
    assert out[4] == "nan,2,3,1,1,1,-1,nan // bad"          # a dropped point: no label
    assert out[5].startswith("4.5,5.5,6.5,4,5,6,7,0.25") and out[5].endswith("# end")
    assert out[6] == "7,8,9,7,8,9,12,1"
    arr = np.loadtxt(res.path, delimiter=",", comments=("#", "//"), skiprows=2)
    assert np.array_equal(arr[~np.isnan(arr[:, 0]), 6], labels)


def test_npy_keeps_columns_bit_identical(tmp_path):
    rng = np.random.default_rng(9)
    arr = rng.random((20, 6)).astype(np.float32) * 1000
    arr[5, 1] = np.nan
    np.save(tmp_path / "scan.npy", arr)
    scan = quiet_read(tmp_path / "scan.npy")
    labels, conf = prediction(scan.num_points, 9)
    res = wb.write_scan(tmp_path / "scan.npy", tmp_path / "out.npy", labels, conf, S3DIS, kept=scan.kept)
    out = np.load(res.path)
    assert out.dtype == np.float32 and out.shape == (20, 8)
    assert np.array_equal(out[:, :6].view(np.uint32), arr.view(np.uint32))
    assert out[5, 6] == -1 and np.array_equal(np.delete(out[:, 6], 5), labels)


def test_probabilities_are_float16_in_file_order(tmp_path):
    p = np.random.default_rng(10).dirichlet(np.ones(13), 4).astype(np.float32)
    kept = np.array([True, False, True, True, True])
    wb.write_probabilities(tmp_path / "p.npy", p, kept)
    got = np.load(tmp_path / "p.npy")
    assert got.dtype == np.float16 and got.shape == (5, 13)
    assert np.all(np.isnan(got[1])) and np.array_equal(got[kept], p.astype(np.float16))


# ----------------------------------------------------------------------------- faults

def test_a_read_only_or_full_file_system_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "scan.npy"
    np.save(src, np.random.default_rng(11).random((30, 3)))
    labels, conf = prediction(30)
    out = tmp_path / "out"
    out.mkdir()

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", read_only)
        with pytest.raises(OSError, match="Read-only"):
            wb.write_scan(src, out / "scan.npy", labels, conf, S3DIS)
    assert list(out.iterdir()) == []

    real_save = np.save

    def full_disk(file, arr, *a, **k):
        with open(file, "wb") as f:
            f.write(b"\x93NUMPY half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(np, "save", full_disk)
        with pytest.raises(OSError, match="No space"):
            wb.write_scan(src, out / "scan.npy", labels, conf, S3DIS)
    assert list(out.iterdir()) == [] and np.save is real_save


def test_labels_that_do_not_fit_the_file_are_refused(tmp_path):
    np.save(tmp_path / "scan.npy", np.zeros((10, 3)))
    with pytest.raises(ValueError) as e:
        wb.write_scan(tmp_path / "scan.npy", tmp_path / "o.npy", *prediction(9), S3DIS)
    assert "9 predicted points" in one_line(e.value)
    assert not (tmp_path / "o.npy").exists()


# ----------------------------------------------------------------------------- the engine's scores

class LogitModel(torch.nn.Module):
    """Fixed logits per class: every vote is softmax(LOGITS), so that is each point's probability."""
    LOGITS = torch.tensor([0.5, 2.0, -1.0])

    def forward(self, x):
        return self.LOGITS[None, :, None].expand(x.shape[0], 3, x.shape[2]).clone()


def test_score_points_gives_the_softmax_as_probability_and_confidence():
    from pointseg.segmentation.inference import SlidingConfig, predict_points, score_points
    xyz = (np.random.default_rng(12).random((3000, 3)) * [4, 3, 2]).astype(np.float32)
    cfg = SlidingConfig(block_size=1.0, stride=0.5, num_points=256, repeats=2)
    s = score_points(LogitModel(), xyz, None, 3, torch.device("cpu"), cfg, probabilities=True)
    truth = torch.softmax(LogitModel.LOGITS, 0).numpy()
    assert np.all(s.labels == 1)
    assert np.allclose(s.probabilities, truth[None], atol=1e-6)
    assert np.allclose(s.confidence, truth[1], atol=1e-6)
    labels, stats = predict_points(LogitModel(), xyz, None, 3, torch.device("cpu"), cfg)
    assert np.array_equal(labels, s.labels) and stats == s.stats


# ----------------------------------------------------------------------------- end to end

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pointseg", *args], capture_output=True, text=True, timeout=600)


@needs_real
def test_segment_a_las_leaves_a_classified_las_and_probabilities(tmp_path):
    """``pointseg segment site.las``: a classified site.las whose classification equals labels.npy
    through the code table, the confidence equal to the probabilities' maximum."""
    import laspy
    las = laspy.read(AERIAL)
    corner = (np.asarray(las.x) < las.x.min() + 4) & (np.asarray(las.y) < las.y.min() + 8)
    small = laspy.LasData(las.header, las.points[corner])       # the real header, fewer points
    src = tmp_path / "site.las"
    small.write(str(src))
    codes = tmp_path / "codes.yaml"
    codes.write_text("wall: 6\n")
    r = run_cli("segment", str(src), "--out", str(tmp_path / "out"), "--stride", "1", "--no-render", "--quiet",
                "--device", "cpu", "--probabilities", "--write", "labels,json,scan", "--las-codes", str(codes))
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "site.json", "site.labels.npy", "site.las", "site.probabilities.npy"]
    labels = np.load(out / "site.labels.npy")
    table = np.array([{**CODES, "wall": 6}[n] for n in S3DIS.names])
    check_las_output(src, out / "site.las", labels, np.asarray(laspy.read(out / "site.las").confidence),
                     {**CODES, "wall": 6})
    got = laspy.read(out / "site.las")
    assert np.array_equal(np.asarray(got.classification), table[labels])
    p = np.load(out / "site.probabilities.npy")
    assert p.dtype == np.float16 and p.shape == (len(labels), 13)
    assert np.array_equal(p.argmax(1), labels) or np.mean(p.argmax(1) == labels) > 0.99   # float16 ties
    assert np.allclose(p.astype(np.float32).sum(1), 1, atol=1e-2)
    assert np.allclose(np.asarray(got.confidence), p.astype(np.float32).max(1), atol=1e-3)
    summary = json.loads((out / "site.json").read_text())
    assert summary["scan_output"]["las_codes"]["wall"] == 6 and summary["probabilities"]["dtype"] == "float16"


def test_segment_refuses_bad_write_back_input_in_one_line(tmp_path):
    bad = tmp_path / "bad.las"
    bad.write_bytes(b"LASF" + os.urandom(300))
    codes = tmp_path / "codes.yaml"
    codes.write_text("- wall\n")
    np.save(tmp_path / "room.npy", np.random.default_rng(13).random((200, 3)))
    for args, match in [((str(bad),), "bad.las"),
                        ((str(tmp_path / "room.npy"), "--las-codes", str(codes)), "not a class-to-code table"),
                        ((str(tmp_path / "room.npy"), "--write", "labels,pdf"), "--write takes")]:
        r = run_cli("segment", *args, "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet")
        assert r.returncode != 0 and match in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- chunked (issue 27)

def chunked(src: Path, dst: Path, labels: np.ndarray, conf: np.ndarray, chunk_bytes: int, calls: list | None = None,
            **kw) -> wb.WriteBack:
    """write_scan_chunked with the prediction served from arrays; ``calls`` collects the ranges asked."""
    def labels_at(a, b):
        if calls is not None:
            calls.append((a, b))
        return labels[a:b]
    return wb.write_scan_chunked(src, dst, labels_at, lambda a, b: conf[a:b], S3DIS, chunk_bytes=chunk_bytes, **kw)


@needs_real
def test_chunked_las_is_byte_identical_to_write_scan(tmp_path):
    import laspy
    n = laspy.read(AERIAL).header.point_count
    labels, conf = prediction(n, 12)
    whole = wb.write_scan(AERIAL, tmp_path / "whole" / "a.las", labels, conf, S3DIS, model="m")
    calls: list = []
    rlen = las_raw(AERIAL)["record_length"]
    res = chunked(AERIAL, tmp_path / "chunked" / "a.las", labels, conf, 7 * rlen, calls, model="m")
    assert res.path.read_bytes() == whole.path.read_bytes()
    assert res.to_dict() == whole.to_dict()
    assert calls[0] == (0, 7) and max(b - a for a, b in calls) == 7 and calls[-1][1] == n
    assert sorted(p.name for p in res.path.parent.iterdir()) == ["a.las"]      # no temporary left


@pytest.mark.parametrize("version,point_format", [("1.2", 3), ("1.4", 6)])
def test_chunked_las_with_its_own_classification_flags_and_evlrs_is_byte_identical(tmp_path, version, point_format):
    src = tmp_path / "in.las"
    cls, _ = synthetic_las(src, version, point_format)
    labels, conf = prediction(len(cls), 13)
    whole = wb.write_scan(src, tmp_path / "whole.las", labels, conf, S3DIS)
    for chunk_bytes in (1, 7 * 40, 1 << 20):        # 1 byte: one record per chunk
        res = chunked(src, tmp_path / f"c{chunk_bytes}.las", labels, conf, chunk_bytes)
        assert res.path.read_bytes() == whole.path.read_bytes(), chunk_bytes
        assert res.notes == whole.notes and any("original_classification" in n for n in res.notes)


@needs_real
@pytest.mark.skipif(not HAVE_LAZRS, reason="lazrs not installed (pip install 'pointseg[las]')")
@pytest.mark.parametrize("source", ["aerial", "synthetic14"])
def test_chunked_laz_reads_back_as_write_scans_output(tmp_path, source):
    import laspy
    src = tmp_path / "site.laz"
    if source == "aerial":
        laspy.read(AERIAL).write(str(src), do_compress=True)
    else:
        synthetic_las(tmp_path / "s.las", "1.4", 6)
        laspy.read(tmp_path / "s.las").write(str(src), do_compress=True)
    n = laspy.open(src).header.point_count
    labels, conf = prediction(n, 14)
    whole = wb.write_scan(src, tmp_path / "whole" / "site.laz", labels, conf, S3DIS)
    res = chunked(src, tmp_path / "chunked" / "site.laz", labels, conf, 7 * 40)
    assert las_raw(res.path)["bytes"][104] & 0x80                           # compressed
    a, b = laspy.read(whole.path), laspy.read(res.path)
    assert b.header.point_format.id == a.header.point_format.id
    assert list(b.point_format.dimension_names) == list(a.point_format.dimension_names)
    assert np.array_equal(b.points.array, a.points.array)                   # point for point, every byte
    for attr in ("point_count", "scales", "offsets", "mins", "maxs", "number_of_points_by_return"):
        assert np.array_equal(np.asarray(getattr(b.header, attr)), np.asarray(getattr(a.header, attr))), attr
    ra, rb = las_raw(whole.path), las_raw(res.path)
    assert [v for v in rb["vlrs"] if vlr_key(v)[0] != b"laszip encoded"] == [
        v for v in ra["vlrs"] if vlr_key(v)[0] != b"laszip encoded"]
    assert rb["evlrs"] == ra["evlrs"]
    check_las_output(src, res.path, labels, conf)
    assert res.to_dict() == whole.to_dict()


def test_chunked_las_memory_does_not_grow_with_the_file(tmp_path):
    import tracemalloc

    import laspy
    h = laspy.LasHeader(point_format=1, version="1.2")
    las = laspy.LasData(h)
    n = 150_000
    rng = np.random.default_rng(15)
    las.x, las.y, las.z = rng.random(n) * 100, rng.random(n) * 100, rng.random(n) * 10
    src = tmp_path / "big.las"
    las.write(str(src))
    del las
    size = src.stat().st_size                                                # 28 bytes a point: ~4 MB
    labels, conf = prediction(n, 15)
    tracemalloc.start()
    try:
        chunked(src, tmp_path / "out.las", labels, conf, 64 << 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 8, (peak, size)          # write_scan holds the file three times over
    whole = wb.write_scan(src, tmp_path / "whole.las", labels, conf, S3DIS)
    assert (tmp_path / "out.las").read_bytes() == whole.path.read_bytes()


def test_chunked_las_refuses_dropped_or_unknown_labels_and_leaves_nothing(tmp_path):
    src = tmp_path / "in.las"
    cls, _ = synthetic_las(src, "1.2", 3)
    labels, conf = prediction(len(cls), 16)
    labels[300] = -1
    with pytest.raises(ValueError) as e:
        chunked(src, tmp_path / "out" / "in.las", labels, conf, 7 * 40)
    assert str(src) in one_line(e.value) and "outside the class table" in str(e.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    with pytest.raises(ValueError) as e:
        wb.write_scan_chunked(src, tmp_path / "o.las", lambda a, b: labels[a:b - 1], lambda a, b: conf[a:b], S3DIS)
    assert "must be" in one_line(e.value)
    with pytest.raises(ValueError) as e:
        chunked(src, tmp_path / "o.laz", np.zeros(len(cls), int), conf, 1 << 20)
    assert "keep the format" in one_line(e.value)


@pytest.mark.parametrize("kind", ["ply", "npy", "txt", "pcd"])
def test_chunked_write_of_other_formats_is_write_scans(tmp_path, kind):
    """Only LAS/LAZ are chunked; the others take every row's labels and go through write_scan."""
    from pointseg.io.scans import write_labelled_ply
    rng = np.random.default_rng(17)
    xyz = rng.random((40, 3)).astype(np.float32)
    xyz[[5, 22]] = np.nan
    src = tmp_path / f"scan.{kind}"
    if kind == "ply":
        write_labelled_ply(src, xyz, None, rng.integers(0, 13, 40), S3DIS)
    elif kind == "npy":
        np.save(src, xyz)
    elif kind == "txt":
        np.savetxt(src, xyz, fmt="%.6f")
    else:
        head = "VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 40\nHEIGHT 1\nPOINTS 40\nDATA binary\n"
        src.write_bytes(head.encode() + xyz.tobytes())
    scan = quiet_read(src)
    labels, conf = prediction(scan.num_points, 17)
    whole = wb.write_scan(src, tmp_path / "whole" / src.name, labels, conf, S3DIS, kept=scan.kept)
    full_labels = np.full(40, -1)
    full_labels[scan.kept] = labels
    full_conf = np.full(40, np.nan, np.float32)
    full_conf[scan.kept] = conf
    res = chunked(src, tmp_path / "chunked" / src.name, full_labels, full_conf, 100)
    assert res.path.read_bytes() == whole.path.read_bytes()
