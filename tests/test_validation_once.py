"""Value checks (finiteness, index ranges: device->host syncs on CUDA) run at a layer's entry when
it is called on its own, once at a model's entry, and not inside the model's blocks."""
import pytest
import torch

from pointseg.models import build_model
from pointseg.nn import EdgeConv
from pointseg.nn import checks
from pointseg.nn.checks import trusted_inputs
from pointseg.nn.knn import dilated_knn


def test_standalone_layers_still_reject_bad_values():
    x = torch.randn(1, 4, 20)
    idx = torch.full((1, 20, 3), 25)
    with pytest.raises(ValueError, match="outside"):
        EdgeConv(4, 5)(x, idx)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        dilated_knn(x, 3)


def test_inside_trusted_inputs_no_value_check_runs(monkeypatch):
    calls = []
    real = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: calls.append(1) or real(t))
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: pytest.fail("index range checked"))
    with trusted_inputs():
        x = torch.randn(1, 4, 20)
        EdgeConv(4, 5)(x, dilated_knn(x, 3))
    assert calls == []


def test_model_validates_once_at_entry(monkeypatch):
    model = build_model("resgcn-7", in_channels=9, out_channels=4, channels=8, k=4, fusion_channels=16).eval()
    seen = []
    real = checks.check_values
    monkeypatch.setattr(checks, "check_values", lambda: seen.append(real()) or real())
    import pointseg.nn.knn as knn_mod
    monkeypatch.setattr(knn_mod, "check_values", checks.check_values)
    model(torch.randn(1, 9, 64))
    assert seen[0] and len(seen) > 1 and not any(seen[1:])   # the entry checks, no block does ...
    x = torch.randn(1, 9, 64)
    x[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        model(x)                            # ... and bad input is still refused at the entry


def test_debug_switch_keeps_every_check(monkeypatch):
    monkeypatch.setenv("POINTSEG_DEBUG_CHECKS", "1")
    with trusted_inputs():
        assert checks.check_values()
