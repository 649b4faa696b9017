"""The viewer: colour a scan by RGB, prediction, ground truth or error, in an Open3D window
(:mod:`viewer.window`), headless to PNG (:mod:`viewer.render`, :mod:`viewer.compare`), or as one
self-contained HTML page that a browser turns around (:mod:`viewer.html`, three.js inlined).

``render_png`` and ``write_html`` are what ``pointseg segment`` calls to write its picture and page.
"""
from .html import write_html  # noqa: F401
from .render import render_png  # noqa: F401
from .state import MODES, ViewerState  # noqa: F401
