"""Device choice per torchrun rank: cuda:LOCAL_RANK, chosen from the environment before the
process group exists (CUDA availability and count monkeypatched; no GPU needed)."""
import pytest
import torch

from pointseg.engine import distributed as D


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.mark.parametrize("local", [0, 1, 3])
def test_each_rank_takes_the_gpu_of_its_local_rank(four_gpus, local):
    env = {"WORLD_SIZE": "8", "RANK": str(4 + local), "LOCAL_RANK": str(local)}
    assert D.device_for_rank(torch.device("cuda"), env) == torch.device("cuda", local)


def test_single_process_keeps_the_requested_gpu(four_gpus):
    assert D.device_for_rank(torch.device("cuda", 2), {}) == torch.device("cuda", 2)
    assert D.device_for_rank(torch.device("cuda"), {"LOCAL_RANK": "3"}) == torch.device("cuda", 0)


def test_cpu_is_never_moved(four_gpus):
    env = {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert D.device_for_rank(torch.device("cpu"), env) == torch.device("cpu")


def test_more_ranks_than_gpus_is_a_clear_error(four_gpus):
    with pytest.raises(ValueError, match="LOCAL_RANK=4 but this node has 4 CUDA"):
        D.device_for_rank(torch.device("cuda"), {"WORLD_SIZE": "5", "LOCAL_RANK": "4"})


def test_one_explicit_gpu_for_several_ranks_is_refused(four_gpus):
    with pytest.raises(ValueError, match="every rank would use that one GPU"):
        D.device_for_rank(torch.device("cuda", 1), {"WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_bad_environment_names_the_variable(four_gpus):
    with pytest.raises(ValueError, match="LOCAL_RANK='x'"):
        D.device_for_rank(torch.device("cuda"), {"WORLD_SIZE": "2", "LOCAL_RANK": "x"})
    with pytest.raises(ValueError, match="LOCAL_RANK is not set"):
        D.device_for_rank(torch.device("cuda"), {"WORLD_SIZE": "2"})


def test_select_device_makes_the_gpu_current_before_the_group(four_gpus, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert D.select_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert calls == [torch.device("cuda", 1)]
    assert not torch.distributed.is_initialized()
