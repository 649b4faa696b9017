"""Compare models on one scan: Original | ground truth | one panel per model's prediction.

Each ``--compare`` source is a prediction file (``.npy`` labels, ``.txt`` one label per line, or
a labelled PLY from ``pointseg segment``) or a checkpoint (``.pt``), which is run through the
``predict`` callable the caller passes in (``pointseg view`` passes
``pointseg.segmentation.segment.predict_scan``: the viewer itself never runs a model). Each model panel
is titled with the model name and its mIoU against the scan's ground truth (mean over classes
present in either).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pointseg.classes import ClassTable
from pointseg.metrics import mean_iou
from pointseg.io.scans import Scan, check_labels, read_labels

from .render import (DEFAULT_MAX_POINTS, DEFAULT_SIZE, LegendEntry, _present, compose,
                     legend_entries, render_images, resolve_classes, save_png)


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# (checkpoint path, scan) -> (labels (N,), model name, the model's class table)
Predictor = Callable[[Path, Scan], tuple[np.ndarray, str, ClassTable]]


@dataclass
class Prediction:
    labels: np.ndarray
    name: str
    classes: ClassTable | None = None


def load_prediction(source: str | Path, scan: Scan, predict: Predictor | None = None) -> Prediction:
    """Labels for ``scan`` from a prediction file, or from a checkpoint through ``predict``."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if predict is None:
            raise ValueError(f"{path}: a checkpoint in --compare needs a predictor to run it "
                             "(render_compare(..., predict=pointseg.segmentation.segment.predict_scan))")
        labels, name, classes = predict(path, scan)
        labels = check_labels(np.asarray(labels), scan.num_points, str(path), classes, "prediction")
        return Prediction(labels, str(name), classes)
    labels, table, model = read_labels(path, scan.num_points)
    return Prediction(labels, model or path.stem, table)


def render_compare(scan: Scan, sources: Sequence[str | Path], out_path: str | Path, *,
                   classes: ClassTable | None = None, palette: str | Path | None = None,
                   size: tuple[int, int] = DEFAULT_SIZE, view: str = "iso",
                   max_points: int = DEFAULT_MAX_POINTS, hide="auto",
                   point_size: float | None = None, overwrite: bool = False,
                   predict: Predictor | None = None) -> Path:
    """Original | ground truth | one panel per prediction, titled ``NAME  mIoU x%``; checkpoints
    among ``sources`` are run through ``predict``."""
    if not sources:
        raise ValueError("--compare needs at least one prediction file or checkpoint")
    out = Path(out_path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    preds = [load_prediction(s, scan, predict) for s in sources]
    if classes is None and scan.classes is None:
        classes = next((p.classes for p in preds if p.classes is not None), None)
    table = resolve_classes(scan, classes, palette)
    for p, s in zip(preds, sources):
        if p.labels.size and p.labels.max() >= table.num_classes:
            raise ValueError(f"{s}: labels go up to {int(p.labels.max())}, outside the class table "
                             f"'{table.name}' (0..{table.num_classes - 1})")
    modes = ["rgb"] + (["gt"] if scan.label is not None else [])
    titles = ["Original"] + (["Ground truth"] if scan.label is not None else [])
    for p in preds:
        if scan.label is not None:
            titles.append(f"{p.name}  mIoU {100 * mean_iou(scan.label, p.labels, table.num_classes):.1f}%")
        else:
            titles.append(f"{p.name} (no ground truth)")
    images = render_images(scan, table, modes, size, view, max_points, hide, point_size,
                           extra=[p.labels for p in preds])
    entries: list[LegendEntry] = legend_entries(table, _present(table, scan.label, *[p.labels for p in preds]))
    return save_png(compose(images, titles, entries), out, overwrite, table)
