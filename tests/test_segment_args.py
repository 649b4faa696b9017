"""Nonsense sliding / display arguments are refused by name (exit 2, one line, no traceback), and
tiling follows the points, not the bounding box: an outlier 100 km away, or at 3e38, costs one
label, not gigabytes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pointseg.assets import asset
from pointseg.cli import main
from pointseg.segmentation.inference import SlidingConfig, occupied_tiles, predict_points

SAMPLE = str(asset("sample_room.ply"))


def refused(argv, capsys, option):
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, argv
    assert len(err) == 1 and option in err[0] and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("option,value", [
    ("--tile-size", "0"), ("--tile-size", "-5"), ("--tile-size", "1e-6"), ("--tile-size", "inf"),
    ("--tile-size", "nan"), ("--stride", "0"), ("--stride", "1e-7"), ("--stride", "-1"), ("--stride", "5"),
    ("--repeats", "0"), ("--repeats", "1000000"), ("--batch-size", "0"), ("--batch-size", "-3"),
    ("--up", "z"), ("--up", "down"), ("--units", "km"), ("--units", "feet"), ("--walls", "sideways"),
    ("--voxel", "0"), ("--voxel", "nan"), ("--voxel", "big"),
])
def test_segment_refuses_a_nonsense_value_naming_the_option(tmp_path, capsys, option, value):
    refused(["segment", SAMPLE, "--out", str(tmp_path / "out"), option, value], capsys, option)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option,value", [
    ("--point-size", "-1"), ("--point-size", "0"), ("--point-size", "nan"), ("--point-size", "1e9"),
    ("--point-size", "inf"), ("--max-points", "1"), ("--max-points", "0"), ("--max-points", "-5"),
])
def test_view_refuses_a_nonsense_value_naming_the_option(tmp_path, capsys, option, value):
    out = tmp_path / "v.png"
    refused(["view", SAMPLE, "--screenshot", str(out), option, value], capsys, option)
    assert not out.exists()


def test_sliding_config_names_the_option_it_refuses():
    with pytest.raises(ValueError, match="--tile-size"):
        SlidingConfig(tile_size=float("inf"))
    with pytest.raises(ValueError, match="--repeats"):
        SlidingConfig(repeats=0)
    SlidingConfig(stride=1.0, tile_size=1.0, repeats=3, batch_size=1)      # edges are accepted


class ConstModel(torch.nn.Module):
    """Class 1 everywhere: the test is about which points are processed, not what is predicted."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, x.shape[2])
        out[:, 1] = 1.0
        return out


def clusters(rng):
    a = rng.random((3000, 3)) * [3, 3, 3]
    b = rng.random((3000, 3)) * [3, 3, 3] + [60, 40, 0]     # 60 m away: part of the scan, not an outlier
    return np.concatenate([a, b]).astype(np.float32)


def test_only_occupied_tiles_are_processed():
    xyz = clusters(np.random.default_rng(0))
    cfg = SlidingConfig(num_points=64, tile_size=8.0, stride=1.0)
    labels, stats = predict_points(ConstModel(), xyz, None, 3, torch.device("cpu"), cfg)
    keys, _ = occupied_tiles(xyz[:, :2], xyz[:, :2].min(0).astype(np.float64), 8.0)
    assert stats["tiles"] == stats["occupied_tiles"] == len(keys) == 2    # the bounding box holds 48
    assert stats["outliers"] == 0 and (labels == 1).all()


@pytest.mark.parametrize("far", [1e5, 3e38])
def test_an_extreme_outlier_is_labelled_and_costs_no_extra_tiles(far):
    rng = np.random.default_rng(1)
    room = (rng.random((4000, 3)) * [5, 4, 3]).astype(np.float32)
    xyz = np.concatenate([room, np.array([[far, far / 2, 1.0]], dtype=np.float32)])
    cfg = SlidingConfig(num_points=64, tile_size=8.0, stride=1.0)
    labels, stats = predict_points(ConstModel(), xyz, None, 3, torch.device("cpu"), cfg)
    assert stats["outliers"] == 1
    assert stats["tiles"] == stats["occupied_tiles"] == 1          # the 5 x 4 m room fits one tile
    assert labels.shape == (4001,) and labels[-1] == 1
    # blocks were cut from the room's columns only: at most (5 x 4 columns) x cover splits
    assert stats["blocks"] <= 4 * 5 * np.ceil(4000 / 64)
