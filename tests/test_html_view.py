"""``pointseg view --html`` / :func:`viewer.html.write_html`: one self-contained page per scan.

The file itself is checked in Python (no external references, escaped user text, sizes, the
downsampling that keeps every class, bad input as one line). The page is then opened in headless
Chromium from ``file://`` with the network disabled (a proxy that does not exist), WebGL on
SwiftShader: screenshots must show the classes' colours where the points are, change with the
colouring (URL hash or keys 1-4 through the page's own key handler), lose a class whose legend
row is clicked, and the page must print nothing on the console. Chromium tests skip where it is
not installed (``scripts/setup.sh`` installs it).
"""
from __future__ import annotations

import base64
import gzip
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pointseg.classes import S3DIS, ClassTable
from pointseg.cli import main
from pointseg.io.scans import write_labelled_ply
from test_viewer import CEILING, CHAIR, TABLE, WALL, make_room, read_png
from pointseg.viewer.html import HTML_MAX_POINTS, write_html
from pointseg.viewer.state import CORRECT_COLOUR, WRONG_COLOUR

N = 20_000
CLUTTER = 12
# A class name and a model name that would break out of the page if they were pasted in raw.
EVIL_NAME = '</script><b id="injected">table</b>&amp;'
EVIL_MODEL = "m</script><script>document.title='pwned'</script>"
WINDOW = (800, 500)
CANVAS_W = 440          # the canvas is left of the 300 px side panel; stay inside it


def evil_table() -> ClassTable:
    names = list(S3DIS.names)
    names[TABLE] = EVIL_NAME
    return ClassTable(tuple(names), S3DIS.palette, "evil")


@pytest.fixture(scope="module")
def room():
    return make_room(N)


@pytest.fixture(scope="module")
def confidence(room) -> np.ndarray:
    return np.random.default_rng(1).uniform(0.3, 1.0, room.num_points)


@pytest.fixture(scope="module")
def page(room, confidence, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("html") / "room.html"
    write_html(path, room.xyz, room.rgb, room.pred, room.label, evil_table(), confidence,
               model=EVIL_MODEL, scan="scans/<room>.ply", summary={"checkpoint": "a&b.pt"})
    return path


def page_meta(path: Path) -> dict:
    text = path.read_text()
    block = re.search(r'<script type="application/json" id="pointseg-meta">(.*?)</script>', text, re.S)
    return json.loads(block.group(1))


def page_array(path: Path, name: str) -> np.ndarray:
    text = path.read_text()
    spec = page_meta(path)["arrays"][name]
    data = re.search(rf'<script type="application/octet-stream" id="{spec["id"]}">(.*?)</script>', text).group(1)
    return np.frombuffer(gzip.decompress(base64.b64decode(data)), dtype=spec["dtype"])


# ----------------------------------------------------------------------------- the file

def test_page_is_self_contained_and_escapes_user_text(page):
    text = page.read_text()
    # Nothing to fetch: no src/href attributes, no stylesheet imports (the browser tests run with
    # the network cut off and fail on any console message, which a failed request would print).
    assert not re.search(r'\b(src|href)\s*=', text) and "@import" not in text and "url(" not in text
    # The three.js licence travels with its code.
    assert "three.js authors" in text and "Permission is hereby granted" in text
    # Exactly the page's own <script> elements: the evil names did not open or close any.
    layers = 2 + len(page_meta(page)["arrays"]) + 1      # three.js, page.js, the arrays, the JSON
    assert text.count("<script") == layers and text.count("</script>") == layers
    assert "<b id=" not in text
    meta = page_meta(page)
    assert meta["classes"][TABLE]["name"] == EVIL_NAME and meta["model"] == EVIL_MODEL
    assert "<" not in re.search(r'id="pointseg-meta">(.*?)</script>', text, re.S).group(1)


def test_page_arrays_round_trip(page, room, confidence):
    meta = page_meta(page)
    assert meta["points"] == meta["shown"] == N and meta["voxel"] is None
    assert meta["modes"] == ["rgb", "pred", "gt", "error"] and meta["mode"] == "pred"
    q = page_array(page, "pos").reshape(-1, 3).astype(np.float64)
    lo, ext = np.array(meta["bbox"]["lo"]), np.array(meta["bbox"]["ext"])
    assert np.abs(lo + q / 65535 * ext - room.xyz).max() < 1e-4          # uint16 steps of a 4 m room
    assert np.array_equal(page_array(page, "pred"), room.pred)
    assert np.array_equal(page_array(page, "gt"), room.label)
    assert np.array_equal(page_array(page, "rgb").reshape(-1, 3), room.rgb)
    assert np.abs(page_array(page, "conf") / 255 - confidence).max() <= 0.5 / 255 + 1e-9
    # Shares and metrics on every point; the ceiling starts hidden (it covers the room from above).
    assert meta["counts"]["pred"][CLUTTER] == int((room.pred == CLUTTER).sum())
    assert meta["counts"]["gt"][CLUTTER] == 0
    assert meta["oa"] == pytest.approx(float((room.pred == room.label).mean()))
    assert meta["hidden"] == [CEILING]


def test_downsampled_page_keeps_every_class_and_says_so(room, tmp_path):
    # One clutter point in a dense corner: voxel downsampling alone would drop it.
    pred = room.pred.copy()
    pred[:] = np.where(pred == CLUTTER, WALL, pred)
    pred[0] = CLUTTER
    page = write_html(tmp_path / "small.html", room.xyz, room.rgb, pred, room.label, S3DIS, max_points=2000)
    meta = page_meta(tmp_path / "small.html")
    assert page.shown == meta["shown"] <= 2400 and page.voxel is not None and meta["voxel"] == page.voxel
    assert set(np.unique(page_array(tmp_path / "small.html", "pred"))) == set(np.unique(pred))
    assert meta["counts"]["pred"][CLUTTER] == 1            # shares still count every point


def test_point_cap_holds_for_volumetric_clouds(tmp_path):
    # Noise filling a cube is far denser in voxels than the surfaces the voxel size is first guessed
    # for: the voxel search alone stopped above the cap.
    rng = np.random.default_rng(0)
    xyz, lab = rng.random((N, 3)), rng.integers(0, 13, N)
    page = write_html(tmp_path / "cube.html", xyz, pred=lab, classes=S3DIS, max_points=15_000)
    assert page.shown <= 15_000 and page.voxel is not None
    assert set(np.unique(page_array(tmp_path / "cube.html", "pred"))) == set(range(13))


def test_million_points_fit_in_forty_megabytes(tmp_path):
    big = make_room(1_000_000, seed=3)
    page = write_html(tmp_path / "big.html", big.xyz, big.rgb, big.pred, big.label, S3DIS)
    assert page.shown == 1_000_000 and page.voxel is None
    assert page.bytes == (tmp_path / "big.html").stat().st_size < 40e6
    assert HTML_MAX_POINTS == 2_000_000


@pytest.mark.parametrize("kwargs, message", [
    ({"xyz": np.zeros((0, 3))}, "no points to show"),
    ({"pred": np.zeros(10, int)}, "no class table"),
    ({"pred": np.full(10, 13), "classes": S3DIS}, "outside the class table"),
    ({"xyz": np.full((10, 3), np.nan)}, "NaN/inf"),
    ({"confidence": np.full(10, 2.0), "pred": np.zeros(10, int), "classes": S3DIS}, "confidence"),
    ({"mode": "gt"}, "mode 'gt' is not available"),
])
def test_bad_input_is_one_line(tmp_path, kwargs, message):
    args = {"xyz": np.random.default_rng(0).random((10, 3)), **kwargs}
    with pytest.raises(ValueError, match=message) as e:
        write_html(tmp_path / "x.html", scan="scan.ply", **args)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())


def test_failed_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def read_only(*_a, **_k):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(os, "replace", read_only)
    with pytest.raises(ValueError, match=r"x\.html: cannot write the page: Read-only file system"):
        write_html(tmp_path / "x.html", np.random.default_rng(0).random((10, 3)))
    assert not list(tmp_path.iterdir())          # the temporary file is gone too


# ----------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def room_ply(room, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ply") / "room.ply"
    write_labelled_ply(path, room.xyz, room.rgb, room.label, S3DIS, pred=room.pred, model="resgcn-7")
    return path


def test_view_html_command(room_ply, tmp_path, capsys):
    out = tmp_path / "room.html"
    assert main(["view", str(room_ply), "--html", str(out), "--mode", "error", "--hide", "none"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    meta = page_meta(out)
    assert meta["mode"] == "error" and meta["hidden"] == [] and meta["model"] == "resgcn-7"
    assert meta["scan"] == str(room_ply) and meta["miou"] is not None
    # An existing page is kept unless --overwrite.
    assert main(["view", str(room_ply), "--html", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["view", str(room_ply), "--html", str(out), "--overwrite", "--max-points", "5000"]) == 0
    assert "voxel-downsampled" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["empty scan", "missing palette", "palette without names",
                                  "output under a file", "compare", "labels beyond the table"])
def test_view_html_bad_input(case, room_ply, tmp_path, capsys):
    scan, extra, out = str(room_ply), [], str(tmp_path / "out.html")
    if case == "empty scan":
        scan = str(tmp_path / "empty.xyz")
        Path(scan).write_text("")
    elif case == "missing palette":
        extra = ["--palette", str(tmp_path / "nope.json")]
    elif case == "palette without names":
        (tmp_path / "pal.json").write_text('{"palette": [[1, 2, 3]]}')
        extra = ["--palette", str(tmp_path / "pal.json")]
    elif case == "output under a file":
        (tmp_path / "afile").write_text("x")
        out = str(tmp_path / "afile" / "out.html")
    elif case == "compare":
        extra = ["--compare", scan]
    elif case == "labels beyond the table":
        (tmp_path / "pal.json").write_text('{"names": ["a", "b"], "palette": [[1, 2, 3], [4, 5, 6]]}')
        extra = ["--palette", str(tmp_path / "pal.json")]
    assert main(["view", scan, "--html", out, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("pointseg view: error:")
    named = {"empty scan": "empty.xyz", "missing palette": "nope.json", "palette without names": "pal.json",
             "output under a file": "afile", "compare": "--compare", "labels beyond the table": "room.ply"}[case]
    assert named in err
    assert not Path(out).exists()


# ----------------------------------------------------------------------------- in a browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe is None:
            continue
        try:      # Ubuntu's chromium-browser may be a wrapper of a snap that cannot run here
            subprocess.run([exe, "--version"], capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        return exe
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    if exe is None:
        pytest.skip("needs chromium (Debian package 'chromium'; scripts/setup.sh installs it)")
    return exe


def open_page(chromium: str, page: Path, hash_: str, tmp_path: Path, *, screenshot: bool = True):
    """Open ``page#hash_`` headless, offline; (screenshot array or DOM text, Chromium's stderr)."""
    profile = Path(__import__("tempfile").mkdtemp(dir=tmp_path, prefix="profile"))
    shot = profile / "shot.png"
    args = [chromium, "--headless=new", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--proxy-server=127.0.0.1:9", f"--user-data-dir={profile}", "--no-first-run",
            "--enable-logging=stderr", "--v=0", "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--virtual-time-budget=10000",
            # Chromium's sandbox refuses root and needs user namespaces that CI containers often
            # lack; the page opened is our own local file.
            "--no-sandbox"]
    args += [f"--screenshot={shot}"] if screenshot else ["--dump-dom"]
    r = subprocess.run([*args, f"{page.as_uri()}#{hash_}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    return (read_png(shot) if screenshot else r.stdout), r.stderr


def canvas_counts(img: np.ndarray, colours, tol: int = 6) -> dict[tuple, int]:
    """Pixels of the 3D view within ``tol`` of each colour."""
    px = img[:, :CANVAS_W].reshape(-1, 3).astype(np.int32)
    return {tuple(c): int((np.abs(px - np.asarray(c)).max(1) <= tol).sum()) for c in colours}


def colour(i: int) -> tuple[int, int, int]:
    return tuple(S3DIS.palette[i])


def test_browser_draws_the_classes_and_modes_change_the_picture(chromium, page, tmp_path):
    shots = {m: open_page(chromium, page, f"mode={m}", tmp_path)[0] for m in ("pred", "gt", "error")}
    classes = [colour(i) for i in (WALL, TABLE, CHAIR, CLUTTER, CEILING)]
    for m in ("pred", "gt"):
        view = shots[m][:, :CANVAS_W]
        assert (np.abs(view.astype(int) - 255).max(2) > 10).mean() > 0.15, f"{m}: the view is blank"
    pred, gt = (canvas_counts(shots[m], classes) for m in ("pred", "gt"))
    for c in (WALL, TABLE, CHAIR):              # the legend's colours are where the points are
        assert pred[colour(c)] > 300 and gt[colour(c)] > 300, (c, pred, gt)
    assert pred[colour(CLUTTER)] > 100 and gt[colour(CLUTTER)] == 0    # only predicted, never true
    assert pred[colour(CEILING)] == 0 and gt[colour(CEILING)] == 0      # hidden at first
    err = canvas_counts(shots["error"], [CORRECT_COLOUR, WRONG_COLOUR, colour(WALL)])
    assert err[CORRECT_COLOUR] > 1000 and err[WRONG_COLOUR] > 100 and err[colour(WALL)] == 0
    # Key 4 through the page's key handler draws exactly what #mode=error draws.
    keyed, _ = open_page(chromium, page, "keys=24", tmp_path)
    assert np.array_equal(keyed[:, :CANVAS_W], shots["error"][:, :CANVAS_W])


def test_browser_legend_click_shows_and_hides_a_class(chromium, page, tmp_path):
    shown, _ = open_page(chromium, page, "mode=gt&legend=0,2", tmp_path)   # ceiling back on, wall off
    counts = canvas_counts(shown, [colour(CEILING), colour(WALL)])
    assert counts[colour(CEILING)] > 1000 and counts[colour(WALL)] == 0


def test_browser_page_reports_ready_picks_and_escapes(chromium, page, room, confidence, tmp_path):
    dom, _ = open_page(chromium, page, "pick=220,250", tmp_path, screenshot=False)
    status = re.search(r'<div id="status" data-state="(\w+)">([^<]*)</div>', dom)
    assert status.group(1) == "ready", status.group(2)
    assert f"{N:,} points drawn" in status.group(2) and "hidden: ceiling" in status.group(2)
    # The hovered / clicked point's class, confidence and position, as the arrays have them.
    picked = html.unescape(re.search(r'<div id="pick">([^<]*)</div>', dom).group(1))
    i = int(re.match(r"point ([\d,]+)", picked).group(1).replace(",", ""))
    names = evil_table().names
    assert f"prediction: {names[room.pred[i]]} (confidence {100 * round(confidence[i] * 255) / 255:.1f} %)" in picked
    assert f"ground truth: {names[room.label[i]]}" in picked
    xyz = [float(v) for v in re.search(r"x y z: (\S+) (\S+) (\S+)", picked).groups()]
    assert np.abs(np.array(xyz) - room.xyz[i]).max() < 2e-3
    # User text is text: the evil class and model names are shown, escaped, and made no elements.
    assert '<b id="injected"' not in dom
    assert html.escape(EVIL_NAME, quote=False) in dom and html.escape(EVIL_MODEL, quote=False) in dom
    assert "<title>pointseg — &lt;room&gt;.ply</title>" in dom


def test_browser_page_without_labels_or_colours(chromium, room, tmp_path):
    path = tmp_path / "bare.html"
    write_html(path, room.xyz)                       # height colouring, no legend, one mode
    dom, _ = open_page(chromium, path, "", tmp_path, screenshot=False)
    assert 'data-state="ready">ready: height' in dom
    assert re.findall(r'<button data-mode="(\w+)"', dom) == ["rgb"]
    assert "No class labels in this file." in dom


def test_segment_writes_the_page_with_its_outputs(room, tmp_path):
    """``pointseg segment``'s output folder holds ``<name>.html`` (also with --no-render)."""
    import time
    from types import SimpleNamespace

    from pointseg.cli.segment import _write_outputs
    from pointseg.segmentation.segment import Segmentation
    from pointseg.io.scans import Scan

    scan = Scan(xyz=room.xyz, rgb=room.rgb, label=room.label, path=Path("scans/office.ply"))
    seg = Segmentation(labels=room.pred.astype(np.int64), ground_truth=room.label, summary={}, timings={})
    model = SimpleNamespace(classes=S3DIS, ckpt={"preset": "resgcn-7"})
    summary = {"scan": "scans/office.ply", "checkpoint": "demo.pt"}
    _write_outputs(tmp_path / "out", False, scan, seg, model, summary, {"predict_s": 1.0}, False,
                   (320, 240), time.perf_counter())
    page = tmp_path / "out" / "office.html"
    meta = page_meta(page)
    assert meta["model"] == "resgcn-7" and meta["scan"] == "scans/office.ply" and meta["points"] == N
    assert meta["summary"] == [["checkpoint", "demo.pt"]]
    assert np.array_equal(page_array(page, "pred"), room.pred)
    assert json.loads((tmp_path / "out" / "office.json").read_text())["timings"]["html_s"] > 0
