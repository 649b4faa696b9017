"""The benchmark floor (pointseg.data.floor) and the benchmark's table (tools/bench_segment.py).

Small rooms (a low density) keep it fast; the memory bound is by construction (one room per
write) and is not timed here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

laspy = pytest.importorskip("laspy")

from pointseg.classes import S3DIS_CLASSES
from pointseg.data.floor import GAP, iter_floor, plan_floor, write_floor_las
from pointseg.io.scans import read_scan

N = 50_000
DENSITY = 600.0     # points per m^2 of floor: rooms of about 20 k points


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    path = tmp_path_factory.mktemp("floor") / "floor.las"
    rooms = write_floor_las(path, N, seed=3, density=DENSITY)
    return path, rooms


def test_exactly_n_points_over_several_rooms(floor):
    path, rooms = floor
    assert len(rooms) >= 2
    assert sum(r.points for r in rooms) == N
    # every room but the cut last one keeps its own density (its full sample)
    for r in rooms[:-1]:
        assert r.points == pytest.approx(r.planned, rel=0.05)
    assert 0 < rooms[-1].points <= rooms[-1].planned * 1.05
    with laspy.open(str(path)) as reader:
        h = reader.header
        assert (h.version.major, h.version.minor) == (1, 2)
        assert h.point_format.id == 2
        assert h.point_count == N
        np.testing.assert_allclose(h.scales, 0.001)


def test_rooms_do_not_overlap(floor):
    path, rooms = floor
    las = laspy.read(str(path))
    xyz = np.stack([las.x, las.y, las.z], axis=1)
    source = np.asarray(las.point_source_id)
    assert sorted(np.unique(source)) == [r.index for r in rooms]
    boxes = []
    for r in rooms:
        p = xyz[source == r.index]
        lo, hi = p.min(0), p.max(0)
        # inside the box it was planned in, its floor at z = 0
        assert lo[0] >= r.box[0] - 1e-3 and lo[1] >= r.box[1] - 1e-3
        assert hi[0] <= r.box[2] + 1e-3 and hi[1] <= r.box[3] + 1e-3
        assert abs(lo[2]) < 0.05
        boxes.append((lo, hi))
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (a0, a1), (b0, b1) = boxes[i], boxes[j]
            apart = max(b0[0] - a1[0], a0[0] - b1[0], b0[1] - a1[1], a0[1] - b1[1])
            assert apart > GAP / 2, (rooms[i], rooms[j])


def test_reads_back_with_colours_and_labels(floor):
    path, _ = floor
    scan = read_scan(path)
    assert scan.num_points == N
    assert scan.label is not None and scan.label.min() >= 0 and scan.label.max() < len(S3DIS_CLASSES)
    assert len(np.unique(scan.label)) >= 8          # walls, floor, ceiling, furniture...
    assert scan.rgb is not None and scan.rgb.dtype == np.uint8 and scan.rgb.std() > 10
    classification = read_scan(path, label_field="classification").raw_label
    np.testing.assert_array_equal(classification, scan.label)
    las = laspy.read(str(path))
    assert int(np.asarray(las.red).max()) > 255      # 16-bit colours


def test_deterministic_and_cut_not_thinned():
    a = [(r.index, r.points, xyz[:5].copy()) for r, xyz, _, _ in iter_floor(12_345, seed=1, density=DENSITY)]
    b = [(r.index, r.points, xyz[:5].copy()) for r, xyz, _, _ in iter_floor(12_345, seed=1, density=DENSITY)]
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for (_, _, p), (_, _, q) in zip(a, b):
        np.testing.assert_array_equal(p, q)
    # fewer points than one room: a slab of that room at its full density, not a thinned room
    (room, xyz, rgb, label), = list(iter_floor(5_000, seed=1, density=DENSITY))
    assert len(xyz) == len(rgb) == len(label) == 5_000
    full_len = max(room.box[2] - room.box[0], room.box[3] - room.box[1])
    cut_len = max(np.ptp(xyz[:, 0]), np.ptp(xyz[:, 1]))
    assert cut_len < 0.6 * full_len


def test_plan_refuses_nonsense():
    with pytest.raises(ValueError):
        plan_floor(0)
    with pytest.raises(ValueError):
        plan_floor(1000, density=0)


def _bench_module():
    path = Path(__file__).resolve().parents[1] / "tools" / "bench_segment.py"
    spec = importlib.util.spec_from_file_location("bench_segment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_prints_whatever_timings_exist(capsys):
    bench = _bench_module()
    common = {"model": "dgcnn", "sliding": {"stride": 0.5}, "load_average": 1.0}
    in_memory = {**common, "points": 1000, "blocks": 4, "points_per_s": 500.0, "wall_s": 4.0, "peak_kb": 102400,
                 "timings": {"read_scan_s": 0.1, "frame_s": 0.2, "predict_s": 2.0, "write_s": 0.1, "total_s": 2.5},
                 "metrics": {"oa": 0.9, "miou": 0.5}}
    streamed = {**common, "points": 4000, "blocks": 16, "points_per_s": 800.0, "wall_s": 8.0, "peak_kb": 153600,
                "timings": {"read_scan_s": 0.3, "plan_s": 0.4, "spill_s": 0.5, "predict_s": 5.0,
                            "merge_s": 0.6, "write_s": 0.2, "total_s": 7.0}}
    assert bench._timing_keys([in_memory, streamed]) == [
        "read_scan_s", "plan_s", "spill_s", "frame_s", "predict_s", "merge_s", "write_s", "total_s"]
    bench.print_table("default", [in_memory, streamed], ["--stream"])
    out = capsys.readouterr().out
    for col in ("plan", "spill", "merge", "frame", "OA", "mIoU", "peak MB"):
        assert col in out
    assert "--stream" in out
    ratio = [line for line in out.splitlines() if line.strip().startswith("4,000")][-1].split()
    assert ratio[1:] == ["4.00", "1.60", "2.00", "1.50", "2.00"]
