"""Writing the S3DIS HDF5 block release (``indoor3d_sem_seg_hdf5_data``) from prepared rooms:
the layout that :class:`~pointseg.data.s3dis_blocks.S3DISBlocks` (and PyG's ``S3DIS``) read, each
room cut by :func:`~pointseg.data.block_gen.room_to_blocks`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from ..atomic import atomic_dir
from ..classes import ClassTable
from .block_gen import room_to_blocks
from .prepared import PreparedRooms
from .recipe import S3DIS_CHANNELS


class _H5Writer:
    """Buffers blocks and writes ``ply_data_all_{k}.h5`` files of ``per_file`` blocks each."""

    def __init__(self, folder: Path, per_file: int, classes: ClassTable) -> None:
        self.folder, self.per_file, self.classes = folder, per_file, classes
        self.data: list[np.ndarray] = []
        self.label: list[np.ndarray] = []
        self.count = 0
        self.files: list[str] = []

    def add(self, blocks: np.ndarray, labels: np.ndarray) -> None:
        self.data.append(blocks)
        self.label.append(labels)
        self.count += len(blocks)
        while self.count >= self.per_file:
            self._flush(self.per_file)

    def _flush(self, n: int) -> None:
        import h5py
        data = np.concatenate(self.data)
        label = np.concatenate(self.label)
        name = f"ply_data_all_{len(self.files)}.h5"
        with h5py.File(self.folder / name, "w") as f:
            f.create_dataset("data", data=data[:n], dtype="float32")
            f.create_dataset("label", data=label[:n], dtype="uint8")
            # Extra attributes: the class table travels with the data (readers ignore them).
            f.attrs["classes"] = json.dumps(self.classes.to_dict())
            f.attrs["channels"] = json.dumps(list(S3DIS_CHANNELS))
        self.files.append(name)
        self.data, self.label = [data[n:]], [label[n:]]
        self.count -= n

    def close(self) -> None:
        if self.count:
            self._flush(self.count)


def make_blocks(prepared_dir: str | Path, out_dir: str | Path, stride: float = 0.5,
                block_size: float = 1.0, num_points: int = 4096, min_points: int = 100,
                areas: Sequence[int] | None = None, seed: int = 0, blocks_per_file: int = 1000,
                sampling: Literal["release", "unique"] = "release", overwrite: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """Write the block release layout from prepared rooms; returns (and writes) ``blocks.json``.

    ``OUT_DIR`` receives ``ply_data_all_{k}.h5`` (``data`` float32 ``(n, num_points, 9)``, ``label``
    uint8 ``(n, num_points)``), ``all_files.txt`` (``<OUT_DIR name>/ply_data_all_k.h5`` per line, as
    the release), ``room_filelist.txt`` (``Area_k_<room>`` per block) and ``blocks.json``. The whole
    folder is built under a temporary name and renamed at the end. Room ``i`` draws its samples
    from ``default_rng([seed, i])``, so the output is deterministic.
    """
    from tqdm import tqdm

    rooms = PreparedRooms(prepared_dir)
    entries = rooms.entries(areas)
    if not entries:
        raise ValueError(f"{prepared_dir}: no prepared rooms for areas {list(areas) if areas else 'all'}")
    if blocks_per_file < 1:
        raise ValueError(f"blocks_per_file must be >= 1, got {blocks_per_file}")
    out_dir = Path(out_dir)
    summary: dict[str, Any] = {
        "format": "indoor3d_sem_seg_hdf5_data", "generator": "pointseg make-blocks",
        "source": str(Path(prepared_dir)), "block_size": block_size, "stride": stride,
        "num_points": num_points, "min_points": min_points, "sampling": sampling, "seed": seed,
        "channels": list(S3DIS_CHANNELS), "classes": rooms.classes.to_dict(), "rooms": [],
    }
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writer = _H5Writer(tmp, blocks_per_file, rooms.classes)
        room_names: list[str] = []
        for i, entry in enumerate(tqdm(entries, desc="make-blocks", unit="room", disable=not progress)):
            pr = rooms.load(entry)
            if pr.room.label is None:
                raise ValueError(f"{entry.path}: prepared room has no labels; cannot make training blocks")
            blocks, idx = room_to_blocks(pr.room.xyz, pr.room.rgb, block_size, stride, num_points,
                                         min_points, np.random.default_rng([seed, i]), sampling,
                                         norm=pr.norm)
            writer.add(blocks, pr.room.label[idx])
            room_names += [entry.full_name] * len(blocks)
            summary["rooms"].append({"room": entry.full_name, "num_points": pr.room.num_points,
                                     "blocks": len(blocks), **pr.norm.to_dict()})
        writer.close()
        if not writer.files:
            raise ValueError(f"{prepared_dir}: no room has a column with >= {min_points} points; no blocks")
        (tmp / "all_files.txt").write_text("".join(f"{out_dir.name}/{f}\n" for f in writer.files))
        (tmp / "room_filelist.txt").write_text("".join(n + "\n" for n in room_names))
        summary["num_blocks"] = len(room_names)
        summary["files"] = writer.files
        (tmp / "blocks.json").write_text(json.dumps(summary, indent=1))
    return summary
