"""Training / validation datasets from a :class:`~pointseg.segmentation.config.DataConfig`.

Every source ends as the block-release layout read by :class:`~pointseg.data.s3dis_blocks.S3DISBlocks`:

* ``blocks``: an existing block release folder (``indoor3d_sem_seg_hdf5_data``);
* ``rooms``: prepared rooms (``pointseg prepare-s3dis``); blocks are generated next to them
  (``<root>_blocks_s<stride>_b<block_size>_p<num_points>``) on first use;
* ``synthetic``: ``root/raw`` (``pointseg synth``), ``root/prepared`` and ``root/blocks_s<stride>_b<block_size>_p<num_points>``
  are generated on first use from ``synth_rooms`` / ``synth_seed`` / ``synth_points``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..classes import ClassTable
from ..engine.distributed import world

if TYPE_CHECKING:
    from ..data.s3dis_blocks import S3DISBlocks
    from .config import DataConfig

SOURCES = ("blocks", "rooms", "synthetic", "scans")


def _blocks_from_prepared(prepared: Path, blocks: Path, cfg: "DataConfig", progress: bool) -> None:
    from ..data.block_release import make_blocks
    if not blocks.exists():
        make_blocks(prepared, blocks, stride=cfg.stride, block_size=cfg.block_size,
                    num_points=cfg.num_points, progress=progress)


def ensure_blocks(cfg: "DataConfig", progress: bool = True) -> Path:
    """Generate whatever the source needs (idempotent); returns the block release folder."""
    root = Path(cfg.root)
    # Every parameter that shapes the blocks is in the cache name, so another block size or
    # point count never reuses blocks cut for different settings.
    tag = f"s{cfg.stride:g}_b{cfg.block_size:g}_p{cfg.num_points}"
    if cfg.source == "blocks":
        return root
    if cfg.source == "rooms":
        blocks = root.parent / f"{root.name}_blocks_{tag}"
        _blocks_from_prepared(root, blocks, cfg, progress)
        return blocks
    if cfg.source == "synthetic":
        from ..data.s3dis_raw import prepare_s3dis
        from ..data.synth import write_synthetic
        raw, prepared, blocks = root / "raw", root / "prepared", root / f"blocks_{tag}"
        if not (prepared / "manifest.json").exists():
            if not raw.exists():
                write_synthetic(raw, rooms=cfg.synth_rooms, seed=cfg.synth_seed, points=cfg.synth_points,
                                progress=progress)
            prepare_s3dis(raw, prepared, workers=max(1, cfg.workers), progress=progress)
        _blocks_from_prepared(prepared, blocks, cfg, progress)
        return blocks
    raise ValueError(f"data.source must be one of {SOURCES}, got {cfg.source!r}")


def build_datasets(cfg: "DataConfig", progress: bool = True, cache: Path | None = None
                   ) -> tuple["S3DISBlocks", "S3DISBlocks", ClassTable]:
    """Training and validation blocks; ``cache``: where the ``scans`` source keeps its blocks."""
    import torch.distributed as dist
    from ..data.s3dis_blocks import S3DISBlocks

    if cfg.source == "scans":
        from .scan_source import scan_datasets
        return scan_datasets(cfg, cache or Path("runs") / "blocks")

    rank, world_size = world()
    if rank == 0:
        blocks = ensure_blocks(cfg, progress)
    if world_size > 1:
        dist.barrier()
        blocks = ensure_blocks(cfg, progress=False)
    kw = dict(test_area=cfg.test_area, val_fraction=cfg.val_fraction, seed=cfg.split_seed,
              num_points=cfg.num_points)
    train = S3DISBlocks(blocks, "train", **kw)
    val = S3DISBlocks(blocks, "val", **kw)
    return train, val, train.classes
