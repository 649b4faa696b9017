"""Segmentation metrics from a confusion matrix (rows: ground truth, columns: prediction).

OA = trace / total; class accuracy = diag / row sum; IoU = diag / (row + col - diag).
Classes absent from both ground truth and prediction have an undefined IoU and are left out
of the means (NaN in the per-class list); 6-fold results pool the six matrices before dividing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .classes import NO_LABEL


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows ground truth, columns prediction; points whose ground truth is
    ``NO_LABEL`` are not counted."""
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} labels but prediction has {pred.size}")
    if gt.size and gt.min() == NO_LABEL:
        scored = gt != NO_LABEL
        gt, pred = gt[scored], pred[scored]
    for name, a in (("ground truth", gt), ("prediction", pred)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} labels span {a.min()}..{a.max()}, outside 0..{num_classes - 1}")
    return np.bincount(gt * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU per class; NaN for classes absent from both ground truth and prediction."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean IoU over the classes present in ground truth or prediction (NaN when there are none)."""
    iou = iou_per_class(confusion_matrix(gt, pred, num_classes))
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@dataclass
class SegMetrics:
    confusion: np.ndarray
    classes: tuple[str, ...]

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def oa(self) -> float:
        return float(np.trace(self.confusion) / max(1, self.total))

    @property
    def class_acc(self) -> np.ndarray:
        rows = self.confusion.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(rows > 0, np.diag(self.confusion) / rows, np.nan)

    @property
    def iou(self) -> np.ndarray:
        return iou_per_class(self.confusion)

    @property
    def macc(self) -> float:
        return float(np.nanmean(self.class_acc)) if np.isfinite(self.class_acc).any() else float("nan")

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou)) if np.isfinite(self.iou).any() else float("nan")

    def to_dict(self) -> dict:
        def clean(v: float) -> float | None:
            return None if not np.isfinite(v) else float(v)
        return {
            "oa": clean(self.oa), "macc": clean(self.macc), "miou": clean(self.miou),
            "iou": {c: clean(v) for c, v in zip(self.classes, self.iou)},
            "class_acc": {c: clean(v) for c, v in zip(self.classes, self.class_acc)},
            "points": self.total,
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }

    def table(self) -> str:
        lines = [f"OA {100 * self.oa:6.2f}   mAcc {100 * self.macc:6.2f}   mIoU {100 * self.miou:6.2f}   "
                 f"({self.total:,} points)",
                 f"{'class':<12}{'IoU':>8}{'acc':>8}{'points':>12}"]
        rows = self.confusion.sum(1)
        for c, iou, acc, n in zip(self.classes, self.iou, self.class_acc, rows):
            f = lambda v: "     -" if not np.isfinite(v) else f"{100 * v:6.2f}"  # noqa: E731
            lines.append(f"{c:<12}{f(iou):>8}{f(acc):>8}{int(n):>12,}")
        return "\n".join(lines)


def pool(metrics: Sequence[SegMetrics]) -> SegMetrics:
    """Pool confusion matrices (6-fold cross-validation reports the pooled matrix)."""
    if not metrics:
        raise ValueError("nothing to pool")
    return SegMetrics(sum(m.confusion for m in metrics), metrics[0].classes)
