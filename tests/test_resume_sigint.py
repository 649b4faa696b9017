"""Ctrl-C during training, then --resume, reproduces the uninterrupted run; a changed config is
refused on --resume unless explicitly allowed (and then recorded)."""
import os
import signal

import pytest
import torch
import torch.nn.functional as F

from pointseg.segmentation.checkpoint import load_checkpoint
from pointseg.segmentation.train import train

from test_train import losses, tiny_config, write_block_release


@pytest.fixture
def blocks(tmp_path):
    return write_block_release(tmp_path / "blocks")


def _sigint_during_step(monkeypatch, at_call):
    """Send SIGINT to this process in the middle of training step ``at_call`` (inside the loss)."""
    real = F.cross_entropy
    calls = {"n": 0}

    def loss(*a, **k):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)
    monkeypatch.setattr(F, "cross_entropy", loss)


def test_ctrl_c_mid_step_then_resume_matches_the_uninterrupted_run(tmp_path, blocks, monkeypatch):
    full = train(tiny_config(tmp_path / "a", blocks, max_steps=7), progress=False)
    _sigint_during_step(monkeypatch, at_call=3)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "b", blocks, max_steps=7), progress=False)
    monkeypatch.undo()
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["global_step"] == 3                 # the step in flight was finished, then saved
    resumed = train(tiny_config(tmp_path / "b", blocks, max_steps=7), resume=True, progress=False)
    la, lb = losses(full), losses(resumed)
    for step in range(1, 8):
        assert lb[step] == pytest.approx(la[step], rel=1e-6, abs=1e-7), step
    pa = load_checkpoint(full / "last.pt")["model"]
    pb = load_checkpoint(resumed / "last.pt")["model"]
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=0)


def test_resume_with_a_changed_batch_size_is_refused_by_name(tmp_path, blocks):
    train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)
    with pytest.raises(ValueError, match=r"batch_size: 4 -> 8.*--allow-change batch_size"):
        train(tiny_config(tmp_path / "run", blocks, max_steps=2, batch_size=8), resume=True, progress=False)


def test_an_allowed_change_is_accepted_and_recorded(tmp_path, blocks):
    train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)
    out = train(tiny_config(tmp_path / "run", blocks, max_steps=2, optim={"lr": 0.005},
                            resume_changes=["optim.lr"]), resume=True, progress=False)
    assert "optim.lr" in load_checkpoint(out / "last.pt")["resume_changes"]


def test_stale_checkpoint_temporaries_are_removed_on_resume(tmp_path, blocks):
    out = train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)
    stale = out / ".last.abcd1234.tmp.pt"
    stale.write_bytes(b"")
    mine = out / "notes.tmp.pt"
    mine.write_bytes(b"user")
    train(tiny_config(tmp_path / "run", blocks, max_steps=2), resume=True, progress=False)
    assert not stale.exists()
    assert mine.exists()


def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_last_pt(tmp_path, blocks, monkeypatch):
    import pointseg.engine.trainer as T
    out = train(tiny_config(tmp_path / "run", blocks, max_steps=1), progress=False)
    before = (out / "last.pt").read_bytes()

    def full(path, payload):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")
    monkeypatch.setattr(T, "save_checkpoint", full)
    with pytest.raises(ValueError, match=r"last.pt: cannot write the checkpoint.*intact"):
        train(tiny_config(tmp_path / "run", blocks, max_steps=2), resume=True, progress=False)
    assert (out / "last.pt").read_bytes() == before
