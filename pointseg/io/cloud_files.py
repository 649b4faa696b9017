"""Strict PLY and PCD readers: every count and every value is checked against the header.

Open3D's readers log a warning and return the declared number of points when the data is
short (the rest uninitialised memory), so ASCII and binary PLY / PCD are parsed here instead:

* a header that declares more points (or values) than the file holds is an error naming the
  file, the element and the counts; so is a value that does not parse, an integer property
  outside its type's range, or a declared count that the file's size cannot hold (checked
  before anything is allocated);
* the last value of an ASCII file is read whole whether or not the file ends with a newline;
* binary PLY elements with list properties (faces) and elements before ``vertex`` are walked
  through, not assumed absent.

``read_ply_fields`` / ``read_pcd_fields`` return ``{"xyz", "rgb"?, "label"?, "pred"?}``, every
per-point property by name (``columns``: what ``read_scan(path, label_field=...)`` picks from) and
the PLY header comments; :mod:`pointseg.io.scans` turns them into a ``Scan``. A header comment
``prediction NAME`` (PLY) or ``# prediction NAME`` (PCD), as :mod:`pointseg.io.write_back` writes,
makes property ``NAME`` the prediction whatever its name (``label`` included).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

LABEL_FIELDS = ("label", "class", "scalar_label", "semantic")
PRED_FIELDS = ("pred", "prediction", "scalar_pred")

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_MAX_HEADER_LINES = 100_000


class _Prop:
    __slots__ = ("name", "dtype", "count_dtype")

    def __init__(self, name: str, dtype: str, count_dtype: str | None = None) -> None:
        self.name, self.dtype, self.count_dtype = name, dtype, count_dtype


def _decode(raw: bytes, path: Path, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: {what} is not ASCII text ({raw[:40]!r})") from None


def _ascii_table(lines: list[str], width: int, path: Path, what: str,
                 wrong_width: Callable[[int, int], str]) -> np.ndarray:
    """``(len(lines), width)`` float64 rows of whitespace-separated numbers. A row with another
    count is refused with ``wrong_width(row, count)``; a value that is not a number names ``what``."""
    counts = [len(line.split()) for line in lines]
    bad = next((j for j, c in enumerate(counts) if c != width), None)
    if bad is not None:
        raise ValueError(f"{path}: {wrong_width(bad, counts[bad])}")
    try:
        return np.array(" ".join(lines).split(), dtype=np.float64).reshape(len(lines), width)
    except ValueError as ex:
        raise ValueError(f"{path}: {what}: {ex}") from None


def _count(tok: str, path: Path, what: str) -> int:
    try:
        n = int(tok)
    except ValueError:
        raise ValueError(f"{path}: {what} {tok!r} is not an integer") from None
    if n < 0:
        raise ValueError(f"{path}: {what} is negative ({n})")
    return n


def _check_int_range(values: np.ndarray, dtype: str, path: Path, where: str) -> None:
    info = np.iinfo(np.dtype(dtype))
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(f"{path}: {where}: integer property holds a non-integer value")
    if values.min() < info.min or values.max() > info.max:
        raise ValueError(f"{path}: {where}: value outside the range of its type {np.dtype(dtype)} "
                         f"({values.min():g}..{values.max():g})")


# ----------------------------------------------------------------------------- PLY

def parse_ply_header(path: Path, f) -> dict:
    """Header of a PLY file opened as ``f`` (binary); leaves ``f`` at the first data byte."""
    magic = f.readline(64)
    if magic.rstrip(b"\r\n") != b"ply":
        raise ValueError(f"{path}: not a PLY file (first line is {magic[:20]!r})")
    info: dict = {"format": None, "elements": [], "comments": []}
    for lineno in range(2, _MAX_HEADER_LINES):
        raw = f.readline(65536)
        if not raw:
            raise ValueError(f"{path}: PLY header has no end_header line")
        text = raw.rstrip(b"\r\n")
        tok0 = text.split(None, 1)[0] if text.strip() else b""
        if tok0 in (b"comment", b"obj_info"):
            c = text.split(None, 1)
            info["comments"].append(c[1].decode("utf-8", errors="replace") if len(c) > 1 else "")
            continue
        line = _decode(text, path, f"PLY header line {lineno}")
        tok = line.split()
        if not tok:
            continue
        where = f"PLY header line {lineno}"
        if tok[0] == "end_header":
            info["data_offset"] = f.tell()
            info["header_lines"] = lineno
            if info["format"] is None:
                raise ValueError(f"{path}: PLY header has no format line")
            return info
        if tok[0] == "format":
            if info["format"] is not None:
                raise ValueError(f"{path}: {where}: format given twice")
            if len(tok) != 3 or tok[1] not in ("ascii", "binary_little_endian", "binary_big_endian"):
                raise ValueError(f"{path}: {where}: unknown PLY format {' '.join(tok[1:])!r}")
            info["format"] = tok[1]
        elif tok[0] == "element":
            if len(tok) != 3:
                raise ValueError(f"{path}: {where}: expected 'element NAME COUNT', got {line!r}")
            if any(e["name"] == tok[1] for e in info["elements"]):
                raise ValueError(f"{path}: {where}: element {tok[1]!r} declared twice")
            info["elements"].append({"name": tok[1], "count": _count(tok[2], path, f"{where}: count"),
                                     "props": []})
        elif tok[0] == "property":
            if not info["elements"]:
                raise ValueError(f"{path}: {where}: property before any element")
            props = info["elements"][-1]["props"]
            if len(tok) == 5 and tok[1] == "list":
                if tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES or _PLY_TYPES[tok[2]][0] == "f":
                    raise ValueError(f"{path}: {where}: bad list property types {tok[2]!r} {tok[3]!r}")
                p = _Prop(tok[4], _PLY_TYPES[tok[3]], _PLY_TYPES[tok[2]])
            elif len(tok) == 3 and tok[1] in _PLY_TYPES:
                p = _Prop(tok[2], _PLY_TYPES[tok[1]])
            else:
                raise ValueError(f"{path}: {where}: cannot parse property line {line!r}")
            if any(q.name == p.name for q in props):
                raise ValueError(f"{path}: {where}: property {p.name!r} declared twice")
            props.append(p)
        else:
            raise ValueError(f"{path}: {where}: unknown keyword {tok[0]!r}")
    raise ValueError(f"{path}: PLY header too long")


def read_ply_fields(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as f:
        info = parse_ply_header(path, f)
        avail = size - info["data_offset"]
        binary = info["format"] != "ascii"
        _check_ply_sizes(path, info, avail, binary)
        data = f.read(avail + 1)
    vertex = next((e for e in info["elements"] if e["name"] == "vertex"), None)
    if vertex is None or vertex["count"] == 0:
        raise ValueError(f"{path}: PLY file has no vertices")
    names = [p.name for p in vertex["props"]]
    for c in "xyz":
        if c not in names:
            raise ValueError(f"{path}: PLY vertex element has no '{c}' property (has {names})")
    if binary:
        columns = _ply_binary(path, info, data)
    else:
        columns = _ply_ascii(path, info, data)
    out = _fields_from_columns(path, columns, vertex["count"], prediction_name(info["comments"]))
    out["comments"] = info["comments"]
    return out


def _check_ply_sizes(path: Path, info: dict, avail: int, binary: bool) -> None:
    """Refuse counts that the file's size cannot hold, before allocating anything."""
    need = 0
    for e in info["elements"]:
        if binary:
            per = sum(np.dtype(p.count_dtype if p.count_dtype else p.dtype).itemsize for p in e["props"])
        else:
            per = 2 * len(e["props"])       # the shortest value plus a separator
        need += e["count"] * per
    if need > avail + (0 if binary else 1):
        counts = ", ".join(f"{e['count']} {e['name']}" for e in info["elements"])
        raise ValueError(f"{path}: header declares {counts} but the file holds only {avail} data bytes, "
                         f"fewer than the {need} they need (truncated or corrupt file)")


def _ply_binary(path: Path, info: dict, data: bytes) -> dict[str, np.ndarray]:
    end = "<" if info["format"] == "binary_little_endian" else ">"
    pos = 0
    columns: dict[str, np.ndarray] = {}
    for e in info["elements"]:
        n = e["count"]
        has_list = any(p.count_dtype for p in e["props"])
        if not has_list:
            dt = np.dtype([(p.name, end + p.dtype) for p in e["props"]])
            nbytes = n * dt.itemsize
            if pos + nbytes > len(data):
                raise ValueError(f"{path}: element '{e['name']}' needs {nbytes} bytes but the file ends "
                                 f"after {len(data) - pos} (truncated or corrupt file)")
            if e["name"] == "vertex":
                rec = np.frombuffer(data, dtype=dt, count=n, offset=pos)
                columns = {p.name: rec[p.name] for p in e["props"]}
                for p in e["props"]:
                    if p.dtype[0] != "f":
                        columns[p.name] = columns[p.name].astype(np.int64)
            pos += nbytes
            continue
        # An element with list properties: walk it instance by instance.
        keep = e["name"] == "vertex"
        vals: dict[str, list] = {p.name: [] for p in e["props"] if not p.count_dtype}
        for i in range(n):
            for p in e["props"]:
                if p.count_dtype:
                    cdt = np.dtype(end + p.count_dtype)
                    if pos + cdt.itemsize > len(data):
                        raise _ply_short(path, e, i)
                    k = int(np.frombuffer(data, cdt, 1, pos)[0])
                    if k < 0:
                        raise ValueError(f"{path}: element '{e['name']}' {i}: negative list length {k}")
                    pos += cdt.itemsize + k * np.dtype(p.dtype).itemsize
                    if pos > len(data):
                        raise _ply_short(path, e, i)
                else:
                    dt = np.dtype(end + p.dtype)
                    if pos + dt.itemsize > len(data):
                        raise _ply_short(path, e, i)
                    if keep:
                        vals[p.name].append(np.frombuffer(data, dt, 1, pos)[0])
                    pos += dt.itemsize
        if keep:
            columns = {k: np.asarray(v, dtype=np.float64 if any(p.name == k and p.dtype[0] == "f"
                                                                for p in e["props"]) else np.int64)
                       for k, v in vals.items()}
    return columns


def _ply_short(path: Path, e: dict, i: int) -> ValueError:
    return ValueError(f"{path}: header declares {e['count']} '{e['name']}' but the file ends inside "
                      f"number {i} (truncated or corrupt file)")


def _ply_ascii(path: Path, info: dict, data: bytes) -> dict[str, np.ndarray]:
    text = _decode(data, path, "PLY ascii data")
    lines = text.split("\n")
    li = 0
    columns: dict[str, np.ndarray] = {}
    for e in info["elements"]:
        n, props = e["count"], e["props"]
        has_list = any(p.count_dtype for p in props)
        chunk = lines[li:li + n]
        if len(chunk) < n or (n and not chunk[-1].strip()):
            got = sum(1 for c in chunk if c.strip())
            raise ValueError(f"{path}: header declares {n} '{e['name']}' but the file holds only {got} "
                             f"lines of them (truncated or corrupt file)")
        first_line = li + 1 + _header_lines(info)
        li += n
        if e["name"] != "vertex":
            continue
        if has_list:
            rows = []
            for j, line in enumerate(chunk):
                tok = line.split()
                row, t = [], 0
                for p in props:
                    try:
                        if p.count_dtype:
                            k = int(tok[t])
                            t += 1 + k
                        else:
                            row.append(float(tok[t]))
                            t += 1
                    except (IndexError, ValueError):
                        raise ValueError(f"{path}: line {first_line + j}: cannot parse vertex {j}") from None
                if t != len(tok):
                    raise ValueError(f"{path}: line {first_line + j}: {len(tok)} values, expected {t}")
                rows.append(row)
            arr = np.asarray(rows, dtype=np.float64).reshape(n, -1)
            scalar = [p for p in props if not p.count_dtype]
        else:
            k = len(props)
            arr = _ascii_table(chunk, k, path, "vertex data", lambda j, c: (
                f"line {first_line + j}: {c} values for vertex {j}, the header declares {k} properties"))
            scalar = props
        for c, p in enumerate(scalar):
            if p.dtype[0] != "f":
                _check_int_range(arr[:, c], p.dtype, path, f"vertex property '{p.name}'")
            columns[p.name] = arr[:, c]
    rest = [ln for ln in lines[li:] if ln.strip()]
    if rest:
        raise ValueError(f"{path}: {len(rest)} more line(s) of data than the header declares")
    return columns


def _header_lines(info: dict) -> int:
    return info.get("header_lines", 0)


# ----------------------------------------------------------------------------- PCD

_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_PCD_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


def parse_pcd_header(path: Path, f) -> dict:
    h: dict = {}
    comments: list[str] = []
    lineno = 0
    for lineno in range(1, 200):
        raw = f.readline(65536)
        if not raw:
            break
        try:
            line = _decode(raw.rstrip(b"\r\n"), path, f"PCD header line {lineno}")
        except ValueError:
            if not h:
                raise ValueError(f"{path}: not a PCD file (header line {lineno} is not text)") from None
            raise
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            if tok:
                comments.append(line.strip().lstrip("#").strip())
            continue
        key = tok[0].upper()
        if key not in _PCD_KEYS:
            if not h:
                raise ValueError(f"{path}: not a PCD file (header line {lineno} is {line[:40]!r})")
            raise ValueError(f"{path}: PCD header line {lineno}: unknown keyword {tok[0]!r}")
        if key in h:
            raise ValueError(f"{path}: PCD header line {lineno}: {key} given twice")
        h[key] = tok[1:]
        if key == "DATA":
            h["data_offset"] = f.tell()
            h["data_line"] = lineno + 1
            break
    if "POINTS" not in h and "FIELDS" not in h:
        raise ValueError(f"{path}: not a PCD file (no FIELDS / POINTS line in the header)")
    if "DATA" not in h:
        raise ValueError(f"{path}: PCD header has no DATA line (header only, or not a PCD file)")
    fields = h.get("FIELDS", [])
    k = len(fields)
    if k == 0:
        raise ValueError(f"{path}: PCD header has no FIELDS")
    if len(set(fields)) != k:
        raise ValueError(f"{path}: PCD FIELDS repeat a name: {fields}")
    sizes = [_count(s, path, "PCD SIZE") for s in h.get("SIZE", ["4"] * k)]
    types = [t.upper() for t in h.get("TYPE", ["F"] * k)]
    counts = [_count(c, path, "PCD COUNT") for c in h.get("COUNT", ["1"] * k)]
    if not (len(sizes) == len(types) == len(counts) == k):
        raise ValueError(f"{path}: PCD FIELDS/SIZE/TYPE/COUNT have different lengths "
                         f"({k}, {len(sizes)}, {len(types)}, {len(counts)})")
    dtypes = []
    for name, t, s in zip(fields, types, sizes):
        if (t, s) not in _PCD_TYPES:
            raise ValueError(f"{path}: PCD field {name!r} has unsupported TYPE {t} SIZE {s}")
        dtypes.append(_PCD_TYPES[(t, s)])
    if any(c == 0 for c in counts):
        raise ValueError(f"{path}: PCD COUNT of 0")
    if "POINTS" in h:
        if len(h["POINTS"]) != 1:
            raise ValueError(f"{path}: malformed PCD POINTS line")
        n = _count(h["POINTS"][0], path, "PCD POINTS")
    else:
        w = _count((h.get("WIDTH") or ["0"])[0], path, "PCD WIDTH")
        hh = _count((h.get("HEIGHT") or ["1"])[0], path, "PCD HEIGHT")
        n = w * hh
    if len(h["DATA"]) != 1 or h["DATA"][0].lower() not in ("ascii", "binary", "binary_compressed"):
        raise ValueError(f"{path}: PCD DATA {' '.join(h['DATA'])!r} is not ascii, binary or binary_compressed")
    width, height = (h.get("WIDTH") or ["0"])[0], (h.get("HEIGHT") or ["1"])[0]
    width, height = (int(width), int(height)) if width.isdigit() and height.isdigit() else (n, 1)
    viewpoint = None
    if "VIEWPOINT" in h:
        try:
            viewpoint = tuple(float(v) for v in h["VIEWPOINT"])
        except ValueError:
            raise ValueError(f"{path}: PCD VIEWPOINT {' '.join(h['VIEWPOINT'])!r} is not 7 numbers") from None
        if len(viewpoint) != 7 or not np.all(np.isfinite(viewpoint)):
            raise ValueError(f"{path}: PCD VIEWPOINT {' '.join(h['VIEWPOINT'])!r} is not 7 finite numbers")
    # An organised cloud (an RGB-D driver's image grid) is WIDTH x HEIGHT = POINTS with HEIGHT > 1.
    organized = (width, height) if height > 1 and width * height == n else None
    return {"fields": fields, "dtypes": dtypes, "counts": counts, "points": n,
            "data": h["DATA"][0].lower(), "data_offset": h["data_offset"], "data_line": h["data_line"],
            "organized": organized, "viewpoint": viewpoint, "comments": comments}


def check_pcd_sizes(path: Path, h: dict, size: int) -> None:
    """A PCD header's point count against the file's ``size`` (at least the bytes, or for ASCII
    two characters a value, the points need); one-line ``ValueError`` naming the file."""
    avail = size - h["data_offset"]
    n = h["points"]
    if n == 0:
        raise ValueError(f"{path}: the PCD header declares 0 points")
    nvals = sum(h["counts"])
    per = (sum(np.dtype(d).itemsize * c for d, c in zip(h["dtypes"], h["counts"]))
           if h["data"] == "binary" else 2 * nvals if h["data"] == "ascii" else 0)
    if n * per > avail + (1 if h["data"] == "ascii" else 0):
        raise ValueError(f"{path}: header declares {n} points but the file holds only {avail} data "
                         f"bytes, fewer than the {n * per} they need (truncated or corrupt file)")


def read_pcd_fields(path: Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as f:
        h = parse_pcd_header(path, f)
        check_pcd_sizes(path, h, size)
        avail, n, nvals = size - h["data_offset"], h["points"], sum(h["counts"])
        if h["data"] == "binary_compressed":
            data = b""
        else:
            data = f.read(avail + 1)
    frame = {"organized": h["organized"], "viewpoint": h["viewpoint"]}
    if h["data"] == "binary_compressed":
        return {**_pcd_compressed_open3d(path, n, prediction_name(h["comments"])), **frame}
    cols: dict[str, np.ndarray] = {}
    if h["data"] == "binary":
        dt = np.dtype([(nm, "<" + d, (c,)) if c > 1 else (nm, "<" + d)
                       for nm, d, c in zip(h["fields"], h["dtypes"], h["counts"])])
        rec = np.frombuffer(data, dtype=dt, count=n)
        for nm, c in zip(h["fields"], h["counts"]):
            cols[nm] = rec[nm] if c == 1 else rec[nm][:, 0]
    else:
        text = _decode(data, path, "PCD ascii data")
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if len(lines) != n:
            raise ValueError(f"{path}: header declares {n} points but the file holds {len(lines)} "
                             f"lines of data (truncated or corrupt file)")
        arr = _ascii_table(lines, nvals, path, "PCD data", lambda j, c: (
            f"point {j} (after line {h['data_line'] - 1}): {c} values, the header declares {nvals}"))
        c0 = 0
        for nm, d, c in zip(h["fields"], h["dtypes"], h["counts"]):
            col = arr[:, c0]
            if d[0] != "f":
                _check_int_range(arr[:, c0:c0 + c], d, path, f"field '{nm}'")
            if nm in ("rgb", "rgba"):
                col = (col.astype(np.float32).view(np.uint32) if d[0] == "f"
                       else col.astype(np.uint64).astype(np.uint32))
            cols[nm] = col
            c0 += c
    for c in "xyz":
        if c not in cols:
            raise ValueError(f"{path}: PCD has no '{c}' field (has {h['fields']})")
    if "rgb" in cols or "rgba" in cols:
        v = cols.pop("rgb" if "rgb" in cols else "rgba")
        v = v.view(np.uint32) if v.dtype == np.float32 else v.astype(np.uint32)
        cols["red"] = ((v >> 16) & 255).astype(np.uint8)
        cols["green"] = ((v >> 8) & 255).astype(np.uint8)
        cols["blue"] = (v & 255).astype(np.uint8)
    return {**_fields_from_columns(path, cols, n, prediction_name(h["comments"])), **frame}


def _pcd_compressed_open3d(path: Path, n: int, pred_name: str | None = None) -> dict:
    import open3d as o3d
    try:
        pc = o3d.t.io.read_point_cloud(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path}: Open3D cannot read it: {e}") from None
    if "positions" not in pc.point or len(pc.point.positions) != n:
        raise ValueError(f"{path}: header declares {n} points but the compressed data could not be "
                         f"read in full (truncated or corrupt file)")
    cols = {"x": pc.point.positions.numpy()[:, 0], "y": pc.point.positions.numpy()[:, 1],
            "z": pc.point.positions.numpy()[:, 2]}
    if "colors" in pc.point:
        c = pc.point.colors.numpy()
        cols.update(red=c[:, 0], green=c[:, 1], blue=c[:, 2])
    # every other field by name (label, CloudCompare scalar fields, ...), its first value per point
    for nm in pc.point:
        if nm not in ("positions", "colors"):
            cols[nm] = pc.point[nm].numpy().reshape(n, -1)[:, 0]
    return _fields_from_columns(path, cols, n, pred_name)


# ----------------------------------------------------------------------------- shared

def prediction_name(comments: list[str]) -> str | None:
    """The property that a header comment ``prediction NAME`` (written by io.write_back) names:
    the prediction, whatever its name (``label`` included), so it is not taken for ground truth."""
    for c in comments:
        tok = c.split()
        if len(tok) == 2 and tok[0] == "prediction":
            return tok[1]
    return None


def _fields_from_columns(path: Path, cols: dict[str, np.ndarray], n: int, pred_name: str | None = None) -> dict:
    xyz = np.stack([np.asarray(cols[c], dtype=np.float64) for c in "xyz"], axis=1)
    if len(xyz) != n:
        raise ValueError(f"{path}: header declares {n} points but {len(xyz)} were read")
    out: dict = {"xyz": xyz}        # float64: large coordinates are shifted before float32 (io.scans)
    if all(c in cols for c in ("red", "green", "blue")):
        out["rgb"] = np.stack([np.asarray(cols[c]) for c in ("red", "green", "blue")], axis=1)
    if pred_name in cols:
        out["pred"] = np.asarray(cols[pred_name])
    for key, names in (("label", LABEL_FIELDS), ("pred", PRED_FIELDS)):
        for nm in names:
            if key in out:
                break
            if nm in cols and nm != pred_name:
                out[key] = np.asarray(cols[nm])
    out["columns"] = cols
    return out
