"""The interactive Open3D window.

Two back-ends draw the same :class:`~viewer.state.ViewerState`:

* ``gui`` (default): ``open3d.visualization.gui`` — a 3-D scene with a side panel showing the
  mode, the class legend (drawn with the same code as the PNG legend: colour, name, point
  count, IoU) and the key help; the window title says when the cloud is voxel-downsampled.
* ``legacy``: ``VisualizerWithKeyCallback`` — for machines where the new GUI does not start;
  the legend is printed to the terminal after every change.

Both print the legend to the terminal too. Keys are in :data:`viewer.state.KEYS`. Without a
display, :func:`run_window` raises :class:`NoDisplayError` before touching Open3D (whose
legacy visualizer would otherwise silently fall back to an invisible EGL context, and whose
GUI aborts the process).
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .render import auto_point_size, camera_frame, legend_strip
from .render import LegendEntry
from .state import CORRECT_COLOUR, KEY_HELP, KEYS, MODE_TITLES, WRONG_COLOUR, ViewerState

BACKENDS = ("gui", "legacy")


class NoDisplayError(RuntimeError):
    """There is no display to open a window on."""


def display_problem(environ: dict | None = None, platform: str | None = None) -> str | None:
    """Why no window can be opened here, or ``None`` if a display looks available."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    if plat.startswith(("win", "darwin")):
        return None   # a desktop session always has a display
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return "no display available ($DISPLAY and $WAYLAND_DISPLAY are not set)"
    return None


def no_display_message(problem: str) -> str:
    return (f"cannot open the viewer window: {problem}.\n"
            f"Render to a PNG instead, e.g.:\n"
            f"  pointseg view FILE --screenshot view.png --mode panels")


def key_char(code: int) -> str | None:
    """Open3D GUI key code -> the character :data:`KEYS` uses (codes are ASCII for printable keys)."""
    if 32 <= code < 127:
        ch = chr(code).lower()
        return ch if ch in KEYS else None
    return None


def legend_entries_for(state: ViewerState) -> list[LegendEntry]:
    """Legend of the current mode: colour, name, point count, IoU when both labels exist."""
    out = []
    if state.mode == "error":
        wrong = int(np.count_nonzero(state.scan.label != state.scan.pred))
        out += [LegendEntry(CORRECT_COLOUR, f"correct {state.scan.num_points - wrong:,}"),
                LegendEntry(WRONG_COLOUR, f"wrong {wrong:,}")]
        return out
    for r in state.legend():
        t = f"{r.name}  {r.count:,}"
        if r.iou is not None:
            t += f"  IoU {100 * r.iou:.0f}%"
        out.append(LegendEntry(r.colour, t))
    return out


def run_window(state: ViewerState, size: tuple[int, int] = (1280, 800),
               point_size: float | None = None, backend: str = "gui") -> None:
    """Open the window and block until it is closed."""
    problem = display_problem()
    if problem:
        raise NoDisplayError(no_display_message(problem))
    if backend not in BACKENDS:
        raise ValueError(f"unknown window back-end '{backend}' (choose from {', '.join(BACKENDS)})")
    print(state.title())
    print(state.legend_text())
    print(f"keys: {KEY_HELP}")
    if backend == "legacy":
        _run_legacy(state, size, point_size)
    else:
        _run_gui(state, size, point_size)


def _flush(state: ViewerState) -> None:
    for m in state.messages:
        print(m)
    state.messages.clear()


def _initial_view(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = camera_frame(xyz, "iso", 1.6)
    d = f["eye"] - f["centre"]
    d /= np.linalg.norm(d)
    dist = max(f["hx"], f["hy"]) / np.tan(np.radians(30)) * 1.1
    return f["centre"], f["centre"] + d * dist, f["up"]


def _run_gui(state: ViewerState, size: tuple[int, int], point_size: float | None) -> None:
    import open3d as o3d
    import open3d.visualization.gui as gui
    import open3d.visualization.rendering as rendering

    app = gui.Application.instance
    app.initialize()
    win = app.create_window(state.title(), size[0], size[1])
    em = win.theme.font_size
    scene = gui.SceneWidget()
    scene.scene = rendering.Open3DScene(win.renderer)
    scene.scene.set_background([1.0, 1.0, 1.0, 1.0])
    scene.scene.show_axes(False)
    panel = gui.Vert(0.4 * em, gui.Margins(0.6 * em, 0.6 * em, 0.6 * em, 0.6 * em))
    mode_label = gui.Label("")
    legend = gui.ImageWidget()
    help_label = gui.Label(KEY_HELP.replace("   ", "\n"))
    for w in (mode_label, legend, help_label):
        panel.add_child(w)
    win.add_child(scene)
    win.add_child(panel)
    panel_px = int(20 * em)

    def on_layout(_ctx) -> None:
        r = win.content_rect
        pw = min(panel_px, r.width // 3)
        scene.frame = gui.Rect(r.x, r.y, r.width - pw, r.height)
        panel.frame = gui.Rect(r.get_right() - pw, r.y, pw, r.height)

    win.set_on_layout(on_layout)
    mat = rendering.MaterialRecord()
    mat.shader = "defaultUnlit"
    xyz = state.scan.xyz

    def refresh() -> None:
        idx = state.visible()
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz[idx].astype(np.float64)))
        pc.colors = o3d.utility.Vector3dVector(state.colours(idx).astype(np.float64) / 255.0)
        mat.point_size = float(point_size or auto_point_size(len(idx), size))
        if scene.scene.has_geometry("cloud"):
            scene.scene.remove_geometry("cloud")
        scene.scene.add_geometry("cloud", pc, mat)
        win.title = state.title()
        text = MODE_TITLES[state.mode]
        if state.miou is not None:
            text += f"\nOA {100 * state.accuracy:.1f}%  mIoU {100 * state.miou:.1f}%"
        if state.hide:
            text += "\nceiling/walls hidden"
        mode_label.text = text
        img = legend_strip(legend_entries_for(state), panel_px - int(1.2 * em), font_px=max(11, int(em * 0.8)))
        legend.update_image(o3d.geometry.Image(np.ascontiguousarray(img)))
        win.set_needs_layout()
        print(state.legend_text())

    refresh()
    centre, eye, up = _initial_view(xyz[state.subset.index])
    scene.setup_camera(60.0, scene.scene.bounding_box, centre.astype(np.float32))
    scene.look_at(centre.astype(np.float32), eye.astype(np.float32), up.astype(np.float32))

    def on_key(event) -> bool:
        if event.type != gui.KeyEvent.Type.DOWN:
            return False
        ch = key_char(int(event.key))
        if ch is None:
            return False
        if state.handle_key(ch):
            refresh()
        _flush(state)
        return True

    win.set_on_key(on_key)
    app.run()


def _run_legacy(state: ViewerState, size: tuple[int, int], point_size: float | None) -> None:
    import open3d as o3d

    vis = o3d.visualization.VisualizerWithKeyCallback()
    if not vis.create_window(state.title(), size[0], size[1]):
        raise NoDisplayError(no_display_message("Open3D could not create a window"))
    xyz = state.scan.xyz
    pc = o3d.geometry.PointCloud()

    def fill() -> None:
        idx = state.visible()
        pc.points = o3d.utility.Vector3dVector(xyz[idx].astype(np.float64))
        pc.colors = o3d.utility.Vector3dVector(state.colours(idx).astype(np.float64) / 255.0)

    fill()
    vis.add_geometry(pc)
    opt = vis.get_render_option()
    opt.point_size = float(point_size or auto_point_size(len(state.visible()), size))
    opt.background_color = np.ones(3)

    def make(ch: str):
        def cb(v) -> bool:
            changed = state.handle_key(ch)
            if changed:
                fill()
                v.update_geometry(pc)
                print(state.title())
                print(state.legend_text())
            _flush(state)
            return changed
        return cb

    for ch in KEYS:
        # GLFW reports letters by their upper-case code; these callbacks shadow the legacy
        # visualizer's own bindings for the same keys.
        vis.register_key_callback(ord(ch.upper()), make(ch))
    vis.run()
    vis.destroy_window()
