"""Mixed-precision training steps (autocast bf16 / fp16) stay finite and reduce the loss on one
fixed batch: a small ResGCN on CPU (ResGCN-28 at full width takes minutes per dtype on a 2-core
CPU; tools/gpu_check.py runs the full ResGCN-28 on CUDA), and ResGCN-28 on CUDA when present."""
import pytest
import torch

from conftest import load_tool

check_amp = load_tool("gpu_check").check_amp


def _cpu_autocast_supports(dtype):
    try:
        with torch.autocast("cpu", dtype=dtype):
            torch.ones(2, 2) @ torch.ones(2, 2)
        return True
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_small_resgcn_amp_steps_on_cpu_are_finite_and_reduce_the_loss(amp, dtype):
    if not _cpu_autocast_supports(dtype):
        pytest.skip(f"this torch {torch.__version__} has no CPU autocast for {dtype}")
    ok, detail = check_amp(torch.device("cpu"), amp, preset="resgcn-7", points=256, steps=6,
                           channels=16, k=8, fusion_channels=32)
    assert ok, detail


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_resgcn28_amp_steps_on_cuda_are_finite_and_reduce_the_loss(amp):
    ok, detail = check_amp(torch.device("cuda"), amp)
    assert ok, detail
