"""Training: the loss falls, resume is exact, DDP (gloo, 2 CPU processes) equals one process."""
import os
import socket

import h5py
import numpy as np
import pytest
import torch

from pointseg.config import load_config
from pointseg.segmentation.checkpoint import load_checkpoint
from pointseg.segmentation.config import TrainConfig
from pointseg.segmentation.train import train

P = 128  # points per block: small, so the suite stays fast


def write_block_release(root, blocks_per_room=6, rooms=("Area_1_a", "Area_1_b", "Area_2_c", "Area_3_d", "Area_5_e")):
    """A tiny block release in the public layout; labels are a function of height and colour."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    n = blocks_per_room * len(rooms)
    data = np.zeros((n, P, 9), np.float32)
    xyz = rng.random((n, P, 3)).astype(np.float32)
    label = np.minimum((xyz[..., 2] * 3).astype(np.uint8), 2)            # floor / middle / ceiling
    data[..., 0:3] = xyz - [0.5, 0.5, 0]
    data[..., 3:6] = np.eye(3, dtype=np.float32)[label] * 0.6 + rng.random((n, P, 3)) * 0.4
    data[..., 6:9] = xyz
    with h5py.File(root / "ply_data_all_0.h5", "w") as f:
        f["data"], f["label"] = data, label
    (root / "all_files.txt").write_text(f"{root.name}/ply_data_all_0.h5\n")
    (root / "room_filelist.txt").write_text("".join(f"{r}\n" for r in rooms for _ in range(blocks_per_room)))
    return root


def tiny_config(out_dir, blocks, **over):
    d = {
        "name": "t", "model": "resgcn-7", "out_dir": str(out_dir),
        "model_overrides": {"layers": 3, "channels": 16, "k": 4, "fusion_channels": 32},
        "data": {"source": "blocks", "root": str(blocks), "num_points": P, "val_fraction": 0.3},
        "epochs": 3, "batch_size": 4, "optim": {"lr": 0.01}, "device": "cpu",
    }
    for k, v in over.items():
        d[k] = v
    return load_config(TrainConfig, d)


def losses(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/loss")}


@pytest.fixture
def blocks(tmp_path):
    return write_block_release(tmp_path / "blocks")


def test_a_few_epochs_reduce_the_loss_and_write_checkpoints(tmp_path, blocks):
    out = train(tiny_config(tmp_path / "run", blocks, epochs=4), progress=False)
    L = losses(out)
    steps = sorted(L)
    assert np.mean([L[s] for s in steps[-3:]]) < 0.7 * np.mean([L[s] for s in steps[:3]])
    for tag in ("last", "best"):
        ck = load_checkpoint(out / f"{tag}.pt")
        assert ck["classes"]["names"][0] == "ceiling" and len(ck["classes"]["palette"]) == 13
        assert ck["preset"] == "resgcn-7" and ck["model_config"]["layers"] == 3
    assert load_checkpoint(out / "last.pt")["epoch"] == 4
    assert "optimizer" in load_checkpoint(out / "last.pt")              # what --resume needs
    assert "optimizer" not in load_checkpoint(out / "best.pt")          # the model only
    assert (out / "config.yaml").exists()


def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, blocks):
    full = train(tiny_config(tmp_path / "a", blocks, max_steps=7), progress=False)
    part = train(tiny_config(tmp_path / "b", blocks, max_steps=3), progress=False)
    assert load_checkpoint(part / "last.pt")["global_step"] == 3
    resumed = train(tiny_config(tmp_path / "b", blocks, max_steps=7), resume=True, progress=False)
    la, lb = losses(full), losses(resumed)
    for step in (4, 5, 6, 7):        # 4 batches per epoch: the check crosses an epoch boundary
        assert lb[step] == pytest.approx(la[step], rel=1e-5, abs=1e-6)
    pa = load_checkpoint(full / "last.pt")["model"]
    pb = load_checkpoint(resumed / "last.pt")["model"]
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6)


def test_existing_run_is_not_overwritten(tmp_path, blocks):
    train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, cfg_dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(load_config(TrainConfig, cfg_dict), progress=False)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_on_the_global_batch(tmp_path, blocks):
    from pointseg.config import to_dict
    # Per-process random draws (stochastic dilation, dropout) cannot equal one process's draws;
    # everything else (data split, BatchNorm statistics, gradients) must.
    det = {"model_overrides": {"layers": 3, "channels": 16, "k": 4, "fusion_channels": 32,
                               "stochastic": False, "dropout": 0.0},
           # SGD: Adam turns float-rounding noise in near-zero gradients into lr-sized steps
           "optim": {"name": "sgd", "lr": 0.05}}
    # Two steps: float sums in another order grow step by step (after 4 steps one weight of the
    # head differed by 4.5e-4 once the fp32-accuracy and global-term changes were both in).
    single = train(tiny_config(tmp_path / "single", blocks, max_steps=2, **det), progress=False)
    cfg = to_dict(tiny_config(tmp_path / "ddp", blocks, max_steps=2, **det))
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), cfg), nprocs=2, join=True)
    a = load_checkpoint(single / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    for k in a:
        # float sums in another order: agreement to ~1e-5, far below the ~1e-2 a step moves a weight
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=lambda m: f"{k}: {m}")
    # and training did move the weights (the comparison is not between two untouched inits)
    init = load_checkpoint(train(tiny_config(tmp_path / "zero", blocks, max_steps=1, **{**det, "optim": {"name": "sgd", "lr": 0.0}}),
                                 progress=False) / "last.pt")["model"]
    assert (a["head.mlp.lin.weight"] - init["head.mlp.lin.weight"]).abs().max() > 1e-2


def test_resume_with_another_preset_is_refused(tmp_path, blocks):
    train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)
    with pytest.raises(ValueError, match="was trained as 'resgcn-7'"):
        train(tiny_config(tmp_path / "run", blocks, max_steps=2, model="plaingcn-28"), resume=True, progress=False)
