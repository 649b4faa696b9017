"""The ``scans`` data source: a user's labelled scans become training blocks the way ``segment``
will see them (``segment`` scores a labelled scan through the same class map:
:func:`pointseg.data.class_map.scan_ground_truth`).

Every scan goes through what :func:`pointseg.segmentation.segment.segment_scan` does before the
network — the frame decision (:func:`pointseg.segmentation.frame.resolve_frame` with the file's hints:
a camera view such as the Kinect scans of ``shared/real_scans`` is levelled on its supporting
plane), the default colour for scans without colour, the automatic voxel subsampling of dense
scans — and is then cut with the config's block recipe (``data.block_size``, ``num_points``,
``stride``), which the checkpoint records for ``segment``. So a model is trained on exactly the
input it is later run on. A voxel's points take the label of its representative point, as the
network sees it.

Blocks are cached under the run folder, keyed by everything that shapes them (the files' paths,
sizes and modification times, label field, class map, recipe, seed); a resumed run finds the same.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..data.class_map import ClassMap
from ..data.labelled_scans import (TRAIN_AREA, VAL_AREA, LabelledScan, expand_files, label_report,
                                   read_labelled, write_scan_release)

if TYPE_CHECKING:
    from ..classes import ClassTable
    from ..data.s3dis_blocks import S3DISBlocks
    from .config import DataConfig

MIN_POINTS = 100      # a block column with fewer points is left out (as for S3DIS rooms)


def _key(cfg: "DataConfig", cmap: ClassMap, files: dict[str, list[Path]]) -> str:
    stats = {split: [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in ps]
             for split, ps in files.items()}
    what = {"files": stats, "label_field": cfg.label_field, "class_map": cmap.to_dict(),
            "recipe": cfg.recipe.to_spec(), "seed": cfg.split_seed, "min_points": MIN_POINTS, "version": 2}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def scan_blocks(item: LabelledScan, cfg: "DataConfig", rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Blocks ``(B, P, 9)`` and their labels ``(B, P)`` uint8 of one scan, with the frame and
    subsampling lines ``segment`` would print for it."""
    from ..data.block_gen import room_to_blocks
    from .segment import model_input_colours, network_input
    scan = item.scan
    rgb = model_input_colours(scan.rgb, scan.num_points, cfg.no_colour)
    net = network_input(scan, rgb, cfg.block_size, cfg.num_points)
    labels = item.labels
    if net.back is not None:
        # the network's row r is the first point of voxel r (voxel_subsample); it keeps that label
        labels = labels[np.unique(net.back, return_index=True)[1]]
    blocks, idx = room_to_blocks(net.xyz, net.rgb, cfg.block_size, min(cfg.stride, cfg.block_size),
                                 cfg.num_points, MIN_POINTS, rng)
    return blocks, labels[idx].astype(np.uint8), net.lines


def ensure_scan_blocks(cfg: "DataConfig", cache: Path, say: Callable[[str], None] | None = None
                       ) -> tuple[Path, ClassMap]:
    """Read and check every file (class map, label field, values), say what was found, and cut
    the blocks unless the cache holds them; returns the block release folder and the class map.
    Every check runs before anything is written."""
    say = say or (lambda line: None)
    cmap = ClassMap.load(cfg.class_map)
    files = {"train": expand_files(cfg.train, "data.train"),
             "val": expand_files(cfg.val, "data.val") if cfg.val else []}
    both = sorted(set(p.resolve() for p in files["train"]) & set(p.resolve() for p in files["val"]))
    if both:
        raise ValueError(f"config data.train and data.val both hold {both[0]}: a file is either trained "
                         "on or held out")
    items = {split: [read_labelled(p, cfg.label_field, cmap) for p in ps] for split, ps in files.items()}
    lines, report = label_report(items["train"], items["val"], cmap)
    for line in lines:
        say(line)
    out = cache / f"scans_{_key(cfg, cmap, files)}"
    if (out / "blocks.json").is_file():
        say(f"blocks: {out} (cached)")
        return out, cmap
    rooms: list[tuple[str, np.ndarray, np.ndarray]] = []
    for area, split in ((TRAIN_AREA, "train"), (VAL_AREA, "val")):
        for i, item in enumerate(items[split]):
            blocks, labels, frame = scan_blocks(item, cfg, np.random.default_rng([cfg.split_seed, area, i]))
            say(f"{split} {item.name}: {len(blocks)} blocks")
            for line in frame:
                say(f"  {line}")
            stem = re.sub(r"\s+", "_", item.scan.path.stem if item.scan.path else "scan")
            rooms.append((f"Area_{area}_{i:03d}_{stem}", blocks, labels))
    summary = {"format": "indoor3d_sem_seg_hdf5_data", "generator": "pointseg train (data.source: scans)",
               "block_size": cfg.block_size, "stride": cfg.stride, "num_points": cfg.num_points,
               "label_field": cfg.label_field, "report": report}
    write_scan_release(out, rooms, cmap.table, summary)
    say(f"blocks: {out}")
    return out, cmap


def scan_datasets(cfg: "DataConfig", cache: Path
                  ) -> tuple["S3DISBlocks", "S3DISBlocks", "ClassTable"]:
    """Training and validation blocks of the scans (rank 0 cuts them, the others wait and read)."""
    import torch.distributed as dist

    from ..data.s3dis_blocks import BlockRelease, S3DISBlocks
    from ..engine.distributed import world
    rank, world_size = world()
    # what was found in the labels is printed even without progress bars: it is read before training
    say = lambda line: print(f"[train] {line}")      # noqa: E731
    if rank == 0:
        blocks, cmap = ensure_scan_blocks(cfg, cache, say)
    if world_size > 1:
        dist.barrier()
        blocks, cmap = ensure_scan_blocks(cfg, cache)
    # ignored points carry IGNORE (outside the class table) on purpose: the loss and the
    # validation metrics leave them out
    release = BlockRelease(blocks, cmap.table, check_labels=False)
    kw = dict(test_area=VAL_AREA, val_fraction=0.0, seed=cfg.split_seed, num_points=cfg.num_points)
    return S3DISBlocks(release, "train", **kw), S3DISBlocks(release, "test", **kw), cmap.table
