"""Streamed segmentation (issue 27): a scan read in chunks, spilled to tiles on disk and segmented
tile by tile gets the labels of the whole-scan run, point for point, also across tile borders,
with voxel subsampling and outliers; an interrupted run resumes to the same labels; the outputs
are written in chunks; bad use is refused in one line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pointseg.assets import asset
from pointseg.io.chunks import open_chunks
from pointseg.io.scans import read_scan, write_labelled_ply
from pointseg.segmentation.checkpoint import load_model
from pointseg.segmentation.inference import SlidingConfig, robust_box
from pointseg.segmentation.segment import DEFAULT_CHECKPOINT, segment_scan
from pointseg.segmentation.stream import Interrupted, StreamRun, order_statistics

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real_scans"
TILE = 2.0      # small tiles: many tile borders in a small scan


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_CHECKPOINT, "cpu")


def floor_scene(keep: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """Two copies of the sample room side by side (one turned a quarter), thinned to ``keep``."""
    room = read_scan(asset("sample_room.ply"))
    x0 = room.xyz - room.xyz.min(0)
    side = float((room.xyz.max(0) - room.xyz.min(0)).max()) + 0.3
    xyz = np.concatenate([x0, x0[:, [1, 0, 2]] + [side, 0, 0]])
    rgb = np.concatenate([room.rgb, room.rgb])
    lab = np.concatenate([room.label, room.label])
    pick = np.random.default_rng(seed).random(len(xyz)) < keep
    return xyz[pick], rgb[pick], lab[pick], room.classes


def stream_labels(model, path: Path, work: Path, **kw) -> tuple[np.ndarray, np.ndarray, StreamRun, object]:
    run = StreamRun(model, open_chunks(path), work, sliding=SlidingConfig(tile_size=TILE), progress=False,
                    checkpoint=str(DEFAULT_CHECKPOINT), chunk_points=kw.pop("chunk_points", 7_001), **kw)
    res = run.run()
    return (np.fromfile(res.labels_rows, dtype=np.int32), np.fromfile(res.conf_rows, dtype=np.float32), run, res)


def whole_scan(model, path: Path, run: StreamRun, voxel="auto"):
    return segment_scan(model, read_scan(path), SlidingConfig(tile_size=TILE), progress=False,
                        frame=run.frame(), voxel=voxel)


def test_order_statistics_are_exact_for_any_float32_values():
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.normal(0, 5, 5000), np.zeros(300), -np.zeros(200), np.full(100, -7.25),
                        rng.uniform(-1e6, 1e6, 50)]).astype(np.float32)
    rng.shuffle(v)
    ranks = [0, 1, 17, 2500, 2501, len(v) - 2, len(v) - 1]
    got = order_statistics(lambda: iter(np.array_split(v, 7)), ranks)
    assert np.array_equal(got[:, 0], np.sort(v)[ranks])
    cols = np.c_[v, -v[::-1], v * 3]                                # several columns at once
    got = order_statistics(lambda: iter(np.array_split(cols, 5)), ranks)
    assert np.array_equal(got, np.sort(cols, axis=0)[ranks])


def test_streamed_labels_equal_the_whole_scan_run_across_tile_borders(model, tmp_path):
    xyz, rgb, lab, classes = floor_scene(0.25)
    # a few points far away: outliers, labelled like their nearest point in both runs
    far = np.array([[500.0, 3.0, 1.0], [-400.0, 2.0, 1.0], [3.0, 900.0, 0.5]], dtype=np.float32)
    xyz = np.concatenate([xyz, far])
    rgb = np.concatenate([rgb, np.full((3, 3), 90, np.uint8)])
    lab = np.concatenate([lab, [0, 0, 0]])
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    labels, conf, run, res = stream_labels(model, path, tmp_path / "work")
    assert run.state["outliers"] == 3 and len(run.state["tiles"]) > 10      # many tiles, many borders
    seg = whole_scan(model, path, run)
    assert np.array_equal(labels, seg.labels)
    assert np.array_equal(conf, seg.confidence)
    assert res.summary["blocks"] == seg.summary["blocks"]
    # against the ground truth: the same confusion, and far better than the majority class
    assert np.array_equal(res.confusion, seg.confusion)
    assert res.summary["metrics"]["oa"] > 0.6 > np.bincount(lab).max() / len(lab)


def test_streamed_voxel_subsampling_equals_the_whole_scan_run(model, tmp_path):
    xyz, rgb, lab, classes = floor_scene(0.5, seed=1)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    labels, _, run, _ = stream_labels(model, path, tmp_path / "work", voxel=0.1)
    assert run.state["network_points"] < 0.8 * len(xyz)          # voxels really merge points
    seg = whole_scan(model, path, run, voxel=0.1)
    assert seg.summary["network_points"] == run.state["network_points"]
    assert np.array_equal(labels, seg.labels)


def test_automatic_voxel_size_is_the_whole_scan_one_on_a_dense_scan(model, tmp_path):
    # 160,000 points on 2 x 2 m: over 4 blocks' worth per 1 m column, so 'auto' subsamples
    rng = np.random.default_rng(5)
    n = 160_000
    xyz = np.c_[rng.uniform(0, 2, n), rng.uniform(0, 2, n), rng.choice([0.0, 2.5], n) + rng.normal(0, 0.003, n)]
    path = tmp_path / "dense.ply"
    write_labelled_ply(path, xyz.astype(np.float32), np.full((n, 3), 120, np.uint8), rng.integers(0, 2, n))
    run = StreamRun(model, open_chunks(path), tmp_path / "work", sliding=SlidingConfig(tile_size=TILE),
                    progress=False, checkpoint=str(DEFAULT_CHECKPOINT), chunk_points=50_000, up="+z", units="m",
                    walls="off")
    run._step("plan", run._plan)
    run._step("spill", run._spill)
    run._step("columns", run._columns)
    run._step("voxel_size", run._voxel_size)
    from pointseg.segmentation.segment import auto_voxel
    scan = read_scan(path)
    assert run.state["voxel"] is not None
    assert run.state["voxel"] == auto_voxel(scan.xyz, 1.0, 4096)


def test_real_aerial_las_streams_to_the_whole_scan_labels_and_the_same_las(model, tmp_path):
    """Georeferenced coordinates (shifted to local ones), sparse columns (compact blocks), LAS."""
    from pointseg.cli.segment import segment
    las = REAL / "aerial_sample.las"
    whole = segment(las, out_dir=tmp_path / "whole", render=False, progress=False, write="labels,scan,json")
    streamed = segment(las, out_dir=tmp_path / "streamed", render=False, progress=False,
                       write="labels,scan,json", stream=True, chunk_points=3_000)
    assert streamed["stream"]["spill_tiles"] > 1
    assert streamed["origin"] == whole["origin"]
    a = np.load(tmp_path / "whole" / "aerial_sample.labels.npy")
    b = np.load(tmp_path / "streamed" / "aerial_sample.labels.npy")
    assert np.array_equal(a, b)
    assert (tmp_path / "whole" / "aerial_sample.las").read_bytes() == \
        (tmp_path / "streamed" / "aerial_sample.las").read_bytes()
    assert not (tmp_path / "streamed.stream-work").exists()          # the work folder is gone


def test_an_interrupted_run_resumes_to_the_uninterrupted_labels(model, tmp_path):
    xyz, rgb, lab, classes = floor_scene(0.15, seed=2)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    whole, _, _, _ = stream_labels(model, path, tmp_path / "w0")
    kw = dict(sliding=SlidingConfig(tile_size=TILE), progress=False, checkpoint=str(DEFAULT_CHECKPOINT),
              chunk_points=7_001)
    with pytest.raises(Interrupted):
        StreamRun(model, open_chunks(path), tmp_path / "w1", stop_after_tiles=4, **kw).run()
    assert len(list((tmp_path / "w1" / "results").glob("0*.npz"))) == 4
    with pytest.raises(Interrupted):        # a second interruption, part way through the rest
        StreamRun(model, open_chunks(path), tmp_path / "w1", stop_after_tiles=3, resume=True, **kw).run()
    res = StreamRun(model, open_chunks(path), tmp_path / "w1", resume=True, **kw).run()
    assert np.array_equal(np.fromfile(res.labels_rows, dtype=np.int32), whole)
    assert res.summary["metrics"]["oa"] > 0.6


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pointseg", "segment", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.slow
def test_a_killed_segment_command_resumes_with_the_same_labels(tmp_path):
    xyz, rgb, lab, classes = floor_scene(0.15, seed=3)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    common = ["--tile-size", "2", "--write", "labels,json", "--quiet", "--device", "cpu"]
    ref = _cli(str(path), "--out", str(tmp_path / "ref"), *common)
    assert ref.wait(600) == 0, ref.stderr.read()
    out, work = tmp_path / "out", tmp_path / "out.stream-work"
    p = _cli(str(path), "--out", str(out), "--stream", *common)
    deadline = time.time() + 600
    while len(list((work / "results").glob("0*.npz"))) < 3 and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists() and len(list((work / "results").glob("0*.npz"))) >= 3
    again = _cli(str(path), "--out", str(out), "--stream", *common)        # without --resume: refused
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2 and "--resume" in err and "Traceback" not in err
    resumed = _cli(str(path), "--out", str(out), "--stream", "--resume", *common)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    got = np.load(out / "floor.labels.npy")
    assert np.array_equal(got, np.load(tmp_path / "ref" / "floor.labels.npy"))
    assert (got == lab).mean() > 0.6
    assert not work.exists()


def test_bad_stream_use_is_refused_in_one_line(tmp_path):
    xyz, rgb, lab, classes = floor_scene(0.02)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    p = _cli(str(path), "--out", str(tmp_path / "o"), "--resume", "--quiet")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "no unfinished streamed run" in err and "Traceback" not in err
    p = _cli(str(path), "--out", str(tmp_path / "o"), "--stream", "--probabilities", "--quiet")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "--probabilities" in err and "Traceback" not in err


def test_resume_with_other_settings_is_refused(model, tmp_path):
    xyz, rgb, lab, classes = floor_scene(0.05)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    kw = dict(progress=False, checkpoint=str(DEFAULT_CHECKPOINT))
    with pytest.raises(Interrupted):
        StreamRun(model, open_chunks(path), tmp_path / "w", sliding=SlidingConfig(tile_size=TILE),
                  stop_after_tiles=1, **kw).run()
    with pytest.raises(ValueError, match="settings"):
        StreamRun(model, open_chunks(path), tmp_path / "w", sliding=SlidingConfig(tile_size=4.0), resume=True, **kw)
    os.utime(path, ns=(1, 1))                       # the scan changed since
    with pytest.raises(ValueError, match="scan"):
        StreamRun(model, open_chunks(path), tmp_path / "w", sliding=SlidingConfig(tile_size=TILE), resume=True, **kw)


def test_the_outlier_box_uses_order_statistics_without_interpolation():
    rng = np.random.default_rng(0)
    xyz = rng.normal(0, 1, (1000, 3))
    lo, hi = robust_box(xyz, factor=0.0)
    k_lo, k_hi = int(np.floor(0.001 * 999)), int(np.ceil(0.999 * 999))
    assert np.array_equal(lo, np.sort(xyz, axis=0)[k_lo]) and np.array_equal(hi, np.sort(xyz, axis=0)[k_hi])


def test_a_scan_over_the_threshold_streams_by_itself(tmp_path, monkeypatch):
    from pointseg.cli import segment as cli_segment
    from pointseg.segmentation import stream
    xyz, rgb, lab, classes = floor_scene(0.02)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    monkeypatch.setattr(stream, "STREAM_POINTS", len(xyz) - 1)
    s = cli_segment.segment(path, out_dir=tmp_path / "o", render=False, progress=False, write="labels,json")
    assert "stream" in s and np.load(tmp_path / "o" / "floor.labels.npy").shape == (len(xyz),)
    monkeypatch.setattr(stream, "STREAM_POINTS", len(xyz))
    s = cli_segment.segment(path, out_dir=tmp_path / "o2", render=False, progress=False, write="labels,json")
    assert "stream" not in s


def test_voxels_owned_by_a_tile_without_points_keep_their_points(model, tmp_path):
    # the voxel grid starts at 0.013 (the lone point), so the voxel [3.913, 4.013) straddles the
    # border at x = 4 between the empty tile [2, 4) and the points from x = 4.0 on
    rng = np.random.default_rng(7)
    n = 6000
    pts = np.c_[rng.uniform(4.0, 5.9, n), rng.uniform(0.0, 1.9, n), rng.uniform(0, 2.5, n)]
    pts[:300, 0] = rng.uniform(4.0, 4.012, 300)
    xyz = np.concatenate([[[0.013, 0.5, 1.0]], pts]).astype(np.float32)
    path = tmp_path / "gap.ply"
    write_labelled_ply(path, xyz, np.full((len(xyz), 3), 100, np.uint8), rng.integers(0, 3, len(xyz)))
    labels, _, run, _ = stream_labels(model, path, tmp_path / "work", voxel=0.1, up="+z", units="m", walls="off")
    assert (labels >= 0).all()
    seg = whole_scan(model, path, run, voxel=0.1)
    assert seg.summary["network_points"] == run.state["network_points"]
    assert np.array_equal(labels, seg.labels)


def test_a_run_that_would_fill_the_disk_is_refused_before_it_starts(model, tmp_path, monkeypatch):
    from pointseg.segmentation import stream
    xyz, rgb, lab, classes = floor_scene(0.02)
    path = tmp_path / "floor.ply"
    write_labelled_ply(path, xyz, rgb, lab, classes)
    monkeypatch.setattr(stream, "DISK_BYTES_PER_POINT", 10 ** 15)
    with pytest.raises(ValueError, match="GB free"):
        StreamRun(model, open_chunks(path), tmp_path / "w", checkpoint=str(DEFAULT_CHECKPOINT), progress=False)
    assert not (tmp_path / "w").exists()
