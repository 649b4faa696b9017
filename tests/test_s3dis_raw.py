"""Raw S3DIS release ingestion: tolerant parsing, repairs logged with file + line, junk files,
unknown prefixes, resumable prepare, bad input named."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pointseg.classes import S3DIS
from pointseg.cli import main
from pointseg.io.rooms import load_room
from pointseg.data.s3dis_raw import parse_points, prepare_s3dis, read_points_file

RELEASE = "Stanford3dDataset_v1.2_Aligned_Version"


def _lines(rng: np.random.Generator, n: int, z: float) -> list[str]:
    xyz = rng.uniform(0, 3, (n, 3))
    xyz[:, 2] = z + rng.normal(0, 0.01, n)
    rgb = rng.integers(0, 256, (n, 3))
    return [f"{x:.3f} {y:.3f} {zz:.3f} {r} {g} {b}" for (x, y, zz), (r, g, b) in zip(xyz, rgb)]


def _write(path: Path, lines: list[str] | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())


@pytest.fixture
def raw_release(tmp_path: Path) -> Path:
    """Two areas, three rooms, in the exact raw layout, with the release's defects."""
    rng = np.random.default_rng(0)
    root = tmp_path / "download" / RELEASE
    # Area_1/office_1: a NUL between two colour values (line 3 of ceiling_1), a control byte
    # inside a number (line 2 of wall_1), a line with 5 numbers (line 4 of wall_1), junk files.
    ann = root / "Area_1" / "office_1" / "Annotations"
    ceiling = _lines(rng, 30, 3.0)
    x, y, z, r, g, b = ceiling[2].split(" ")
    ceiling_bytes = ("\n".join(ceiling[:2]) + "\n").encode() + f"{x} {y} {z} {r}".encode() + b"\x00" + \
        f"{g} {b}\n".encode() + ("\n".join(ceiling[3:]) + "\n").encode()
    _write(ann / "ceiling_1.txt", ceiling_bytes)
    wall = _lines(rng, 20, 1.5)
    wx = wall[1].split(" ")
    wall_bytes = (wall[0] + "\n").encode() + wx[0][:2].encode() + b"\x07" + wx[0][2:].encode() + \
        (" " + " ".join(wx[1:]) + "\n").encode() + (wall[2] + "\n").encode() + b"1.0 2.0 3.0 4 5\n" + \
        ("\n".join(wall[3:]) + "\n").encode()
    _write(ann / "wall_1.txt", wall_bytes)
    _write(ann / "wall_3 (1).txt", _lines(rng, 7, 1.0))
    _write(ann / "stairs_1.txt", _lines(rng, 11, 0.5))
    _write(ann / "floor_1.txt", _lines(rng, 25, 0.0))
    _write(ann / ".DS_Store", b"\x00\x00\x00\x01Bud1\x00\x10")
    _write(root / "Area_1" / "office_1" / "office_1.txt", _lines(rng, 5, 1.0))  # room-level file: ignored
    _write(root / "Area_1" / ".DS_Store", b"\x00junk")
    _write(root / "Area_1" / "conferenceRoom_1" / "Annotations" / "table_1.txt", _lines(rng, 40, 0.75))
    _write(root / "Area_1" / "conferenceRoom_1" / "Annotations" / "chair_2.txt", _lines(rng, 15, 0.45))
    _write(root / "Area_5" / "hallway_6" / "Annotations" / "door_1.txt", _lines(rng, 12, 1.0))
    _write(root / "Area_5" / "hallway_6" / "Annotations" / "board_1.txt", _lines(rng, 9, 1.4))
    return tmp_path / "download"


# ----------------------------------------------------------------------------- parser

def test_nul_between_colour_values_is_read_as_separator_and_logged_with_line() -> None:
    data = b"1.000 2.000 3.000 10 20 30\n4.000 5.000 6.000 185\x00187 9\n"
    rows, events = parse_points(data, "Area_5/hallway_6/Annotations/ceiling_1.txt")
    np.testing.assert_allclose(rows, [[1, 2, 3, 10, 20, 30], [4, 5, 6, 185, 187, 9]])
    assert len(events) == 1
    e = events[0]
    assert (e["file"], e["line"], e["action"]) == ("Area_5/hallway_6/Annotations/ceiling_1.txt", 2, "repaired")
    assert "\\x00" in e["detail"]


def test_control_byte_inside_a_number_is_removed() -> None:
    rows, events = parse_points(b"1.0 2.0 3.0 1 2 3\n7.5\x0162 8 9 1 2 3\n", "f.txt")
    np.testing.assert_allclose(rows[1], [7.562, 8, 9, 1, 2, 3])
    assert [(e["line"], e["action"]) for e in events] == [(2, "repaired")]


def test_lines_without_six_numbers_are_dropped_and_logged() -> None:
    data = b"1 2 3 4 5 6\n1 2 3 4 5\n1.2.3 1 1 1 1 1\nhello\n1 2 3 4 5 6 7\n6 5 4 3 2 1\n"
    rows, events = parse_points(data, "f.txt")
    np.testing.assert_allclose(rows, [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    assert [(e["line"], e["action"]) for e in events] == [(2, "dropped"), (3, "dropped"), (4, "dropped"),
                                                           (5, "dropped")]


def test_blank_lines_crlf_and_missing_final_newline_are_fine() -> None:
    rows, events = parse_points(b"1 2 3 4 5 6\r\n\r\n\n7 8 9 10 11 12", "f.txt")
    np.testing.assert_allclose(rows, [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    assert events == []


def test_parser_keeps_file_order_around_repaired_lines() -> None:
    lines = [f"{i}.0 0 0 1 2 3".encode() for i in range(200)]
    lines[57] = b"57.0 0 0 1\x002 3"
    rows, events = parse_points(b"\n".join(lines), "f.txt")
    np.testing.assert_array_equal(rows[:, 0], np.arange(200))
    assert events[0]["line"] == 58


def test_read_points_file_types_and_colour_clipping(tmp_path: Path) -> None:
    p = tmp_path / "clutter_1.txt"
    p.write_bytes(b"1.5 2.5 3.5 300 -2 7\n")
    xyz, rgb, events = read_points_file(p, "clutter_1.txt")
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, [[255, 0, 7]])
    assert events and events[0]["action"] == "clipped"


# ----------------------------------------------------------------------------- prepare

def test_prepare_writes_labelled_rooms_manifest_and_repair_log(raw_release: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    m = prepare_s3dis(raw_release, out, workers=1, progress=False)
    assert m["num_rooms"] == 3 and m["classes"] == S3DIS.to_dict()
    office = load_room(out / "Area_1" / "office_1.npz")
    names = S3DIS.names
    counts = np.bincount(office.label, minlength=13)
    # ceiling 30 (NUL line repaired), floor 25, wall 20 (+1 five-number line dropped; the copy ignored),
    # stairs -> clutter 11.
    assert counts[names.index("ceiling")] == 30
    assert counts[names.index("floor")] == 25
    assert counts[names.index("wall")] == 20
    assert counts[names.index("clutter")] == 11
    assert office.num_points == 30 + 25 + 20 + 11
    assert office.xyz.dtype == np.float32 and office.rgb.dtype == np.uint8 and office.label.dtype == np.uint8
    assert tuple(office.classes) == names

    events = [e for r in m["rooms"] for e in r["events"]] + m["events"]
    where = {(e["file"], e["line"], e["action"]) for e in events}
    assert ("Area_1/office_1/Annotations/ceiling_1.txt", 3, "repaired") in where
    assert ("Area_1/office_1/Annotations/wall_1.txt", 2, "repaired") in where
    assert ("Area_1/office_1/Annotations/wall_1.txt", 4, "dropped") in where
    assert ("Area_1/office_1/Annotations/wall_3 (1).txt", None, "ignored") in where
    assert ("Area_1/office_1/Annotations/.DS_Store", None, "ignored") in where
    assert ("Area_1/office_1/Annotations/stairs_1.txt", None, "relabelled") in where
    assert ("Area_1/.DS_Store", None, "ignored") in where
    log = (out / "repairs.txt").read_text()
    assert "Area_1/office_1/Annotations/ceiling_1.txt:3: repaired" in log
    assert "Area_1/office_1/Annotations/wall_1.txt:4: dropped" in log

    rec = {r["name"]: r for r in m["rooms"]}
    assert rec["office_1"]["num_points"] == office.num_points
    assert sum(rec["office_1"]["class_counts"].values()) == office.num_points
    assert m["num_points"] == sum(r["num_points"] for r in m["rooms"])
    assert len(rec["hallway_6"]["sha256"]) == 64
    assert json.loads((out / "manifest.json").read_text())["num_rooms"] == 3


def test_prepare_rerun_skips_rooms_already_written(raw_release: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare_s3dis(raw_release, out, progress=False)
    npz = out / "Area_1" / "office_1.npz"
    before = npz.stat().st_mtime_ns
    (out / "Area_5" / "hallway_6.npz").unlink()          # as if interrupted before this room
    m = prepare_s3dis(raw_release, out, progress=False)
    assert npz.stat().st_mtime_ns == before
    assert (out / "Area_5" / "hallway_6.npz").exists()
    assert m["num_rooms"] == 3 and m["num_repaired"] == 2


def test_prepare_in_parallel_gives_the_same_rooms(raw_release: Path, tmp_path: Path) -> None:
    a = prepare_s3dis(raw_release, tmp_path / "a", workers=1, progress=False)
    b = prepare_s3dis(raw_release, tmp_path / "b", workers=2, progress=False)
    assert [r["content_sha256"] for r in a["rooms"]] == [r["content_sha256"] for r in b["rooms"]]


def test_not_a_release_is_an_error_naming_the_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="photos.*not a raw S3DIS release"):
        prepare_s3dis(tmp_path / "photos", tmp_path / "out", progress=False)
    assert main(["prepare-s3dis", str(tmp_path / "photos"), str(tmp_path / "out"), "--quiet"]) == 2
    assert "not a raw S3DIS release" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_room_without_annotations_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "Area_2" / "office_3").mkdir(parents=True)
    with pytest.raises(ValueError, match="office_3.*no Annotations"):
        prepare_s3dis(tmp_path, tmp_path / "out", progress=False)


def test_empty_room_is_an_error_and_leaves_no_file(raw_release: Path, tmp_path: Path) -> None:
    ann = raw_release / RELEASE / "Area_5" / "storage_1" / "Annotations"
    _write(ann / ".DS_Store", b"\x00")
    _write(ann / "clutter_1.txt", b"")
    out = tmp_path / "prepared"
    with pytest.raises(ValueError, match="storage_1.*empty room"):
        prepare_s3dis(raw_release, out, progress=False)
    assert not (out / "Area_5" / "storage_1.npz").exists()
    assert not list(out.rglob("*.tmp*"))
    assert not (out / "manifest.json").exists()


def test_prepare_rerun_redoes_a_room_whose_raw_file_changed_or_output_was_damaged(
        raw_release: Path, tmp_path: Path) -> None:
    from pointseg.io.rooms import load_room
    out = tmp_path / "prepared"
    prepare_s3dis(raw_release, out, progress=False)
    npz = out / "Area_1" / "office_1.npz"
    good = load_room(npz).xyz.copy()
    data = bytearray(npz.read_bytes())                 # damage in place, same size
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    prepare_s3dis(raw_release, out, progress=False)
    np.testing.assert_array_equal(load_room(npz).xyz, good)
    ann = next((raw_release.rglob("office_1/Annotations/*.txt")))
    text = ann.read_text().splitlines()
    first = text[0].split()
    first[0] = "9.5"                                  # an edited raw coordinate
    ann.write_text("\n".join([" ".join(first)] + text[1:]) + "\n")
    prepare_s3dis(raw_release, out, progress=False)
    assert np.isclose(load_room(npz).xyz[:, 0], 9.5).any()
