"""``pointseg import``: official DeepGCNs and dgcnn.pytorch checkpoints become pointseg checkpoints
that reproduce the public code's outputs (fixtures), and bad sources fail in one line, writing nothing."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pointseg.cli import main

SHARED = Path(os.environ.get("POINTSEG_SHARED", Path(__file__).resolve().parents[2] / "shared"))
FIX = SHARED / "fixtures" / "import"
DGCNN_DIR = SHARED / "pretrained" / "dgcnn_s3dis"

# file -> (block kind the importer should report, depth, width, --block to pass)
DEEPGCNS = {
    "deepgcns_resgcn28": ("res", 28, 64, None),
    "deepgcns_resgcn7_c32": ("res", 7, 32, None),
    "deepgcns_densegcn7_c32": ("dense", 7, 32, None),
    "deepgcns_plaingcn7_c32": ("plain", 7, 32, "plain"),
}


def need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"missing {p}")


def run_import(fmt, src, out, *extra):
    return main(["import", fmt, str(src), "--out", str(out), *extra])


def rebuild(path):
    from pointseg.segmentation.checkpoint import build_from_checkpoint, load_checkpoint
    return build_from_checkpoint(load_checkpoint(path))


@pytest.mark.parametrize("name", list(DEEPGCNS))
def test_official_deepgcns_checkpoint_reproduces_its_float64_logits(tmp_path, name, capsys):
    need(FIX / f"{name}.pth", FIX / f"{name}_io.npz")
    kind, depth, width, block = DEEPGCNS[name]
    out = tmp_path / "m.pt"
    assert run_import("deepgcns", FIX / f"{name}.pth", out, *(["--block", block] if block else [])) == 0
    said = capsys.readouterr().out
    assert f"block {kind}" in said and f"depth {depth}" in said and f"width {width}" in said
    model, classes = rebuild(out)
    assert classes.num_classes == 13
    io = np.load(FIX / f"{name}_io.npz")
    with torch.no_grad():
        y = model.double()(torch.from_numpy(io["x"]))
    ref = torch.from_numpy(io["logits_float64"])
    assert float((y - ref).abs().max() / ref.abs().max()) < 1e-9


def test_plain_checkpoint_imported_as_res_does_not_reproduce_it(tmp_path):
    """res and plain hold the same tensors; the block kind matters, which is why --block exists."""
    name = "deepgcns_plaingcn7_c32"
    need(FIX / f"{name}.pth", FIX / f"{name}_io.npz")
    assert run_import("deepgcns", FIX / f"{name}.pth", tmp_path / "m.pt") == 0
    model, _ = rebuild(tmp_path / "m.pt")
    io = np.load(FIX / f"{name}_io.npz")
    with torch.no_grad():
        y = model.double()(torch.from_numpy(io["x"]))
    assert not torch.allclose(y, torch.from_numpy(io["logits_float64"]), rtol=1e-3)


def test_deepgcns_state_dict_without_module_prefix_and_without_optimizer_imports(tmp_path):
    need(FIX / "deepgcns_resgcn7_c32.pth")
    ck = torch.load(FIX / "deepgcns_resgcn7_c32.pth", map_location="cpu", weights_only=True)
    assert "optimizer_state_dict" in ck and "scheduler_state_dict" in ck
    bare = {"epoch": 3, "best_value": 0.1,
            "state_dict": {k.removeprefix("module."): v for k, v in ck["state_dict"].items()}}
    torch.save(bare, tmp_path / "bare.pth")
    assert run_import("deepgcns", tmp_path / "bare.pth", tmp_path / "a.pt") == 0
    assert run_import("deepgcns", FIX / "deepgcns_resgcn7_c32.pth", tmp_path / "b.pt") == 0
    a = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dgcnn_import_records_classes_recipe_and_provenance(tmp_path, capsys):
    import hashlib
    src = DGCNN_DIR / "model_5.t7"
    need(src)
    out = tmp_path / "d5.pt"
    assert run_import("dgcnn-pytorch", src, out, "--test-area", "5") == 0
    ck = torch.load(out, weights_only=True)
    assert ck["architecture"] == "dgcnn" and ck["classes"]["names"][0] == "ceiling"
    spec = ck["input"]
    assert (spec["block_size"], spec["num_points"], spec["stride"], spec["knn_channels"]) == (1.0, 4096, 0.5, [6, 7, 8])
    assert spec["channels"] == ["x", "y", "z", "r", "g", "b", "x_room", "y_room", "z_room"]
    prov = ck["provenance"]
    assert prov["test_area"] == 5 and "MIT" in prov["licence"] and "dgcnn.pytorch" in prov["project"]
    assert prov["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert all(v.dtype in (torch.float32, torch.int64) for v in ck["model"].values())


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    src = DGCNN_DIR / "model_5.t7"
    need(src)
    out = tmp_path / "d.pt"
    out.write_bytes(b"mine")
    assert run_import("dgcnn-pytorch", src, out) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert run_import("dgcnn-pytorch", src, out, "--overwrite") == 0
    assert torch.load(out, weights_only=True)["preset"] == "dgcnn"


def test_bundled_default_is_the_imported_fold5_model():
    from pointseg.segmentation.segment import DEFAULT_CHECKPOINT
    from pointseg.segmentation.checkpoint import NAMED_CHECKPOINTS, resolve_checkpoint
    ck = torch.load(DEFAULT_CHECKPOINT, weights_only=True)
    assert ck["architecture"] == "dgcnn" and ck["provenance"]["test_area"] == 5
    assert DEFAULT_CHECKPOINT == resolve_checkpoint("dgcnn-s3dis")
    assert resolve_checkpoint("resgcn7-synthetic").is_file() and set(NAMED_CHECKPOINTS) >= {"dgcnn-s3dis"}
    assert (DEFAULT_CHECKPOINT.parent / "LICENSE-dgcnn").read_text().count("An Tao") == 1
    if (DGCNN_DIR / "model_5.t7").exists():
        import hashlib
        sha = hashlib.sha256((DGCNN_DIR / "model_5.t7").read_bytes()).hexdigest()
        assert ck["provenance"]["source_sha256"] == sha


# ---- bad input: one line, exit 2, nothing written ----------------------------------------------

class Payload:                      # pickled as code by torch.save; weights_only refuses it
    def __reduce__(self):
        return (print, ("this must never run",))


def _one_line_error(capsys):
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert "this must never run" not in cap.out           # no pickled code was executed
    return err


def test_unknown_format_lists_the_known_ones(tmp_path, capsys):
    src = tmp_path / "x.pth"
    torch.save({"a": torch.zeros(1)}, src)
    assert run_import("caffe", src, tmp_path / "o.pt") == 2
    err = _one_line_error(capsys)
    assert "caffe" in err and "dgcnn-pytorch" in err and "deepgcns" in err
    assert not (tmp_path / "o.pt").exists()


def test_state_dict_of_another_network_names_the_first_key_that_does_not_fit(tmp_path, capsys):
    need(FIX / "deepgcns_resgcn7_c32.pth", DGCNN_DIR / "model_5.t7")
    assert run_import("dgcnn-pytorch", FIX / "deepgcns_resgcn7_c32.pth", tmp_path / "o.pt") == 2
    assert "'epoch'" in _one_line_error(capsys)          # the whole train.py dict is not a state dict
    sd = torch.load(FIX / "deepgcns_resgcn7_c32.pth", map_location="cpu", weights_only=True)["state_dict"]
    torch.save(sd, tmp_path / "deepgcns_sd.pth")
    assert run_import("dgcnn-pytorch", tmp_path / "deepgcns_sd.pth", tmp_path / "o.pt") == 2
    assert "'head.gconv.nn.0.weight' does not fit" in _one_line_error(capsys)
    dg = torch.load(DGCNN_DIR / "model_5.t7", map_location="cpu", weights_only=True)
    torch.save(dg, tmp_path / "dgcnn.t7")
    assert run_import("deepgcns", tmp_path / "dgcnn.t7", tmp_path / "o.pt") == 2
    assert "'bn1.weight' does not fit" in _one_line_error(capsys)
    assert not (tmp_path / "o.pt").exists()


def test_wrong_shape_and_unequal_duplicate_are_named(tmp_path, capsys):
    need(DGCNN_DIR / "model_5.t7")
    dg = torch.load(DGCNN_DIR / "model_5.t7", map_location="cpu", weights_only=True)
    bad = dict(dg)
    bad["module.conv2.0.weight"] = torch.zeros(64, 32, 1, 1)
    torch.save(bad, tmp_path / "shape.t7")
    assert run_import("dgcnn-pytorch", tmp_path / "shape.t7", tmp_path / "o.pt") == 2
    assert "'conv2.0.weight' has shape (64, 32, 1, 1)" in _one_line_error(capsys)
    bad = dict(dg)
    bad["module.bn3.bias"] = bad["module.bn3.bias"] + 1
    torch.save(bad, tmp_path / "dup.t7")
    assert run_import("dgcnn-pytorch", tmp_path / "dup.t7", tmp_path / "o.pt") == 2
    assert "'bn3.bias'" in _one_line_error(capsys)
    bad = {k: v for k, v in dg.items() if k != "module.conv8.1.running_var"}
    torch.save(bad, tmp_path / "missing.t7")
    assert run_import("dgcnn-pytorch", tmp_path / "missing.t7", tmp_path / "o.pt") == 2
    assert "'conv8.1.running_var'" in _one_line_error(capsys)
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("fmt", ["dgcnn-pytorch", "deepgcns"])
def test_pickled_code_is_refused_and_never_run(tmp_path, capsys, fmt):
    src = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, src)
    assert run_import(fmt, src, tmp_path / "o.pt") == 2
    err = _one_line_error(capsys)
    assert "refused" in err
    assert not (tmp_path / "o.pt").exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(Payload()))
    assert run_import(fmt, plain, tmp_path / "o.pt") == 2
    _one_line_error(capsys)
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_file_is_a_clear_error(tmp_path, capsys, cut):
    src = DGCNN_DIR / "model_5.t7"
    need(src)
    data = src.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    part = tmp_path / "part.t7"
    part.write_bytes(data[:n])
    assert run_import("dgcnn-pytorch", part, tmp_path / "o.pt") == 2
    err = _one_line_error(capsys)
    assert "part.t7" in err and ("truncated" in err or "not a readable" in err)
    assert not (tmp_path / "o.pt").exists()


def test_missing_source_and_missing_arguments(tmp_path, capsys):
    assert run_import("deepgcns", tmp_path / "nope.pth", tmp_path / "o.pt") == 2
    assert "nope.pth" in _one_line_error(capsys)
    assert main(["import", "deepgcns"]) == 2
    assert "usage" in _one_line_error(capsys)
    assert main(["import", "--list"]) == 0
    assert "dgcnn-pytorch" in capsys.readouterr().out


# ---- the recorded input recipe drives pre-processing --------------------------------------------

def test_sliding_settings_come_from_the_checkpoint_recipe_unless_given():
    from pointseg.segmentation.checkpoint import sliding_for
    from pointseg.segmentation.inference import SlidingConfig
    ck = {"input": {"block_size": 1.5, "num_points": 1024, "stride": 0.75}}
    s = sliding_for(ck)
    assert (s.block_size, s.num_points, s.stride) == (1.5, 1024, 0.75)
    s = sliding_for(ck, SlidingConfig(stride=1.5))
    assert (s.block_size, s.num_points, s.stride) == (1.5, 1024, 1.5)
    s = sliding_for({"input": {}})
    assert (s.block_size, s.num_points, s.stride) == (1.0, 4096, 0.5)


def test_checkpoint_with_a_recipe_this_pointseg_cannot_make_is_refused(tmp_path, capsys):
    from pointseg.segmentation.checkpoint import check_input_recipe
    with pytest.raises(ValueError, match="recipe 'kitti-frames'"):
        check_input_recipe({"input": {"normalisation": "kitti-frames"}}, "ck.pt")
    with pytest.raises(ValueError, match="channels"):
        check_input_recipe({"input": {"channels": ["x", "y", "z"]}}, "ck.pt")


def test_default_segment_runs_the_real_dgcnn_with_its_recipe(tmp_path):
    import json
    rng = np.random.default_rng(0)
    xyz = rng.random((3000, 3)) * [1.8, 1.8, 2.5]
    pts = np.concatenate([xyz, rng.integers(0, 255, (3000, 3))], axis=1).astype(np.float32)
    np.save(tmp_path / "small.npy", pts)
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "small.npy"), "--out", str(out), "--stride", "1.0",
                 "--no-render", "--quiet"]) == 0
    summary = json.loads((out / "small.json").read_text())
    assert summary["model"] == "dgcnn" and summary["sliding"]["num_points"] == 4096
    assert summary["sliding"]["block_size"] == 1.0 and "dgcnn.pytorch" in summary["trained_on"]
    assert np.load(out / "small.labels.npy").shape == (3000,)
