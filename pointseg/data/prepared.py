"""Whole-room access to prepared rooms (``OUT_DIR/Area_k/<room>.npz``) for evaluation.

``PreparedRooms(root).iter_rooms(areas=[5])`` yields every room of Area 5 with all its original
points, labels and the room-normalisation constants the blocks were made with
(:func:`pointseg.data.block_gen.room_normalization`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..classes import S3DIS, ClassTable
from .block_gen import RoomNorm, room_normalization
from ..io.rooms import Room, load_room

_AREA_RE = re.compile(r"^Area_(\d+)$")


@dataclass(frozen=True)
class RoomEntry:
    area: int
    name: str
    path: Path

    @property
    def full_name(self) -> str:
        """The block release's room name, e.g. ``Area_1_conferenceRoom_1``."""
        return f"Area_{self.area}_{self.name}"


@dataclass
class PreparedRoom:
    entry: RoomEntry
    room: Room          # every original point: xyz float32, rgb uint8, label uint8
    norm: RoomNorm      # min corner and extent after the shift

    @property
    def area(self) -> int:
        return self.entry.area

    @property
    def name(self) -> str:
        return self.entry.name


class PreparedRooms:
    """A folder of prepared rooms, grouped by area; the class table comes from ``manifest.json``
    when present (written by ``pointseg prepare-s3dis``), else from the rooms / S3DIS."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such folder of prepared rooms")
        self._entries: list[RoomEntry] = []
        for adir in self.root.iterdir():
            m = _AREA_RE.match(adir.name)
            if not (m and adir.is_dir()):
                continue
            for p in adir.glob("*.npz"):
                if not p.name.startswith("."):
                    self._entries.append(RoomEntry(int(m.group(1)), p.stem, p))
        if not self._entries:
            raise ValueError(f"{self.root}: not a folder of prepared rooms (no Area_k/<room>.npz; "
                             "run `pointseg prepare-s3dis RAW_DIR OUT_DIR` first)")
        self._entries.sort(key=lambda e: (e.area, e.name))
        self.classes = S3DIS
        manifest = self.root / "manifest.json"
        if manifest.exists():
            try:
                self.classes = ClassTable.from_dict(json.loads(manifest.read_text())["classes"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{manifest}: unreadable class table: {e}") from None

    @property
    def areas(self) -> list[int]:
        return sorted({e.area for e in self._entries})

    def entries(self, areas: Sequence[int] | None = None) -> list[RoomEntry]:
        if areas is None:
            return list(self._entries)
        missing = sorted(set(areas) - set(self.areas))
        if missing:
            raise ValueError(f"{self.root}: no prepared rooms for area(s) {missing} (have {self.areas})")
        return [e for e in self._entries if e.area in areas]

    def load(self, entry: RoomEntry) -> PreparedRoom:
        room = load_room(entry.path)
        if room.num_points == 0:
            raise ValueError(f"{entry.path}: empty room (0 points)")
        if room.label is not None and room.label.size and int(room.label.max()) >= self.classes.num_classes:
            raise ValueError(f"{entry.path}: labels up to {int(room.label.max())}, outside the class table "
                             f"0..{self.classes.num_classes - 1}")
        return PreparedRoom(entry, room, room_normalization(room.xyz))

    def iter_rooms(self, areas: Sequence[int] | None = None) -> Iterator[PreparedRoom]:
        """Load rooms one at a time (memory: one room)."""
        for e in self.entries(areas):
            yield self.load(e)

    def __len__(self) -> int:
        return len(self._entries)
