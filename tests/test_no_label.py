"""Points without ground truth (values the user's class map ignores) are carried as NO_LABEL from
the segmentation to every output: left out of the metrics, drawn in their own grey, never a crash
at the end of a run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pointseg.classes import NO_LABEL, NO_LABEL_COLOUR, ClassTable
from pointseg.metrics import confusion_matrix

TWO = ClassTable(("table", "object"), ((200, 160, 100), (40, 120, 220)), "mine")


def test_confusion_leaves_out_points_without_ground_truth():
    gt = np.array([0, 1, NO_LABEL, 1, NO_LABEL])
    pred = np.array([0, 0, 1, 1, 0])
    assert confusion_matrix(gt, pred, 2).tolist() == [[1, 0], [1, 1]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, -2]), np.array([0, 0]), 2)


def test_the_viewer_draws_points_without_ground_truth_in_their_own_grey():
    from pointseg.io.scans import Scan
    from pointseg.viewer.state import colours_for
    xyz = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    scan = Scan(xyz=xyz, label=np.array([0, NO_LABEL, 1, 1]), pred=np.array([0, 1, 0, 1]))
    idx = np.arange(4)
    gt = colours_for(scan, TWO, "gt", idx)
    err = colours_for(scan, TWO, "error", idx)
    assert tuple(gt[1]) == NO_LABEL_COLOUR and tuple(gt[0]) == TWO.palette[0]
    assert tuple(err[1]) == NO_LABEL_COLOUR and tuple(err[2]) != NO_LABEL_COLOUR


def test_a_file_cannot_bring_negative_labels_of_its_own(tmp_path):
    from pointseg.io.scans import read_scan
    p = tmp_path / "neg.txt"
    p.write_text("0 0 0 9 9 9 -1\n1 0 0 9 9 9 0\n0 1 0 9 9 9 1\n")
    with pytest.raises(ValueError, match="negative"):
        read_scan(p)


def test_segment_of_a_scan_with_ignored_values_writes_every_output(tmp_path):
    """A model trained on the user's scans (class map with ignore) segments a scan whose finite
    points carry an ignored value: PNG, page and JSON are written, metrics count scored points only."""
    import torch
    from pointseg.cli import main
    from pointseg.engine.checkpoint import save_checkpoint
    from pointseg.segmentation.checkpoint import model_payload
    from pointseg.data.recipe import BlockRecipe
    from pointseg.models import SegGCN, SegGCNConfig
    torch.manual_seed(0)
    model = SegGCN(SegGCNConfig(out_channels=2, layers=3, channels=8, k=4, fusion_channels=16, stochastic=False))
    payload = model_payload("resgcn-7", model, TWO, BlockRecipe(num_points=128).to_spec())
    payload["class_map"] = {"classes": {"table": {"values": "1-9", "color": [200, 160, 100]},
                                        "object": {"values": "20-99", "color": [40, 120, 220]}},
                            "ignore": [0], "name": "mine"}
    payload["label_field"] = "col:6"
    ckpt = tmp_path / "mine.pt"
    save_checkpoint(ckpt, payload)
    rng = np.random.default_rng(1)
    n = 3000
    xyz = rng.uniform([0, 0, 0], [3, 2, 1], size=(n, 3))
    raw = np.where(xyz[:, 2] < 0.5, 3, 25)
    raw[:200] = 0                                        # ignored by the class map
    rgb = np.full((n, 3), 128)
    scan = tmp_path / "mine.txt"
    np.savetxt(scan, np.column_stack([xyz, rgb, raw]), fmt="%.4f %.4f %.4f %d %d %d %d")
    out = tmp_path / "out"
    assert main(["segment", str(scan), "--checkpoint", str(ckpt), "--out", str(out), "--quiet",
                 "--stride", "1", "--up", "+z", "--units", "m"]) == 0
    summary = json.loads((out / "mine.json").read_text())
    cm = np.asarray(summary["metrics"]["confusion"])
    assert cm.sum() == n - 200                           # the ignored points are not scored
    # the summary records the speed and the memory it took, and how many sparse columns ran compact
    assert summary["points_per_s"] > 0 and 50 < summary["peak_rss_mb"] < 24_000
    assert 0 <= summary["compact_blocks"] <= summary["blocks"]
    assert (out / "mine.png").stat().st_size > 0
    # the page keeps the ground truth (and so the error mode), the unscored points in their grey
    page = (out / "mine.html").read_text()
    assert '"gt":true' in page and '"error"' in page


def test_the_page_states_the_callers_metrics_instead_of_computing_them_again(tmp_path):
    """segment hands its summary's confusion down; the page says the figures of that confusion."""
    from pointseg.viewer.html import write_html
    rng = np.random.default_rng(0)
    xyz = rng.random((100, 3)).astype(np.float32)
    pred = rng.integers(0, 2, 100)
    given = np.array([[30, 10], [20, 40]])                 # OA 0.70, whatever pred and label say
    write_html(tmp_path / "p.html", xyz, None, pred, pred.copy(), TWO, confusion=given)
    assert '"oa":0.7' in (tmp_path / "p.html").read_text().replace(" ", "")
