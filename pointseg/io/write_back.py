"""Writing a scan back in its own format, with the prediction added to every point.

``write_scan(src, dst, labels, confidence, classes)`` re-reads the scan file ``src`` and writes
``dst`` in the same format holding everything ``src`` held, in the same order, plus two per-point
fields: the predicted class and its confidence (the winning class's probability).

======================  ==================================================================
``.las`` / ``.laz``     same version, point format, scales, offsets, VLRs, EVLRs and every
                        original dimension (raw integers and flag bits, so bit-identical);
                        ``classification`` holds the prediction through a class-to-code table
                        (:func:`las_code_table`); the file's own classification moves to an extra
                        bytes dimension ``original_classification`` when it held anything
                        non-zero; ``confidence`` is a float32 extra bytes dimension. The table
                        goes in the standard Classification Lookup VLR (LASF_Spec 0, names cut to
                        15 characters) unless the file has one, and in full (names, codes,
                        colours, model) as JSON in a ``pointseg`` VLR (record 1).
``.ply``                every element (faces included) and property kept, plus vertex properties
                        ``int label`` and ``float confidence``; written binary little-endian
                        whatever the input encoding; the class table in header comments
                        (``class_table``, ``class I NAME R G B``, ``model``) and
                        ``prediction NAME`` / ``confidence NAME`` naming the added properties.
``.pcd``                every field kept plus ``label`` (int32) and ``confidence`` (float32);
                        ``WIDTH`` x ``HEIGHT`` and ``VIEWPOINT`` kept, so an organised cloud stays
                        organised and its NaN points stay in place; written ``binary`` (also for
                        ``ascii`` and ``binary_compressed`` input); the class table in ``#``
                        header comments.
``.xyz`` / ``.txt``     every original line kept byte for byte, the label and confidence appended
                        to each data line (before an end-of-line comment), with the file's
                        delimiter; a header line gets ``label confidence`` appended.
``.npy``                the original columns then label and confidence columns; a float array
                        keeps its dtype, an integer one becomes float64 (its values exact).
======================  ==================================================================

The added fields are named ``label`` and ``confidence`` unless the file already has a field of that
name (or, for ``label``, a ground-truth field such as ``class``): then ``pred`` (pointseg's name for
a prediction), and failing that a numbered name, so no original field is ever replaced.

``write_scan_chunked(src, dst, labels_at, confidence_at, classes)`` writes the same file for a scan
too large to hold, asking for the prediction of file rows ``[start, stop)`` as it goes: LAS / LAZ
in chunks (a ``.las`` byte-identical to :func:`write_scan`'s), the other formats whole through
:func:`write_scan`.

Points the reader drops (NaN/inf coordinates) stay in the output, in place, with the "no label"
value :data:`NO_LABEL` (-1) and confidence NaN. LAS coordinates are integers, so a LAS file has no
such points. Every file is written to a temporary name and renamed: a failure leaves nothing.
"""
from __future__ import annotations

import io
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ..atomic import atomic_path
from ..classes import ClassTable

NO_LABEL = -1               # PLY, PCD, text, .npy: the label of a point the reader dropped
LAS_DEFAULT_CODE_BASE = 19  # default LAS code of class i: 19 + i (see las_code_table)
LAS_SMALL_FORMATS_MAX_CODE = 31   # point formats 0-5 keep the class in 5 bits
SCAN_OUTPUT_SUFFIXES = (".las", ".laz", ".ply", ".pcd", ".xyz", ".txt", ".npy")
POINTSEG_VLR_USER = "pointseg"
POINTSEG_VLR_RECORD = 1
# comment keywords of a class table in a PLY header (scans.classes_from_comments reads them)
_TABLE_COMMENTS = ("class_table", "class", "model", "prediction", "confidence")


@dataclass
class WriteBack:
    """What :func:`write_scan` wrote: the file, its format, the names of the added fields, the LAS
    code table (LAS only), the number of points that got the no-label value, and notes (one line
    each) about what was done that a user should know."""

    path: Path
    format: str
    label_field: str
    confidence_field: str
    points: int
    no_label_points: int
    codes: dict[str, int] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {"file": self.path.name, "format": self.format, "label_field": self.label_field,
             "confidence_field": self.confidence_field, "points": self.points,
             "no_label_points": self.no_label_points,
             "no_label": None if self.format in (".las", ".laz") else NO_LABEL, "notes": self.notes}
        if self.codes is not None:
            d["las_codes"] = self.codes
        return d


# ----------------------------------------------------------------------------- code tables

def default_las_codes(classes: ClassTable) -> dict[str, int]:
    """Class ``i`` -> code ``19 + i``.

    ASPRS defines codes 0-18 (0 never classified, 1 unclassified, 2 ground, 6 building, 7 and 18
    noise, ...): an indoor "floor" written as 2 or "clutter" as 7 would be read as ground or
    filtered as noise by other tools, so the default leaves them alone. 19-31 is the rest of the
    5-bit range that point formats 0-5 can hold, so the 13 S3DIS classes (ceiling 19, floor 20,
    wall 21, beam 22, column 23, window 24, door 25, table 26, chair 27, sofa 28, bookcase 29,
    board 30, clutter 31) fit every point format with one table.
    """
    if classes.num_classes > 256 - LAS_DEFAULT_CODE_BASE:
        raise ValueError(f"the class table '{classes.name}' has {classes.num_classes} classes, more than "
                         f"the default LAS codes {LAS_DEFAULT_CODE_BASE}-255 hold: pass --las-codes")
    return {name: LAS_DEFAULT_CODE_BASE + i for i, name in enumerate(classes.names)}


def _check_codes(codes: Any, classes: ClassTable, where: str, partial: bool) -> dict[str, int]:
    if not isinstance(codes, Mapping):
        raise ValueError(f"{where}: not a class-to-code table (a mapping such as "
                         f"{{{classes.names[0]}: {LAS_DEFAULT_CODE_BASE}}}), got {type(codes).__name__}")
    out: dict[str, int] = {}
    for name, code in codes.items():
        name = str(name)
        if name not in classes.names:
            raise ValueError(f"{where}: class {name!r} is not in the model's class table "
                             f"({', '.join(classes.names)})")
        if isinstance(code, bool) or not isinstance(code, (int, np.integer)) or not 0 <= int(code) <= 255:
            raise ValueError(f"{where}: the code of {name!r} must be an integer 0-255, got {code!r}")
        out[name] = int(code)
    if not partial:
        missing = [c for c in classes.names if c not in out]
        if missing:
            raise ValueError(f"{where}: no code for {', '.join(missing)}")
    return out


def load_las_codes(path: str | Path, classes: ClassTable) -> dict[str, int]:
    """A ``--las-codes`` file: a YAML or JSON mapping class name -> LAS code (0-255), for some or
    all of the model's classes. Anything else is one ``ValueError`` line naming the file."""
    import yaml
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (--las-codes)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the LAS code table: {getattr(e, 'strerror', None) or e}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: cannot parse the LAS code table ({first})") from None
    return _check_codes(data, classes, f"{path}", partial=True)


def las_code_table(classes: ClassTable, checkpoint_codes: Any = None,
                   override: Mapping[str, int] | None = None) -> dict[str, int]:
    """The class -> LAS code table: the checkpoint's (``las_codes`` in it) if it has one, else
    :func:`default_las_codes`; ``override`` (``--las-codes``) replaces the codes of the classes it
    names. Two classes on one code would make them indistinguishable: refused."""
    if checkpoint_codes is not None:
        codes = _check_codes(checkpoint_codes, classes, "the checkpoint's las_codes", partial=False)
    else:
        codes = default_las_codes(classes)
    codes.update(override or {})
    seen: dict[int, str] = {}
    for name in classes.names:
        c = codes[name]
        if c in seen:
            raise ValueError(f"LAS codes: {seen[c]!r} and {name!r} both get code {c}; every class needs "
                             "its own code (--las-codes)")
        seen[c] = name
    return {name: codes[name] for name in classes.names}


def check_las_codes_fit(src: Path, point_format: int, codes: Mapping[str, int]) -> None:
    """Point formats 0-5 keep the class in 5 bits: a code above 31 cannot be written there."""
    if point_format <= 5:
        big = {n: c for n, c in codes.items() if c > LAS_SMALL_FORMATS_MAX_CODE}
        if big:
            shown = ", ".join(f"{n} {c}" for n, c in list(big.items())[:4])
            raise ValueError(f"{src}: LAS point format {point_format} holds classification codes 0-31 only, "
                             f"but the code table gives {shown}: pass --las-codes with codes 0-31 "
                             "(or convert the file to point format 6-10)")


# ----------------------------------------------------------------------------- entry points

def output_name(src: Path, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The written scan's file name: the scan's own (``site.laz``), or ``NAME.scan.EXT`` when
    another output already has that name (a PLY scan beside the class-coloured ``NAME.ply``)."""
    name = src.name
    return name if name not in taken else f"{src.stem}.scan{src.suffix}"


def check_scan_output(src: str | Path, codes: Mapping[str, int] | None = None) -> None:
    """Refuse, before any work, a scan that cannot be written back: an unknown format, or a LAS
    file whose header cannot be read or whose point format cannot hold ``codes``."""
    src = Path(src)
    suffix = src.suffix.lower()
    if suffix not in SCAN_OUTPUT_SUFFIXES:
        raise ValueError(f"{src}: the scan cannot be written back in its own format ({suffix or 'no suffix'}; "
                         f"known: {', '.join(SCAN_OUTPUT_SUFFIXES)}): leave 'scan' out of --write")
    if suffix in (".las", ".laz") and codes is not None:
        import laspy
        try:
            with laspy.open(str(src)) as r:
                fmt = int(r.header.point_format.id)
        except Exception as e:  # laspy raises many kinds on a damaged header
            raise ValueError(f"{src}: cannot read the LAS/LAZ header ({type(e).__name__}: {e})") from None
        check_las_codes_fit(src, fmt, codes)


def _output_paths(src: str | Path, dst: str | Path) -> tuple[Path, Path, str]:
    """``(src, dst, suffix)`` of a scan written back, refused unless the format can be written
    back and ``dst`` keeps it."""
    src, dst = Path(src), Path(dst)
    suffix = src.suffix.lower()
    if suffix not in SCAN_OUTPUT_SUFFIXES:
        raise ValueError(f"{src}: cannot write a '{suffix}' scan back (known: {', '.join(SCAN_OUTPUT_SUFFIXES)})")
    if dst.suffix.lower() != suffix:
        raise ValueError(f"{dst}: the written scan must keep the format of {src.name} ({suffix})")
    return src, dst, suffix


def write_scan(src: str | Path, dst: str | Path, labels: np.ndarray, confidence: np.ndarray,
               classes: ClassTable, *, kept: np.ndarray | None = None,
               codes: Mapping[str, int] | None = None, model: str | None = None) -> WriteBack:
    """Write ``src`` back to ``dst`` (same format) with the prediction added.

    ``labels`` (class indices into ``classes``) and ``confidence`` are per point the reader kept
    (``Scan.xyz`` order); ``kept`` is ``Scan.kept`` (None: every point), checked against the file.
    ``codes``: the LAS class -> code table (default :func:`las_code_table`).
    """
    src, dst, suffix = _output_paths(src, dst)
    labels = np.asarray(labels)
    confidence = np.asarray(confidence, dtype=np.float32)
    if labels.ndim != 1 or confidence.shape != labels.shape:
        raise ValueError(f"{src}: labels {labels.shape} and confidence {confidence.shape} must be (N,) each")
    if labels.size and (labels.min() < 0 or labels.max() >= classes.num_classes):
        raise ValueError(f"{src}: labels outside the class table 0..{classes.num_classes - 1}")
    if suffix in (".las", ".laz"):
        return _write_las(src, dst, labels, confidence, classes, kept,
                          codes if codes is not None else las_code_table(classes), model)
    writer = {".ply": _write_ply, ".pcd": _write_pcd, ".xyz": _write_text, ".txt": _write_text,
              ".npy": _write_npy}[suffix]
    return writer(src, dst, labels, confidence, classes, kept, model)


def write_probabilities(dst: str | Path, probabilities: np.ndarray, kept: np.ndarray | None = None) -> Path:
    """``(N_file, C)`` float16 class probabilities in the file's point order (rows of points the
    reader dropped are NaN), written atomically as ``.npy``."""
    dst = Path(dst)
    p = np.asarray(probabilities)
    if p.ndim != 2:
        raise ValueError(f"{dst}: probabilities must be (N, C), got {p.shape}")
    full = _file_order(p.astype(np.float16), kept, np.float16(np.nan))
    with atomic_path(dst) as tmp:
        np.save(tmp, full)
    return dst


def _file_order(values: np.ndarray, kept: np.ndarray | None, fill: Any) -> np.ndarray:
    """Per-kept-point ``values`` spread over the file's points (``fill`` where dropped)."""
    if kept is None:
        return values
    out = np.full((len(kept),) + values.shape[1:], fill, dtype=values.dtype)
    out[kept] = values
    return out


def _check_kept(src: Path, finite: np.ndarray, n_values: int, kept: np.ndarray | None) -> np.ndarray | None:
    """The file's kept-point mask as the reader computes it, checked against the caller's."""
    if kept is not None:
        kept = np.asarray(kept, dtype=bool)
        if kept.shape != finite.shape or not np.array_equal(kept, finite):
            raise ValueError(f"{src}: the kept-point mask does not match the file's finite points "
                             "(was the file changed since it was read?)")
    if int(finite.sum()) != n_values:
        raise ValueError(f"{src}: {n_values} predicted points but the file has {int(finite.sum())} points "
                         f"with finite coordinates (was the file changed since it was read?)")
    return None if finite.all() else finite


def _finite_like_reader(x: Any, y: Any, z: Any) -> np.ndarray:
    """Finite after the reader's float32 cast (a double beyond float32's range is dropped there too)."""
    with np.errstate(over="ignore", invalid="ignore"):
        xyz = np.stack([np.asarray(c, dtype=np.float64) for c in (x, y, z)], axis=1).astype(np.float32)
    return np.isfinite(xyz).all(axis=1)


def _free_name(name: str, taken: set[str], avoid: tuple[str, ...] = ()) -> str:
    """``name`` unless the file has it (or any of ``avoid``, ground-truth names a reader would take
    for the label): then ``pred``, then ``NAME_1``, ``NAME_2``, ..."""
    lower = {t.lower() for t in taken}
    if name.lower() not in lower and not any(a in lower for a in avoid):
        return name
    if avoid and "pred" not in lower:
        return "pred"
    i = 1
    while f"{name}_{i}".lower() in lower:
        i += 1
    return f"{name}_{i}"


def _table_lines(classes: ClassTable, model: str | None) -> list[str]:
    for nm in classes.names:
        if "\n" in nm or "\r" in nm:
            raise ValueError(f"class name {nm!r} contains a line break")
    lines = [f"class_table {classes.name}"]
    lines += [f"class {i} {nm} {c[0]} {c[1]} {c[2]}" for i, (nm, c) in enumerate(zip(classes.names, classes.palette))]
    if model:
        lines.append(f"model {model}")
    return lines


# ----------------------------------------------------------------------------- LAS / LAZ
#
# A .las file is rewritten byte by byte: laspy re-encodes the VLRs it knows on writing (a WKT
# loses its trailing NULs, a Classification Lookup its underscores, an Extra Bytes descriptor its
# option bits), so only the bytes that must change are changed: the header's offsets, counts and
# record length, each record's classification bits, the new extra bytes at each record's end,
# the new VLRs after the file's own. A .laz file is decompressed by laspy, built the same way,
# and compressed again by laspy with the file's own VLR / EVLR bytes put back.

_LAS_EXTRA_TYPES = {np.dtype(np.uint8): 1, np.dtype(np.float32): 9}


@dataclass
class _RawVlr:
    header: bytes        # 54 bytes (VLR) or 60 (EVLR), as in the file
    data: bytes

    @property
    def user_id(self) -> str:
        return self.header[2:18].split(b"\0", 1)[0].decode("ascii", "replace")

    @property
    def record_id(self) -> int:
        return int.from_bytes(self.header[18:20], "little")

    @property
    def description(self) -> str:
        size = 32
        return self.header[-size:].split(b"\0", 1)[0].decode("ascii", "replace")

    def tobytes(self) -> bytes:
        return self.header + self.data


def _new_vlr(user_id: str, record_id: int, description: str, data: bytes) -> _RawVlr:
    if len(data) > 65535:
        raise ValueError(f"a LAS VLR holds at most 65535 bytes, '{user_id}' {record_id} needs {len(data)}")
    head = (b"\0\0" + user_id.encode("ascii")[:16].ljust(16, b"\0") + record_id.to_bytes(2, "little")
            + len(data).to_bytes(2, "little") + description.encode("ascii", "replace")[:32].ljust(32, b"\0"))
    return _RawVlr(head, data)


def _parse_vlrs(b: bytes, start: int, count: int, extended: bool, where: str) -> tuple[list[_RawVlr], int]:
    hsize = 60 if extended else 54
    pos, out = start, []
    for i in range(count):
        if pos + hsize > len(b):
            raise ValueError(f"{where}: {'E' if extended else ''}VLR {i} starts past the end of the file")
        ln = int.from_bytes(b[pos + 20:pos + (28 if extended else 22)], "little")
        if pos + hsize + ln > len(b):
            raise ValueError(f"{where}: {'E' if extended else ''}VLR {i} ends past the end of the file")
        out.append(_RawVlr(b[pos:pos + hsize], b[pos + hsize:pos + hsize + ln]))
        pos += hsize + ln
    return out, pos


def _extra_bytes_descriptor(name: str, dtype: np.dtype, description: str) -> bytes:
    """One 192-byte Extra Bytes descriptor (LAS 1.4 R15, 2.6.3): no no-data, min, max, scale or offset."""
    d = bytearray(192)
    d[2] = _LAS_EXTRA_TYPES[np.dtype(dtype)]
    d[4:36] = name.encode("ascii")[:32].ljust(32, b"\0")
    d[160:192] = description.encode("ascii", "replace")[:32].ljust(32, b"\0")
    return bytes(d)


def _u(b: bytes | bytearray, off: int, size: int) -> int:
    return int.from_bytes(b[off:off + size], "little")


def _las_head(src: Path) -> tuple[bytes, list[_RawVlr], bytes, list[_RawVlr], dict]:
    """``(public header, VLRs, bytes between the VLRs and the points, EVLRs, facts)`` of a LAS/LAZ
    file, read from its head (and its EVLRs) without the point records."""
    from .scans import _check_las_header
    size = src.stat().st_size
    _check_las_header(src, size)       # the reader's checks: counts against the file's size, one line
    with open(src, "rb") as fh:
        b = fh.read(375)
        offset = _u(b, 96, 4)
        fh.seek(0)
        head = fh.read(offset)
        minor, hsize = b[25], _u(b, 94, 2)
        evlr_start = _u(b, 235, 8) if minor >= 4 and hsize >= 247 else 0
        ext = b""
        if evlr_start and _u(b, 243, 4):
            fh.seek(evlr_start)
            ext = fh.read()
    nvlr, fmt_byte, rlen = _u(b, 100, 4), b[104], _u(b, 105, 2)
    fmt = fmt_byte & 0x3F
    n = _u(b, 107, 4)
    if minor >= 4 and hsize >= 255 and _u(b, 247, 8):
        n = _u(b, 247, 8)
    vlrs, vend = _parse_vlrs(head, hsize, nvlr, False, str(src))
    if vend > offset:
        raise ValueError(f"{src}: the VLRs run past the start of the point data")
    evlrs: list[_RawVlr] = []
    if ext:
        evlrs, _ = _parse_vlrs(ext, 0, _u(b, 243, 4), True, str(src))
    compressed = bool(fmt_byte & 0xC0) or src.suffix.lower() == ".laz"
    if not compressed and offset + n * rlen > size:
        raise ValueError(f"{src}: header declares {n} points of {rlen} bytes but the file holds only "
                         f"{max(0, size - offset)} point bytes (truncated or corrupt file)")
    if compressed:
        vlrs = [v for v in vlrs if not (v.user_id == "laszip encoded" and v.record_id == 22204)]
    facts = {"minor": minor, "format": fmt, "points": n, "record_length": rlen, "offset": offset,
             "evlr_start": evlr_start, "points_end": offset + n * rlen, "compressed": compressed,
             "waveform_start": _u(b, 227, 8) if minor >= 3 and hsize >= 235 else 0, "size": size}
    return b[:hsize], vlrs, head[vend:offset], evlrs, facts


def _las_source(src: Path) -> tuple[bytes, list[_RawVlr], bytes, np.ndarray, list[_RawVlr], bytes, dict]:
    """``(public header, VLRs, bytes between the VLRs and the points, records (n, length) uint8,
    EVLRs, the file's bytes after the points (.las: verbatim), facts)`` of an uncompressed view."""
    header, vlrs, pre_points, evlrs, facts = _las_head(src)
    n, rlen, offset = facts["points"], facts["record_length"], facts["offset"]
    if facts["compressed"]:
        import laspy
        try:
            las = laspy.read(str(src))
        except Exception as e:
            raise _laz_read_error(src, e) from None
        rec = np.ascontiguousarray(las.points.array).view(np.uint8).reshape(len(las.points), -1)
        if rec.shape[1] != rlen:
            raise ValueError(f"{src}: decompressed records of {rec.shape[1]} bytes, the header says {rlen}")
        tail = b"".join(v.tobytes() for v in evlrs)
        facts["points"] = len(rec)
    else:
        with open(src, "rb") as fh:
            fh.seek(offset)
            rec = np.frombuffer(fh.read(n * rlen), np.uint8).reshape(n, rlen)
            tail = fh.read()
    return header, vlrs, pre_points, rec, evlrs, tail, facts


def _laz_read_error(src: Path, e: Exception) -> ValueError:
    msg = str(e)
    hint = " (reading LAZ needs a LAZ backend: pip install lazrs)" if "backend" in msg.lower() else ""
    return ValueError(f"{src}: cannot read LAS/LAZ ({type(e).__name__}: {msg}){hint}")


def _las_class_bits(fmt: int) -> tuple[int, int]:
    """The byte of a record that holds the classification, and its bits (formats 0-5 keep
    synthetic / key-point / withheld in the top 3)."""
    return (15, 0x1F) if fmt <= 5 else (16, 0xFF)


@dataclass
class _LasPlan:
    """What the written LAS file is made of: everything before the point records (``prefix``, with
    the changed header and the new VLRs), and how each record is rebuilt (:meth:`records`)."""

    prefix: bytes
    vlrs: list[_RawVlr]
    cls_byte: int
    cls_mask: int
    table: np.ndarray                              # class index -> code
    added: list[tuple[str, np.dtype, str, str]]    # (name, dtype, description, 'original' | 'confidence')
    record_length: int                             # of the output records
    conf_name: str
    notes: list[str]

    def records(self, rec: np.ndarray, labels: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """Source records ``(k, length)`` uint8 with their labels and confidence -> output records."""
        n, cls_byte, cls_mask = len(rec), self.cls_byte, self.cls_mask
        out = np.empty((n, self.record_length), np.uint8)
        out[:, :rec.shape[1]] = rec
        # formats 0-5 keep synthetic / key-point / withheld in the classification byte's top 3 bits
        out[:, cls_byte] = (rec[:, cls_byte] & ~np.uint8(cls_mask) & 0xFF) | self.table[labels]
        col = rec.shape[1]
        for _, dt, _, kind in self.added:
            values = rec[:, cls_byte] & cls_mask if kind == "original" else confidence
            out[:, col:col + dt.itemsize] = np.ascontiguousarray(values, dtype=dt.newbyteorder("<")).view(
                np.uint8).reshape(n, dt.itemsize)
            col += dt.itemsize
        return out


def _las_plan(src: Path, header: bytes, vlrs: list[_RawVlr], pre_points: bytes, evlrs: list[_RawVlr],
              f: dict, original_nonzero: int, classes: ClassTable, codes: Mapping[str, int],
              model: str | None) -> _LasPlan:
    """The header / VLR changes of a written LAS file (one place for :func:`write_scan` and
    :func:`write_scan_chunked`); ``original_nonzero``: the points whose own classification is not 0."""
    n, fmt = f["points"], f["format"]
    check_las_codes_fit(src, fmt, codes)
    if any(v.user_id == "LASF_Spec" and v.record_id == 4 for v in evlrs):
        raise ValueError(f"{src}: the extra bytes are described in an EVLR; writing more of them there "
                         "is not supported")
    cls_byte, cls_mask = _las_class_bits(fmt)
    notes: list[str] = []
    names = _las_dimension_names(vlrs, fmt)
    added: list[tuple[str, np.dtype, str, str]] = []
    if original_nonzero:
        orig_name = _free_name("original_classification", names)
        added.append((orig_name, np.dtype(np.uint8), "classification before pointseg", "original"))
        notes.append(f"the file's own classification (non-zero on {original_nonzero:,} points) is "
                     f"kept in the extra bytes dimension '{orig_name}'")
    conf_name = _free_name("confidence", names | {a[0] for a in added})
    added.append((conf_name, np.dtype(np.float32), "pointseg winning class prob", "confidence"))
    record_length = f["record_length"] + sum(a[1].itemsize for a in added)
    table = np.array([codes[nm] for nm in classes.names], dtype=np.uint8)
    # VLRs: the file's own, in order (pointseg's old table dropped), then the new ones.
    descriptors = b"".join(_extra_bytes_descriptor(nm, dt, d) for nm, dt, d, _ in added)
    new_vlrs: list[_RawVlr] = []
    has_eb = False
    for v in vlrs:
        if v.user_id == POINTSEG_VLR_USER and v.record_id == POINTSEG_VLR_RECORD:
            continue
        if v.user_id == "LASF_Spec" and v.record_id == 4 and not has_eb:
            has_eb = True
            data = v.data + descriptors
            v = _RawVlr(v.header[:20] + len(data).to_bytes(2, "little") + v.header[22:], data)
        new_vlrs.append(v)
    if not has_eb:
        new_vlrs.append(_new_vlr("LASF_Spec", 4, "Extra Bytes Record", descriptors))
    new_vlrs += _table_vlrs(vlrs, classes, codes, model, notes)
    vlr_bytes = b"".join(v.tobytes() for v in new_vlrs)
    offset = len(header) + len(vlr_bytes) + len(pre_points)
    points_size = n * record_length
    h = bytearray(header)
    h[96:100] = offset.to_bytes(4, "little")
    h[100:104] = len(new_vlrs).to_bytes(4, "little")
    h[104] = fmt
    h[105:107] = record_length.to_bytes(2, "little")
    shift = offset + points_size - f["points_end"]
    if f["compressed"]:
        shift = offset + points_size - f["evlr_start"] if f["evlr_start"] else 0
    if f["evlr_start"]:
        h[235:243] = (f["evlr_start"] + shift).to_bytes(8, "little")
    if f["waveform_start"] and not f["compressed"] and f["waveform_start"] >= f["points_end"]:
        h[227:235] = (f["waveform_start"] + shift).to_bytes(8, "little")
    return _LasPlan(bytes(h) + vlr_bytes + pre_points, new_vlrs, cls_byte, cls_mask, table, added,
                    record_length, conf_name, notes)


def _write_las(src: Path, dst: Path, labels: np.ndarray, confidence: np.ndarray, classes: ClassTable,
               kept: np.ndarray | None, codes: Mapping[str, int], model: str | None) -> WriteBack:
    header, vlrs, pre_points, rec, evlrs, tail, f = _las_source(src)
    n = f["points"]
    _check_kept(src, np.ones(n, dtype=bool), len(labels), kept)   # scaled integers: never NaN
    cls_byte, cls_mask = _las_class_bits(f["format"])
    nonzero = int(np.count_nonzero(rec[:, cls_byte] & cls_mask))
    plan = _las_plan(src, header, vlrs, pre_points, evlrs, f, nonzero, classes, codes, model)
    body = plan.prefix + plan.records(rec, labels, confidence.astype("<f4")).tobytes() + tail
    with atomic_path(dst) as tmp:
        if dst.suffix.lower() == ".laz":
            _compress_las(body, plan.vlrs, evlrs, tmp, dst)
        else:
            tmp.write_bytes(body)
    return WriteBack(dst, dst.suffix.lower(), "classification", plan.conf_name, n, 0, dict(codes), plan.notes)


DEFAULT_CHUNK_BYTES = 64 << 20     # write_scan_chunked: source point records read per step


def write_scan_chunked(src: str | Path, dst: str | Path, labels_at: Callable[[int, int], np.ndarray],
                       confidence_at: Callable[[int, int], np.ndarray], classes: ClassTable, *,
                       codes: Mapping[str, int] | None = None, model: str | None = None,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> WriteBack:
    """:func:`write_scan` for a scan too large to hold: the prediction comes from callbacks.

    ``labels_at(start, stop)`` gives the int64 labels (class indices into ``classes``) of the file's
    rows ``[start, stop)``, ``-1`` for a row the reader dropped (non-finite coordinates);
    ``confidence_at(start, stop)`` their float32 confidence (NaN where dropped). ``codes`` and
    ``model`` as for :func:`write_scan`.

    LAS / LAZ are written in chunks: the source records are read ``chunk_bytes`` at a time and the
    rebuilt records written to a temporary file in ``dst``'s folder, renamed onto ``dst`` at the end,
    so memory does not grow with the file. Two passes read the source: the first only for whether
    its own classification holds anything (then kept as ``original_classification``), the second
    to write. A ``.las`` comes out byte-identical to :func:`write_scan`'s; a ``.laz`` is compressed
    by laspy's chunked writer and holds the same points, header fields and VLRs / EVLRs. LAS points
    are never dropped, so a ``-1`` label there is refused.

    Other formats are **not** chunked: the labels of every row are asked for at once and
    :func:`write_scan` writes the file whole (the rows with label ``-1`` must be exactly the
    points the reader drops).
    """
    src, dst, suffix = _output_paths(src, dst)
    if suffix not in (".las", ".laz"):
        from .chunks import open_chunks
        n = open_chunks(src).count
        labels = np.asarray(labels_at(0, n))
        confidence = np.asarray(confidence_at(0, n), dtype=np.float32)
        if labels.shape != (n,) or confidence.shape != (n,):
            raise ValueError(f"{src}: labels {labels.shape} and confidence {confidence.shape} must be ({n},) each")
        kept = labels >= 0
        return write_scan(src, dst, labels[kept], confidence[kept], classes,
                          kept=None if kept.all() else kept, codes=codes, model=model)
    codes = codes if codes is not None else las_code_table(classes)
    return _write_las_chunked(src, dst, labels_at, confidence_at, classes, codes, model, int(chunk_bytes))


def _las_record_chunks(src: Path, f: dict, k: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, records (m, length) uint8)`` of the source, ``k`` records at a time."""
    n, rlen = f["points"], f["record_length"]
    if not f["compressed"]:
        with open(src, "rb") as fh:
            for a in range(0, n, k):
                m = min(k, n - a)
                fh.seek(f["offset"] + a * rlen)
                rec = np.fromfile(fh, np.uint8, m * rlen)
                if len(rec) != m * rlen:
                    raise ValueError(f"{src}: the point records end early (truncated or changed file)")
                yield a, rec.reshape(m, rlen)
        return
    import laspy
    try:
        reader = laspy.open(str(src))
    except Exception as e:
        raise _laz_read_error(src, e) from None
    with reader:
        a, it = 0, reader.chunk_iterator(k)
        while True:
            try:
                pts = next(it, None)
            except Exception as e:
                raise _laz_read_error(src, e) from None
            if pts is None:
                break
            rec = np.ascontiguousarray(pts.array).view(np.uint8).reshape(len(pts), -1)
            if rec.shape[1] != rlen:
                raise ValueError(f"{src}: decompressed records of {rec.shape[1]} bytes, the header says {rlen}")
            yield a, rec
            a += len(rec)
    if a != n:
        raise ValueError(f"{src}: header declares {n} points but {a} were decompressed (corrupt file)")


def _chunk_prediction(src: Path, labels_at: Callable, confidence_at: Callable, a: int, b: int,
                      classes: ClassTable) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels_at(a, b))
    confidence = np.asarray(confidence_at(a, b), dtype="<f4")
    if labels.shape != (b - a,) or confidence.shape != (b - a,):
        raise ValueError(f"{src}: labels {labels.shape} and confidence {confidence.shape} of points {a}..{b} "
                         f"must be ({b - a},) each")
    if labels.size and (labels.min() < 0 or labels.max() >= classes.num_classes):
        raise ValueError(f"{src}: labels outside the class table 0..{classes.num_classes - 1} in points "
                         f"{a}..{b} (a LAS point is never dropped: every one needs a class)")
    return labels, confidence


def _write_las_chunked(src: Path, dst: Path, labels_at: Callable, confidence_at: Callable, classes: ClassTable,
                       codes: Mapping[str, int], model: str | None, chunk_bytes: int) -> WriteBack:
    header, vlrs, pre_points, evlrs, f = _las_head(src)
    n = f["points"]
    k = max(1, chunk_bytes // max(1, f["record_length"]))
    cls_byte, cls_mask = _las_class_bits(f["format"])
    nonzero = sum(int(np.count_nonzero(rec[:, cls_byte] & cls_mask)) for _, rec in _las_record_chunks(src, f, k))
    plan = _las_plan(src, header, vlrs, pre_points, evlrs, f, nonzero, classes, codes, model)
    with atomic_path(dst) as tmp:
        if f["compressed"]:
            _write_laz_chunks(src, dst, tmp, f, k, plan, evlrs, labels_at, confidence_at, classes)
        else:
            with open(tmp, "wb") as out:
                out.write(plan.prefix)
                for a, rec in _las_record_chunks(src, f, k):
                    labels, confidence = _chunk_prediction(src, labels_at, confidence_at, a, a + len(rec), classes)
                    out.write(plan.records(rec, labels, confidence).tobytes())
                with open(src, "rb") as fh:              # EVLRs, waveform data: verbatim
                    fh.seek(f["points_end"])
                    shutil.copyfileobj(fh, out, 1 << 16)
    return WriteBack(dst, dst.suffix.lower(), "classification", plan.conf_name, n, 0, dict(codes), plan.notes)


def _write_laz_chunks(src: Path, dst: Path, tmp: Path, f: dict, k: int, plan: _LasPlan, evlrs: list[_RawVlr],
                      labels_at: Callable, confidence_at: Callable, classes: ClassTable) -> None:
    """LAZ through laspy's writer, a chunk of points at a time; the header and VLRs as
    :func:`_compress_las` makes them."""
    import laspy
    from laspy.vlrs.vlrlist import VLRList
    h = bytearray(plan.prefix)               # the uncompressed header, with no points and no EVLRs
    h[107:111] = bytes(4)
    if f["minor"] >= 4 and len(h) >= 255:
        h[235:255] = bytes(20)
    try:
        with laspy.open(io.BytesIO(bytes(h))) as r:
            header = r.header
        header.vlrs = _raw_vlr_list(header, plan.vlrs)
        dtype = header.point_format.dtype()
        with laspy.open(str(tmp), mode="w", header=header, do_compress=True) as w:
            ranges: dict = {}
            for a, rec in _las_record_chunks(src, f, k):
                labels, confidence = _chunk_prediction(src, labels_at, confidence_at, a, a + len(rec), classes)
                out = plan.records(rec, labels, confidence)
                points = laspy.PackedPointRecord(out.view(dtype).reshape(-1), header.point_format)
                w.write_points(points)
                ranges = _extra_bytes_ranges(w.header, points, ranges)
            _set_extra_bytes_ranges(w.header, ranges)
            if evlrs and header.version.minor >= 4:
                w.write_evlrs(VLRList([laspy.VLR(v.user_id, v.record_id, v.description, v.data) for v in evlrs]))
    except laspy.errors.LaspyException as e:
        raise ValueError(f"{dst}: cannot write LAZ: {e}") from None


def _extra_bytes_ranges(header: Any, points: Any, ranges: dict | None = None) -> dict:
    """``name -> (min, max)`` raw values of each typed extra dimension over ``points``, grown from
    ``ranges`` (the ``no_data`` value left out)."""
    ranges = dict(ranges or {})
    ebs = header.vlrs.get("ExtraBytesVlr")
    for s in (ebs[0].extra_bytes_structs if ebs else []):
        if s.data_type == 0 or not len(points):
            continue
        name = s.format_name()
        raw = np.asarray(points.array[name]).reshape(len(points), -1)
        k = raw.shape[1]
        lo, hi = ranges.get(name, (np.full(k, np.nan), np.full(k, np.nan)))
        lo, hi = lo.copy(), hi.copy()
        no_data = s.no_data
        for i in range(k):
            v = raw[:, i]
            if no_data is not None:
                v = v[v != no_data[i]]
            if v.size:
                lo[i] = np.nanmin([lo[i], v.min()])
                hi[i] = np.nanmax([hi[i], v.max()])
        ranges[name] = (lo, hi)
    return ranges


def _set_extra_bytes_ranges(header: Any, ranges: dict) -> None:
    ebs = header.vlrs.get("ExtraBytesVlr")
    for s in (ebs[0].extra_bytes_structs if ebs else []):
        if s.format_name() not in ranges:
            continue
        lo, hi = ranges[s.format_name()]
        for i in range(len(lo)):
            if np.isnan(lo[i]):
                continue
            if s.min_is_relevant():
                s._raw_min()[i] = lo[i]
            if s.max_is_relevant():
                s._raw_max()[i] = hi[i]


def _raw_vlr_list(header: Any, vlrs: list[_RawVlr]) -> Any:
    """The VLRs as the bytes they were (laspy would re-encode the ones it knows), but for the Extra
    Bytes VLR: laspy's own, parsed into ``header``'s point format."""
    import laspy
    from laspy.vlrs.known import ExtraBytesVlr
    from laspy.vlrs.vlrlist import VLRList
    parsed_eb = next(v for v in header.vlrs if isinstance(v, ExtraBytesVlr))
    raw = VLRList()
    for v in vlrs:
        if v.user_id == "LASF_Spec" and v.record_id == 4:
            raw.append(parsed_eb)
        else:
            raw.append(laspy.VLR(v.user_id, v.record_id, v.description, v.data))
    return raw


_LAS_BASE_DIMS = {
    0: ("X", "Y", "Z", "intensity", "return_number", "number_of_returns", "scan_direction_flag",
        "edge_of_flight_line", "classification", "synthetic", "key_point", "withheld", "scan_angle_rank",
        "user_data", "point_source_id"),
    6: ("X", "Y", "Z", "intensity", "return_number", "number_of_returns", "synthetic", "key_point", "withheld",
        "overlap", "scanner_channel", "scan_direction_flag", "edge_of_flight_line", "classification",
        "user_data", "scan_angle", "point_source_id", "gps_time"),
}


def _las_dimension_names(vlrs: list[_RawVlr], fmt: int) -> set[str]:
    """Names a new extra dimension must not take: the format's own and the file's extra bytes."""
    names = set(_LAS_BASE_DIMS[0 if fmt <= 5 else 6]) | {"gps_time", "red", "green", "blue", "nir"}
    for v in vlrs:
        if v.user_id == "LASF_Spec" and v.record_id == 4:
            for k in range(len(v.data) // 192):
                names.add(v.data[192 * k + 4:192 * k + 36].split(b"\0", 1)[0].decode("ascii", "replace"))
    return names


def _table_vlrs(vlrs: list[_RawVlr], classes: ClassTable, codes: Mapping[str, int], model: str | None,
                notes: list[str]) -> list[_RawVlr]:
    """The class table as the standard Classification Lookup VLR (LASF_Spec 0: code + 15-byte
    name, which LAS viewers show) unless the file has one, and in full as JSON in pointseg's VLR."""
    out = []
    if any(v.user_id == "LASF_Spec" and v.record_id == 0 for v in vlrs):
        notes.append("the file's Classification Lookup VLR is kept as it was (it describes the original "
                     "codes); the new codes' names are in the pointseg VLR and the JSON")
    else:
        data = b"".join(codes[nm].to_bytes(1, "little") + nm.encode("ascii", "replace")[:15].ljust(15, b"\0")
                        for nm in classes.names)
        out.append(_new_vlr("LASF_Spec", 0, "Classification Lookup", data))
    payload = {"classes": classes.to_dict(), "codes": dict(codes), "model": model,
               "fields": {"classification": "predicted class through codes",
                          "confidence": "winning class probability"}}
    out.append(_new_vlr(POINTSEG_VLR_USER, POINTSEG_VLR_RECORD, "pointseg class table",
                        json.dumps(payload, separators=(",", ":")).encode()))
    return out


def _compress_las(body: bytes, vlrs: list[_RawVlr], evlrs: list[_RawVlr], tmp: Path, dst: Path) -> None:
    """LAZ through laspy, with every VLR / EVLR put back as the bytes it was (laspy would re-encode
    the ones it knows); only the Extra Bytes VLR is laspy's own, rebuilt from the point format, with
    each dimension's true min / max (laspy 2.7's own takes the first point's value for both)."""
    import laspy
    from laspy.vlrs.vlrlist import VLRList
    try:
        las = laspy.read(io.BytesIO(body))
        las.header.vlrs = _raw_vlr_list(las.header, vlrs)
        with open(tmp, "wb+") as out, laspy.LasWriter(out, las.header, do_compress=True, closefd=False) as w:
            w.write_points(las.points)
            _set_extra_bytes_ranges(w.header, _extra_bytes_ranges(w.header, las.points))
            if evlrs and las.header.version.minor >= 4:
                w.write_evlrs(VLRList([laspy.VLR(v.user_id, v.record_id, v.description, v.data) for v in evlrs]))
    except laspy.errors.LaspyException as e:
        raise ValueError(f"{dst}: cannot write LAZ: {e}") from None


# ----------------------------------------------------------------------------- PLY

class _PlyElement:
    """One element of a PLY file in little-endian binary form: a structured array when every
    instance has the same layout (no lists, or lists of one length), else the raw bytes of each
    instance."""

    def __init__(self, name: str, count: int, header_lines: list[bytes]) -> None:
        self.name, self.count, self.header_lines = name, count, header_lines
        self.array: np.ndarray | None = None
        self.instances: list[bytes] | None = None

    def tobytes(self) -> bytes:
        if self.array is not None:
            return self.array.tobytes()
        return b"".join(self.instances or [])


def _ply_fixed_dtype(props: list, end: str, list_lengths: list[int]) -> np.dtype:
    """The record dtype of an element whose list properties all have the given lengths."""
    fields, k = [], 0
    for i, p in enumerate(props):
        if p.count_dtype:
            fields.append((f"__count{i}", end + p.count_dtype))
            fields.append((p.name, end + p.dtype, (list_lengths[k],)))
            k += 1
        else:
            fields.append((p.name, end + p.dtype))
    return np.dtype(fields)


def _ply_binary_elements(path: Path, info: dict, data: memoryview, raw_elements: list) -> list[_PlyElement]:
    end = "<" if info["format"] == "binary_little_endian" else ">"
    pos, out = 0, []
    for e, lines in zip(info["elements"], raw_elements):
        el = _PlyElement(e["name"], e["count"], lines)
        props, n = e["props"], e["count"]
        lists = [p for p in props if p.count_dtype]
        lengths: list[int] = [0] * len(lists)
        if lists and n:
            lengths = []
            # Read the first instance's list lengths: most files (triangles) repeat them.
            q = pos
            for p in props:
                if p.count_dtype:
                    cdt = np.dtype(end + p.count_dtype)
                    if q + cdt.itemsize > len(data):
                        raise ValueError(f"{path}: element '{e['name']}' ends early (truncated file)")
                    k = int(np.frombuffer(data, cdt, 1, q)[0])
                    if k < 0:
                        raise ValueError(f"{path}: element '{e['name']}' 0: negative list length {k}")
                    lengths.append(k)
                    q += cdt.itemsize + k * np.dtype(p.dtype).itemsize
                else:
                    q += np.dtype(p.dtype).itemsize
        dt = _ply_fixed_dtype(props, end, lengths)
        fixed = False
        if pos + n * dt.itemsize <= len(data):
            rec = np.frombuffer(data, dt, n, pos)
            fixed = all(np.all(rec[f"__count{props.index(p)}"] == k) for p, k in zip(lists, lengths))
        if fixed:
            el.array = rec.astype(dt.newbyteorder("<"))   # every field, sub-arrays too
            pos += n * dt.itemsize
        else:
            el.instances, pos = _ply_walk(path, e, data, pos, end)
        out.append(el)
    return out


def _ply_walk(path: Path, e: dict, data: memoryview, pos: int, end: str) -> tuple[list[bytes], int]:
    """Instance by instance (lists of varying length), each made little-endian."""
    inst = []
    for i in range(e["count"]):
        parts = []
        for p in e["props"]:
            if p.count_dtype:
                cdt = np.dtype(end + p.count_dtype)
                if pos + cdt.itemsize > len(data):
                    raise ValueError(f"{path}: element '{e['name']}' ends inside number {i} (truncated file)")
                k = int(np.frombuffer(data, cdt, 1, pos)[0])
                vdt = np.dtype(end + p.dtype)
                if k < 0 or pos + cdt.itemsize + k * vdt.itemsize > len(data):
                    raise ValueError(f"{path}: element '{e['name']}' {i}: bad list length {k}")
                parts.append(np.frombuffer(data, cdt, 1, pos).astype(cdt.newbyteorder("<")).tobytes())
                pos += cdt.itemsize
                parts.append(np.frombuffer(data, vdt, k, pos).astype(vdt.newbyteorder("<")).tobytes())
                pos += k * vdt.itemsize
            else:
                vdt = np.dtype(end + p.dtype)
                if pos + vdt.itemsize > len(data):
                    raise ValueError(f"{path}: element '{e['name']}' ends inside number {i} (truncated file)")
                parts.append(np.frombuffer(data, vdt, 1, pos).astype(vdt.newbyteorder("<")).tobytes())
                pos += vdt.itemsize
        inst.append(b"".join(parts))
    return inst, pos


def _ascii_value_bytes(tok: str, dtype: str, path: Path, where: str) -> bytes:
    v = float(tok)
    dt = np.dtype("<" + dtype)
    if dt.kind != "f":
        info = np.iinfo(dt)
        if v != round(v) or not info.min <= v <= info.max:
            raise ValueError(f"{path}: {where}: {tok!r} is not a {dt} value")
        return np.array(int(v), dt).tobytes()
    return np.array(v, dt).tobytes()


def _ply_ascii_elements(path: Path, info: dict, data: bytes, raw_elements: list) -> list[_PlyElement]:
    from .cloud_files import _ascii_table, _check_int_range
    lines = data.decode("ascii", errors="strict").split("\n")
    li, out = 0, []
    for e, hl in zip(info["elements"], raw_elements):
        el = _PlyElement(e["name"], e["count"], hl)
        n, props = e["count"], e["props"]
        chunk = [ln for ln in lines[li:li + n]]
        if len(chunk) < n or (n and not chunk[-1].strip()):
            raise ValueError(f"{path}: header declares {n} '{e['name']}' but the file holds fewer lines")
        li += n
        if not any(p.count_dtype for p in props):
            arr = _ascii_table(chunk, len(props), path, f"{e['name']} data", lambda j, c: (
                f"{e['name']} {j}: {c} values, the header declares {len(props)} properties"))
            dt = np.dtype([(p.name, "<" + p.dtype) for p in props])
            rec = np.empty(n, dt)
            for c, p in enumerate(props):
                if p.dtype[0] != "f":
                    _check_int_range(arr[:, c], p.dtype, path, f"{e['name']} property '{p.name}'")
                rec[p.name] = arr[:, c]
            el.array = rec
        else:
            inst = []
            for j, line in enumerate(chunk):
                tok, t, parts = line.split(), 0, []
                try:
                    for p in props:
                        if p.count_dtype:
                            k = int(tok[t])
                            parts.append(_ascii_value_bytes(tok[t], p.count_dtype, path, f"{e['name']} {j}"))
                            parts += [_ascii_value_bytes(v, p.dtype, path, f"{e['name']} {j}")
                                      for v in tok[t + 1:t + 1 + k]]
                            if len(tok) < t + 1 + k:
                                raise IndexError
                            t += 1 + k
                        else:
                            parts.append(_ascii_value_bytes(tok[t], p.dtype, path, f"{e['name']} {j}"))
                            t += 1
                except (IndexError, ValueError) as ex:
                    if str(ex).startswith(str(path)):
                        raise
                    raise ValueError(f"{path}: cannot parse {e['name']} {j} ({line[:60]!r})") from None
                if t != len(tok):
                    raise ValueError(f"{path}: {e['name']} {j}: {len(tok)} values, expected {t}")
                inst.append(b"".join(parts))
            el.instances = inst
        out.append(el)
    return out


def _ply_raw_header(path: Path) -> tuple[list[bytes], int]:
    """The header's lines (without line ends) up to and excluding ``end_header``."""
    with open(path, "rb") as f:
        lines = []
        while True:
            raw = f.readline(65536)
            if not raw:
                raise ValueError(f"{path}: PLY header has no end_header line")
            line = raw.rstrip(b"\r\n")
            if line.strip() == b"end_header":
                return lines, f.tell()
            lines.append(line)


def _write_ply(src: Path, dst: Path, labels: np.ndarray, confidence: np.ndarray, classes: ClassTable,
               kept: np.ndarray | None, model: str | None) -> WriteBack:
    from .cloud_files import LABEL_FIELDS, PRED_FIELDS, _check_ply_sizes, parse_ply_header
    size = src.stat().st_size
    with open(src, "rb") as f:
        info = parse_ply_header(src, f)
        _check_ply_sizes(src, info, size - info["data_offset"], info["format"] != "ascii")
        data = f.read()
    header, offset = _ply_raw_header(src)
    if offset != info["data_offset"]:
        raise ValueError(f"{src}: the PLY header changed while it was read")
    # Split the header: lines before the first element, then each element's lines.
    pre: list[bytes] = []
    raw_elements: list[list[bytes]] = []
    # pointseg's own class table from an earlier run is replaced by the prediction's (two tables
    # would merge in classes_from_comments); other comments are kept
    has_table = any(ln.split()[:2] == [b"comment", b"class_table"] for ln in header)
    for line in header[1:]:
        tok = line.split()
        if tok and tok[0] == b"element":
            raw_elements.append([line])
        elif tok and tok[0] in (b"comment", b"obj_info") or not raw_elements:
            if tok and tok[0] == b"format":
                continue
            if (has_table and tok and tok[0] == b"comment" and len(tok) > 1
                    and tok[1].decode("ascii", "replace") in _TABLE_COMMENTS):
                continue
            pre.append(line)
        else:
            raw_elements[-1].append(line)
    if info["format"] == "ascii":
        try:
            elements = _ply_ascii_elements(src, info, data, raw_elements)
        except UnicodeDecodeError:
            raise ValueError(f"{src}: PLY ascii data is not ASCII text") from None
    else:
        elements = _ply_binary_elements(src, info, memoryview(data), raw_elements)
    vertex = next(el for el in elements if el.name == "vertex")
    vinfo = next(e for e in info["elements"] if e["name"] == "vertex")
    names = {p.name for p in vinfo["props"]}
    for c in "xyz":
        if c not in names:
            raise ValueError(f"{src}: PLY vertex element has no '{c}' property")
    if vertex.array is None:
        # vertices with varying lists: the coordinates from the reader, which walks them
        from .cloud_files import read_ply_fields
        xyz = read_ply_fields(src)["xyz"]
        finite = np.isfinite(xyz).all(axis=1)
    else:
        finite = _finite_like_reader(vertex.array["x"], vertex.array["y"], vertex.array["z"])
    kept = _check_kept(src, finite, len(labels), kept)
    lab = _file_order(labels.astype(np.int32), kept, np.int32(NO_LABEL))
    conf = _file_order(confidence.astype(np.float32), kept, np.float32(np.nan))
    label_name = _free_name("label", names, LABEL_FIELDS + PRED_FIELDS)
    conf_name = _free_name("confidence", names | {label_name})
    if vertex.array is not None:
        old = vertex.array
        dt = np.dtype(old.dtype.descr + [(label_name, "<i4"), (conf_name, "<f4")])
        rec = np.empty(len(old), dt)
        for nm in old.dtype.names:
            rec[nm] = old[nm]
        rec[label_name], rec[conf_name] = lab, conf
        vertex.array = rec
    else:
        extra = np.empty(len(lab), dtype=[("l", "<i4"), ("c", "<f4")])
        extra["l"], extra["c"] = lab, conf
        vertex.instances = [b + extra[i].tobytes() for i, b in enumerate(vertex.instances or [])]
    vertex.header_lines = vertex.header_lines + [f"property int {label_name}".encode(),
                                                 f"property float {conf_name}".encode()]
    table = _table_lines(classes, model) + [f"prediction {label_name}", f"confidence {conf_name}"]
    out = [b"ply", b"format binary_little_endian 1.0"] + pre
    out += [f"comment {t}".encode("utf-8") for t in table]
    for el in elements:
        out += el.header_lines
    out.append(b"end_header")
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"\n".join(out) + b"\n")
            for el in elements:
                f.write(el.tobytes())
    return WriteBack(dst, ".ply", label_name, conf_name, len(lab), int(len(lab) - finite.sum()))


# ----------------------------------------------------------------------------- PCD

def lzf_decompress(src: bytes, size: int) -> bytes:
    """LZF (liblzf's format, PCL's ``binary_compressed``) to exactly ``size`` bytes; a corrupt
    stream is a ValueError."""
    out = bytearray()
    i, n = 0, len(src)
    while i < n:
        ctrl = src[i]
        i += 1
        if ctrl < 32:                         # a literal run of ctrl + 1 bytes
            ln = ctrl + 1
            if i + ln > n:
                raise ValueError("LZF literal run past the end of the data")
            out += src[i:i + ln]
            i += ln
        else:                                 # a back reference: length, then distance
            ln = ctrl >> 5
            if ln == 7:
                if i >= n:
                    raise ValueError("LZF data ends inside a back reference")
                ln += src[i]
                i += 1
            if i >= n:
                raise ValueError("LZF data ends inside a back reference")
            ref = len(out) - ((ctrl & 0x1F) << 8) - src[i] - 1
            i += 1
            ln += 2
            if ref < 0:
                raise ValueError("LZF back reference before the start of the data")
            dist = len(out) - ref
            if ln <= dist:
                out += out[ref:ref + ln]
            else:                             # overlapping: the last `dist` bytes repeat
                pattern = bytes(out[ref:])
                out += (pattern * (ln // dist + 1))[:ln]
        if len(out) > size:
            raise ValueError(f"LZF data decompresses past the declared {size} bytes")
    if len(out) != size:
        raise ValueError(f"LZF data decompresses to {len(out)} bytes, the header declares {size}")
    return bytes(out)


def _pcd_records(src: Path, h: dict, data: bytes) -> np.ndarray:
    """Every point of a PCD as a little-endian structured array in the file's field order."""
    from .cloud_files import _ascii_table, _check_int_range
    n = h["points"]
    dt = np.dtype([(nm, "<" + d, (c,)) if c > 1 else (nm, "<" + d)
                   for nm, d, c in zip(h["fields"], h["dtypes"], h["counts"])])
    if h["data"] == "binary":
        if len(data) < n * dt.itemsize:
            raise ValueError(f"{src}: header declares {n} points but the data ends early (truncated file)")
        return np.frombuffer(data, dt, n).copy()
    if h["data"] == "binary_compressed":
        if len(data) < 8:
            raise ValueError(f"{src}: compressed PCD data has no size words (truncated file)")
        csize, usize = (int(v) for v in np.frombuffer(data, "<u4", 2))
        if usize != n * dt.itemsize or 8 + csize > len(data):
            raise ValueError(f"{src}: compressed PCD sizes ({csize} -> {usize} bytes) do not fit {n} points "
                             f"of {dt.itemsize} bytes (corrupt file)")
        try:
            raw = lzf_decompress(data[8:8 + csize], usize)
        except ValueError as e:
            raise ValueError(f"{src}: compressed PCD data: {e}") from None
        rec = np.empty(n, dt)
        pos = 0
        for nm in dt.names:       # field by field: each field's values for all points, in turn
            fdt = dt.fields[nm][0]
            rec[nm] = np.frombuffer(raw, fdt.base, n * max(1, int(np.prod(fdt.shape))), pos).reshape((n,) + fdt.shape)
            pos += n * fdt.itemsize
        return rec
    text = data.decode("ascii", errors="replace")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    nvals = sum(h["counts"])
    if len(lines) != n:
        raise ValueError(f"{src}: header declares {n} points but the file holds {len(lines)} lines of data")
    arr = _ascii_table(lines, nvals, src, "PCD data", lambda j, c: f"point {j}: {c} values, expected {nvals}")
    rec = np.empty(n, dt)
    c0 = 0
    for nm, d, c in zip(h["fields"], h["dtypes"], h["counts"]):
        vals = arr[:, c0:c0 + c]
        if d[0] != "f":
            _check_int_range(vals, d, src, f"field '{nm}'")
        rec[nm] = vals[:, 0] if c == 1 else vals
        c0 += c
    return rec


def _write_pcd(src: Path, dst: Path, labels: np.ndarray, confidence: np.ndarray, classes: ClassTable,
               kept: np.ndarray | None, model: str | None) -> WriteBack:
    from .cloud_files import LABEL_FIELDS, PRED_FIELDS, parse_pcd_header
    with open(src, "rb") as f:
        h = parse_pcd_header(src, f)
        f.seek(0)
        head = f.read(h["data_offset"])
        data = f.read()
    rec = _pcd_records(src, h, data)
    for c in "xyz":
        if c not in rec.dtype.names:
            raise ValueError(f"{src}: PCD has no '{c}' field")
    col = (lambda c: rec[c] if rec[c].ndim == 1 else rec[c][:, 0])
    finite = _finite_like_reader(col("x"), col("y"), col("z"))
    kept = _check_kept(src, finite, len(labels), kept)
    lab = _file_order(labels.astype(np.int32), kept, np.int32(NO_LABEL))
    conf = _file_order(confidence.astype(np.float32), kept, np.float32(np.nan))
    names = set(rec.dtype.names)
    label_name = _free_name("label", names, LABEL_FIELDS + PRED_FIELDS)
    conf_name = _free_name("confidence", names | {label_name})
    out = np.empty(len(rec), np.dtype(rec.dtype.descr + [(label_name, "<i4"), (conf_name, "<f4")]))
    for nm in rec.dtype.names:
        out[nm] = rec[nm]
    out[label_name], out[conf_name] = lab, conf
    # FIELDS / SIZE / TYPE / COUNT written whole (a header may leave SIZE, TYPE or COUNT to their
    # defaults); every other line as it was; the class table as '#' comments before VERSION.
    sizes = [np.dtype(d).itemsize for d in h["dtypes"]] + [4, 4]
    types = [{"f": "F", "i": "I", "u": "U"}[np.dtype(d).kind] for d in h["dtypes"]] + ["I", "F"]
    counts = list(h["counts"]) + [1, 1]
    layout = [f"FIELDS {' '.join(list(h['fields']) + [label_name, conf_name])}",
              f"SIZE {' '.join(map(str, sizes))}", f"TYPE {' '.join(types)}",
              f"COUNT {' '.join(map(str, counts))}"]
    raw_lines = head.decode("ascii", errors="strict").splitlines()
    has_table = any(ln.split()[:2] == ["#", "class_table"] for ln in raw_lines)
    lines: list[str] = []
    for raw in raw_lines:
        tok = raw.split()
        key = tok[0].upper() if tok else ""
        if has_table and tok and tok[0] == "#" and len(tok) > 1 and tok[1] in _TABLE_COMMENTS:
            continue          # pointseg's own class table from an earlier run: replaced below
        if key == "VERSION":
            lines += [f"# {t}" for t in _table_lines(classes, model)]
            lines += [f"# prediction {label_name}", f"# confidence {conf_name}"]
        if key == "FIELDS":
            lines += layout
            continue
        if key in ("SIZE", "TYPE", "COUNT"):
            continue
        lines.append("DATA binary" if key == "DATA" else raw)
    if not any(ln.startswith("# class_table") for ln in lines):      # no VERSION line
        lines[:0] = [f"# {t}" for t in _table_lines(classes, model)] + [
            f"# prediction {label_name}", f"# confidence {conf_name}"]
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(lines) + "\n").encode("ascii"))
            f.write(out.tobytes())
    return WriteBack(dst, ".pcd", label_name, conf_name, len(lab), int(len(lab) - finite.sum()),
                     notes=["binary_compressed input written as binary"] if h["data"] == "binary_compressed" else [])


# ----------------------------------------------------------------------------- text and .npy

_COMMENT = re.compile(rb"#|//")


def _write_text(src: Path, dst: Path, labels: np.ndarray, confidence: np.ndarray, classes: ClassTable,
                kept: np.ndarray | None, model: str | None) -> WriteBack:
    from .scans import _read_text
    xyz = _read_text(src)["xyz"]           # the reader's rows, in order, before NaN points are dropped
    finite = np.isfinite(xyz).all(axis=1)
    kept = _check_kept(src, finite, len(labels), kept)
    lab = _file_order(labels.astype(np.int64), kept, NO_LABEL)
    conf = _file_order(confidence.astype(np.float32), kept, np.float32(np.nan))
    lines = src.read_bytes().splitlines(keepends=True)
    out: list[bytes] = []
    row, seen_data, delim = 0, False, b" "
    for line in lines:
        body = line.rstrip(b"\r\n")
        ending = line[len(body):]
        m = _COMMENT.search(body)
        content, comment = (body[:m.start()], body[m.start():]) if m else (body, b"")
        if not content.strip():
            out.append(line)
            continue
        if not seen_data:
            seen_data = True
            delim = b"," if b"," in content else b"\t" if b"\t" in content.strip() else b" "
            try:
                [float(v) for v in content.replace(b",", b" ").split()]
            except ValueError:            # a header line: name the new columns
                out.append(content.rstrip() + delim + b"label" + delim + b"confidence" + comment + ending)
                continue
        if row >= len(lab):
            raise ValueError(f"{src}: more data lines than the reader found points (was the file changed?)")
        add = delim + str(int(lab[row])).encode() + delim + (b"nan" if np.isnan(conf[row]) else
                                                              (b"%.6g" % float(conf[row])))
        out.append(content.rstrip() + add + (b" " + comment if comment else b"") + ending)
        row += 1
    if row != len(lab):
        raise ValueError(f"{src}: {row} data lines but the reader found {len(lab)} points (was the file changed?)")
    with atomic_path(dst) as tmp:
        tmp.write_bytes(b"".join(out))
    return WriteBack(dst, src.suffix.lower(), "label", "confidence", len(lab), int(len(lab) - finite.sum()),
                     notes=["text: the last two columns are label and confidence"])


def _write_npy(src: Path, dst: Path, labels: np.ndarray, confidence: np.ndarray, classes: ClassTable,
               kept: np.ndarray | None, model: str | None) -> WriteBack:
    from .scans import _read_npy, load_npy_checked
    xyz = _read_npy(src)["xyz"]
    arr = load_npy_checked(src)
    finite = np.isfinite(xyz).all(axis=1)
    kept = _check_kept(src, finite, len(labels), kept)
    lab = _file_order(labels.astype(np.int64), kept, NO_LABEL)
    conf = _file_order(confidence.astype(np.float32), kept, np.float32(np.nan))
    # A float array keeps its dtype (coordinates bit-identical); integer columns go to float64,
    # which holds every int32 and every integer up to 2**53 exactly.
    dtype = arr.dtype if arr.dtype.kind == "f" and arr.dtype.itemsize >= 4 else np.dtype(np.float64)
    out = np.empty((arr.shape[0], arr.shape[1] + 2), dtype=dtype)
    out[:, :-2] = arr
    out[:, -2] = lab
    out[:, -1] = conf
    notes = [f"npy: columns {arr.shape[1]} and {arr.shape[1] + 1} (0-based) are label and confidence"]
    if dtype != arr.dtype:
        notes.append(f"npy: {arr.dtype} array written as float64 (values unchanged)")
    with atomic_path(dst) as tmp:
        np.save(tmp, out)
    return WriteBack(dst, ".npy", "label", "confidence", len(lab), int(len(lab) - finite.sum()), notes=notes)
