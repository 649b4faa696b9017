"""Class tables: the names and colours every checkpoint and output file carries.

S3DIS order and palette follow the public release / PointNet (design notes §3). Some tools
use a second order (chair before table, bookcase before sofa); we never assume an order, we
store the table next to the data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

S3DIS_CLASSES: tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door",
    "table", "chair", "sofa", "bookcase", "board", "clutter",
)
S3DIS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 255),
    (100, 100, 255), (200, 200, 100), (170, 120, 200), (255, 0, 0),
    (200, 100, 100), (10, 200, 100), (200, 200, 200), (50, 50, 50),
)


@dataclass(frozen=True)
class ClassTable:
    """Ordered class names with one RGB (0-255) colour each."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        if len(self.names) == 0:
            raise ValueError("ClassTable: names is empty")
        if len(self.names) != len(self.palette):
            raise ValueError(
                f"ClassTable: {len(self.names)} names but {len(self.palette)} palette colours")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"ClassTable: duplicate class names in {list(self.names)}")
        for i, c in enumerate(self.palette):
            if len(c) != 3 or any(not (0 <= int(v) <= 255) for v in c):
                raise ValueError(f"ClassTable: palette[{i}] = {c} is not an RGB triple in 0..255")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def colors(self, labels: np.ndarray) -> np.ndarray:
        """Map integer labels ``(N,)`` to uint8 colours ``(N, 3)``; raises on labels outside the table."""
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels span {int(labels.min())}..{int(labels.max())}, outside the class table "
                f"0..{self.num_classes - 1} ({self.name})")
        return np.asarray(self.palette, dtype=np.uint8)[labels.astype(np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "names": list(self.names), "palette": [list(c) for c in self.palette]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassTable":
        try:
            names = tuple(str(n) for n in d["names"])
            palette = tuple(tuple(int(v) for v in c) for c in d["palette"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"class table needs 'names' and 'palette' lists: {e}") from None
        return cls(names, palette, str(d.get("name", "custom")))

    @classmethod
    def load(cls, path: str | Path) -> "ClassTable":
        """Read a JSON or YAML file with ``names`` and ``palette`` (a user palette file)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError(f"{path}: cannot read class table: {e.strerror}") from None
        if path.suffix in (".yaml", ".yml"):
            import yaml
            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


S3DIS = ClassTable(S3DIS_CLASSES, S3DIS_PALETTE, "s3dis")

# A ground-truth value meaning "this point has no ground truth" (a value the user's class map
# ignores): drawn in NO_LABEL_COLOUR, left out of every metric.
NO_LABEL = -1
NO_LABEL_COLOUR = (120, 120, 120)

