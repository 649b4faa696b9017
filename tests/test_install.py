"""An installed wheel works on its own: built from a copy of the sources, installed into a
temporary environment, run from an unrelated directory with the bundled sample and checkpoint.

The temporary environment gets only the wheel's files as its own; the third-party dependencies
(torch, Open3D, ...) come from this test's environment through a ``.pth`` line, so nothing is
downloaded or compiled. Site directories added that way do not run their own ``.pth`` files,
so an editable install of pointseg in this environment stays invisible there, and the test
checks that every pointseg module and bundled file used lies inside the temporary environment.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, its python, an empty working directory) with the wheel installed."""
    try:
        import setuptools
        new_enough = tuple(int(v) for v in setuptools.__version__.split(".")[:2]) >= (70, 1)
    except (ImportError, ValueError):
        new_enough = False
    if not new_enough:
        pytest.skip("building the wheel offline needs setuptools >= 70.1 (the 'test' extra)")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in ("pointseg", "graphs", "viewer"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-q", "-w", dist, src], cwd=tmp, timeout=600)
    wheels = list(dist.glob("pointseg-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp, timeout=300)
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q",
          wheels[0]], cwd=tmp, timeout=600)
    # This environment's third-party packages, after the venv's own site-packages.
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).stdout.strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_deps_from_test_env.pth").write_text("\n".join(sorted(ours)) + "\n")
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return venv, py, cwd


def test_installed_package_runs_from_its_own_files(installed):
    venv, py, cwd = installed
    r = _run([py, "-c", "import json, pointseg, pointseg.viewer as v, pointseg.graphs as g, pointseg.assets as a; "
                        "print(json.dumps([pointseg.__file__, v.__file__, g.__file__, "
                        "str(a.asset('sample_room.ply')), str(a.asset('demo_checkpoint.pt'))]))"], cwd=cwd)
    for path in json.loads(r.stdout):
        assert _inside(path, venv), f"{path} is not the installed wheel's file"
    # no generic top-level names in site-packages: graphs and viewer live inside pointseg
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=cwd).stdout.strip())
    assert not (site / "graphs").exists() and not (site / "viewer").exists()
    assert (site / "pointseg" / "graphs" / "tasks.py").is_file() and (site / "pointseg" / "viewer" / "assets").is_dir()


def test_version_is_the_package_metadata(installed):
    venv, py, cwd = installed
    meta = _run([py, "-c", "from importlib.metadata import version; print(version('pointseg'))"], cwd=cwd)
    out = _run([venv / "bin" / "pointseg", "--version"], cwd=cwd)
    assert out.stdout.strip() == f"pointseg {meta.stdout.strip()}"
    assert meta.stdout.strip()[0].isdigit()


def test_default_segment_uses_the_bundled_sample_and_checkpoint(installed):
    venv, py, cwd = installed
    out = cwd / "demo"
    r = _run([venv / "bin" / "pointseg", "segment", "--out", out, "--quiet"], cwd=cwd, timeout=1800)
    summary = json.loads((out / "sample_room.json").read_text())
    assert _inside(summary["scan"], venv) and _inside(summary["checkpoint"], venv)
    for suffix in (".labels.npy", ".ply", ".png"):
        assert (out / f"sample_room{suffix}").stat().st_size > 0
    # The bundled checkpoint is a trained model, not a placeholder: it knows this room.
    assert summary["metrics"]["oa"] > 0.9
    assert all(line.startswith("[segment]") for line in r.stdout.splitlines()), r.stdout


def test_a_shipped_config_trains_by_name_from_an_empty_directory(installed):
    """Shipped configs are package data: `pointseg train NAME` works after a plain install."""
    venv, py, cwd = installed
    work = cwd / "train_here"
    work.mkdir()
    r = _run([venv / "bin" / "pointseg", "train", "demo_resgcn7_synthetic", "epochs=1", "max_steps=1",
              "batch_size=2", "data.synth_rooms=2", "data.synth_points=20000", "data.num_points=256",
              "data.root=synth", "out_dir=run", "--device", "cpu", "--quiet"], cwd=work, timeout=1200)
    assert (work / "run" / "last.pt").is_file(), r.stdout
