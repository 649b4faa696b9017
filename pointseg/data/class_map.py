"""Class maps: how a user's label values (CloudCompare scalar fields, LAS classification codes, a
text column) become the classes a model is trained on.

A class map is a small YAML file::

    classes:                     # in this order: class 0, 1, ...
      table:  {values: "1-9", color: [200, 160, 100]}
      object: {values: "20-999"}
    ignore: [0]                  # values left out of the loss and the metrics

``values`` is a number, a range ``A-B`` (both ends included), a comma list of them
(``"1,3,5-7"``) or a YAML list of any of those; ``color`` (0-255 RGB) is optional (S3DIS names
keep their S3DIS colour, other classes get distinct generated ones). No value may belong to two
classes, or to a class and ``ignore``. :meth:`ClassMap.apply` gives every point its class index,
:data:`IGNORE` for ignored values, and refuses values no class maps (naming them and their counts).
The map is stored whole in a checkpoint (``class_map``), so ``segment`` scores a labelled scan
through it (:func:`scan_ground_truth`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classes import ClassTable
from ..io.scans import table_for_names

# Label of an ignored point in training blocks (uint8 storage) and in the loss (ignore_index):
# a class map therefore has at most IGNORE classes.
IGNORE = 255
_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")
Ranges = tuple[tuple[int, int], ...]


def parse_values(spec: Any, where: str) -> Ranges:
    """Inclusive integer ranges from ``5``, ``"1-9"``, ``"1,3,5-7"`` or a list of those."""
    items = spec if isinstance(spec, list) else [spec]
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, bool) or item is None:
            raise ValueError(f"{where}: {item!r} is not a value or a range A-B")
        if isinstance(item, (int, float)):
            if float(item) != int(item):
                raise ValueError(f"{where}: {item!r} is not a whole number")
            out.append((int(item), int(item)))
            continue
        if not isinstance(item, str):
            raise ValueError(f"{where}: {item!r} is not a value or a range A-B")
        for part in item.split(","):
            m = _RANGE.match(part)
            if not m:
                raise ValueError(f"{where}: {part.strip()!r} is not a value or a range A-B")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise ValueError(f"{where}: the range {part.strip()!r} is empty (it ends below its start)")
            out.append((lo, hi))
    if not out:
        raise ValueError(f"{where}: no values (an empty list or string)")
    return tuple(out)


def _show(ranges: Ranges) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


@dataclass(frozen=True)
class ClassMap:
    """Label values -> class indices: ``table`` (names and colours, class ``i`` = ``table.names[i]``),
    ``values[i]`` the ranges of class ``i``, ``ignore`` the ranges left out, ``source`` where it came from."""

    table: ClassTable
    values: tuple[Ranges, ...]
    ignore: Ranges = ()
    source: str = "class map"

    def __post_init__(self) -> None:
        if len(self.values) != self.table.num_classes:
            raise ValueError(f"{self.source}: {self.table.num_classes} classes but {len(self.values)} value lists")
        if self.table.num_classes > IGNORE:
            raise ValueError(f"{self.source}: {self.table.num_classes} classes; at most {IGNORE} are supported")
        owners = [(lo, hi, name) for name, rs in zip(self.table.names, self.values) for lo, hi in rs]
        owners += [(lo, hi, "ignore") for lo, hi in self.ignore]
        owners.sort()
        for (lo1, hi1, a), (lo2, hi2, b) in zip(owners, owners[1:]):
            if lo2 <= hi1:
                both = f"{lo2}" if lo2 == min(hi1, hi2) else f"{lo2}-{min(hi1, hi2)}"
                who = f"class {a!r}" if a != "ignore" else "ignore"
                other = f"class {b!r}" if b != "ignore" else "ignore"
                if a == b:
                    raise ValueError(f"{self.source}: {who} lists the values {both} twice")
                raise ValueError(f"{self.source}: {who} and {other} overlap at {both}; a value may "
                                 "belong to one class only")

    @property
    def num_classes(self) -> int:
        return self.table.num_classes

    def describe(self) -> str:
        """One line: ``table 1-9, object 20-999; ignore 0``."""
        parts = ", ".join(f"{n} {_show(r)}" for n, r in zip(self.table.names, self.values))
        return parts + (f"; ignore {_show(self.ignore)}" if self.ignore else "")

    def _lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = sorted([(lo, hi, c) for c, rs in enumerate(self.values) for lo, hi in rs]
                      + [(lo, hi, IGNORE) for lo, hi in self.ignore])
        a = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        return a[:, 0], a[:, 1], a[:, 2]

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Class index per value, :data:`IGNORE` for ignored ones and -1 for values no class
        maps; ``values`` must be whole numbers (see :func:`whole_numbers`)."""
        v = np.asarray(values, dtype=np.int64)
        lo, hi, cls = self._lookup()
        i = np.searchsorted(lo, v, side="right") - 1
        ok = (i >= 0) & (v <= hi[np.maximum(i, 0)])
        return np.where(ok, cls[np.maximum(i, 0)], -1)

    def apply(self, values: np.ndarray, where: str) -> np.ndarray:
        """Class index (int64) per value, :data:`IGNORE` for ignored values; a value no class maps
        is an error naming ``where``, the values and their counts."""
        v = whole_numbers(values, where)
        out = self.lookup(v)
        bad = out < 0
        if bad.any():
            vals, counts = np.unique(v[bad], return_counts=True)
            shown = ", ".join(f"{x} ({c:,} points)" for x, c in zip(vals[:8].tolist(), counts[:8].tolist()))
            more = f" and {len(vals) - 8} more values" if len(vals) > 8 else ""
            raise ValueError(f"{where}: label values no class maps: {shown}{more}; add them to a class "
                             f"or to 'ignore' in {self.source}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a checkpoint stores it): ``classes`` name -> {values, color}, ``ignore``."""
        return {"classes": {n: {"values": _show(r), "color": list(c)}
                            for n, r, c in zip(self.table.names, self.values, self.table.palette)},
                "ignore": _show(self.ignore) if self.ignore else [], "name": self.table.name}

    @classmethod
    def from_dict(cls, d: Any, source: str = "class map") -> "ClassMap":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: a class map is a mapping with 'classes' (and 'ignore'), got {type(d).__name__}")
        unknown = sorted(set(d) - {"classes", "ignore", "name"})
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; a class map has 'classes' and 'ignore'")
        classes = d.get("classes")
        if not isinstance(classes, dict) or not classes:
            raise ValueError(f"{source}: 'classes' must map each class name to {{values: ..., color: [r, g, b]}}")
        names, values, colours = [], [], {}
        for name, entry in classes.items():
            where = f"{source}: class {name!r}"
            if not isinstance(entry, dict):
                entry = {"values": entry}          # the short form  table: "1-9"
            extra = sorted(set(entry) - {"values", "color"})
            if extra:
                raise ValueError(f"{where}: unknown key(s) {extra} (a class has 'values' and 'color')")
            if "values" not in entry:
                raise ValueError(f"{where}: no 'values'")
            names.append(str(name))
            values.append(parse_values(entry["values"], f"{where} values"))
            if entry.get("color") is not None:
                c = entry["color"]
                if (not isinstance(c, (list, tuple)) or len(c) != 3
                        or any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= 255 for x in c)):
                    raise ValueError(f"{where}: color {c!r} is not [r, g, b] with whole numbers 0..255")
                colours[str(name)] = tuple(int(x) for x in c)
        ignore = d.get("ignore") or []
        ignore_ranges = parse_values(ignore, f"{source}: ignore") if ignore != [] else ()
        generated = table_for_names(names).palette
        palette = tuple(colours.get(n, generated[i]) for i, n in enumerate(names))
        try:
            table = ClassTable(tuple(names), palette, str(d.get("name") or Path(source).stem))
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        return cls(table, tuple(values), ignore_ranges, source)

    @classmethod
    def load(cls, path: str | Path) -> "ClassMap":
        """Read a class map YAML file; anything wrong is one line naming the file."""
        import yaml
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise FileNotFoundError(f"class map {path}: no such file") from None
        except OSError as e:
            raise ValueError(f"class map {path}: cannot read: {e.strerror}") from None
        except UnicodeDecodeError:
            raise ValueError(f"class map {path}: not YAML (not UTF-8 text)") from None
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"class map {path}: not YAML ({first})") from None
        if not isinstance(d, dict):
            raise ValueError(f"class map {path}: not a YAML mapping with 'classes' (and 'ignore')")
        return cls.from_dict(d, str(path))


def whole_numbers(values: np.ndarray, where: str) -> np.ndarray:
    """``values`` as int64 when every one is a whole number (CloudCompare saves scalar fields as
    floats: 3.0 is 3); otherwise an error naming ``where`` and how many are not."""
    v = np.asarray(values)
    if v.dtype.kind in "iub":
        return v.astype(np.int64)
    if v.dtype.kind != "f":
        raise ValueError(f"{where}: label values of type {v.dtype} are not numbers")
    bad = ~np.isfinite(v) | (v != np.round(v))
    if bad.any():
        example = v[bad][0]
        raise ValueError(f"{where}: {int(bad.sum()):,} of {v.size:,} label values are not whole numbers "
                         f"(e.g. {example:g}); a label field holds class codes")
    if v.size and (v.min() < np.iinfo(np.int64).min or v.max() > np.iinfo(np.int64).max):
        raise ValueError(f"{where}: label values outside the integer range")
    return v.astype(np.int64)


def scan_ground_truth(scan: Any, ckpt: dict[str, Any], num_classes: int) -> tuple[np.ndarray | None, int]:
    """The scan's ground truth as class indices for a checkpoint, and how many points are left
    out of it (-1 in the array): with a class map (a model trained on the user's scans) the
    labels are mapped through it, ignored and unmapped values left out; without one, the scan's
    labels when they fit the class table (else None)."""
    cm = ckpt.get("class_map")
    if not isinstance(cm, dict):
        lab = scan.label
        ok = lab is not None and lab.max(initial=0) < num_classes
        return (lab if ok else None), 0
    raw = scan.raw_label if getattr(scan, "label_field", None) else scan.label
    if raw is None:
        return None, 0
    try:
        values = whole_numbers(raw, "scan")
        mapped = ClassMap.from_dict(cm, "checkpoint class map").lookup(values)
    except ValueError:
        return None, 0           # labels the map cannot read: segment without scoring
    mapped = np.where((mapped == IGNORE) | (mapped >= num_classes), -1, mapped)
    return mapped, int((mapped < 0).sum())
