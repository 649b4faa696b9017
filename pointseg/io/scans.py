"""Reading room scans in the formats people have, and writing labelled PLY files.

``read_scan(path)`` returns a :class:`Scan` whatever the format:

======================  ==================================================================
``.ply``                ASCII or binary, parsed strictly by :mod:`pointseg.io.cloud_files` (every
                        count and value checked against the header); extra vertex properties
                        ``label`` (also ``class``, ``scalar_label``) and ``pred`` (also
                        ``prediction``) are kept. Class names and palette come from the
                        header ``comment`` lines that :func:`write_labelled_ply` writes.
``.pcd``                ASCII or binary, parsed strictly the same way (fields ``rgb`` / ``label``
                        / ``pred`` kept); ``binary_compressed`` goes through Open3D with its
                        point count checked.
``.xyz`` / ``.txt``     one point per line ``x y z [r g b [label]]``, separated by whitespace or
                        commas; ``#`` comments and one header line are skipped.
``.npy``                an ``(N, 3)``, ``(N, 6)`` or ``(N, 7)`` array: ``x y z [r g b [label]]``.
``.las`` / ``.laz``     laspy (a dependency; ``.laz`` also needs a LAZ backend such as
                        ``lazrs``). Colours are taken from red/green/blue; an extra dimension
                        named ``label`` / ``pred`` is read. The ASPRS ``classification`` field
                        is *not* read as a label: its codes (ground, building, ...) are not
                        room classes.
``.npz``                a prepared S3DIS room (:func:`pointseg.io.rooms.load_room`).
======================  ==================================================================

Only regular files are read (a FIFO or a device such as ``/dev/zero`` is refused), and a count a
header declares (PLY / PCD points, ``.npy`` shape, LAS point count) is checked against the
file's size before anything is allocated.

Colours given as floats in ``0..1`` (PLY float properties, text files whose colour columns are
all ``<= 1``) are scaled to ``0..255``; 16-bit LAS colours are scaled down to 8 bits.

Non-finite coordinates (NaN / inf): those points are **dropped**, counted in
``Scan.dropped`` and reported with a warning; ``Scan.kept`` is then the boolean mask over the
file's points that were kept (``None`` when nothing was dropped), so per-point outputs can be
mapped back onto the file's order. A scan with no finite point is an error.

``read_scan(path, label_field=NAME)`` reads one named per-point field instead of guessing the
label: a PLY / PCD property, a LAS dimension (``classification``) or ``col:N`` (0-based column of
a text / ``.npy`` file, which may then have any number of columns). Its values come back as read
in ``Scan.raw_label`` (float or integer, unvalidated: a class map decides what they mean) and
``Scan.label`` stays None; a file without the field gives ``raw_label=None`` and lists the fields
it has in ``Scan.field_names``.
"""
from __future__ import annotations

import colorsys
import os
import stat
import tokenize
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..classes import NO_LABEL, S3DIS, S3DIS_CLASSES, S3DIS_PALETTE, ClassTable
from ..atomic import atomic_path
from .cloud_files import read_pcd_fields, read_ply_fields

SCAN_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".npy", ".las", ".laz", ".npz")
LABEL_FIELDS = ("label", "class", "scalar_label", "semantic")
PRED_FIELDS = ("pred", "prediction", "scalar_pred")


@dataclass
class Scan:
    """One point cloud with optional colours, ground truth and prediction.

    ``xyz`` float32 ``(N, 3)``; ``rgb`` uint8 ``(N, 3)`` or ``None``; ``label`` (ground truth) and
    ``pred`` (a prediction) int32 ``(N,)`` or ``None``; ``classes`` the class table the file
    carries (``None`` if it carries none); ``path`` where it was read from; ``dropped`` how many
    points of the file had non-finite coordinates and ``kept`` the mask of the others.
    """

    xyz: np.ndarray
    rgb: np.ndarray | None = None
    label: np.ndarray | None = None
    pred: np.ndarray | None = None
    classes: ClassTable | None = None
    path: Path | None = None
    dropped: int = 0
    kept: np.ndarray | None = None
    model: str | None = None          # the model that produced ``pred``, when the file says so
    # What the file says of its frame (read by engine.frame.FileHints): an organised cloud's
    # (width, height) and a PCD's VIEWPOINT (tx ty tz qw qx qy qz).
    organized: tuple[int, int] | None = None
    viewpoint: tuple[float, ...] | None = None
    # The file is in the S3DIS training convention already (a prepared room .npz: z up, metres,
    # walls along x/y), so the frame is not estimated.
    training_frame: bool = False
    # The file's coordinates are ``xyz + origin`` (float64 (3,)): set when they are too large for
    # float32 to keep millimetres (georeferenced LAS, UTM text), so xyz holds local coordinates.
    origin: np.ndarray | None = None
    # Only when read with a named label field (read_scan(path, label_field=...)): the field asked
    # for, its raw values (None: the file lacks it) and the per-point fields the file has.
    label_field: str | None = None
    raw_label: np.ndarray | None = None
    field_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = str(self.path) if self.path is not None else "scan"
        self.xyz = np.ascontiguousarray(self.xyz, dtype=np.float32)
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"{where}: xyz must be (N, 3), got {self.xyz.shape}")
        n = len(self.xyz)
        if self.rgb is not None:
            self.rgb = np.ascontiguousarray(self.rgb, dtype=np.uint8)
            if self.rgb.shape != (n, 3):
                raise ValueError(f"{where}: {n} points but colours of shape {self.rgb.shape}")
        for attr in ("label", "pred"):
            v = getattr(self, attr)
            if v is not None:
                # readers refuse negative labels before a Scan is made; ground truth handed down by
                # a segmentation may mark points without ground truth with NO_LABEL
                setattr(self, attr, check_labels(v, n, where, self.classes, attr, no_label=attr == "label"))

    @property
    def num_points(self) -> int:
        return len(self.xyz)

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "scan"


def check_labels(labels: np.ndarray, n: int, where: str, classes: ClassTable | None = None,
                 what: str = "labels", no_label: bool = False) -> np.ndarray:
    """Validate per-point labels: shape ``(n,)``, integral, non-negative (or ``NO_LABEL`` where
    ``no_label``: ground truth handed down by a segmentation), inside ``classes``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"{where}: {what} has {labels.shape[0] if labels.ndim else 0} entries "
                         f"(shape {labels.shape}) but the scan has {n} points")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"{where}: {what} are not whole numbers")
    elif labels.dtype.kind not in "iub":
        raise ValueError(f"{where}: {what} have dtype {labels.dtype}, expected integers")
    if labels.size and labels.min() < (NO_LABEL if no_label else 0):
        raise ValueError(f"{where}: {what} contain negative values (min {int(labels.min())})")
    if classes is not None and labels.size and labels.max() >= classes.num_classes:
        raise ValueError(f"{where}: {what} go up to {int(labels.max())}, outside the class table "
                         f"'{classes.name}' (0..{classes.num_classes - 1})")
    return labels.astype(np.int32)


def table_for_names(names: Sequence[str], name: str = "custom") -> ClassTable:
    """A class table for class names that came without colours.

    The S3DIS names in S3DIS order give the standard table; otherwise each name known to S3DIS
    keeps its standard colour and the others get distinct generated colours.
    """
    names = tuple(str(n) for n in names)
    if names == S3DIS_CLASSES:
        return S3DIS
    used = set()
    palette = []
    for i, n in enumerate(names):
        if n in S3DIS_CLASSES and S3DIS_PALETTE[S3DIS_CLASSES.index(n)] not in used:
            c = S3DIS_PALETTE[S3DIS_CLASSES.index(n)]
        else:
            c = _generated_colour(i, used)
        used.add(c)
        palette.append(c)
    return ClassTable(names, tuple(palette), name)


def _generated_colour(i: int, used: set) -> tuple[int, int, int]:
    # Golden-ratio hue steps give well separated colours for any number of classes.
    k = i
    while True:
        h = (0.13 + 0.618034 * k) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.9)
        c = (int(r * 255), int(g * 255), int(b * 255))
        if c not in used:
            return c
        k += 1


def default_table(num_labels: int) -> ClassTable:
    """S3DIS when the labels fit in it; otherwise generated names ``class_i``."""
    if num_labels <= S3DIS.num_classes:
        return S3DIS
    return table_for_names([f"class_{i}" for i in range(num_labels)], "generated")


# ----------------------------------------------------------------------------- reading

def check_regular_file(path: Path, what: str = "a file") -> int:
    """Refuse what is not a regular file (a FIFO would block, ``/dev/zero`` never ends); returns its size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path}: is a directory, expected {what}")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: is not a regular file (a FIFO, device or socket), expected {what}")
    return st.st_size


def read_scan(path: str | Path, label_field: str | None = None) -> Scan:
    """Read a scan file (see the module docstring for formats, the NaN policy and ``label_field``)."""
    path = Path(path)
    check_regular_file(path, "a scan file")
    suffix = path.suffix.lower()
    # col:N names a column, so a text / .npy file may then carry columns beyond x y z r g b label
    col = _column_number(label_field, path) if label_field is not None and label_field.startswith("col:") else None
    text = partial(_read_text, label_col=col)
    readers = {".ply": _read_ply, ".pcd": _read_pcd, ".xyz": text, ".txt": text,
               ".npy": partial(_read_npy, label_col=col), ".las": _read_las, ".laz": _read_las,
               ".npz": _read_room}
    if suffix not in readers:
        raise ValueError(f"{path}: unknown scan format '{suffix or '(no extension)'}' "
                         f"(known: {', '.join(SCAN_SUFFIXES)})")
    fields = readers[suffix](path)
    columns = fields.pop("columns", {})
    if label_field is None:
        return _make_scan(path, **fields)
    # The named field replaces the guessed label: its values are the user's codes (a class map
    # reads them), which may be floats or negative, so they are not validated as class indices.
    fields.pop("label", None)
    return _make_scan(path, **fields, label_field=label_field, raw_label=_named_column(columns, label_field),
                      field_names=tuple(columns))


def _column_number(label_field: str, path: Path) -> int:
    n = label_field[4:]
    if not n.isdigit():
        raise ValueError(f"{path}: label field {label_field!r}: expected col:N with N a column number (0 = x)")
    return int(n)


def _named_column(columns: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    """The column ``name``, else the one column equal to it ignoring case (CloudCompare writes
    ``scalar_Classification``), else None."""
    if name in columns:
        return np.asarray(columns[name])
    same = [k for k in columns if k.lower() == name.lower()]
    return np.asarray(columns[same[0]]) if len(same) == 1 else None


def _make_scan(path: Path, xyz: np.ndarray, rgb: np.ndarray | None = None,
               label: np.ndarray | None = None, pred: np.ndarray | None = None,
               classes: ClassTable | None = None, model: str | None = None,
               organized: tuple[int, int] | None = None, viewpoint: tuple[float, ...] | None = None,
               label_field: str | None = None, raw_label: np.ndarray | None = None,
               field_names: tuple[str, ...] = (), training_frame: bool = False,
               origin: np.ndarray | None = None) -> Scan:
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{path}: coordinates must be (N, 3), got {xyz.shape}")
    if len(xyz) == 0:
        raise ValueError(f"{path}: the scan has no points")
    n = len(xyz)
    # Lengths are checked against the file's own count (the message names it), values only on the
    # points kept: a dropped point may carry the "no label" value -1 (io.write_back.NO_LABEL).
    finite = np.isfinite(xyz).all(axis=1)
    if label is not None:
        label = _labels_of_kept(label, n, finite, path, classes, "label")
    if pred is not None:
        pred = _labels_of_kept(pred, n, finite, path, classes, "pred")
    if raw_label is not None:
        raw_label = np.asarray(raw_label).reshape(n, -1)[:, 0]
    dropped = int(n - finite.sum())
    kept = None
    if dropped:
        if dropped == n:
            raise ValueError(f"{path}: all {n} points have non-finite (NaN/inf) coordinates")
        warnings.warn(f"{path}: dropped {dropped} of {n} points with non-finite (NaN/inf) "
                      f"coordinates", RuntimeWarning, stacklevel=3)
        kept = finite
        xyz = xyz[finite]
        rgb = rgb[finite] if rgb is not None else None
        # label and pred are already the kept points' (_labels_of_kept)
        raw_label = raw_label[finite] if raw_label is not None else None
    xyz, origin = local_coordinates(xyz, origin)
    return Scan(xyz=xyz, rgb=rgb, label=label, pred=pred, classes=classes, path=path,
                dropped=dropped, kept=kept, model=model, organized=organized, viewpoint=viewpoint,
                label_field=label_field, raw_label=raw_label, field_names=field_names,
                training_frame=training_frame, origin=origin)


LARGE_COORDINATE = 1e5   # float32 keeps ~8 mm here; beyond it a scan is shifted to local coordinates


def local_coordinates(xyz: np.ndarray, origin: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(xyz - shift, origin + shift)`` in float64 where the coordinates are too large for float32
    (a UTM easting of 362,330 m keeps only 0.03 m, a northing of 5,157,700 m 0.5 m): the shift is
    the min corner rounded down to whole units, so local coordinates keep the file's precision.
    Small coordinates are returned as they are (no shift, ``origin`` unchanged)."""
    xyz = np.asarray(xyz)
    shift = local_shift(xyz.min(axis=0), xyz.max(axis=0)) if len(xyz) else None
    if shift is None:
        return xyz, origin
    xyz = np.asarray(xyz, dtype=np.float64)
    return xyz - shift, shift if origin is None else np.asarray(origin, dtype=np.float64) + shift


def local_shift(lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """The shift :func:`local_coordinates` takes off coordinates whose min / max corners are
    ``lo`` / ``hi``: the min corner rounded down when a coordinate exceeds ``LARGE_COORDINATE``,
    else None (a streamed scan computes it from its bounds)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if max(np.abs(lo).max(), np.abs(hi).max()) <= LARGE_COORDINATE:
        return None
    return np.floor(lo)

def _labels_of_kept(v: np.ndarray, n: int, finite: np.ndarray, path: Path, classes: ClassTable | None,
                    what: str) -> np.ndarray:
    """``check_labels`` of the points with finite coordinates: ``(finite.sum(),)`` values."""
    v = np.asarray(v)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1 or len(v) != n or finite.all():
        return check_labels(v, n, str(path), classes, what)
    return check_labels(v[finite], int(finite.sum()), str(path), classes, what)


def _colours_to_uint8(c: np.ndarray, path: Path) -> np.ndarray:
    c = np.asarray(c)
    if c.dtype == np.uint8:
        return c
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{path}: colours contain NaN/inf")
    if c.size and c.max() <= 1.0:
        c = c * 255.0
    elif c.size and c.max() > 255:
        if c.max() <= 65535:          # 16-bit colours (LAS, some PLY writers)
            c = c / 257.0
        else:
            raise ValueError(f"{path}: colour values up to {c.max():g}, expected 0..255 or 0..1")
    if c.size and c.min() < 0:
        raise ValueError(f"{path}: negative colour values")
    return np.clip(np.round(c), 0, 255).astype(np.uint8)


def classes_from_comments(comments: Sequence[str], where: str = "") -> tuple[ClassTable | None, str | None]:
    """Class table (and model name) from PLY header comments written by :func:`write_labelled_ply`.

    Lines ``class_table NAME``, ``class I NAME R G B`` (one per class, names may contain spaces)
    and ``model NAME``.
    """
    table_name, model, rows = "custom", None, {}
    for c in comments:
        tok = c.split()
        if not tok:
            continue
        if tok[0] == "class_table" and len(tok) >= 2:
            table_name = " ".join(tok[1:])
        elif tok[0] == "model" and len(tok) >= 2:
            model = " ".join(tok[1:])
        elif tok[0] == "class" and len(tok) >= 6:
            try:
                i = int(tok[1])
                rgb = tuple(int(v) for v in tok[-3:])
            except ValueError:
                continue
            rows[i] = (" ".join(tok[2:-3]), rgb)
    if not rows:
        return None, model
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f"{where}: class comments do not number the classes 0..{len(rows) - 1}")
    names = tuple(rows[i][0] for i in range(len(rows)))
    palette = tuple(rows[i][1] for i in range(len(rows)))
    try:
        return ClassTable(names, palette, table_name), model
    except ValueError as e:
        raise ValueError(f"{where}: class table in header comments: {e}") from None


def _read_ply(path: Path) -> dict:
    fields = read_ply_fields(path)
    comments = fields.pop("comments")
    classes, model = classes_from_comments(comments, str(path))
    fields["classes"] = classes
    fields["model"] = model
    for c in comments:                    # written by write_labelled_ply for local coordinates
        tok = c.split()
        if len(tok) == 4 and tok[0] == "origin":
            try:
                origin = np.array([float(v) for v in tok[1:]])
            except ValueError:
                raise ValueError(f"{path}: header comment 'origin' is not three numbers: {c!r}") from None
            if not np.all(np.isfinite(origin)):
                raise ValueError(f"{path}: header comment 'origin' is not three finite numbers: {c!r}")
            fields["origin"] = origin
    if "rgb" in fields:
        fields["rgb"] = _colours_to_uint8(fields["rgb"], path)
    return fields


def _read_pcd(path: Path) -> dict:
    fields = read_pcd_fields(path)
    if "rgb" in fields:
        fields["rgb"] = _colours_to_uint8(fields["rgb"], path)
    return fields


def _read_text(path: Path, label_col: int | None = None) -> dict:
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
    delim = "," if "," in first else None
    try:
        [float(v) for v in first.replace(",", " ").split()]
    except ValueError:
        skip += 1                     # a header line such as "x y z r g b label"
    try:
        arr = np.loadtxt(path, delimiter=delim, comments=("#", "//"), skiprows=skip,
                         dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise ValueError(f"{path}: cannot parse as 'x y z [r g b [label]]' text: {e}") from None
    if arr.size == 0:
        raise ValueError(f"{path}: the scan has no points")
    return _columns(arr, path, label_col)


def _columns(arr: np.ndarray, path: Path, label_col: int | None = None) -> dict:
    ncol = arr.shape[1]
    if label_col is not None:
        # Named column: any width >= 3 (a file without that column reads as unlabelled); colour is
        # columns 3-5 when they exist and are not the label.
        if ncol < 3:
            raise ValueError(f"{path}: {ncol} columns per point; expected at least 3 (x y z)")
        out = {"xyz": arr[:, :3], "columns": {f"col:{i}": arr[:, i] for i in range(ncol)}}
        if ncol >= 6 and not 3 <= label_col <= 5:
            out["rgb"] = _colours_to_uint8(arr[:, 3:6], path)
        return out
    if ncol not in (3, 6, 7):
        raise ValueError(f"{path}: {ncol} columns per point; expected 3 (x y z), 6 (x y z r g b) "
                         f"or 7 (x y z r g b label)")
    out: dict = {"xyz": arr[:, :3]}       # float64: large coordinates are shifted before float32
    if ncol >= 6:
        out["rgb"] = _colours_to_uint8(arr[:, 3:6], path)
    if ncol == 7:
        out["label"] = arr[:, 6]
    out["columns"] = {f"col:{i}": arr[:, i] for i in range(ncol)}
    return out


def npy_header(path: Path, what: str = "a .npy array") -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """A plain ``.npy`` file's header, checked against the file's size: ``(shape, fortran order,
    dtype, data offset)``; one-line ``ValueError`` naming the file otherwise."""
    size = check_regular_file(path, what)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            if magic != b"\x93NUMPY":
                kind = "a .npz archive (zip)" if magic[:2] == b"PK" else f"starts with {magic!r}"
                raise ValueError(f"{path}: not a .npy file ({kind})")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as e:
        msg = str(e)
        if msg.startswith(str(path)):
            raise
        raise ValueError(f"{path}: malformed .npy header: {msg.splitlines()[0] if msg else type(e).__name__}") from None
    if dtype.hasobject:
        raise ValueError(f"{path}: the array holds Python objects (pickled data), refused")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > size - offset:
        raise ValueError(f"{path}: header declares shape {shape} of {dtype} ({need} bytes) but the file "
                         f"holds only {size - offset} data bytes (truncated or corrupt file)")
    return tuple(shape), bool(fortran), dtype, offset


def load_npy_checked(path: Path, what: str = "a .npy array") -> np.ndarray:
    """``np.load`` of a plain ``.npy`` file, with its header checked against the file size first."""
    npy_header(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read {what}: {e}") from None


def _read_npy(path: Path, label_col: int | None = None) -> dict:
    arr = load_npy_checked(path)
    if arr.ndim == 1:
        raise ValueError(f"{path}: a 1-D array ({arr.shape[0]} values) looks like per-point labels, "
                         f"not a scan; pass it with --labels next to its scan")
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{path}: expected an (N, 3|6|7) array, got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{path}: array dtype {arr.dtype} is not numeric")
    return _columns(arr.astype(np.float64, copy=False), path, label_col)


def import_laspy(path: Path) -> Any:
    """laspy, or one line saying how to install it."""
    try:
        import laspy
    except ImportError:
        raise ValueError(f"{path}: reading LAS/LAZ needs laspy: pip install 'laspy[lazrs]' "
                         f"(or pip install 'pointseg[las]')") from None
    return laspy


def check_las_reader_header(path: Path, h: Any, size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """An open LAS/LAZ header (laspy's) against the file's ``size``: ``(point count, scales,
    offsets)``, or a one-line ``ValueError`` naming the file."""
    count = int(h.point_count)
    per = int(h.point_format.size)
    compressed = path.suffix.lower() == ".laz" or h.are_points_compressed
    if not compressed and int(h.offset_to_point_data) + count * per > size:
        raise ValueError(f"{path}: header declares {count} points of {per} bytes but the file "
                         f"holds only {max(0, size - int(h.offset_to_point_data))} point bytes "
                         "(truncated or corrupt file)")
    if compressed and count > 1_000 * max(size, 1):
        raise ValueError(f"{path}: header declares {count} points, more than a "
                         f"{size}-byte compressed file can hold")
    scales, offsets = np.asarray(h.scales, np.float64), np.asarray(h.offsets, np.float64)
    if not (np.all(np.isfinite(scales)) and np.all(np.isfinite(offsets)) and np.all(scales != 0)):
        raise ValueError(f"{path}: header scale factors {scales.tolist()} / offsets "
                         f"{offsets.tolist()} are not finite non-zero numbers")
    return count, scales, offsets


class LasErrors:
    """Inside the block, laspy's errors (and damaged input's struct.error, IndexError, ...)
    become one ``ValueError`` line naming the file; the reader's own lines pass as they are."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, e: Any, tb: Any) -> bool:
        if e is None or not isinstance(e, Exception):
            return False
        import laspy
        path = self.path
        if isinstance(e, laspy.errors.LaspyException):
            msg = str(e)
            if path.suffix.lower() == ".laz" and "backend" in msg.lower():
                raise ValueError(f"{path}: reading LAZ needs a LAZ backend: pip install lazrs ({msg})") from None
            raise ValueError(f"{path}: cannot read LAS/LAZ: {msg}") from None
        if isinstance(e, ValueError):
            if str(e).startswith(str(path)):
                return False
            raise ValueError(f"{path}: cannot read LAS/LAZ: {e}") from None
        raise ValueError(f"{path}: cannot read LAS/LAZ ({type(e).__name__}: {e})") from None


def _read_las(path: Path) -> dict:
    laspy = import_laspy(path)
    size = path.stat().st_size
    _check_las_header(path, size)
    with LasErrors(path):
        with laspy.open(str(path)) as reader:
            _, scales, offsets = check_las_reader_header(path, reader.header, size)
            las = reader.read()
    with np.errstate(over="ignore", invalid="ignore"):
        xyz = np.stack([np.asarray(las.x, np.float64), np.asarray(las.y, np.float64),
                        np.asarray(las.z, np.float64)], axis=1)
    if not np.all(np.isfinite(xyz)) or np.abs(xyz).max(initial=0) > np.finfo(np.float32).max:
        raise ValueError(f"{path}: the header's scale factors {scales.tolist()} and offsets "
                         f"{offsets.tolist()} put coordinates outside the float range")
    out: dict = {"xyz": xyz}
    dims = set(las.point_format.dimension_names)
    if {"red", "green", "blue"} <= dims:
        rgb = np.stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)], axis=1)
        if rgb.size and rgb.max() > 255:
            rgb = rgb / 257.0
        out["rgb"] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    for key, names in (("label", LABEL_FIELDS), ("pred", PRED_FIELDS)):
        for n in names:
            if n in dims:
                out[key] = np.asarray(las[n])
                break
    # every dimension by name, read only when asked for (read_scan's label_field)
    out["columns"] = _LazyColumns({n: (lambda n=n: np.asarray(las[n])) for n in las.point_format.dimension_names})
    return out


class _LazyColumns(dict):
    """Column name -> values, each read from its source on first access (a LAS file's
    dimensions: only the one asked for is converted)."""

    def __getitem__(self, key: str) -> np.ndarray:
        v = super().__getitem__(key)
        if callable(v):
            v = v()
            super().__setitem__(key, v)
        return v


def _check_las_header(path: Path, size: int) -> None:
    """The LAS public header's counts against the file size, before laspy walks them (a
    fuzzed VLR count makes laspy loop for minutes)."""
    with open(path, "rb") as f:
        h = f.read(375)
    if len(h) < 227 or h[:4] != b"LASF":
        raise ValueError(f"{path}: not a LAS file (no LASF signature, or shorter than a LAS header)")
    major, minor = h[24], h[25]
    header_size = int.from_bytes(h[94:96], "little")
    offset = int.from_bytes(h[96:100], "little")
    n_vlrs = int.from_bytes(h[100:104], "little")
    if major != 1 or minor > 4:
        raise ValueError(f"{path}: unsupported LAS version {major}.{minor}")
    if header_size < 227 or header_size > offset or offset > size:
        raise ValueError(f"{path}: LAS header size {header_size} / point data offset {offset} do not fit "
                         f"the {size}-byte file")
    if n_vlrs * 54 > offset - header_size:
        raise ValueError(f"{path}: LAS header declares {n_vlrs} variable-length records, more than fit "
                         f"before the point data at byte {offset}")
    if minor >= 4 and len(h) >= 247:
        start_evlr = int.from_bytes(h[235:243], "little")
        n_evlrs = int.from_bytes(h[243:247], "little")
        if n_evlrs and (start_evlr > size or n_evlrs * 60 > size - start_evlr):
            raise ValueError(f"{path}: LAS header declares {n_evlrs} extended records at byte {start_evlr}, "
                             f"beyond the {size}-byte file")


def _read_room(path: Path) -> dict:
    from .rooms import load_room
    room = load_room(path)
    classes = table_for_names(room.classes, "room") if room.classes is not None else None
    if room.classes is None and room.label is not None:
        classes = S3DIS   # prepared rooms without names are S3DIS rooms
    return {"xyz": room.xyz, "rgb": room.rgb, "label": room.label, "classes": classes,
            "columns": {} if room.label is None else {"label": room.label}, "training_frame": True}


def read_labels(path: str | Path, num_points: int | None = None,
                classes: ClassTable | None = None) -> tuple[np.ndarray, ClassTable | None, str | None]:
    """Per-point predicted labels from a ``.npy`` / ``.txt`` label file or a labelled PLY.

    Returns ``(labels, class table or None, model name or None)``. From a PLY, its ``pred``
    property is taken if present, else its ``label`` property.
    """
    path = Path(path)
    check_regular_file(path, "a labels file")
    suffix = path.suffix.lower()
    table, model = None, None
    if suffix == ".npy":
        labels = load_npy_checked(path, "labels")
    elif suffix == ".txt":
        try:
            labels = np.loadtxt(path, dtype=np.float64, ndmin=1)
        except ValueError as e:
            raise ValueError(f"{path}: cannot read labels (one integer per line): {e}") from None
    elif suffix in (".ply", ".pcd", ".las", ".laz"):
        s = read_scan(path)
        labels = s.pred if s.pred is not None else s.label
        if labels is None:
            raise ValueError(f"{path}: has no 'pred' or 'label' per-point property")
        if s.kept is not None:
            raise ValueError(f"{path}: has points with NaN/inf coordinates; cannot align its labels")
        table, model = s.classes, s.model
    else:
        raise ValueError(f"{path}: unknown labels format '{suffix}' (use .npy, .txt or a labelled .ply)")
    n = num_points if num_points is not None else int(np.asarray(labels).shape[0])
    labels = check_labels(labels, n, str(path), classes or table, "labels")
    return labels, table, model


# ----------------------------------------------------------------------------- writing

_PLY_INT_TYPES = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort", np.dtype(np.int32): "int"}


def write_labelled_ply(path: str | Path, xyz: np.ndarray, colors: np.ndarray | None,
                       labels: np.ndarray | None, classes: ClassTable = S3DIS, *,
                       pred: np.ndarray | None = None, model: str | None = None,
                       overwrite: bool = True, origin: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY with per-point ``label`` (and ``pred``) properties.

    ``labels`` is written as the ``label`` property and read back as ground truth; a prediction
    goes in ``pred=`` (read back as ``Scan.pred``). ``colors``: uint8 ``(N, 3)`` (scan RGB or
    class colours); ``None`` colours the points by ``pred`` (else ``labels``) with ``classes``.
    The class table is stored in header comments (``class_table NAME`` and one
    ``class I NAME R G B`` line per class), plus ``model NAME`` if given, and ``origin X Y Z``
    when ``xyz`` are local coordinates of a scan whose own are ``xyz + origin`` (read back as
    ``Scan.origin``). Written atomically.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or len(xyz) == 0:
        raise ValueError(f"{path}: xyz must be a non-empty (N, 3) array, got {xyz.shape}")
    if labels is None and pred is None and colors is None:
        raise ValueError(f"{path}: nothing to write besides coordinates (no labels, pred or colours)")
    with LabelledPlyWriter(path, len(xyz), classes, labels=labels is not None, pred=pred is not None,
                           model=model, origin=origin) as w:
        w.write(xyz, colors, labels, pred)
    return path


class LabelledPlyWriter:
    """:func:`write_labelled_ply` in chunks, for scans too large to hold: the header for ``n``
    points (with ``label`` / ``pred`` properties as asked), then :meth:`write` for consecutive
    points; the file appears (atomically) only when all ``n`` were written and the block exits."""

    def __init__(self, path: str | Path, n: int, classes: ClassTable = S3DIS, *, labels: bool = False,
                 pred: bool = False, model: str | None = None, origin: np.ndarray | None = None) -> None:
        self.path, self.n, self.classes, self.written = Path(path), int(n), classes, 0
        ltype = np.uint8 if classes.num_classes <= 256 else np.uint16 if classes.num_classes <= 65536 else np.int32
        fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
        if labels:
            fields.append(("label", np.dtype(ltype).newbyteorder("<").str))
        if pred:
            fields.append(("pred", np.dtype(ltype).newbyteorder("<").str))
        self.dtype = np.dtype(fields)
        for name in classes.names:
            if "\n" in name or "\r" in name:
                raise ValueError(f"{path}: class name {name!r} contains a line break")
        header = ["ply", "format binary_little_endian 1.0", "comment written by pointseg",
                  f"comment class_table {classes.name}"]
        if origin is not None:
            header.append("comment origin " + " ".join(repr(float(v)) for v in np.asarray(origin, dtype=np.float64)))
        header += [f"comment class {i} {nm} {c[0]} {c[1]} {c[2]}"
                   for i, (nm, c) in enumerate(zip(classes.names, classes.palette))]
        if model:
            header.append(f"comment model {model}")
        header += [f"element vertex {n}", "property float x", "property float y", "property float z",
                   "property uchar red", "property uchar green", "property uchar blue"]
        ptype = _PLY_INT_TYPES[np.dtype(ltype)]
        if labels:
            header.append(f"property {ptype} label")
        if pred:
            header.append(f"property {ptype} pred")
        header.append("end_header")
        self.header = ("\n".join(header) + "\n").encode("utf-8")

    def __enter__(self) -> "LabelledPlyWriter":
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._f = open(self._tmp, "wb")
        self._f.write(self.header)
        return self

    def write(self, xyz: np.ndarray, colors: np.ndarray | None = None, labels: np.ndarray | None = None,
              pred: np.ndarray | None = None) -> None:
        """The next ``len(xyz)`` points; ``colors`` None: by ``pred`` (else ``labels``)."""
        path, classes, names = self.path, self.classes, self.dtype.names
        xyz = np.asarray(xyz, dtype=np.float32)
        k = len(xyz)
        if ("label" in names) != (labels is not None) or ("pred" in names) != (pred is not None):
            raise ValueError(f"{path}: the chunk's labels / pred do not match the header")
        if labels is not None:
            labels = check_labels(labels, k, str(path), classes, "labels")
        if pred is not None:
            pred = check_labels(pred, k, str(path), classes, "pred")
        if colors is None:
            colors = classes.colors(pred if pred is not None else labels)
        colors = np.asarray(colors)
        if colors.shape != (k, 3):
            raise ValueError(f"{path}: colours must be ({k}, 3), got {colors.shape}")
        colors = _colours_to_uint8(colors, path)
        rec = np.empty(k, dtype=self.dtype)
        rec["x"], rec["y"], rec["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
        rec["red"], rec["green"], rec["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
        if labels is not None:
            rec["label"] = labels
        if pred is not None:
            rec["pred"] = pred
        self._f.write(rec.tobytes())
        self.written += k

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self._f.close()
        short = kind is None and self.written != self.n
        if kind is None and not short:
            self._ctx.__exit__(None, None, None)          # renamed onto the path
            return
        err = value if value is not None else ValueError(
            f"{self.path}: {self.written} points written of the {self.n} the header declares")
        self._ctx.__exit__(type(err), err, tb)            # the temporary file removed
        if short:
            raise err
