"""``pointseg view FILE``: look at a scan or a segmentation, in a window, rendered to PNG, or as one
self-contained HTML page (``--html``) that any browser opens offline."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pointseg.classes import ClassTable
    from pointseg.io.scans import Scan
    from pointseg.viewer.html import HtmlPage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="a scan (.ply .pcd .xyz .txt .npy .las .laz), a 'segment' output "
                                "PLY, or a prepared S3DIS room (.npz)")
    p.add_argument("--labels", metavar="PRED",
                   help="predicted labels for FILE (.npy, .txt, or a labelled .ply)")
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="render headless to this PNG instead of opening a window")
    p.add_argument("--html", metavar="OUT.html",
                   help="write one self-contained HTML page (three.js inlined, no network needed) to turn "
                        "the cloud around in a browser, with keys 1-4 and a legend")
    p.add_argument("--mode", default="auto", choices=["auto", "rgb", "pred", "gt", "error", "panels"],
                   help="colouring; auto = panels for --screenshot, else prediction > ground truth > RGB "
                        "(for --html: the page's first colouring)")
    p.add_argument("--size", default=None, metavar="WxH",
                   help="size of one rendered view (default 640x480; window default 1280x800)")
    p.add_argument("--view", default="iso", choices=["top", "iso", "front", "side"],
                   help="camera direction of --screenshot (z is up)")
    p.add_argument("--compare", nargs="+", metavar="PRED_OR_CKPT",
                   help="render Original | ground truth | one panel per prediction file or checkpoint")
    p.add_argument("--palette", metavar="FILE",
                   help="class names + colours (JSON/YAML with 'names' and 'palette') overriding the file's")
    p.add_argument("--max-points", type=int, default=None, metavar="N",
                   help="voxel-downsample larger clouds for display, keeping every class "
                        "(default 1,000,000 in the window, 500,000 for --screenshot, 2,000,000 for --html)")
    p.add_argument("--hide", default="auto", metavar="CLASSES",
                   help="classes left out of --screenshot (hidden at first in --html): auto (ceiling in "
                        "top/iso views and in the page), none, or names such as ceiling,wall")
    p.add_argument("--point-size", type=float, default=None, help="point size in pixels (default: from density)")
    p.add_argument("--window", default="gui", choices=["gui", "legacy"],
                   help="window back-end: Open3D's GUI (legend panel) or the legacy visualizer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --screenshot or --html file")
    p.add_argument("--verbose", action="store_true",
                   help="also show the rendering engine's start-up lines (hidden by default)")


MIN_MAX_POINTS = 100
MAX_POINT_SIZE = 100.0


def check_display_args(args: argparse.Namespace) -> None:
    """Refuse --max-points and --point-size values that cannot make a picture, naming the option."""
    import math
    if args.max_points is not None and args.max_points < MIN_MAX_POINTS:
        raise ValueError(f"--max-points must be at least {MIN_MAX_POINTS}, got {args.max_points}")
    ps = args.point_size
    if ps is not None and not (math.isfinite(ps) and 0 < ps <= MAX_POINT_SIZE):
        raise ValueError(f"--point-size must be a number of pixels in (0, {MAX_POINT_SIZE:g}], got {ps}")


def write_scan_html(scan: Scan, classes: ClassTable, args: argparse.Namespace) -> HtmlPage:
    """``--html``: the page for ``scan`` with the view options (first colouring, hidden classes,
    point size, the most points shown)."""
    from pointseg.viewer.html import HTML_MAX_POINTS, write_html
    from pointseg.viewer.render import hidden_ids

    hide = [classes.names[i] for i in hidden_ids(classes, args.hide, "iso")]
    facts = {}
    if scan.classes is None and args.palette is None and (scan.pred is not None or scan.label is not None):
        facts["class table"] = f"{classes.name} (the file names none)"
    if scan.dropped:
        facts["dropped"] = f"{scan.dropped:,} points with NaN/inf coordinates"
    return write_html(args.html, scan.xyz, scan.rgb, scan.pred, scan.label, classes,
                      title=f"pointseg — {scan.path.name if scan.path else args.file}", model=scan.model,
                      scan=str(args.file), summary=facts, mode=args.mode, hide=hide,
                      point_size=args.point_size, max_points=args.max_points or HTML_MAX_POINTS,
                      overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from pointseg.io.scans import read_labels, read_scan
    from pointseg.viewer.render import DEFAULT_MAX_POINTS, parse_size, resolve_classes

    check_display_args(args)
    if args.html and (args.compare or args.mode == "panels"):
        raise ValueError("--html writes one page that switches colourings itself: leave out "
                         f"{'--compare' if args.compare else '--mode panels'}")
    if args.compare and not args.screenshot:
        raise ValueError("--compare renders to a file: add --screenshot OUT.png")
    if not args.screenshot and not args.html:
        from pointseg.viewer.window import display_problem, no_display_message
        problem = display_problem()
        if problem:
            print(f"pointseg view: {no_display_message(problem)}", file=sys.stderr)
            return 2
    size = parse_size(args.size) if args.size else None
    max_points = args.max_points or (DEFAULT_MAX_POINTS if args.screenshot else 1_000_000)

    scan = read_scan(args.file)
    if scan.dropped:
        print(f"{args.file}: dropped {scan.dropped} points with NaN/inf coordinates", file=sys.stderr)
    if args.labels:
        n_file = len(scan.kept) if scan.kept is not None else scan.num_points
        labels, table, model = read_labels(args.labels, None)
        if len(labels) != n_file:
            raise ValueError(f"{args.labels}: {len(labels)} labels but {args.file} has {n_file} points")
        if scan.kept is not None:
            labels = labels[scan.kept]
        scan = replace(scan, pred=labels, classes=scan.classes or table, model=model or scan.model)
    # The compare path resolves its own table: a checkpoint's class table may win there.
    classes = resolve_classes(scan, None, args.palette) if not args.compare else None

    if args.html:
        page = write_scan_html(scan, classes, args)
        shown = (f"{page.shown:,} of {page.points:,} points, voxel-downsampled" if page.voxel is not None
                 else f"{page.points:,} points")
        print(f"wrote {page.path} ({page.bytes / 1e6:.1f} MB, {shown})")
        if not args.screenshot:
            return 0

    if args.screenshot:
        if args.compare:
            from pointseg.segmentation.segment import predict_scan
            from pointseg.viewer.compare import render_compare
            if args.mode not in ("auto", "panels"):
                raise ValueError("--compare always renders panels; leave out --mode")
            out = render_compare(scan, args.compare, args.screenshot, palette=args.palette,
                                 size=size or (640, 480), view=args.view, max_points=max_points,
                                 hide=args.hide, point_size=args.point_size, overwrite=args.overwrite,
                                 predict=predict_scan)
        else:
            from pointseg.viewer.render import render_png
            mode = "panels" if args.mode == "auto" else args.mode
            out = render_png(scan, args.screenshot, mode=mode, classes=classes,
                             size=size or (640, 480), view=args.view, max_points=max_points,
                             hide=args.hide, point_size=args.point_size, overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0

    from pointseg.viewer.state import ViewerState
    from pointseg.viewer.window import NoDisplayError, run_window
    if args.mode == "panels":
        raise ValueError("--mode panels is for --screenshot; the window switches modes with keys 1-4")
    state = ViewerState(scan, classes, mode=args.mode, max_points=max_points)
    try:
        run_window(state, size or (1280, 800), args.point_size, backend=args.window)
    except NoDisplayError as e:
        print(f"pointseg view: {e}", file=sys.stderr)
        return 2
    return 0
