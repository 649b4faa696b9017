"""Synthetic rooms: raw release layout, all 13 classes placed plausibly, deterministic by seed,
size option, no overwrite; and the end-to-end CLI synth -> prepare-s3dis -> make-blocks -> reader."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pointseg.classes import S3DIS_CLASSES
from pointseg.cli import main
from pointseg.data.prepared import PreparedRooms
from pointseg.data.s3dis_blocks import S3DISBlocks
from pointseg.data.synth import generate_room, write_synthetic

LINE = re.compile(rb"^-?\d+\.\d{3} -?\d+\.\d{3} -?\d+\.\d{3} \d{1,3} \d{1,3} \d{1,3}$")


def _by_class(objects):
    out: dict[str, list[np.ndarray]] = {}
    for cls, xyz, _ in objects:
        out.setdefault(cls, []).append(xyz)
    return {k: np.concatenate(v) for k, v in out.items()}


def test_same_seed_same_room_other_seed_other_room() -> None:
    a = generate_room(np.random.default_rng([4, 0]), 20_000)
    b = generate_room(np.random.default_rng([4, 0]), 20_000)
    c = generate_room(np.random.default_rng([5, 0]), 20_000)
    assert a[0] == b[0] and len(a[1]) == len(b[1])
    for (ca, xa, ra), (cb, xb, rb) in zip(a[1], b[1]):
        assert ca == cb
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ra, rb)
    assert sum(len(x) for _, x, _ in a[1]) != sum(len(x) for _, x, _ in c[1])


def test_all_13_classes_appear_and_points_option_sets_the_size() -> None:
    seen: set[str] = set()
    for i in range(10):
        kind, objects = generate_room(np.random.default_rng([0, i]), 15_000)
        n = sum(len(x) for _, x, _ in objects)
        assert 0.9 * 15_000 < n < 1.1 * 15_000
        seen |= {c for c, _, _ in objects}
    assert seen == set(S3DIS_CLASSES)


def test_classes_are_placed_plausibly() -> None:
    kind, objects = generate_room(np.random.default_rng([1, 3]), 40_000, "office")
    pts = _by_class(objects)
    floor_z, ceil_z = pts["floor"][:, 2].mean(), pts["ceiling"][:, 2].mean()
    height = ceil_z - floor_z
    assert 2.5 < height < 3.5
    assert np.ptp(pts["floor"][:, 2]) < 0.05 and np.ptp(pts["ceiling"][:, 2]) < 0.05   # flat, noisy
    rel = {c: p[:, 2] - floor_z for c, p in pts.items()}
    assert rel["table"].max() < 0.85 and rel["chair"].max() < 1.0
    assert rel["wall"].min() < 0.1 and rel["wall"].max() > height - 0.1
    for c in ("table", "chair", "clutter", "door", "wall"):
        lo, hi = pts["floor"].min(0), pts["floor"].max(0)
        assert (pts[c][:, :2] > lo[:2] - 0.3).all() and (pts[c][:, :2] < hi[:2] + 0.3).all()


def test_writes_the_raw_release_layout(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    rooms = write_synthetic(out, rooms=3, seed=2, areas=[1, 5], points=5_000, progress=False)
    assert [r["area"] for r in rooms] == [1, 5, 1]
    for r in rooms:
        room_dir = out / f"Area_{r['area']}" / r["name"]
        files = sorted((room_dir / "Annotations").iterdir())
        assert files and all(re.match(r"^[a-z]+_\d+\.txt$", f.name) for f in files)
        assert {f.name.rsplit("_", 1)[0] for f in files} <= set(S3DIS_CLASSES)
        lines = b"".join(f.read_bytes() for f in files).splitlines()
        assert all(LINE.match(ln) for ln in lines[:2000])
        room_level = (room_dir / f"{r['name']}.txt").read_bytes().splitlines()
        assert sorted(room_level) == sorted(lines)          # room-level file: all annotations together
        assert len(lines) == r["num_points"]
    assert not list(out.rglob("*.tmp"))


def test_existing_rooms_are_not_overwritten_without_the_flag(tmp_path: Path) -> None:
    write_synthetic(tmp_path, rooms=1, seed=0, areas=[2], points=2_000, progress=False)
    with pytest.raises(FileExistsError, match="Area_2"):
        write_synthetic(tmp_path, rooms=1, seed=0, areas=[2], points=2_000, progress=False)
    write_synthetic(tmp_path, rooms=1, seed=0, areas=[2], points=2_000, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="rooms"):
        write_synthetic(tmp_path / "x", rooms=0, progress=False)


def test_end_to_end_cli_synth_prepare_blocks_reader(tmp_path: Path) -> None:
    raw, prep, blocks = tmp_path / "raw", tmp_path / "prepared", tmp_path / "blocks"
    assert main(["synth", str(raw), "--rooms", "3", "--seed", "3", "--areas", "1", "5",
                 "--points", "20000", "--defects", "--quiet"]) == 0
    assert main(["prepare-s3dis", str(raw), str(prep), "--workers", "1", "--quiet"]) == 0
    manifest = json.loads((prep / "manifest.json").read_text())
    assert manifest["num_rooms"] == 3 and manifest["num_repaired"] == 2 * 3    # NUL + control byte per room
    assert manifest["classes"]["names"] == list(S3DIS_CLASSES)
    assert main(["make-blocks", str(prep), str(blocks), "--num-points", "256", "--stride", "1.0",
                 "--quiet"]) == 0
    prepared = PreparedRooms(prep)
    test = S3DISBlocks(blocks, "test", test_area=5)
    area5 = {e.full_name for e in prepared.entries([5])}
    assert {test.room_of(i) for i in range(len(test))} == area5
    x, y = test[0]
    assert x.shape == (9, 256) and int(y.max()) <= 12
    # Whole-room access: every original point with labels and the normalisation constants.
    room = next(prepared.iter_rooms([5]))
    assert room.room.label is not None and len(room.room.label) == room.room.num_points
    np.testing.assert_allclose(room.norm.offset, room.room.xyz.min(0), atol=1e-6)
    assert main(["make-blocks", str(prep), str(blocks), "--quiet"]) == 2        # exists: refused
