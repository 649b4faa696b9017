"""The Open3D viewer: colour a scan by RGB, prediction, ground truth or error, in a window
(:mod:`viewer.window`) or headless to PNG (:mod:`viewer.render`, :mod:`viewer.compare`).

``render_png`` is what ``pointseg segment`` calls to write its picture.
"""
from .render import render_png  # noqa: F401
from .state import MODES, ViewerState  # noqa: F401
