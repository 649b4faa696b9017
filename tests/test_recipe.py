"""The block input recipe, stated once: recorded whole by training, read back by inference and
evaluation (old checkpoints included), refused by field when no block can be cut with it; and
evaluation that loads only the rooms it is asked for."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pointseg.classes import S3DIS
from pointseg.data.recipe import S3DIS_CHANNELS, S3DIS_RECIPE, BlockRecipe
from pointseg.engine.checkpoint import save_checkpoint
from pointseg.segmentation.checkpoint import check_input_recipe, model_payload, sliding_for
from pointseg.segmentation.config import TrainConfig
from pointseg.segmentation.task import input_spec
from pointseg.models import SegGCN, SegGCNConfig

SMALL = dict(layers=3, channels=8, k=4, fusion_channels=16, stochastic=False)


def test_the_s3dis_recipe_is_the_block_release():
    assert (S3DIS_RECIPE.block_size, S3DIS_RECIPE.num_points, S3DIS_RECIPE.stride) == (1.0, 4096, 0.5)
    assert S3DIS_CHANNELS == ("x", "y", "z", "r", "g", "b", "x_room", "y_room", "z_room")


def test_training_records_the_recipe_whole_and_inference_reads_it_back():
    cfg = TrainConfig()
    cfg.data.block_size, cfg.data.num_points, cfg.data.stride = 2.0, 512, 0.7
    spec = input_spec(cfg)
    assert spec["stride"] == 0.7                       # the stride used to be left out
    assert BlockRecipe.from_spec(spec) == cfg.data.recipe
    sliding = sliding_for({"input": spec})
    assert (sliding.block_size, sliding.num_points, sliding.stride) == (2.0, 512, 0.7)


def test_a_checkpoint_written_before_the_stride_was_recorded_gets_the_s3dis_stride():
    old = {"channels": list(S3DIS_CHANNELS), "num_points": 256, "block_size": 1.0, "normalisation": "s3dis-blocks"}
    recipe = check_input_recipe({"input": old}, "old.pt")
    assert (recipe.num_points, recipe.stride) == (256, 0.5)


@pytest.mark.parametrize("spec,field", [({"block_size": 0}, "input.block_size"), ({"stride": -1}, "input.stride"),
                                        ({"num_points": 2.5}, "input.num_points"),
                                        ({"normalisation": "kitti"}, "input recipe 'kitti'"),
                                        ({"channels": ["x", "y", "z"]}, "model expects channels")])
def test_a_recipe_no_block_can_be_cut_with_is_refused_naming_the_field(spec, field):
    with pytest.raises(ValueError, match=field) as e:
        check_input_recipe({"input": spec}, "ck.pt")
    assert str(e.value).startswith("ck.pt: ")


@pytest.fixture(scope="module")
def area5(tmp_path_factory):
    """Two small synthetic rooms in Area 5, prepared."""
    from pointseg.data.s3dis_raw import prepare_s3dis
    from pointseg.data.synth import write_synthetic
    root = tmp_path_factory.mktemp("rooms")
    write_synthetic(root / "raw", rooms=2, seed=3, areas=(5, 5), points=6000, progress=False)
    prepare_s3dis(root / "raw", root / "prepared", progress=False)
    return root / "prepared"


def checkpoint(path, block_size: float, num_points: int = 128):
    model = SegGCN(SegGCNConfig(out_channels=S3DIS.num_classes, **SMALL))
    spec = BlockRecipe(block_size=block_size, num_points=num_points).to_spec()
    save_checkpoint(path, model_payload("resgcn-7", model, S3DIS, spec))
    return path


def test_block_level_scoring_cuts_the_checkpoints_blocks(tmp_path, area5):
    """Block-level metrics score the blocks of the model's own recipe, not fixed 1 m blocks."""
    from pointseg.data.block_gen import room_to_blocks
    from pointseg.data.prepared import PreparedRooms
    from pointseg.segmentation.evaluate import evaluate_rooms
    from pointseg.segmentation.inference import SlidingConfig
    prepared = PreparedRooms(area5)
    entry = prepared.entries([5])[0]
    room = prepared.load(entry).room
    report = evaluate_rooms(checkpoint(tmp_path / "b2.pt", 2.0), area5, area=5, device="cpu", progress=False,
                            rooms=[entry.full_name], sliding=SlidingConfig(stride=1.0))
    blocks, _ = room_to_blocks(room.xyz, room.rgb, 2.0, 2.0, 128, min_points=100, rng=0)
    one_metre, _ = room_to_blocks(room.xyz, room.rgb, 1.0, 1.0, 128, min_points=100, rng=0)
    assert len(blocks) != len(one_metre)
    assert np.asarray(report["block_level"]["confusion"]).sum() == len(blocks) * 128


def test_evaluate_loads_only_the_rooms_it_is_asked_for(tmp_path, area5, monkeypatch):
    from pointseg.data.prepared import PreparedRooms
    from pointseg.segmentation.evaluate import evaluate_rooms
    from pointseg.segmentation.inference import SlidingConfig
    entries = PreparedRooms(area5).entries([5])
    assert len(entries) == 2
    loaded = []
    original = PreparedRooms.load

    def counting_load(self, entry):
        loaded.append(entry.full_name)
        return original(self, entry)
    monkeypatch.setattr(PreparedRooms, "load", counting_load)
    torch.manual_seed(0)
    evaluate_rooms(checkpoint(tmp_path / "b1.pt", 1.0), area5, area=5, device="cpu", progress=False,
                   rooms=[entries[1].full_name], sliding=SlidingConfig(stride=1.0), block_level=False)
    assert loaded == [entries[1].full_name]


def test_the_colour_policy_travels_in_the_recipe_to_segment(tmp_path):
    """A model trained with colourless scans fed as zeros is fed zeros at segment time too."""
    from pointseg.segmentation.segment import load_model, segment_scan
    from pointseg.io.scans import Scan
    path = tmp_path / "zeros.pt"
    model = SegGCN(SegGCNConfig(out_channels=S3DIS.num_classes, **SMALL))
    save_checkpoint(path, model_payload("resgcn-7", model, S3DIS, BlockRecipe(num_points=128, no_colour="zeros").to_spec()))
    assert check_input_recipe({"input": BlockRecipe(no_colour="zeros").to_spec()}).no_colour == "zeros"
    xyz = np.random.default_rng(0).uniform(0, 2, size=(500, 3)).astype(np.float32)
    from pointseg.segmentation.inference import SlidingConfig
    seg = segment_scan(load_model(path, "cpu"), Scan(xyz=xyz), SlidingConfig(stride=1.0), progress=False,
                       up="+z", units="m")
    assert any("set to zeros" in n for n in seg.summary["notes"])
    with pytest.raises(ValueError, match="input.no_colour"):
        BlockRecipe(no_colour="pink")
