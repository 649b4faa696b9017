"""A user's own labelled scans as training data (``data.source: scans``).

Files are given as paths or globs (``data.train`` / ``data.val``, split by file), read with
:func:`pointseg.io.scans.read_scan` (any format it reads), their named label field
(``data.label_field``) mapped to classes by a :class:`~pointseg.data.class_map.ClassMap`
(``data.class_map``). :func:`label_report` says what was found before anything is trained;
:func:`write_scan_release` stores the blocks cut from them in the block-release layout that
:class:`~pointseg.data.s3dis_blocks.S3DISBlocks` reads (training files as rooms of Area 1,
validation files as rooms of Area 2). How a scan becomes blocks (frame, subsampling, block recipe)
is the engine's: the same as ``segment`` (:mod:`pointseg.segmentation.scan_source`).
"""
from __future__ import annotations

import glob
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_dir
from ..classes import ClassTable
from ..io.scans import Scan, read_scan
from .class_map import IGNORE, ClassMap, whole_numbers

TRAIN_AREA, VAL_AREA = 1, 2      # the block release's room names carry an area; splits are by file


def expand_files(patterns: Sequence[str], key: str) -> list[Path]:
    """The files of ``patterns`` (paths or globs, relative to the working directory), in order,
    each once; a pattern that matches no file is an error naming ``key`` and the pattern."""
    out: list[Path] = []
    for pat in patterns:
        pat = str(pat)
        hits = sorted(glob.glob(pat, recursive=True)) if glob.has_magic(pat) else ([pat] if Path(pat).exists() else [])
        hits = [h for h in hits if Path(h).is_file() or not glob.has_magic(pat)]
        if not hits:
            raise FileNotFoundError(f"config {key}: {pat!r} matches no file")
        for h in hits:
            p = Path(h)
            if p not in out:
                out.append(p)
    return out


@dataclass
class LabelledScan:
    """One scan with its classes: ``labels`` int64 per point (:data:`IGNORE` for ignored values),
    ``values`` the label values found and their counts."""

    scan: Scan
    labels: np.ndarray
    values: dict[int, int]

    @property
    def name(self) -> str:
        return self.scan.path.name if self.scan.path is not None else "scan"

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Points per class, then ignored points (``num_classes + 1`` entries)."""
        return np.bincount(np.where(self.labels == IGNORE, num_classes, self.labels), minlength=num_classes + 1)


def read_labelled(path: Path, label_field: str, cmap: ClassMap) -> LabelledScan:
    """Read ``path`` and map its ``label_field`` through ``cmap``; a missing field (listing the
    fields the file has), non-integral values or values no class maps are one-line errors."""
    with warnings.catch_warnings():
        # the reader's NaN warning: the report counts dropped points itself
        warnings.simplefilter("ignore", RuntimeWarning)
        scan = read_scan(path, label_field=label_field)
    if scan.raw_label is None:
        have = ", ".join(scan.field_names) if scan.field_names else "none"
        raise ValueError(f"{path}: has no label field {label_field!r} (its per-point fields: {have})")
    where = f"{path}: label field {label_field!r}"
    values = whole_numbers(scan.raw_label, where)
    labels = cmap.apply(values, where)
    vals, counts = np.unique(values, return_counts=True)
    return LabelledScan(scan, labels, dict(zip(vals.tolist(), counts.tolist())))


def _values_text(values: dict[int, int], most: int = 10) -> str:
    items = list(values.items())
    text = ", ".join(f"{v}: {c:,}" for v, c in items[:most])
    return text + (f", ... ({len(items)} distinct values)" if len(items) > most else "")


def label_report(train: Sequence[LabelledScan], val: Sequence[LabelledScan], cmap: ClassMap
                 ) -> tuple[list[str], dict[str, Any]]:
    """What was found in the labels, per file and per split: the lines to print (classes without
    points flagged) and the same as JSON-ready data."""
    names = list(cmap.table.names) + ["ignored"]
    k = cmap.num_classes
    lines = [f"class map {cmap.source}: {cmap.describe()}"]
    data: dict[str, Any] = {"class_map": cmap.to_dict(), "splits": {}}
    for split, items in (("train", train), ("val", val)):
        total = np.zeros(k + 1, dtype=np.int64)
        files = []
        for it in items:
            counts = it.class_counts(k)
            total += counts
            dropped = f", {it.scan.dropped:,} NaN points dropped" if it.scan.dropped else ""
            lines.append(f"  {split} {it.name}: {it.scan.num_points:,} points{dropped}; values {_values_text(it.values)}"
                         f" -> " + ", ".join(f"{n} {c:,}" for n, c in zip(names, counts) if c or n != "ignored"))
            files.append({"file": str(it.scan.path), "points": it.scan.num_points, "dropped": it.scan.dropped,
                          "values": {str(v): c for v, c in it.values.items()},
                          "classes": {n: int(c) for n, c in zip(names, counts)}})
        if items:
            lines.append(f"  {split} total ({len(items)} file{'s' if len(items) != 1 else ''}): "
                         + ", ".join(f"{n} {c:,}" for n, c in zip(names, total)))
            empty = [n for n, c in zip(names[:k], total[:k]) if c == 0]
            if empty:
                lines.append(f"  warning: no {split} points for class{'es' if len(empty) > 1 else ''} "
                             + ", ".join(repr(n) for n in empty))
        data["splits"][split] = {"files": files, "classes": {n: int(c) for n, c in zip(names, total)}}
    return lines, data


def write_scan_release(out_dir: Path, rooms: Sequence[tuple[str, np.ndarray, np.ndarray]],
                       classes: ClassTable, summary: dict[str, Any]) -> None:
    """Write ``rooms`` (room name ``Area_<k>_<name>``, blocks ``(B, P, 9)``, labels ``(B, P)`` with
    :data:`IGNORE`) as a block release folder, atomically; ``summary`` goes to ``blocks.json``."""
    import h5py
    names = [n for n, b, _ in rooms for _ in range(len(b))]
    if not names:
        raise ValueError("no scan gave a block: every block column holds too few points")
    with atomic_dir(out_dir, overwrite=True) as tmp:
        with h5py.File(tmp / "ply_data_all_0.h5", "w") as f:
            f.create_dataset("data", data=np.concatenate([b for _, b, _ in rooms if len(b)]), dtype="float32")
            f.create_dataset("label", data=np.concatenate([y for _, b, y in rooms if len(b)]), dtype="uint8")
            f.attrs["classes"] = json.dumps(classes.to_dict())
        (tmp / "all_files.txt").write_text(f"{out_dir.name}/ply_data_all_0.h5\n")
        (tmp / "room_filelist.txt").write_text("".join(n + "\n" for n in names))
        (tmp / "blocks.json").write_text(json.dumps({**summary, "num_blocks": len(names)}, indent=1))
