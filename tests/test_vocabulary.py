"""One vocabulary for the segmentation and graph networks' configs, the old names read for one
release (checkpoints silently, YAML with a warning), and enum-like settings checked in one place."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from pointseg.models import DGCNNConfig, SegGCNConfig, build_model, count_parameters


def test_segmentation_and_graph_configs_name_the_same_ideas_alike():
    from pointseg.graphs.model import GraphNetConfig
    shared = {"backbone", "layers", "channels", "in_channels", "out_channels", "weight_tied", "groups"}
    for cfg in (SegGCNConfig, GraphNetConfig):
        assert shared <= {f.name for f in dataclasses.fields(cfg)}, cfg
    assert {"in_channels", "out_channels", "knn_channels"} <= {f.name for f in dataclasses.fields(DGCNNConfig)}
    # one type for the kNN channels: a [start, stop) range in both segmentation networks
    assert SegGCNConfig().knn_channels == (0, 3) and DGCNNConfig().knn_channels == (6, 9)


def test_a_bundled_checkpoint_written_with_the_old_names_still_loads():
    from pointseg.assets import asset
    from pointseg.segmentation.checkpoint import build_from_checkpoint, load_checkpoint
    ckpt = load_checkpoint(asset("demo_checkpoint.pt"))
    assert {"block", "n_blocks", "num_classes"} <= set(ckpt["model_config"])     # written before the rename
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                        # no warning for a checkpoint
        model, classes = build_from_checkpoint(ckpt, "demo")
    assert (model.cfg.backbone, model.cfg.layers, model.cfg.out_channels) == ("res", 7, classes.num_classes)
    assert model.cfg.knn_channels == (0, 3)


def test_old_yaml_keys_work_for_a_release_with_a_warning():
    with pytest.warns(FutureWarning, match="'n_blocks' is now 'layers'"):
        old = build_model("resgcn-28", n_blocks=7, num_classes=4)
    new = build_model("resgcn-28", layers=7, out_channels=4)
    assert count_parameters(old) == count_parameters(new)
    with pytest.raises(ValueError, match="both 'n_blocks' and its new name 'layers'"):
        build_model("resgcn-28", n_blocks=7, layers=7)


def test_a_train_config_with_old_model_keys_prints_one_warning_line(tmp_path, capsys):
    from pointseg.cli import main
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: resgcn-7\nmodel_overrides: {n_blocks: 3, channels: 8, k: 4, fusion_channels: 16}\n"
                   "data: {source: synthetic, root: " + str(tmp_path / "s") + ", synth_rooms: 2, synth_points: 20000,"
                   " num_points: 256}\nepochs: 1\nmax_steps: 1\nbatch_size: 2\nout_dir: " + str(tmp_path / "run") + "\n")
    assert main(["train", str(cfg), "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: model resgcn-7: 'n_blocks' is now 'layers'" in err and "FutureWarning" not in err


@pytest.mark.parametrize("key,value", [("backbone", "resx"), ("conv", "edgy"), ("order", "norm-first"),
                                       ("knn_backend", "faiss")])
def test_a_choice_outside_its_list_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError, match=f"{key}: '{value}' is not one of"):
        build_model("resgcn-28", **{key: value})


@pytest.mark.parametrize("key,value", [("amp", "fp8"), ("optim.name", "lion"), ("data.source", "web")])
def test_train_config_choices_are_checked_in_one_place(key, value):
    from pointseg.segmentation.config import TrainConfig, validate_config
    cfg = TrainConfig()
    obj, attr = (cfg, key) if "." not in key else (getattr(cfg, key.split(".")[0]), key.split(".")[1])
    setattr(obj, attr, value)                       # built in code: no YAML parser to catch it
    with pytest.raises(ValueError, match=f"config {key}='{value}': must be one of"):
        validate_config(cfg)


def test_the_seg_gcn_knn_range_picks_those_channels():
    torch.manual_seed(0)
    m = build_model("resgcn-7", channels=8, k=4, fusion_channels=16, knn_channels=(6, 9)).eval()
    seen = []
    knn = m.knn.forward
    m.knn.forward = lambda pts, *a, **kw: seen.append(pts) or knn(pts, *a, **kw)
    x = torch.randn(1, 9, 64)
    with torch.no_grad():
        m(x)
    assert torch.equal(seen[0], x[:, 6:9])        # the head's graph: the room-normalised coordinates
