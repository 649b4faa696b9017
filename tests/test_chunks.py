"""Scans read in chunks (issue 27, pointseg.io.chunks): for every format the chunks, put together,
are what read_scan reads (its finite points, shifted by its origin, its colours and labels), with
chunk sizes that put chunk borders everywhere."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from test_write_back import AERIAL, HAVE_LAZRS, MOSD, needs_real, ply_with_faces, synthetic_las

from pointseg.classes import S3DIS, ClassTable
from pointseg.io.chunks import Chunk, ChunkedScan, open_chunks
from pointseg.io.scans import read_scan, write_labelled_ply



def quiet_read(path, label_field=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return read_scan(path, label_field=label_field)


def same_as_read_scan(path: Path, chunk_points: int = 7, label_field: str | None = None
                      ) -> tuple[ChunkedScan, list[Chunk]]:
    """Read ``path`` both ways and compare; returns the chunked scan and its chunks."""
    scan = quiet_read(path, label_field)
    cs = open_chunks(path, label_field)
    chunks = list(cs.chunks(chunk_points))
    assert cs.count == scan.num_points + scan.dropped
    assert [c.start for c in chunks] == list(range(0, cs.count, chunk_points))
    assert all(len(c) == min(chunk_points, cs.count - c.start) for c in chunks)
    xyz = np.concatenate([c.xyz for c in chunks])
    assert xyz.dtype == np.float64 and xyz.shape == (cs.count, 3)
    finite = np.isfinite(xyz).all(axis=1)
    assert int((~finite).sum()) == scan.dropped
    if scan.kept is not None:
        assert np.array_equal(finite, scan.kept)
    own = cs.origin if cs.origin is not None else 0.0          # a PLY's origin comment
    shift = (scan.origin - own) if scan.origin is not None else 0.0
    assert np.array_equal((xyz[finite] - shift).astype(np.float32), scan.xyz)
    if scan.rgb is None:
        assert not cs.has_colour and all(c.rgb is None for c in chunks)
    else:
        assert cs.has_colour
        rgb = np.concatenate([c.rgb for c in chunks])
        assert rgb.dtype == np.uint8 and np.array_equal(rgb[finite], scan.rgb)
    want = scan.label if label_field is None else scan.raw_label
    if want is None:
        assert not cs.has_labels and all(c.label is None for c in chunks)
    else:
        assert cs.has_labels
        lab = np.concatenate([c.label for c in chunks])
        raw_float = label_field is not None and np.asarray(want).dtype.kind == "f"
        assert lab.dtype == (np.float64 if raw_float else np.int64)
        assert np.array_equal(lab[finite], want)
        assert np.all(lab[~finite] == -1)
    assert cs.organized == scan.organized and cs.viewpoint == scan.viewpoint
    if label_field is not None:
        assert cs.field_names == scan.field_names
    return cs, chunks


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert msg and "\n" not in msg, msg
    return msg


# ----------------------------------------------------------------------------- LAS / LAZ

@needs_real
@pytest.mark.parametrize("k", [7, 1000, 20_000])
def test_real_las_chunks_are_the_scan(k):
    cs, chunks = same_as_read_scan(AERIAL, k)
    assert cs.format == "las" and cs.count == 10_310
    xyz = np.concatenate([c.xyz for c in chunks])
    assert np.allclose(cs.bounds, [xyz.min(axis=0), xyz.max(axis=0)], rtol=0, atol=1e-4)   # as the header says
    assert cs.bounds[0, 1] > 5e6                                  # file coordinates, not shifted


@needs_real
def test_real_las_classification_as_label_field():
    cs, chunks = same_as_read_scan(AERIAL, 7, label_field="classification")
    assert cs.has_labels and "classification" in cs.field_names
    cs, _ = same_as_read_scan(AERIAL, 7, label_field="no_such_dimension")
    assert not cs.has_labels


def las_with_colour_and_label(path: Path, big_colour: bool) -> None:
    import laspy
    h = laspy.LasHeader(point_format=3, version="1.2")
    h.add_extra_dims([laspy.ExtraBytesParams("label", "u1")])
    las = laspy.LasData(h)
    rng = np.random.default_rng(3)
    n = 60
    las.x, las.y, las.z = rng.random(n) * 10, rng.random(n) * 10, rng.random(n) * 3
    top = 65535 if big_colour else 255
    las.red, las.green, las.blue = (rng.integers(0, 200, n) for _ in range(3))
    if big_colour:
        las.red[41] = top                # one 16-bit value, in one chunk only: the whole file scales
    las.label = rng.integers(0, 13, n)
    las.classification = rng.integers(0, 5, n)
    las.write(str(path))


@pytest.mark.parametrize("big_colour", [False, True])
def test_las_colour_scaling_is_decided_by_the_whole_file(tmp_path, big_colour):
    src = tmp_path / "c.las"
    las_with_colour_and_label(src, big_colour)
    cs, chunks = same_as_read_scan(src, 7)
    assert cs.has_colour and cs.has_labels
    same_as_read_scan(src, 7, label_field="Classification")      # a dimension, case aside


@pytest.mark.skipif(not HAVE_LAZRS, reason="lazrs not installed (pip install 'pointseg[las]')")
def test_laz_chunks_are_the_scan(tmp_path):
    import laspy
    las_with_colour_and_label(tmp_path / "c.las", True)
    laspy.read(tmp_path / "c.las").write(str(tmp_path / "c.laz"), do_compress=True)
    cs, _ = same_as_read_scan(tmp_path / "c.laz", 7)
    assert cs.format == "laz"


def test_synthetic_las_with_classification_and_extra_dims(tmp_path):
    synthetic_las(tmp_path / "s.las", "1.4", 6)
    same_as_read_scan(tmp_path / "s.las", 7)
    same_as_read_scan(tmp_path / "s.las", 13, label_field="classification")


# ----------------------------------------------------------------------------- PCD

def _mosd_binary(dst: Path) -> None:
    """mosd_learn0.pcd (binary_compressed) rewritten as plain binary: an organised binary PCD
    with NaN points."""
    from pointseg.io import write_back as wb
    from pointseg.io.cloud_files import parse_pcd_header
    with open(MOSD, "rb") as f:
        h = parse_pcd_header(MOSD, f)
        f.seek(0)
        head = f.read(h["data_offset"])
        data = f.read()
    rec = wb._pcd_records(MOSD, h, data)
    dst.write_bytes(head.replace(b"DATA binary_compressed", b"DATA binary") + rec.tobytes())


@needs_real
def test_real_compressed_pcd_is_read_whole_and_handed_out_in_chunks():
    cs, _ = same_as_read_scan(MOSD, 4099)
    assert cs.organized == (640, 480) and cs.count == 640 * 480
    assert cs.has_colour and cs.has_labels


@needs_real
def test_real_organised_binary_pcd_with_nan_points(tmp_path):
    src = tmp_path / "mosd_binary.pcd"
    _mosd_binary(src)
    cs, chunks = same_as_read_scan(src, 4099)
    assert cs.organized == (640, 480) and cs.viewpoint == (0, 0, 0, 1, 0, 0, 0)
    assert any(not np.isfinite(c.xyz).all() for c in chunks)
    same_as_read_scan(src, 50_000, label_field="label")


def small_pcd(path: Path, encoding: str, packed: bool = True) -> None:
    n = 40
    rng = np.random.default_rng(5)
    xyz = rng.random((n, 3)).astype(np.float32)
    xyz[[3, 17, 30]] = np.nan
    if packed:
        fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("normal", "<f4", (3,)), ("rgb", "<f4"),
                  ("label", "<u2")]
        head = "FIELDS x y z normal rgb label\nSIZE 4 4 4 4 4 2\nTYPE F F F F F U\nCOUNT 1 1 1 3 1 1\n"
    else:
        fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "<f4"), ("green", "<f4"), ("blue", "<f4"),
                  ("label", "<u2")]
        head = "FIELDS x y z red green blue label\nSIZE 4 4 4 4 4 4 2\nTYPE F F F F F F U\nCOUNT 1 1 1 1 1 1 1\n"
    rec = np.zeros(n, fields)
    rec["x"], rec["y"], rec["z"] = xyz.T
    if packed:
        rec["normal"] = rng.random((n, 3))
        rgb = rng.integers(0, 256, (n, 3)).astype(np.uint32)
        rec["rgb"] = ((rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]).view(np.float32)
    else:
        for c in ("red", "green", "blue"):
            rec[c] = rng.random(n)                 # floats in 0..1: scaled to 0..255
    rec["label"] = rng.integers(0, 13, n)
    head = ("# .PCD v0.7\nVERSION 0.7\n" + head + f"WIDTH {n}\nHEIGHT 1\nVIEWPOINT 1 2 3 1 0 0 0\n"
            f"POINTS {n}\nDATA {encoding}\n")
    if encoding == "binary":
        path.write_bytes(head.encode() + rec.tobytes())
    else:
        rows = []
        for r in rec:
            vals = []
            for nm in rec.dtype.names:
                v = r[nm]
                if nm == "rgb":
                    vals.append(repr(float(v)))
                elif np.ndim(v):
                    vals += [repr(float(x)) for x in v]
                else:
                    vals.append(repr(float(v)) if rec.dtype[nm].kind == "f" else str(int(v)))
            rows.append(" ".join(vals))
        path.write_bytes(head.encode() + ("\n\n".join(rows[:5]) + "\n" + "\n".join(rows[5:]) + "\n").encode())


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
@pytest.mark.parametrize("packed", [True, False])
def test_small_pcd_ascii_and_binary(tmp_path, encoding, packed):
    src = tmp_path / "s.pcd"
    small_pcd(src, encoding, packed)
    cs, _ = same_as_read_scan(src, 7)
    assert cs.viewpoint == (1, 2, 3, 1, 0, 0, 0) and cs.has_colour and cs.has_labels
    same_as_read_scan(src, 7, label_field="LABEL")               # the named field, case aside
    cs, _ = same_as_read_scan(src, 7, label_field="nothing")
    assert not cs.has_labels


def test_short_ascii_pcd_is_an_error_naming_the_file(tmp_path):
    src = tmp_path / "s.pcd"
    small_pcd(src, "ascii")
    src.write_bytes(src.read_bytes().rsplit(b"\n", 3)[0] + b"\n")       # two points short
    with pytest.raises(ValueError) as e:
        list(open_chunks(src).chunks(7))
    assert str(src) in one_line(e.value) and "declares 40 points" in str(e.value)


# ----------------------------------------------------------------------------- PLY

@pytest.mark.parametrize("encoding", ["ascii", "binary_big_endian", "binary_little_endian"])
def test_ply_with_an_element_before_and_faces_after_the_vertices(tmp_path, encoding):
    src = tmp_path / "mesh.ply"
    ply_with_faces(src, encoding, quad=True)
    cs, chunks = same_as_read_scan(src, 3)
    assert cs.format == "ply" and cs.count == 8
    same_as_read_scan(src, 3, label_field="intensity")


def test_labelled_ply_with_class_table_origin_and_float_colours(tmp_path):
    rng = np.random.default_rng(4)
    n = 50
    xyz = rng.uniform(0, 50, (n, 3)).astype(np.float32)
    table = ClassTable(("a", "b", "c"), ((1, 2, 3), (4, 5, 6), (7, 8, 9)), "abc")
    src = write_labelled_ply(tmp_path / "l.ply", xyz, rng.integers(0, 256, (n, 3)).astype(np.uint8),
                             rng.integers(0, 3, n), table, pred=rng.integers(0, 3, n), model="m",
                             origin=np.array([362_000.0, 5_157_000.0, 100.0]))
    cs, _ = same_as_read_scan(src, 7)
    assert cs.classes == table and cs.model == "m" and cs.origin.tolist() == [362_000.0, 5_157_000.0, 100.0]
    stub = cs.scan_stub()
    assert stub.num_points == 0 and stub.classes == table and stub.path == src
    # colours in 0..1 floats: the whole file decides the scaling
    v = np.zeros(n, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "<f4"), ("green", "<f4"), ("blue", "<f4")])
    v["x"], v["y"], v["z"] = xyz.T
    v["x"][10] = np.nan
    for c in ("red", "green", "blue"):
        v[c] = rng.random(n)
    head = ("ply\nformat binary_little_endian 1.0\nelement vertex 50\n" + "".join(
        f"property float {c}\n" for c in ("x", "y", "z", "red", "green", "blue")) + "end_header\n")
    (tmp_path / "f.ply").write_bytes(head.encode() + v.tobytes())
    same_as_read_scan(tmp_path / "f.ply", 7)
    v["red"][44] = 300.0                          # one 16-bit-looking value in the last chunk
    (tmp_path / "g.ply").write_bytes(head.encode() + v.tobytes())
    same_as_read_scan(tmp_path / "g.ply", 7)


def test_ply_labels_outside_its_class_table_are_refused_in_one_line(tmp_path):
    small = ClassTable(("a", "b"), ((1, 1, 1), (2, 2, 2)), "small")
    rng = np.random.default_rng(2)
    p = write_labelled_ply(tmp_path / "a.ply", rng.random((30, 3)), None, rng.integers(0, 2, 30), small)
    p.write_bytes(p.read_bytes().replace(b"comment class 1 b 2 2 2\n", b""))
    cs = open_chunks(p)
    with pytest.raises(ValueError) as e:
        list(cs.chunks(7))
    assert "a.ply" in one_line(e.value) and "outside the class table" in str(e.value)


def test_truncated_binary_ply_is_refused_when_opened(tmp_path):
    p = write_labelled_ply(tmp_path / "a.ply", np.random.default_rng(1).random((30, 3)), None,
                           np.zeros(30, int), S3DIS)
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(ValueError) as e:
        open_chunks(p)
    assert "a.ply" in one_line(e.value) and "truncated" in str(e.value)


def test_binary_ply_reads_only_a_chunk_at_a_time(tmp_path, monkeypatch):
    n = 1000
    p = write_labelled_ply(tmp_path / "a.ply", np.random.default_rng(1).random((n, 3)), None,
                           np.zeros(n, int), S3DIS)
    counts = []
    real = np.fromfile

    def spy(f, dtype=float, count=-1, **kw):
        counts.append(count)
        return real(f, dtype=dtype, count=count, **kw)
    monkeypatch.setattr(np, "fromfile", spy)
    assert sum(len(c) for c in open_chunks(p).chunks(64)) == n
    assert counts and max(counts) == 64 and -1 not in counts


# ----------------------------------------------------------------------------- text and .npy

def test_text_with_header_comments_blank_lines_and_nan_rows(tmp_path):
    src = tmp_path / "scan.txt"
    rng = np.random.default_rng(7)
    rows = []
    for i in range(45):
        x = "nan" if i in (6, 7, 21) else f"{rng.random():.6f}"
        rows.append(f"{x},{rng.random():.6f},{rng.random():.6f},{rng.integers(0, 256)},{rng.integers(0, 256)},"
                    f"{rng.integers(0, 256)},{rng.integers(0, 13)}" + (" # note" if i == 9 else ""))
    lines = ["# exported", "", "x,y,z,r,g,b,label"] + rows[:10] + ["", "// a comment"] + rows[10:]
    src.write_bytes("\r\n".join(lines).encode())            # CRLF, no final newline
    cs, _ = same_as_read_scan(src, 7)
    assert cs.format == "text" and cs.count == 45
    same_as_read_scan(src, 7, label_field="col:6")
    same_as_read_scan(src, 7, label_field="col:4")           # colour column named: no colour
    same_as_read_scan(src, 7, label_field="col:9")           # no such column


@pytest.mark.parametrize("scale", [1.0, 255.0, 65535.0])
def test_text_colours_are_scaled_by_the_whole_file(tmp_path, scale):
    rng = np.random.default_rng(8)
    arr = np.c_[rng.random((40, 3)), rng.random((40, 3)) * 0.9]
    arr[37, 3] = scale                          # the last chunk decides the scaling of all
    np.savetxt(tmp_path / "a.xyz", arr, fmt="%.6f")
    same_as_read_scan(tmp_path / "a.xyz", 7)


def test_utm_text_keeps_file_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.uniform([362_330.0, 5_157_700.0, 106.0], [362_342.0, 5_157_880.0, 120.0], size=(100, 3))
    np.savetxt(tmp_path / "utm.xyz", xyz, fmt="%.3f")
    cs, chunks = same_as_read_scan(tmp_path / "utm.xyz", 7)
    assert np.allclose(np.concatenate([c.xyz for c in chunks]), np.round(xyz, 3), atol=1e-9)
    assert cs.bounds is None


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.uint16])
@pytest.mark.parametrize("cols", [3, 6, 7, 9])
def test_npy_arrays_in_chunks(tmp_path, order, dtype, cols):
    rng = np.random.default_rng(9)
    arr = np.c_[rng.random((30, 3)) * 100, rng.integers(0, 256, (30, 3)), rng.integers(0, 13, (30, 3))][:, :cols]
    if np.dtype(dtype).kind == "f":
        arr[[4, 11], 1] = np.nan
    arr = np.asarray(arr.astype(dtype), order=order)
    np.save(tmp_path / "a.npy", arr)
    if cols == 9:
        with pytest.raises(ValueError) as e:
            open_chunks(tmp_path / "a.npy")
        assert "9 columns" in one_line(e.value)
        same_as_read_scan(tmp_path / "a.npy", 7, label_field="col:8")
        return
    same_as_read_scan(tmp_path / "a.npy", 7)
    if cols >= 6:
        same_as_read_scan(tmp_path / "a.npy", 4, label_field="col:3")   # a colour column: no colour


# ----------------------------------------------------------------------------- refusals and hints

@pytest.mark.parametrize("name,content,match", [
    ("room.npz", b"PK\x03\x04", "not read in chunks"),
    ("a.foo", b"1 2 3\n", "unknown scan format"),
    ("a.npy", np.arange(5.0), "per-point labels"),
    ("a.ply", b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n", "no vertices"),
    ("a.txt", b"# nothing\n\n", "no points"),
    ("a.las", b"LASF" + bytes(300), "LAS"),
])
def test_bad_files_are_one_line_naming_the_file(tmp_path, name, content, match):
    p = tmp_path / name
    if isinstance(content, np.ndarray):
        np.save(p, content)
    else:
        p.write_bytes(content)
    with pytest.raises(ValueError) as e:
        open_chunks(p)
    assert name in one_line(e.value) and match in str(e.value), str(e.value)
    with pytest.raises(ValueError):
        open_chunks(p, label_field="col:x")             # not a column number, or the same refusal


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_chunks(tmp_path / "none.las")
    with pytest.raises(ValueError):
        open_chunks(tmp_path)


def test_file_hints_of_a_chunked_scan_match_the_scans():
    from pointseg.segmentation.frame import FileHints
    if not MOSD.is_file():
        pytest.skip("real scans not found")
    cs = open_chunks(MOSD)
    scan = quiet_read(MOSD)
    assert FileHints.of(cs.hints) == FileHints.of(scan) == FileHints.of(cs.scan_stub()) == FileHints.of(cs)
    assert FileHints.of(cs).organized == (640, 480)


def test_non_integer_label_field_values_are_kept_raw_as_read_scan_keeps_them(tmp_path):
    # their users (class maps, the streamed ground truth) read them through whole_numbers
    arr = np.c_[np.random.default_rng(1).random((10, 3)), np.full(10, 2.5)]
    np.save(tmp_path / "a.npy", arr)
    lab = np.concatenate([c.label for c in open_chunks(tmp_path / "a.npy", label_field="col:3").chunks(4)])
    assert np.array_equal(lab, read_scan(tmp_path / "a.npy", label_field="col:3").raw_label)
    assert np.all(lab == 2.5)


def test_chunk_size_must_be_positive(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3)))
    with pytest.raises(ValueError):
        list(open_chunks(tmp_path / "a.npy").chunks(0))


def test_ascii_ply_that_is_short_or_has_extra_lines_is_an_error_naming_the_file(tmp_path):
    src = tmp_path / "mesh.ply"
    ply_with_faces(src, "ascii", quad=False)
    good = src.read_bytes()
    src.write_bytes(good + b"1 2 3\n")
    with pytest.raises(ValueError) as e:
        list(open_chunks(src).chunks(3))
    assert "mesh.ply" in one_line(e.value) and "more line(s)" in str(e.value)
    lines = good.split(b"\n")
    src.write_bytes(b"\n".join(lines[:-6]) + b"\n")          # inside the vertices
    with pytest.raises(ValueError) as e:
        list(open_chunks(src).chunks(3))
    assert "mesh.ply" in one_line(e.value) and "truncated" in str(e.value)
