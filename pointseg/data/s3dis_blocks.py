"""The S3DIS block release (``indoor3d_sem_seg_hdf5_data``), read lazily.

Layout (design notes §3): ``ply_data_all_{k}.h5`` each with ``data`` float32 ``(n, 4096, 9)`` and
``label`` uint8 ``(n, 4096)``; ``all_files.txt`` lists the files (the release writes them as
``indoor3d_sem_seg_hdf5_data/ply_data_all_k.h5``); ``room_filelist.txt`` names the room of every
block, in block order (``Area_1_conferenceRoom_1``). ``pointseg make-blocks`` writes the same
layout from prepared rooms.

Only shapes and labels are read when the release is opened (labels are 1/36 of the data); block
data is read one block at a time from the HDF5 files, which stay open per process.

Splits: the test area (default 5; 6-fold = each area in turn) is held out; a validation split of
*whole rooms* is taken from the training areas (default about 10 %, deterministic for a seed),
so the checkpoint is never chosen on the test area.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..classes import S3DIS, ClassTable
from .recipe import S3DIS_CHANNELS

ROOM_RE = re.compile(r"^Area_(\d+)_(.+)$")
AREAS = (1, 2, 3, 4, 5, 6)
Split = Literal["train", "val", "test", "trainval", "all"]


@dataclass(frozen=True)
class _H5Info:
    path: Path
    n: int
    start: int   # global index of its first block


def _h5_error(path: Path, e: Exception) -> ValueError:
    return ValueError(f"{path}: cannot read HDF5 block file (truncated or corrupt?): {e}")


class BlockRelease:
    """Index over a block release folder: files, per-block room / area, validation of the files.

    Args:
        root: the folder holding ``all_files.txt``, ``room_filelist.txt`` and the ``.h5`` files.
        check_labels: read every label once (cheap, about 96 MB for the full release) and fail on
            a value outside ``0..num_classes-1``, naming the file and block.
    """

    def __init__(self, root: str | Path, classes: ClassTable = S3DIS, check_labels: bool = True) -> None:
        import h5py

        self.root = Path(root)
        self.classes = classes
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder (expected the S3DIS block release "
                                    "indoor3d_sem_seg_hdf5_data)")
        listing = self.root / "all_files.txt"
        rooms_txt = self.root / "room_filelist.txt"
        for p in (listing, rooms_txt):
            if not p.is_file():
                raise ValueError(f"{p}: missing; {self.root} is not an S3DIS block release "
                                 "(needs all_files.txt, room_filelist.txt and ply_data_all_*.h5)")
        names = [ln.strip() for ln in _read_listing(listing).splitlines() if ln.strip()]
        if not names:
            raise ValueError(f"{listing}: lists no HDF5 files")
        self.files: list[_H5Info] = []
        start = 0
        self.num_points = self.num_channels = None
        for lineno, name in enumerate(names, 1):
            path = self._resolve(name)
            if path is None:
                raise FileNotFoundError(f"{listing}:{lineno}: listed file {name} not found under {self.root}")
            try:
                with h5py.File(path, "r") as f:
                    for key in ("data", "label"):
                        if key not in f:
                            raise ValueError(f"{path}: missing dataset '{key}' (has {sorted(f.keys())})")
                    d, lab = f["data"], f["label"]
                    for key, obj in (("data", d), ("label", lab)):
                        if not isinstance(obj, h5py.Dataset):
                            raise ValueError(f"{path}: '{key}' is a {type(obj).__name__}, not a dataset")
                    if d.ndim != 3 or lab.ndim != 2 or d.shape[:2] != lab.shape:
                        raise ValueError(f"{path}: 'data' {d.shape} and 'label' {lab.shape} do not match "
                                         "(expected (n, P, C) and (n, P))")
                    if d.dtype.kind != "f" or lab.dtype.kind not in "iu":
                        raise ValueError(f"{path}: 'data' must be float and 'label' integer, got "
                                         f"{d.dtype} / {lab.dtype}")
                    if self.num_points is None:
                        self.num_points, self.num_channels = d.shape[1], d.shape[2]
                    elif (d.shape[1], d.shape[2]) != (self.num_points, self.num_channels):
                        raise ValueError(f"{path}: blocks of {d.shape[1:]} differ from the first file's "
                                         f"{(self.num_points, self.num_channels)}")
                    if check_labels:
                        self._check_labels(path, lab)
                    n = d.shape[0]
            except ValueError:
                raise
            except (OSError, KeyError, RuntimeError) as e:
                raise _h5_error(path, e) from None
            self.files.append(_H5Info(path, n, start))
            start += n
        self.num_blocks = start
        self.block_rooms = [ln.strip() for ln in _read_listing(rooms_txt).splitlines() if ln.strip()]
        if len(self.block_rooms) != self.num_blocks:
            raise ValueError(f"{rooms_txt}: {len(self.block_rooms)} room names but the HDF5 files hold "
                             f"{self.num_blocks} blocks (one name per block expected)")
        areas = []
        for i, r in enumerate(self.block_rooms):
            m = ROOM_RE.match(r)
            if not m:
                raise ValueError(f"{rooms_txt}:{i + 1}: '{r}' is not a room name Area_<k>_<room>")
            areas.append(int(m.group(1)))
        self.block_areas = np.asarray(areas, dtype=np.int64)
        self._starts = np.asarray([f.start for f in self.files], dtype=np.int64)

    def _resolve(self, name: str) -> Path | None:
        p = Path(name)
        for cand in (p if p.is_absolute() else self.root / p, self.root.parent / p, self.root / p.name):
            if cand.is_file():
                return cand
        return None

    def _check_labels(self, path: Path, lab) -> None:
        k = self.classes.num_classes
        step = 256
        for s in range(0, lab.shape[0], step):
            chunk = lab[s:s + step]
            bad = (chunk < 0) | (chunk >= k)
            if bad.any():
                b, p = np.argwhere(bad)[0]
                raise ValueError(f"{path}: label {int(chunk[b, p])} at block {s + b}, point {p} is outside "
                                 f"0..{k - 1} ({self.classes.name} classes)")

    @property
    def rooms(self) -> list[str]:
        """Room names in order of first appearance."""
        return list(dict.fromkeys(self.block_rooms))

    @property
    def areas(self) -> list[int]:
        return sorted(set(self.block_areas.tolist()))

    def locate(self, index: int) -> tuple[Path, int]:
        """(file, index inside it) of global block ``index``."""
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} outside 0..{self.num_blocks - 1}")
        f = self.files[int(np.searchsorted(self._starts, index, side="right")) - 1]
        return f.path, index - f.start

    def split(self, split: Split = "train", test_area: int = 5, val_fraction: float = 0.1,
              seed: int = 0) -> np.ndarray:
        """Global block indices of one split (see :func:`split_rooms`)."""
        parts = split_rooms(self.block_rooms, test_area, val_fraction, seed)
        if split == "all":
            return np.arange(self.num_blocks)
        if split == "trainval":
            keep = parts["train"] | parts["val"]
        elif split in parts:
            keep = parts[split]
        else:
            raise ValueError(f"split must be train, val, test, trainval or all, got {split!r}")
        return np.flatnonzero([r in keep for r in self.block_rooms])


def split_rooms(block_rooms: Sequence[str], test_area: int = 5, val_fraction: float = 0.1,
                seed: int = 0) -> dict[str, set[str]]:
    """Partition room names into ``train`` / ``val`` / ``test`` sets.

    ``test``: rooms of ``test_area``. ``val``: ``round(val_fraction x training rooms)`` whole rooms
    (at least one when ``val_fraction > 0`` and there are >= 2 training rooms) drawn from the other
    areas with ``default_rng(seed)`` over the sorted room names, so the choice does not depend on
    block order. ``train``: the rest.
    """
    if test_area not in AREAS:
        raise ValueError(f"test_area must be one of {AREAS}, got {test_area}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rooms = sorted(set(block_rooms))
    area = {r: int(ROOM_RE.match(r).group(1)) if ROOM_RE.match(r) else -1 for r in rooms}
    test = {r for r in rooms if area[r] == test_area}
    train = [r for r in rooms if area[r] != test_area]
    n_val = int(round(val_fraction * len(train)))
    if val_fraction > 0 and n_val == 0 and len(train) >= 2:
        n_val = 1
    n_val = min(n_val, max(len(train) - 1, 0))
    order = np.random.default_rng(seed).permutation(len(train))
    val = {train[i] for i in order[:n_val]}
    return {"train": set(train) - val, "val": val, "test": test}


def _channel_index(channels: Sequence[int | str] | None, num_channels: int) -> np.ndarray | None:
    if channels is None:
        return None
    out = []
    for c in channels:
        if isinstance(c, str):
            if c not in S3DIS_CHANNELS:
                raise ValueError(f"unknown channel {c!r}; channels are {list(S3DIS_CHANNELS)} or indices")
            c = S3DIS_CHANNELS.index(c)
        if not 0 <= int(c) < num_channels:
            raise ValueError(f"channel {c} outside 0..{num_channels - 1}")
        out.append(int(c))
    if not out:
        raise ValueError("channels is empty")
    return np.asarray(out)


class S3DISBlocks(Dataset):
    """PyTorch dataset over a block release split: ``(x float32 (C, P), y int64 (P,))``.

    Args:
        root: block release folder (or a :class:`BlockRelease`).
        split: ``train`` / ``val`` / ``test`` / ``trainval`` / ``all``.
        test_area: held-out area (1-6; 6-fold = run once per area). ``val_fraction`` / ``seed``:
            the validation rooms (see :func:`split_rooms`).
        num_points: points per returned block (default: all, 4096). Fewer are a random subset
            (without replacement), fixed per block for non-training splits.
        channels: which of the 9 channels to return, as indices or names from
            ``S3DIS_CHANNELS`` (default all 9).
        shuffle_points: permute points on every access (training default).
    """

    def __init__(self, root: str | Path | BlockRelease, split: Split = "train", test_area: int = 5,
                 val_fraction: float = 0.1, seed: int = 0, num_points: int | None = None,
                 channels: Sequence[int | str] | None = None, shuffle_points: bool | None = None,
                 classes: ClassTable = S3DIS) -> None:
        self.release = root if isinstance(root, BlockRelease) else BlockRelease(root, classes)
        self.classes = self.release.classes
        self.split_name = split
        self.indices = self.release.split(split, test_area, val_fraction, seed)
        p = self.release.num_points
        if num_points is not None and not 1 <= num_points <= p:
            raise ValueError(f"num_points must be in 1..{p} (points per stored block), got {num_points}")
        self.num_points = num_points or p
        self.channels = _channel_index(channels, self.release.num_channels)
        self.shuffle_points = (split in ("train", "trainval")) if shuffle_points is None else shuffle_points
        self.seed = seed
        self._handles: dict[Path, object] = {}
        self._pid = -1

    @property
    def in_channels(self) -> int:
        return self.release.num_channels if self.channels is None else len(self.channels)

    def __len__(self) -> int:
        return len(self.indices)

    def _file(self, path: Path):
        import h5py
        if self._pid != os.getpid():    # HDF5 handles must not cross a fork (DataLoader workers)
            self._handles, self._pid = {}, os.getpid()
        h = self._handles.get(path)
        if h is None:
            try:
                h = self._handles[path] = h5py.File(path, "r")
            except OSError as e:
                raise _h5_error(path, e) from None
        return h

    def read_block(self, global_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The stored block ``(P, 9)`` float32 and labels ``(P,)`` of a global block index."""
        path, i = self.release.locate(int(global_index))
        f = self._file(path)
        try:
            return np.asarray(f["data"][i], dtype=np.float32), np.asarray(f["label"][i])
        except (OSError, KeyError, RuntimeError) as e:
            raise _h5_error(path, e) from None

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = int(self.indices[item])
        data, label = self.read_block(g)
        p = len(data)
        if self.shuffle_points:
            # torch's generator is seeded per DataLoader worker; numpy's global one is not
            sel = torch.randperm(p)[: self.num_points].numpy()
        elif self.num_points < p:
            sel = np.sort(np.random.default_rng([self.seed, g]).permutation(p)[: self.num_points])
        else:
            sel = slice(None)
        data, label = data[sel], label[sel]
        if self.channels is not None:
            data = data[:, self.channels]
        return (torch.from_numpy(np.ascontiguousarray(data.T)),
                torch.from_numpy(label.astype(np.int64)))

    def room_of(self, item: int) -> str:
        return self.release.block_rooms[int(self.indices[item])]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_pid"] = {}, -1
        return state

    def close(self) -> None:
        for h in self._handles.values():
            h.close()
        self._handles = {}


def _read_listing(path: Path) -> str:
    """A text listing (``all_files.txt``, ``room_filelist.txt``), errors naming the file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x})") from None
