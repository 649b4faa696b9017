"""``pointseg evaluate``: full-resolution metrics on every original point of the test rooms.

Also reports block-level metrics (the points of the stride-1 m test blocks, as the reference
code scored, for comparison with its 52.1 Area-5 mIoU). 6-fold results pool the confusion
matrices of the six per-area JSON reports (``pointseg evaluate --pool a1.json ... a6.json``).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..classes import ClassTable
from ..atomic import atomic_write_text
from .checkpoint import load_model, sliding_for
from .inference import SlidingConfig, block_level_confusion, predict_points
from ..metrics import SegMetrics, confusion_matrix, pool


def evaluate_rooms(ckpt_path: str | Path, data: str | Path, area: int = 5, device: str = "auto",
                   sliding: SlidingConfig | None = None, block_level: bool = True,
                   progress: bool = True, rooms: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on the prepared rooms of one area; returns the JSON report."""
    from tqdm import tqdm
    from ..data.prepared import PreparedRooms

    prepared = PreparedRooms(data)
    loaded = load_model(ckpt_path, device, expect_classes=prepared.classes)
    model, classes, ckpt, dev = loaded.network, loaded.classes, loaded.ckpt, loaded.device
    sliding = sliding_for(ckpt, sliding)
    k = classes.num_classes
    full = np.zeros((k, k), dtype=np.int64)
    blocks = np.zeros((k, k), dtype=np.int64)
    per_room: dict[str, Any] = {}
    # Entries are chosen first and rooms loaded one at a time in the loop: memory holds one room.
    entries = [e for e in prepared.entries([area]) if not rooms or e.name in rooms or e.full_name in rooms]
    if not entries:
        raise ValueError(f"{data}: no prepared rooms in Area {area}")
    t0 = time.perf_counter()
    n_points = 0
    for entry in tqdm(entries, desc=f"Area {area}", unit="room", disable=not progress):
        pr = prepared.load(entry)
        room = pr.room
        if room.label is None:
            raise ValueError(f"{pr.entry.path}: room has no labels to evaluate against")
        pred, stats = predict_points(model, room.xyz, room.rgb, k, dev, sliding)
        cm = confusion_matrix(room.label, pred, k)
        full += cm
        n_points += room.num_points
        m = SegMetrics(cm, classes.names)
        per_room[pr.entry.full_name] = {"points": room.num_points, "oa": m.oa, "miou": m.miou, **stats}
        if block_level:
            blocks += block_level_confusion(model, room.xyz, room.rgb, room.label, k, dev, sliding.batch_size,
                                            num_points=sliding.num_points, block_size=sliding.block_size)
    seconds = time.perf_counter() - t0
    report = {
        "checkpoint": str(ckpt_path), "preset": ckpt["preset"], "data": str(data), "area": area,
        "classes": classes.to_dict(), "sliding": sliding.__dict__, "seconds": seconds,
        "points": n_points, "full_resolution": SegMetrics(full, classes.names).to_dict(),
        "rooms": per_room,
    }
    if block_level:
        report["block_level"] = SegMetrics(blocks, classes.names).to_dict()
    return report


def pool_reports(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Pool per-area JSON reports (6-fold): sums of confusion matrices, then the metrics."""
    reports = []
    for p in paths:
        try:
            reports.append(json.loads(Path(p).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not a readable evaluation report: {e}") from None
    classes = ClassTable.from_dict(reports[0]["classes"])
    out: dict[str, Any] = {"pooled": [str(p) for p in paths], "areas": [r.get("area") for r in reports],
                           "classes": classes.to_dict()}
    for key in ("full_resolution", "block_level"):
        if all(key in r for r in reports):
            ms = []
            for p, r in zip(paths, reports):
                if r["classes"]["names"] != list(classes.names):
                    raise ValueError(f"{p}: class table differs from {paths[0]}")
                ms.append(SegMetrics(np.asarray(r[key]["confusion"], dtype=np.int64), classes.names))
            out[key] = pool(ms).to_dict()
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = []
    names = tuple(report["classes"]["names"])
    for key, title in (("full_resolution", "every original point"), ("block_level", "block level (reference scoring)")):
        if key in report:
            m = SegMetrics(np.asarray(report[key]["confusion"], dtype=np.int64), names)
            lines += [f"== {title}", m.table(), ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=1))
