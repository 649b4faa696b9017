"""Reading a scan file in chunks of points, in bounded memory (issue 27: scans of 50 M+ points).

``open_chunks(path, label_field=None)`` reads the file's header (and, for text files, makes one
parsing pass) and returns a :class:`ChunkedScan`; ``ChunkedScan.chunks(chunk_points)`` then yields
:class:`Chunk` s of at most ``chunk_points`` consecutive points of the file, in file order:

* ``xyz`` float64 ``(n, 3)`` in the **file's** coordinates: no shift to local coordinates (the
  caller picks the origin, e.g. from ``ChunkedScan.bounds``) and rows with non-finite coordinates
  kept (``read_scan`` drops them; the caller masks them with ``np.isfinite(xyz).all(1)``);
* ``rgb`` uint8 ``(n, 3)`` converted exactly as ``read_scan`` converts colours;
* ``label`` ``(n,)``: the label ``read_scan`` would give (``Scan.label``, int64, checked the same
  way: whole, non-negative, inside a PLY's class table), or with ``label_field`` the named
  field's raw values as ``read_scan`` keeps them (``Scan.raw_label``: int64, or float64 for a
  float field; their users read them through ``class_map.whole_numbers``). Rows with
  non-finite coordinates get ``-1``.

How each format is read, and what memory that takes:

======================  ==================================================================
``.las`` / ``.laz``     laspy's ``laspy.open(path).chunk_iterator(n)``: one chunk of records
                        (decompressed, for LAZ) at a time. ``bounds`` from the header.
binary ``.ply``         records ``[start, stop)`` read at their file offset (``np.fromfile``
                        with ``seek``): one chunk at a time. A vertex element with list
                        properties, or elements with lists before it, cannot be addressed by
                        offset: such a file is read whole (bounded by the file).
ascii ``.ply``          lines read in chunks.
binary ``.pcd``         records read at their file offset, one chunk at a time.
ascii ``.pcd``          lines read in chunks.
``binary_compressed``   one LZF blob holding each field for all points in turn: read whole
``.pcd``                (through the same reader as ``read_scan``), then handed out in chunks.
``.xyz`` / ``.txt``     lines read and parsed in chunks. ``open_chunks`` makes one parsing
                        pass to count the points and find the column count and the colour
                        range (so ``count`` is known), ``chunks()`` parses again.
``.npy``                the header parsed (``np.lib.format``), then rows read at their file
                        offset (a Fortran-order array column by column); no memory map.
``.npz``                a prepared room is not streamed: ``ValueError`` naming the file.
======================  ==================================================================

Colours: ``read_scan`` decides the scaling of non-8-bit colours from the **whole file** (all
colours ``<= 1``: floats in 0..1, times 255; any above 255: 16-bit, divided by 257; LAS: divided
by 257 when any is above 255). So the first ``chunks()`` call of a file with such colours makes a
cheap pass over the colour values first (stopping early once the file's colour type leaves no
doubt, e.g. an 8-bit property with a value above 1), cached on the ``ChunkedScan``; text files get
it in ``open_chunks``'s pass. Colours stored as uint8 (PCD packed ``rgb``) need no pass.

Checks: the header's counts are checked against the file's size in ``open_chunks`` as
``read_scan`` checks them, with the same one-line ``ValueError`` naming the file. Errors in the
data (a value that does not parse, a short ASCII file, labels outside the class table) surface
from ``chunks()`` when the chunk holding them is read. A file whose points are all non-finite is
``read_scan``'s error only: here it is the caller's to notice. The per-point ``pred`` property is
not read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..classes import ClassTable
from .cloud_files import (_ascii_table, _check_int_range, _check_ply_sizes, check_pcd_sizes, _decode, _fields_from_columns,
                          parse_pcd_header, parse_ply_header, prediction_name)
from .scans import (SCAN_SUFFIXES, LasErrors, Scan, check_las_reader_header, import_laspy, local_shift,
                    npy_header, _check_las_header, _column_number, _named_column, check_labels,
                    check_regular_file, classes_from_comments)

DEFAULT_CHUNK_POINTS = 1_000_000
_TEXT_PASS_LINES = 65_536       # data lines per parse in open_chunks's pass over a text file


@dataclass
class Chunk:
    """Points ``[start, start + len(xyz))`` of the file (see the module docstring)."""

    start: int
    xyz: np.ndarray
    rgb: np.ndarray | None = None
    label: np.ndarray | None = None

    @property
    def stop(self) -> int:
        return self.start + len(self.xyz)

    def __len__(self) -> int:
        return len(self.xyz)


@dataclass
class FileInfo:
    """What the file says of its frame, as ``read_scan`` puts it on a ``Scan`` (attributes that
    ``segmentation.frame.FileHints.of`` reads)."""

    path: Path
    format: str
    organized: tuple[int, int] | None = None
    viewpoint: tuple[float, ...] | None = None
    training_frame: bool = False
    origin: np.ndarray | None = None


@dataclass
class _Colours:
    """The whole file's colour range, to convert each chunk as ``read_scan`` converts the whole."""

    rule: str                      # "las" (16-bit down to 8 when any > 255) or "generic" (_colours_to_uint8)
    finite: bool = True
    cmin: float = np.inf
    cmax: float = -np.inf
    done: bool = False

    def add(self, c: np.ndarray) -> None:
        if c.size == 0:
            return
        if c.dtype.kind == "f":
            ok = np.isfinite(c)
            if not ok.all():
                self.finite = False
                c = c[ok]
                if c.size == 0:
                    return
        self.cmin = min(self.cmin, float(c.min()))
        self.cmax = max(self.cmax, float(c.max()))

    def settled(self, dtype: np.dtype | None) -> bool:
        """True when the values seen decide the conversion whatever the rest of the file holds."""
        if dtype is None or dtype.kind != "u":
            return False
        top = np.iinfo(dtype).max
        if self.rule == "las":
            return self.cmax > 255
        return (self.cmax > 1 and top <= 255) or (self.cmax > 255 and top <= 65535)

    def convert(self, c: np.ndarray, path: Path) -> np.ndarray:
        if self.rule == "las":
            c = c / 257.0 if self.cmax > 255 else c
            return np.clip(np.round(c), 0, 255).astype(np.uint8)
        if c.dtype == np.uint8:
            return c
        # _colours_to_uint8 with the file's range instead of the chunk's
        if not self.finite:
            raise ValueError(f"{path}: colours contain NaN/inf")
        c = c.astype(np.float64)
        if self.cmax <= 1.0:
            c = c * 255.0
        elif self.cmax > 255:
            if self.cmax <= 65535:
                c = c / 257.0
            else:
                raise ValueError(f"{path}: colour values up to {self.cmax:g}, expected 0..255 or 0..1")
        if self.cmin < 0:
            raise ValueError(f"{path}: negative colour values")
        return np.clip(np.round(c), 0, 255).astype(np.uint8)


class ChunkedScan:
    """A scan file opened for reading in chunks (:func:`open_chunks`).

    ``path``; ``format`` ('las', 'laz', 'ply', 'pcd', 'text', 'npy'); ``count`` points in the file
    (non-finite ones included); ``has_colour`` / ``has_labels``; ``bounds`` float64 ``(2, 3)``
    (min, max) of the coordinates when the header gives them (LAS/LAZ), else None; ``label_field``
    as given; ``field_names`` the per-point fields the file has (what ``label_field`` may name);
    ``classes`` / ``model`` from a PLY's header comments; ``origin`` a PLY's ``origin`` comment
    (its coordinates are ``xyz + origin``); ``organized`` / ``viewpoint`` / ``training_frame`` the
    frame hints (also as ``hints``, a :class:`FileInfo`, and on :meth:`scan_stub`).
    """

    def __init__(self, path: Path, fmt: str, source: "_Source", label_field: str | None,
                 classes: ClassTable | None = None, model: str | None = None,
                 origin: np.ndarray | None = None, organized: tuple[int, int] | None = None,
                 viewpoint: tuple[float, ...] | None = None, bounds: np.ndarray | None = None) -> None:
        self.path, self.format, self._source = path, fmt, source
        self.label_field = label_field
        self.count = int(source.count)
        self.has_colour = source.has_colour
        self.has_labels = source.has_labels
        self.field_names: tuple[str, ...] = tuple(source.field_names)
        self.classes, self.model, self.origin = classes, model, origin
        self.organized, self.viewpoint = organized, viewpoint
        self.training_frame = False
        self.bounds = bounds
        self._colours: _Colours | None = source.colours

    def __repr__(self) -> str:
        return (f"ChunkedScan({str(self.path)!r}, format={self.format!r}, count={self.count}, "
                f"colour={self.has_colour}, labels={self.has_labels})")

    @property
    def hints(self) -> FileInfo:
        return FileInfo(self.path, self.format, self.organized, self.viewpoint, self.training_frame, self.origin)

    def scan_stub(self, origin: np.ndarray | None = None) -> Scan:
        """A ``Scan`` with no points and the file's fields (path, hints, classes, model,
        label_field, field_names); ``origin`` the caller's (default: the file's own)."""
        return Scan(xyz=np.empty((0, 3), np.float32), classes=self.classes, path=self.path, model=self.model,
                    organized=self.organized, viewpoint=self.viewpoint,
                    origin=self.origin if origin is None else np.asarray(origin, np.float64),
                    label_field=self.label_field, field_names=self.field_names)

    def chunks(self, chunk_points: int = DEFAULT_CHUNK_POINTS) -> Iterator[Chunk]:
        """The file's points in chunks of at most ``chunk_points``, in file order."""
        chunk_points = int(chunk_points)
        if chunk_points < 1:
            raise ValueError(f"chunk_points must be at least 1, got {chunk_points}")
        colours = self._colour_range(chunk_points) if self.has_colour else None
        seen = 0
        for start, raw in self._source.iter_raw(chunk_points):
            xyz = raw["xyz"]
            rgb = colours.convert(raw["rgb"], self.path) if colours is not None else None
            yield Chunk(start, xyz, rgb, self._labels(raw.get("label"), xyz))
            seen = start + len(xyz)
        if seen != self.count:
            raise ValueError(f"{self.path}: header declares {self.count} points but {seen} were read "
                             "(truncated or corrupt file)")

    def _colour_range(self, chunk_points: int) -> _Colours:
        if self._colours is None or not self._colours.done:
            c = _Colours(self._source.colour_rule)
            dtype = self._source.colour_dtype
            for _, rgb in self._source.iter_colours(chunk_points):
                c.add(rgb)
                if c.settled(dtype):
                    break
            c.done = True
            self._colours = c
        return self._colours

    def _labels(self, values: np.ndarray | None, xyz: np.ndarray) -> np.ndarray | None:
        if values is None:
            return None
        values = np.asarray(values).reshape(len(xyz), -1)[:, 0]
        finite = np.isfinite(xyz).all(axis=1)
        kept = values[finite]
        if self.label_field is None:       # Scan.label: class indices (read_scan's check)
            out = np.full(len(xyz), -1, dtype=np.int64)
            out[finite] = check_labels(kept, len(kept), str(self.path), self.classes, "label")
        else:                              # Scan.raw_label: the user's codes, as the file has them
            out = np.full(len(xyz), -1, dtype=np.float64 if values.dtype.kind == "f" else np.int64)
            out[finite] = kept
        return out

    @staticmethod
    def local_shift(lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
        """The shift ``read_scan`` takes off coordinates with these finite bounds (None: none)."""
        return local_shift(lo, hi)


# ----------------------------------------------------------------------------- sources

class _Source:
    """One format's reader: ``iter_raw(n)`` yields ``(start, {"xyz": float64 (k, 3), "rgb": the
    file's colour values (k, 3) or None, "label": raw values or None})``."""

    count: int = 0
    has_colour: bool = False
    has_labels: bool = False
    field_names: tuple[str, ...] = ()
    colour_rule: str = "generic"
    colour_dtype: np.dtype | None = None     # the file's colour type (lets the colour pass stop early)
    colours: _Colours | None = None          # the colour range, when known without a pass

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        raise NotImplementedError

    def iter_colours(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        for start, raw in self.iter_raw(n):
            yield start, raw["rgb"]


def _pick(columns: dict, label_field: str | None, guessed: Any) -> Any:
    """``read_scan``'s label: the guessed one, or the named column (None when absent)."""
    return guessed if label_field is None else _named_column(columns, label_field)


class _WholeSource(_Source):
    """A file read whole by ``read_scan``'s own reader (``fields`` as it returns them, colours
    already converted), handed out in chunks."""

    def __init__(self, fields: dict, label_field: str | None) -> None:
        cols = fields.get("columns", {})
        self.xyz = np.asarray(fields["xyz"], np.float64)
        self.rgb = fields.get("rgb")
        self.label = _pick(cols, label_field, fields.get("label"))
        self.count = len(self.xyz)
        self.has_colour, self.has_labels = self.rgb is not None, self.label is not None
        self.field_names = tuple(cols)
        self.colours = _Colours("generic", cmin=0, cmax=255, done=True)   # rgb is uint8 already

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        for a in range(0, self.count, n):
            b = min(a + n, self.count)
            yield a, {"xyz": self.xyz[a:b], "rgb": None if self.rgb is None else self.rgb[a:b],
                      "label": None if self.label is None else np.asarray(self.label)[a:b]}


# ---- LAS / LAZ

class _LasSource(_Source):
    colour_rule = "las"
    colour_dtype = np.dtype(np.uint16)

    def __init__(self, path: Path, label_field: str | None) -> None:
        laspy = import_laspy(path)
        self.path = path
        size = path.stat().st_size
        _check_las_header(path, size)
        with self._errors():
            with laspy.open(str(path)) as reader:
                h = reader.header
                count, scales, offsets = check_las_reader_header(path, h, size)
                dims = tuple(h.point_format.dimension_names)
                self.bounds = np.array([h.mins, h.maxs], dtype=np.float64)
        self.scales, self.offsets = scales, offsets
        self.count = count
        self.field_names = dims
        self.has_colour = {"red", "green", "blue"} <= set(dims)
        from .scans import LABEL_FIELDS
        if label_field is None:
            self.label_dim = next((d for d in LABEL_FIELDS if d in dims), None)
        else:
            same = [d for d in dims if d.lower() == label_field.lower()]
            self.label_dim = label_field if label_field in dims else same[0] if len(same) == 1 else None
        self.has_labels = self.label_dim is not None

    def _errors(self):
        return LasErrors(self.path)

    def _points(self, n: int) -> Iterator[tuple[int, Any]]:
        import laspy
        start = 0
        with self._errors():
            reader = laspy.open(str(self.path))
        try:
            it = reader.chunk_iterator(n)
            while True:
                with self._errors():
                    pts = next(it, None)
                if pts is None:
                    return
                yield start, pts
                start += len(pts)
        finally:
            reader.close()

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        for start, pts in self._points(n):
            with np.errstate(over="ignore", invalid="ignore"):
                xyz = np.stack([np.asarray(pts.x, np.float64), np.asarray(pts.y, np.float64),
                                np.asarray(pts.z, np.float64)], axis=1)
            if not np.all(np.isfinite(xyz)) or np.abs(xyz).max(initial=0) > np.finfo(np.float32).max:
                raise ValueError(f"{self.path}: the header's scale factors {self.scales.tolist()} and offsets "
                                 f"{self.offsets.tolist()} put coordinates outside the float range")
            yield start, {"xyz": xyz, "rgb": self._rgb(pts) if self.has_colour else None,
                          "label": np.asarray(pts[self.label_dim]) if self.label_dim else None}

    @staticmethod
    def _rgb(pts: Any) -> np.ndarray:
        return np.stack([np.asarray(pts.red), np.asarray(pts.green), np.asarray(pts.blue)], axis=1)

    def iter_colours(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        for start, pts in self._points(n):
            yield start, self._rgb(pts)


# ---- PLY

class _PlySource(_Source):
    def _vertex_fields(self, info: dict, label_field: str | None) -> None:
        """What the vertex properties (``self.props``) give: fields, colour, labels, prediction."""
        self.pred_name = prediction_name(info["comments"])
        names = [p.name for p in self.props]
        self.field_names = tuple(names)
        self.has_colour = all(c in names for c in ("red", "green", "blue"))
        colour_types = {np.dtype(p.dtype) for p in self.props if p.name in ("red", "green", "blue")}
        self.colour_dtype = colour_types.pop() if len(colour_types) == 1 else None
        self.has_labels = _label_source(names, label_field, self.pred_name)


class _PlyBinarySource(_PlySource):
    def __init__(self, path: Path, info: dict, label_field: str | None) -> None:
        self.path, self.label_field = path, label_field
        end = "<" if info["format"] == "binary_little_endian" else ">"
        offset = info["data_offset"]
        for e in info["elements"]:
            if e["name"] == "vertex":
                break
            offset += e["count"] * sum(np.dtype(p.dtype).itemsize for p in e["props"])
        vertex = next(e for e in info["elements"] if e["name"] == "vertex")
        self.props = vertex["props"]
        self.dtype = np.dtype([(p.name, end + p.dtype) for p in self.props])
        self.offset, self.count = offset, vertex["count"]
        self._vertex_fields(info, label_field)

    def _records(self, n: int, names: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.path, "rb") as f:
            for a in range(0, self.count, n):
                k = min(n, self.count - a)
                f.seek(self.offset + a * self.dtype.itemsize)
                rec = np.fromfile(f, dtype=self.dtype, count=k)
                if len(rec) != k:
                    raise ValueError(f"{self.path}: element 'vertex' needs {self.count * self.dtype.itemsize} "
                                     f"bytes but the file ends early (truncated or corrupt file)")
                yield a, rec

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        for a, rec in self._records(n):
            cols = {p.name: (rec[p.name].astype(np.int64) if p.dtype[0] != "f" else rec[p.name])
                    for p in self.props}
            yield a, _raw_fields(self.path, cols, self.pred_name, self.label_field)

    def iter_colours(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        for a, rec in self._records(n):
            yield a, np.stack([rec["red"], rec["green"], rec["blue"]], axis=1)


def _label_source(names: list[str] | tuple[str, ...], label_field: str | None, pred_name: str | None) -> bool:
    """Whether the file has the label read_scan would take (or the named field)."""
    from .cloud_files import LABEL_FIELDS
    if label_field is not None:
        return _named_column({nm: 0 for nm in names}, label_field) is not None
    return any(nm in names and nm != pred_name for nm in LABEL_FIELDS)


def _raw_fields(path: Path, cols: dict, pred_name: str | None, label_field: str | None) -> dict:
    f = _fields_from_columns(path, cols, len(next(iter(cols.values()))), pred_name)
    return {"xyz": f["xyz"], "rgb": f.get("rgb"), "label": _pick(f["columns"], label_field, f.get("label"))}


class _PlyAsciiSource(_PlySource):
    def __init__(self, path: Path, info: dict, label_field: str | None) -> None:
        self.path, self.info, self.label_field = path, info, label_field
        vertex = next(e for e in info["elements"] if e["name"] == "vertex")
        self.props = vertex["props"]
        self.count = vertex["count"]
        self.skip_lines = 0
        for e in info["elements"]:
            if e["name"] == "vertex":
                break
            self.skip_lines += e["count"]
        self.after = sum(e["count"] for e in info["elements"][info["elements"].index(vertex) + 1:])
        self._vertex_fields(info, label_field)

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        path, k = self.path, len(self.props)
        first_line = self.skip_lines + 1 + self.info.get("header_lines", 0)
        with open(path, "rb") as f:
            f.seek(self.info["data_offset"])
            for _ in range(self.skip_lines):
                if not f.readline():
                    break
            for a in range(0, self.count, n):
                m = min(n, self.count - a)
                lines = []
                for _ in range(m):
                    raw = f.readline()
                    if not raw:
                        break
                    lines.append(_decode(raw.rstrip(b"\n"), path, "PLY ascii data"))
                if len(lines) < m or not lines[-1].strip():
                    got = a + sum(1 for c in lines if c.strip())
                    raise ValueError(f"{path}: header declares {self.count} 'vertex' but the file holds only "
                                     f"{got} lines of them (truncated or corrupt file)")
                arr = _ascii_table(lines, k, path, "vertex data", lambda j, c, a=a: (
                    f"line {first_line + a + j}: {c} values for vertex {a + j}, the header declares {k} "
                    "properties"))
                cols = {}
                for c, p in enumerate(self.props):
                    if p.dtype[0] != "f":
                        _check_int_range(arr[:, c], p.dtype, path, f"vertex property '{p.name}'")
                    cols[p.name] = arr[:, c]
                yield a, _raw_fields(path, cols, self.pred_name, self.label_field)
            # what follows the vertices: the other elements' lines, nothing more (counted, not kept)
            after, extra = 0, 0
            for raw in f:
                if after < self.after:
                    after += 1
                elif raw.strip():
                    extra += 1
        if extra:
            raise ValueError(f"{path}: {extra} more line(s) of data than the header declares")
        if after < self.after:
            raise ValueError(f"{path}: the elements after 'vertex' hold fewer lines than the header declares "
                             "(truncated or corrupt file)")


def _open_ply(path: Path, label_field: str | None) -> tuple[_Source, dict]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        info = parse_ply_header(path, f)
    binary = info["format"] != "ascii"
    _check_ply_sizes(path, info, size - info["data_offset"], binary)
    vertex = next((e for e in info["elements"] if e["name"] == "vertex"), None)
    if vertex is None or vertex["count"] == 0:
        raise ValueError(f"{path}: PLY file has no vertices")
    names = [p.name for p in vertex["props"]]
    for c in "xyz":
        if c not in names:
            raise ValueError(f"{path}: PLY vertex element has no '{c}' property (has {names})")
    upto = info["elements"][:info["elements"].index(vertex) + 1]
    lists_before = any(p.count_dtype for e in upto for p in e["props"])
    comments = info["comments"]
    classes, model = classes_from_comments(comments, str(path))
    extra = {"classes": classes, "model": model, "origin": _ply_origin(path, comments)}
    if lists_before if binary else any(p.count_dtype for p in vertex["props"]):
        # not addressable by offset (or lines with lists): read_scan's reader, whole
        from .scans import _read_ply
        return _WholeSource(_read_ply(path), label_field), extra
    if binary:
        return _PlyBinarySource(path, info, label_field), extra
    return _PlyAsciiSource(path, info, label_field), extra


def _ply_origin(path: Path, comments: list[str]) -> np.ndarray | None:
    origin = None
    for c in comments:                    # as scans._read_ply reads write_labelled_ply's comment
        tok = c.split()
        if len(tok) == 4 and tok[0] == "origin":
            try:
                origin = np.array([float(v) for v in tok[1:]])
            except ValueError:
                raise ValueError(f"{path}: header comment 'origin' is not three numbers: {c!r}") from None
            if not np.all(np.isfinite(origin)):
                raise ValueError(f"{path}: header comment 'origin' is not three finite numbers: {c!r}")
    return origin


# ---- PCD

def _pcd_columns(fields: list[str], dtypes: list[str], counts: list[int], values: Callable[[int, str], np.ndarray]
                 ) -> dict[str, np.ndarray]:
    """Columns by name as read_pcd_fields makes them (first value of a multi-value field; packed
    ``rgb`` / ``rgba`` split into red, green, blue uint8)."""
    cols = {nm: values(i, nm) for i, nm in enumerate(fields)}
    if "rgb" in cols or "rgba" in cols:
        v = cols.pop("rgb" if "rgb" in cols else "rgba")
        v = v.view(np.uint32) if v.dtype == np.float32 else v.astype(np.uint32)
        cols["red"] = ((v >> 16) & 255).astype(np.uint8)
        cols["green"] = ((v >> 8) & 255).astype(np.uint8)
        cols["blue"] = (v & 255).astype(np.uint8)
    return cols


def _pcd_field_names(fields: list[str]) -> tuple[str, ...]:
    names = list(fields)
    packed = "rgb" if "rgb" in names else "rgba" if "rgba" in names else None
    if packed:
        names.remove(packed)
        names += ["red", "green", "blue"]
    return tuple(names)


class _PcdSource(_Source):
    def __init__(self, path: Path, h: dict, label_field: str | None) -> None:
        self.path, self.h, self.label_field = path, h, label_field
        self.count = h["points"]
        self.pred_name = prediction_name(h["comments"])
        names = _pcd_field_names(h["fields"])
        self.field_names = names
        self.has_colour = all(c in names for c in ("red", "green", "blue"))
        packed = "rgb" in h["fields"] or "rgba" in h["fields"]
        if packed:
            self.colour_dtype = np.dtype(np.uint8)
        else:
            ts = {np.dtype(d) for nm, d in zip(h["fields"], h["dtypes"]) if nm in ("red", "green", "blue")}
            self.colour_dtype = ts.pop() if len(ts) == 1 else None
        if packed:       # split into uint8 red, green, blue: kept as they are
            self.colours = _Colours("generic", cmin=0, cmax=255, done=True)
        self.has_labels = _label_source(names, label_field, self.pred_name)
        self.dtype = np.dtype([(nm, "<" + d, (c,)) if c > 1 else (nm, "<" + d)
                               for nm, d, c in zip(h["fields"], h["dtypes"], h["counts"])])

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        it = self._binary(n) if self.h["data"] == "binary" else self._ascii(n)
        for a, cols in it:
            for c in "xyz":
                if c not in cols:
                    raise ValueError(f"{self.path}: PCD has no '{c}' field (has {self.h['fields']})")
            yield a, _raw_fields(self.path, cols, self.pred_name, self.label_field)

    def _binary(self, n: int) -> Iterator[tuple[int, dict]]:
        h = self.h
        with open(self.path, "rb") as f:
            for a in range(0, self.count, n):
                k = min(n, self.count - a)
                f.seek(h["data_offset"] + a * self.dtype.itemsize)
                rec = np.fromfile(f, dtype=self.dtype, count=k)
                if len(rec) != k:
                    raise ValueError(f"{self.path}: header declares {self.count} points but the data ends early "
                                     "(truncated or corrupt file)")
                yield a, _pcd_columns(h["fields"], h["dtypes"], h["counts"],
                                      lambda i, nm: rec[nm] if h["counts"][i] == 1 else rec[nm][:, 0])

    def _ascii(self, n: int) -> Iterator[tuple[int, dict]]:
        h, path = self.h, self.path
        nvals = sum(h["counts"])
        total = 0
        with open(path, "rb") as f:
            f.seek(h["data_offset"])
            while total < self.count:
                m = min(n, self.count - total)
                lines = []
                while len(lines) < m:
                    raw = f.readline()
                    if not raw:
                        break
                    if raw.strip():
                        lines.append(_decode(raw.rstrip(b"\n"), path, "PCD ascii data"))
                if len(lines) < m:
                    raise ValueError(f"{path}: header declares {self.count} points but the file holds "
                                     f"{total + len(lines)} lines of data (truncated or corrupt file)")
                arr = _ascii_table(lines, nvals, path, "PCD data", lambda j, c, t=total: (
                    f"point {t + j} (after line {h['data_line'] - 1}): {c} values, the header declares {nvals}"))
                starts = np.cumsum([0] + list(h["counts"]))

                def column(i: int, nm: str, arr=arr) -> np.ndarray:
                    d, c0, c = h["dtypes"][i], starts[i], h["counts"][i]
                    col = arr[:, c0]
                    if d[0] != "f":
                        _check_int_range(arr[:, c0:c0 + c], d, path, f"field '{nm}'")
                    if nm in ("rgb", "rgba"):
                        col = (col.astype(np.float32).view(np.uint32) if d[0] == "f"
                               else col.astype(np.uint64).astype(np.uint32))
                    return col
                yield total, _pcd_columns(h["fields"], h["dtypes"], h["counts"], column)
                total += m
            extra = sum(1 for raw in f if raw.strip())
        if extra:
            raise ValueError(f"{path}: header declares {self.count} points but the file holds "
                             f"{self.count + extra} lines of data (truncated or corrupt file)")


def _open_pcd(path: Path, label_field: str | None) -> tuple[_Source, dict]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = parse_pcd_header(path, f)
    check_pcd_sizes(path, h, size)
    extra = {"organized": h["organized"], "viewpoint": h["viewpoint"]}
    if h["data"] == "binary_compressed":
        from .scans import _read_pcd
        return _WholeSource(_read_pcd(path), label_field), extra
    for c in "xyz":
        if c not in h["fields"]:
            raise ValueError(f"{path}: PCD has no '{c}' field (has {h['fields']})")
    return _PcdSource(path, h, label_field), extra


# ---- text and .npy

_COMMENT = re.compile(r"#|//")


def _columns_layout(path: Path, ncol: int, label_col: int | None) -> tuple[bool, int | None]:
    """``(has colour, label column)`` as ``scans._columns`` reads an ``ncol``-column table."""
    if label_col is not None:
        if ncol < 3:
            raise ValueError(f"{path}: {ncol} columns per point; expected at least 3 (x y z)")
        return ncol >= 6 and not 3 <= label_col <= 5, label_col if label_col < ncol else None
    if ncol not in (3, 6, 7):
        raise ValueError(f"{path}: {ncol} columns per point; expected 3 (x y z), 6 (x y z r g b) "
                         f"or 7 (x y z r g b label)")
    return ncol >= 6, 6 if ncol == 7 else None


class _TableSource(_Source):
    """Rows of numbers (text or .npy): x y z [r g b [label]] or a named column (``col:N``)."""

    ncol: int = 0
    label_col: int | None = None

    def _set_layout(self, path: Path, ncol: int, label_col: int | None, label_field: str | None) -> None:
        self.ncol = ncol
        self.has_colour, col = _columns_layout(path, ncol, label_col)
        self.field_names = tuple(f"col:{i}" for i in range(ncol))
        if label_field is not None and label_col is None:
            col = None                 # a name that is not col:N: text and .npy have no named fields
        self.label_col = col
        self.has_labels = col is not None

    def _arrays(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def iter_raw(self, n: int) -> Iterator[tuple[int, dict]]:
        for a, arr in self._arrays(n):
            yield a, {"xyz": arr[:, :3], "rgb": arr[:, 3:6] if self.has_colour else None,
                      "label": arr[:, self.label_col] if self.label_col is not None else None}

    def iter_colours(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        for a, arr in self._arrays(n, columns=slice(3, 6)):
            yield a, arr


class _TextSource(_TableSource):
    def __init__(self, path: Path, label_col: int | None, label_field: str | None) -> None:
        self.path = path
        try:
            with open(path, "r", errors="replace") as f:
                first, skip = None, 0
                for line in f:
                    s = line.strip()
                    if not s or s.startswith("#") or s.startswith("//"):
                        skip += 1
                        continue
                    first = s
                    break
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {e.strerror}") from None
        if first is None:
            raise ValueError(f"{path}: the scan has no points")
        self.delim = "," if "," in first else None
        try:
            [float(v) for v in first.replace(",", " ").split()]
        except ValueError:
            skip += 1                     # a header line such as "x y z r g b label"
        self.skip = skip
        # one pass: the number of rows and columns, and the colour range
        self.ncol, count = -1, 0
        stats = _Colours("generic")
        for _, arr in self._arrays(_TEXT_PASS_LINES):
            count += len(arr)
            if len(arr) and arr.shape[1] >= 6:
                stats.add(arr[:, 3:6])
        if count == 0:
            raise ValueError(f"{path}: the scan has no points")
        self.count = count
        self._set_layout(path, self.ncol, label_col, label_field)
        stats.done = True
        self.colours = stats

    def _arrays(self, n: int, columns: slice | None = None) -> Iterator[tuple[int, np.ndarray]]:
        path = self.path
        start = 0
        try:
            f = open(path, "r", errors="replace")
        except OSError as e:
            raise ValueError(f"{path}: cannot read: {e.strerror}") from None
        with f:
            for _ in range(self.skip):
                f.readline()
            batch: list[str] = []
            lineno = self.skip
            first_line = lineno + 1
            for line in f:
                lineno += 1
                m = _COMMENT.search(line)
                if not (line[:m.start()] if m else line).strip():
                    continue
                if not batch:
                    first_line = lineno
                batch.append(line)
                if len(batch) == n:
                    arr = self._parse(batch, first_line)
                    yield start, arr if columns is None else arr[:, columns]
                    start += len(arr)
                    batch = []
            if batch:
                arr = self._parse(batch, first_line)
                yield start, arr if columns is None else arr[:, columns]

    def _parse(self, lines: list[str], first_line: int) -> np.ndarray:
        try:
            arr = np.loadtxt(lines, delimiter=self.delim, comments=("#", "//"), dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise ValueError(f"{self.path}: cannot parse as 'x y z [r g b [label]]' text (lines from "
                             f"{first_line}): {e}") from None
        if self.ncol < 0:
            self.ncol = arr.shape[1]
        elif arr.shape[1] != self.ncol:
            raise ValueError(f"{self.path}: cannot parse as 'x y z [r g b [label]]' text: {arr.shape[1]} "
                             f"columns from line {first_line}, {self.ncol} before")
        return arr


class _NpySource(_TableSource):
    def __init__(self, path: Path, label_col: int | None, label_field: str | None) -> None:
        self.path = path
        shape, fortran, dtype, offset = npy_header(path)
        if len(shape) == 1:
            raise ValueError(f"{path}: a 1-D array ({shape[0]} values) looks like per-point labels, "
                             f"not a scan; pass it with --labels next to its scan")
        if len(shape) != 2 or shape[0] == 0:
            raise ValueError(f"{path}: expected an (N, 3|6|7) array, got shape {tuple(shape)}")
        if dtype.kind not in "iuf":
            raise ValueError(f"{path}: array dtype {dtype} is not numeric")
        self.count, self.fortran, self.dtype, self.offset = int(shape[0]), bool(fortran), dtype, offset
        self._set_layout(path, int(shape[1]), label_col, label_field)
        self.colour_dtype = dtype

    def _arrays(self, n: int, columns: slice | None = None) -> Iterator[tuple[int, np.ndarray]]:
        cols = range(self.ncol)[columns] if columns is not None else range(self.ncol)
        item, N, C = self.dtype.itemsize, self.count, self.ncol
        with open(self.path, "rb") as f:
            for a in range(0, N, n):
                k = min(n, N - a)
                if self.fortran:       # column j is contiguous: rows a..a+k of each column wanted
                    out = np.empty((k, len(cols)), self.dtype)
                    for i, j in enumerate(cols):
                        f.seek(self.offset + (j * N + a) * item)
                        out[:, i] = self._read(f, k)
                else:
                    f.seek(self.offset + a * C * item)
                    out = self._read(f, k * C).reshape(k, C)[:, cols.start:cols.stop]
                if columns is None:
                    out = out.astype(np.float64, copy=False)
                yield a, out

    def _read(self, f, k: int) -> np.ndarray:
        v = np.fromfile(f, dtype=self.dtype, count=k)
        if len(v) != k:
            raise ValueError(f"{self.path}: the array's data ends early (truncated or corrupt file)")
        return v


# ----------------------------------------------------------------------------- entry point

def open_chunks(path: str | Path, label_field: str | None = None) -> ChunkedScan:
    """Open ``path`` for reading in chunks (see the module docstring); ``label_field`` as in
    ``read_scan``. Bad input is a one-line ``ValueError`` naming the file."""
    path = Path(path)
    check_regular_file(path, "a scan file")
    suffix = path.suffix.lower()
    col = _column_number(label_field, path) if label_field is not None and label_field.startswith("col:") else None
    if suffix == ".npz":
        raise ValueError(f"{path}: a prepared room (.npz) is not read in chunks; read it whole (read_scan)")
    extra: dict = {}
    if suffix in (".las", ".laz"):
        source: _Source = _LasSource(path, label_field)
        fmt = suffix[1:]
        extra["bounds"] = source.bounds
    elif suffix == ".ply":
        source, extra = _open_ply(path, label_field)
        fmt = "ply"
    elif suffix == ".pcd":
        source, extra = _open_pcd(path, label_field)
        fmt = "pcd"
    elif suffix in (".xyz", ".txt"):
        source, fmt = _TextSource(path, col, label_field), "text"
    elif suffix == ".npy":
        source, fmt = _NpySource(path, col, label_field), "npy"
    else:
        raise ValueError(f"{path}: unknown scan format '{suffix or '(no extension)'}' "
                         f"(known: {', '.join(SCAN_SUFFIXES)})")
    if source.count == 0:
        raise ValueError(f"{path}: the scan has no points")
    return ChunkedScan(path, fmt, source, label_field, **extra)
