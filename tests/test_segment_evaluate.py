"""segment / evaluate end to end on small synthetic rooms, each scan format, and bad input."""
import json

import numpy as np
import pytest
import torch

from pointseg.classes import S3DIS
from pointseg.cli import main
from pointseg.engine.checkpoint import save_checkpoint
from pointseg.segmentation.checkpoint import model_payload
from pointseg.segmentation.inference import SlidingConfig, predict_points
from pointseg.io.scans import read_scan, write_labelled_ply
from pointseg.models import SegGCN, SegGCNConfig

SMALL = dict(layers=3, channels=8, k=4, fusion_channels=16, stochastic=False)
FAST = ["--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    """Two small synthetic rooms (Areas 1 and 5), prepared."""
    from pointseg.data.s3dis_raw import prepare_s3dis
    from pointseg.data.synth import write_synthetic
    root = tmp_path_factory.mktemp("rooms")
    write_synthetic(root / "raw", rooms=2, seed=7, areas=(1, 5), points=6000, progress=False)
    prepare_s3dis(root / "raw", root / "prepared", progress=False)
    return root / "prepared"


def make_checkpoint(path, num_points=256, classes=S3DIS, **cfg):
    model = SegGCN(SegGCNConfig(out_channels=classes.num_classes, **{**SMALL, **cfg}))
    spec = {"channels": ["x", "y", "z", "r", "g", "b", "x_room", "y_room", "z_room"],
            "num_points": num_points, "block_size": 1.0, "normalisation": "s3dis-blocks"}
    save_checkpoint(path, model_payload("resgcn-7", model, classes, spec))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pt")


def room_scan(rooms):
    from pointseg.io.rooms import load_room
    return load_room(next((rooms / "Area_5").glob("*.npz")))


class HeightModel(torch.nn.Module):
    """Predicts class (height bucket) from channel z_room of each point alone: a neighbour-free
    oracle, so the voting / tiling machinery can be checked exactly."""

    def forward(self, x):
        z = x[:, 8]
        c = (z * 3).long().clamp(0, 2)
        return torch.nn.functional.one_hot(c, 3).permute(0, 2, 1).float() * 10


def test_every_original_point_gets_the_label_its_blocks_vote_for_with_and_without_tiles():
    rng = np.random.default_rng(0)
    xyz = rng.random((5000, 3)).astype(np.float32) * [6, 5, 3]
    xyz[:50] += [20, 0, 0]                      # a far-away island of points
    zr = (xyz[:, 2] - xyz[:, 2].min()) / (xyz[:, 2].max() - xyz[:, 2].min())
    expect = np.clip((zr * 3).astype(int), 0, 2)
    for tile in (100.0, 2.5):
        cfg = SlidingConfig(num_points=64, tile_size=tile, stride=0.5)
        labels, stats = predict_points(HeightModel(), xyz, None, 3, torch.device("cpu"), cfg)
        assert labels.shape == (5000,)
        assert np.array_equal(labels, expect), f"tile {tile}"
    assert stats["tiles"] > 4


def test_segment_writes_labels_ply_png_and_json_for_a_prepared_room(tmp_path, rooms, ckpt):
    room = next((rooms / "Area_5").glob("*.npz"))
    out = tmp_path / "out"
    assert main(["segment", str(room), "--checkpoint", str(ckpt), "--out", str(out), *FAST]) == 0
    name = room.stem
    labels = np.load(out / f"{name}.labels.npy")
    n = room_scan(rooms).num_points
    assert labels.shape == (n,) and labels.min() >= 0 and labels.max() < 13
    ply = read_scan(out / f"{name}.ply")
    assert np.array_equal(ply.pred, labels) and ply.classes.names == S3DIS.names
    assert np.array_equal(ply.label, room_scan(rooms).label)
    summary = json.loads((out / f"{name}.json").read_text())
    assert sum(summary["histogram"].values()) == n
    assert summary["classes"]["names"] == list(S3DIS.names) and "metrics" in summary
    assert 0 <= summary["metrics"]["oa"] <= 1
    assert (out / f"{name}.png").stat().st_size > 1000


def _write_scan(fmt, path, xyz, rgb, label):
    if fmt == "ply":
        write_labelled_ply(path, xyz, rgb, label, S3DIS)
    elif fmt == "pcd":
        import open3d as o3d
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
        pc.colors = o3d.utility.Vector3dVector(rgb / 255.0)
        o3d.io.write_point_cloud(str(path), pc)
    elif fmt in ("txt", "xyz"):
        np.savetxt(path, np.column_stack([xyz, rgb, label]), fmt="%.4f %.4f %.4f %d %d %d %d")
    elif fmt == "npy":
        np.save(path, np.column_stack([xyz, rgb, label]).astype(np.float32))
    elif fmt == "las":
        import laspy
        las = laspy.create(point_format=2, file_version="1.2")
        las.header.scales = [0.001] * 3
        las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        las.red, las.green, las.blue = (rgb.astype(np.uint16) * 257).T
        las.write(str(path))


@pytest.mark.parametrize("fmt", ["ply", "pcd", "txt", "xyz", "npy", "las"])
def test_segment_reads_each_scan_format(tmp_path, rooms, ckpt, fmt):
    r = room_scan(rooms)
    sel = np.random.default_rng(0).choice(r.num_points, 1500, replace=False)
    path = tmp_path / f"scan.{fmt}"
    _write_scan(fmt, path, r.xyz[sel], r.rgb[sel], r.label[sel])
    out = tmp_path / "out"
    assert main(["segment", str(path), "--checkpoint", str(ckpt), "--out", str(out), "--no-render", *FAST]) == 0
    labels = np.load(out / "scan.labels.npy")
    assert labels.shape == (1500,)
    summary = json.loads((out / "scan.json").read_text())
    assert ("metrics" in summary) == (fmt in ("ply", "txt", "xyz", "npy"))


def test_scan_without_colour_is_segmented_with_a_note(tmp_path, rooms, ckpt):
    r = room_scan(rooms)
    np.save(tmp_path / "bare.npy", r.xyz[:800])
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "bare.npy"), "--checkpoint", str(ckpt), "--out", str(out),
                 "--no-render", *FAST]) == 0
    notes = json.loads((out / "bare.json").read_text())["notes"]
    assert any("no colour" in n for n in notes)


def test_nan_coordinates_are_dropped_and_counted(tmp_path, rooms, ckpt):
    r = room_scan(rooms)
    xyz = r.xyz[:900].copy()
    xyz[[3, 7]] = np.nan
    np.save(tmp_path / "nan.npy", np.column_stack([xyz, r.rgb[:900]]).astype(np.float32))
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "nan.npy"), "--checkpoint", str(ckpt), "--out", str(out),
                 "--no-render", *FAST]) == 0
    s = json.loads((out / "nan.json").read_text())
    assert s["dropped_points"] == 2 and s["points"] == 898


def test_existing_output_folder_is_never_overwritten_silently(tmp_path, rooms, ckpt, capsys):
    room = str(next((rooms / "Area_5").glob("*.npz")))
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    assert main(["segment", room, "--checkpoint", str(ckpt), "--out", str(out), "--no-render", *FAST]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "user data"


@pytest.mark.parametrize("content, msg", [
    (lambda p: p.write_bytes(b"not a checkpoint"), "not a pointseg checkpoint"),
    (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not a pointseg checkpoint"),
    (lambda p: torch.save({"fn": HeightModel()}, p), "not a pointseg checkpoint"),
])
def test_foreign_checkpoints_are_refused(tmp_path, rooms, content, msg, capsys):
    bad = tmp_path / "bad.pt"
    content(bad)
    room = str(next((rooms / "Area_5").glob("*.npz")))
    assert main(["segment", room, "--checkpoint", str(bad), "--out", str(tmp_path / "o"), *FAST]) == 2
    assert msg in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_empty_or_unreadable_scan_is_a_clear_error(tmp_path, ckpt, capsys):
    (tmp_path / "empty.txt").write_text("")
    assert main(["segment", str(tmp_path / "empty.txt"), "--checkpoint", str(ckpt),
                 "--out", str(tmp_path / "o"), *FAST]) == 2
    assert "empty.txt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_evaluate_scores_every_original_point_and_pools_six_fold(tmp_path, rooms, ckpt):
    rep = tmp_path / "a5.json"
    assert main(["evaluate", str(ckpt), "--data", str(rooms), "--area", "5", "--json", str(rep), *FAST]) == 0
    r = json.loads(rep.read_text())
    cm = np.asarray(r["full_resolution"]["confusion"])
    assert cm.sum() == room_scan(rooms).num_points            # every original point, once
    assert np.asarray(r["block_level"]["confusion"]).sum() % 256 == 0   # whole 256-point blocks
    assert r["full_resolution"]["oa"] == pytest.approx(np.trace(cm) / cm.sum())
    pooled = tmp_path / "pool.json"
    assert main(["evaluate", "--pool", str(rep), str(rep), "--json", str(pooled)]) == 0
    p = json.loads(pooled.read_text())
    assert np.array_equal(np.asarray(p["full_resolution"]["confusion"]), 2 * cm)


def test_checkpoint_for_another_class_table_is_refused(tmp_path, rooms, capsys):
    from pointseg.classes import ClassTable
    five = ClassTable(tuple("abcde"), ((1, 1, 1),) * 5)
    ck = make_checkpoint(tmp_path / "five.pt", classes=five)
    assert main(["evaluate", str(ck), "--data", str(rooms), *FAST]) == 2
    assert "5 classes" in capsys.readouterr().err


def test_bundled_room_with_the_named_synthetic_checkpoint(tmp_path):
    from pointseg.cli.segment import DEFAULT_SCAN
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT
    assert DEFAULT_SCAN.exists() and DEFAULT_CHECKPOINT.exists()
    out = tmp_path / "demo"
    # the default checkpoint is the real DGCNN (tests/test_import.py); the synthetic ResGCN-7 by name
    assert main(["segment", "--checkpoint", "resgcn7-synthetic", "--out", str(out), "--stride", "1.0",
                 "--quiet"]) == 0
    name = DEFAULT_SCAN.stem
    for suffix in (".labels.npy", ".ply", ".png", ".json"):
        assert (out / f"{name}{suffix}").stat().st_size > 0
    summary = json.loads((out / f"{name}.json").read_text())
    # the bundled model on the bundled (unseen-seed) room: the README's claim, checked
    assert summary["metrics"]["oa"] > 0.9 and summary["trained_on"] == "synthetic"
