"""Training on your own labelled scans (``data.source: scans``, ``init:``): the class map, the
named label field in every format, what is reported, bad input as one line with nothing written,
and a short fine-tune of the real DGCNN on real Kinect scans that then segments a held-out scan
with the user's classes, scored against its own labels."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from pointseg.cli import main
from pointseg.data.class_map import IGNORE, ClassMap, scan_ground_truth
from pointseg.data.labelled_scans import read_labelled
from pointseg.engine.checkpoint import save_checkpoint
from pointseg.segmentation.checkpoint import load_checkpoint

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_scans"
MOSD = [REAL / f"mosd_learn{i}.pcd" for i in (0, 18, 28, 36)]
needs_real = pytest.mark.skipif(not all(p.is_file() for p in MOSD), reason="needs ../shared/real_scans")

MAP = {"classes": {"table": {"values": "1-9", "color": [200, 160, 100]}, "object": {"values": "20-999"}},
       "ignore": [0]}


def write_map(path: Path, d: dict = MAP) -> Path:
    path.write_text(yaml.safe_dump(d, sort_keys=False))   # the order of the classes is their index
    return path


def tabletop(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small z-up scene: a table top (labels 1-9), two boxes on it (20, 31), a few points
    without a label (0)."""
    rng = np.random.default_rng(seed)
    xyz = np.c_[rng.uniform(0, 1.2, n), rng.uniform(0, 0.6, n), np.zeros(n)]
    label = rng.integers(1, 10, n)
    box = (np.abs(xyz[:, 0] - 0.3) < 0.1) & (np.abs(xyz[:, 1] - 0.3) < 0.1)
    box2 = (np.abs(xyz[:, 0] - 0.9) < 0.08) & (np.abs(xyz[:, 1] - 0.3) < 0.08)
    xyz[box, 2] = rng.uniform(0, 0.2, box.sum())
    xyz[box2, 2] = rng.uniform(0, 0.15, box2.sum())
    label[box], label[box2] = 20, 31
    label[:10] = 0
    rgb = rng.integers(0, 256, (n, 3))
    return xyz, rgb, label


# ----------------------------------------------------------------------------- the class map

def test_class_map_values_ranges_lists_and_colours(tmp_path):
    cmap = ClassMap.load(write_map(tmp_path / "m.yaml", {
        "classes": {"table": {"values": "1-9"}, "chair": {"values": [20, "22,25-27"], "color": [1, 2, 3]}},
        "ignore": [0, "-1"]}))
    assert cmap.table.names == ("table", "chair")
    assert cmap.table.palette[1] == (1, 2, 3)
    assert cmap.lookup(np.array([1, 9, 20, 22, 26, 0, -1, 21, 10])).tolist() == [0, 0, 1, 1, 1, IGNORE, IGNORE, -1, -1]
    assert ClassMap.from_dict(cmap.to_dict()).lookup(np.array([5, 25, 0])).tolist() == [0, 1, IGNORE]


@pytest.mark.parametrize("classes, ignore, message", [
    ({"a": {"values": "1-9"}, "b": {"values": "5-30"}}, [], "'a' and class 'b' overlap at 5-9"),
    ({"a": {"values": "1-9"}, "b": {"values": "20"}}, [9], "overlap at 9"),
    ({"a": {"values": "9-1"}}, [], "empty"),
    ({"a": {"values": []}}, [], "no values"),
    ({"a": {"values": "1-x"}}, [], "not a value or a range"),
    ({"a": {"values": "1", "colour": [1, 2, 3]}}, [], "unknown key"),
    ({"a": {"values": "1", "color": [1, 2, 300]}}, [], "color"),
])
def test_bad_class_maps_are_one_line_errors(tmp_path, classes, ignore, message):
    with pytest.raises(ValueError, match=message) as e:
        ClassMap.load(write_map(tmp_path / "m.yaml", {"classes": classes, "ignore": ignore}))
    assert "m.yaml" in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- every format

def _write_formats(tmp: Path, xyz, rgb, label) -> dict[str, tuple[Path, str]]:
    """The same scene as a CloudCompare-style PLY (float scalar field), an ASCII PCD, a LAS with
    classification, a text file with an extra column and a 4-column .npy."""
    n = len(xyz)
    ply = tmp / "cc.ply"
    head = ["ply", "format ascii 1.0", "comment Created by CloudCompare", f"element vertex {n}",
            "property float x", "property float y", "property float z", "property uchar red",
            "property uchar green", "property uchar blue", "property float scalar_label", "end_header"]
    ply.write_text("\n".join(head + [f"{a:.6f} {b:.6f} {c:.6f} {r} {g} {bb} {lb:.6f}"
                                     for (a, b, c), (r, g, bb), lb in zip(xyz, rgb, label)]) + "\n")
    pcd = tmp / "s.pcd"
    packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2].astype(np.uint32)
    pcd.write_text("\n".join(["VERSION 0.7", "FIELDS x y z rgb label", "SIZE 4 4 4 4 4", "TYPE F F F U U",
                              "COUNT 1 1 1 1 1", f"WIDTH {n}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0",
                              f"POINTS {n}", "DATA ascii"]
                             + [f"{a} {b} {c} {p} {lb}" for (a, b, c), p, lb in zip(xyz, packed, label)]) + "\n")
    import laspy
    las = laspy.LasData(laspy.LasHeader(point_format=3, version="1.2"))
    las.header.scales, las.header.offsets = [0.001] * 3, [0.0] * 3
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    las.red, las.green, las.blue = (rgb[:, i].astype(np.uint16) * 257 for i in range(3))
    las.classification = label.astype(np.uint8)
    las.write(tmp / "s.las")
    txt = tmp / "s.txt"
    np.savetxt(txt, np.c_[xyz, rgb, np.full(n, 7.5), label], fmt="%.6f", header="x y z r g b intensity label")
    np.save(tmp / "s.npy", np.c_[xyz, label])
    return {"ply": (ply, "scalar_label"), "pcd": (pcd, "label"), "las": (tmp / "s.las", "classification"),
            "txt": (txt, "col:7"), "npy": (tmp / "s.npy", "col:3")}


def test_the_label_field_of_every_format_maps_to_the_classes(tmp_path):
    xyz, rgb, label = tabletop()
    cmap = ClassMap.from_dict(MAP)
    want = cmap.lookup(label)
    for fmt, (path, field) in _write_formats(tmp_path, xyz, rgb, label).items():
        item = read_labelled(path, field, cmap)
        assert item.labels.tolist() == want.tolist(), fmt
        assert item.values[20] == int((label == 20).sum()), fmt


def test_non_integral_values_and_missing_fields_name_the_file(tmp_path):
    xyz, rgb, label = tabletop(200)
    fmts = _write_formats(tmp_path, xyz, rgb, label.astype(np.float64) + np.r_[0.5, 0.25, np.zeros(198)])
    with pytest.raises(ValueError, match=r"cc.ply: label field 'scalar_label': 2 of 200 label values are not whole"):
        read_labelled(fmts["ply"][0], "scalar_label", ClassMap.from_dict(MAP))
    (tmp_path / "int").mkdir()
    pcd = _write_formats(tmp_path / "int", xyz, rgb, label)["pcd"][0]
    with pytest.raises(ValueError, match=r"s.pcd: has no label field 'semantic' \(its per-point fields: x, y, z, "
                                         r"label, red, green, blue\)"):
        read_labelled(pcd, "semantic", ClassMap.from_dict(MAP))


@needs_real
def test_the_kinect_scans_label_field_reads_through_the_map():
    item = read_labelled(MOSD[0], "label", ClassMap.from_dict(MAP))
    assert item.scan.dropped > 100_000                      # NaN points of the organised cloud
    assert item.values == {1: 153_323, 20: 20_792, 30: 8_177}
    assert item.class_counts(2).tolist() == [153_323, 28_969, 0]


# ----------------------------------------------------------------------------- bad input: one line, nothing written

def _config(tmp: Path, **over) -> Path:
    xyz, rgb, label = tabletop()
    path, field = _write_formats(tmp, xyz, rgb, label)["ply"]
    d = {"name": "t", "model": "dgcnn", "out_dir": str(tmp / "run"), "device": "cpu",
         "data": {"source": "scans", "train": [str(path)], "label_field": field,
                  "class_map": str(write_map(tmp / "map.yaml")), "num_points": 256},
         "epochs": 1, "batch_size": 2, "max_steps": 1}
    for k, v in over.items():
        if k.startswith("data."):
            d["data"][k[5:]] = v
        else:
            d[k] = v
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(d))
    return tmp / "cfg.yaml"


def _graph_checkpoint(tmp: Path) -> Path:
    save_checkpoint(tmp / "graph.pt", {"kind": "graph", "model": {}, "task": {"dataset": "ppi"}})
    return tmp / "graph.pt"


def _not_yaml(tmp: Path) -> Path:
    (tmp / "bad.yaml").write_text("classes: {table: [1, 2\n  object: }}")
    return tmp / "bad.yaml"


@pytest.mark.parametrize("case, over, message", [
    ("unknown label field", {"data.label_field": "classification"}, "has no label field 'classification'"),
    ("unmapped values", {"data.class_map": lambda t: write_map(t / "m2.yaml", {"classes": {"table": {"values": "1-9"}},
                                                                             "ignore": [0]})},
     r"label values no class maps: 20 \(\d+ points\), 31"),
    ("overlapping ranges", {"data.class_map": lambda t: write_map(t / "m3.yaml", {"classes": {
        "table": {"values": "1-20"}, "object": {"values": "20-999"}}})}, "overlap at 20"),
    ("empty range", {"data.class_map": lambda t: write_map(t / "m4.yaml", {"classes": {"table": {"values": "9-1"}}})},
     "is empty"),
    ("graph checkpoint as init", {"init": _graph_checkpoint}, "holds a 'graph' checkpoint, not a segmentation"),
    ("class map not YAML", {"data.class_map": _not_yaml}, "not YAML"),
    ("init of another architecture", {"init": "resgcn7-synthetic"}, "set model: resgcn-7"),
    ("no file matches", {"data.train": ["nowhere/*.ply"]}, "matches no file"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, over, message):
    over = {k: (str(v(tmp_path)) if callable(v) else v) for k, v in over.items()}
    cfg = _config(tmp_path, **over)
    assert main(["train", str(cfg), "--quiet"]) == 2, case
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(message, err), err
    assert not (tmp_path / "run").exists(), case


# ----------------------------------------------------------------------------- segment through the class map

def test_segment_scores_through_the_class_map_leaving_ignored_values_out():
    class Scan:
        label_field, raw_label, label = "label", np.array([1.0, 25.0, 0.0, 5.0]), None
    gt, left_out = scan_ground_truth(Scan(), {"class_map": ClassMap.from_dict(MAP).to_dict()}, 2)
    assert gt.tolist() == [0, 1, -1, 0] and left_out == 1


# ----------------------------------------------------------------------------- fine-tune end to end on real scans

@needs_real
def test_fine_tuning_the_real_model_then_segmenting_a_held_out_kinect_scan(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "mosd", "model": "dgcnn", "init": "dgcnn-s3dis", "device": "cpu", "out_dir": str(tmp_path / "run"),
        "data": {"source": "scans", "train": [str(p) for p in MOSD[:3]], "val": [str(MOSD[3])],
                 "label_field": "label", "class_map": str(write_map(tmp_path / "map.yaml")),
                 "block_size": 0.5, "stride": 0.25, "num_points": 512},
        "epochs": 1, "batch_size": 4, "max_steps": 6}))
    assert main(["train", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train total (3 files): table 505,700, object 70,013, ignored 0" in out
    assert "re-initialised: classifier.weight (13x256 -> 2x256)" in out
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["classes"]["names"] == ["table", "object"] and ckpt["label_field"] == "label"
    assert ckpt["init"]["checkpoint"] == "dgcnn-s3dis" and ckpt["input"]["block_size"] == 0.5

    # segment the held-out scan with no flag but the checkpoint: the user's classes, scored
    assert main(["segment", str(MOSD[3]), "--checkpoint", str(tmp_path / "run" / "last.pt"),
                 "--out", str(tmp_path / "seg"), "--quiet", "--no-render"]) == 0
    summary = json.loads((tmp_path / "seg" / "mosd_learn36.json").read_text())
    assert summary["classes"]["names"] == ["table", "object"]
    assert summary["classes"]["palette"][0] == [200, 160, 100]
    from pointseg.io.scans import read_scan           # what `pointseg view` reads: the classes travel
    assert read_scan(tmp_path / "seg" / "mosd_learn36.ply").classes.names == ("table", "object")
    truth = read_labelled(MOSD[3], "label", ClassMap.from_dict(MAP)).labels
    pred = np.load(tmp_path / "seg" / "mosd_learn36.labels.npy")
    majority = max(np.mean(truth == 0), np.mean(truth == 1))
    oa = float(np.mean(pred == truth))
    assert abs(summary["metrics"]["oa"] - oa) < 1e-9
    # better than labelling everything "table" (81 % of the held-out points), and objects found
    assert oa > majority + 0.05, (oa, majority)
    hit = np.sum((pred == 1) & (truth == 1)) / np.sum((pred == 1) | (truth == 1))
    assert hit > 0.3, hit

    # evaluate --scans scores the same way; prepared S3DIS rooms are refused for this checkpoint
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--scans", str(MOSD[3]), "--quiet",
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["full_resolution"]["oa"] == summary["metrics"]["oa"]
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--data", str(tmp_path)]) == 2
    assert "evaluate it on labelled scans with --scans" in capsys.readouterr().err


# ----------------------------------------------------------------------------- resume on cached blocks

def test_a_scans_run_resumes_on_its_cached_blocks(tmp_path, capsys):
    """Small z-up PLY scenes (ignored points included) with a tiny ResGCN: stopped after 2 steps,
    resumed to 4, on the same cached blocks."""
    xyz, rgb, label = tabletop(4000, seed=1)
    scans = []
    for i in range(3):
        (tmp_path / f"s{i}").mkdir()
        scans.append(str(_write_formats(tmp_path / f"s{i}", xyz + [i * 0.01, 0, 0], rgb, label)["ply"][0]))
    d = {"name": "r", "model": "resgcn-7", "device": "cpu", "out_dir": str(tmp_path / "run"),
         "model_overrides": {"layers": 3, "channels": 16, "k": 4, "fusion_channels": 32},
         "data": {"source": "scans", "train": scans[:2], "val": scans[2:], "label_field": "scalar_label",
                  "class_map": str(write_map(tmp_path / "map.yaml")), "block_size": 0.5, "stride": 0.25,
                  "num_points": 128},
         "epochs": 1, "batch_size": 2, "max_steps": 2}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(d))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--quiet"]) == 0
    first = capsys.readouterr().out
    assert "ignored 20" in first                       # 10 points per file carry the ignored value 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 2
    assert main(["train", str(tmp_path / "cfg.yaml"), "--quiet", "--resume", "max_steps=4"]) == 0
    assert "(cached)" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 4


def test_init_keeps_every_fitting_tensor_and_freeze_backbone_leaves_the_prediction_mlp():
    import torch

    from pointseg.segmentation.init_weights import freeze, init_from, load_init
    from pointseg.models import build_model
    ckpt = load_init("dgcnn-s3dis", "dgcnn")
    model = build_model("dgcnn", in_channels=9, out_channels=2)
    lines, record = init_from(model, ckpt, "dgcnn-s3dis")
    assert record["reinitialised"] == ["classifier.weight"] and record["kept"] == len(model.state_dict()) - 1
    assert torch.equal(model.state_dict()["stages.0.layers.0.lin.weight"], ckpt["model"]["stages.0.layers.0.lin.weight"])
    assert "freeze backbone" in freeze(model, ["backbone"])
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head", "classifier"}
    with pytest.raises(ValueError, match="'nothing' names no parameter"):
        freeze(model, ["nothing"])
