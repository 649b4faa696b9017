"""The raw S3DIS release (``Stanford3dDataset_v1.2_Aligned_Version``) -> prepared rooms.

Layout read: ``Area_{k}/<room>/Annotations/<class>_<i>.txt``, one point per line ``x y z r g b``
(design notes §3). Each room becomes ``OUT_DIR/Area_k/<room>.npz`` (:func:`pointseg.io.rooms.save_room`)
plus a per-room record ``OUT_DIR/Area_k/<room>.json`` (counts, repairs, checksums); the whole run
is summarised in ``OUT_DIR/manifest.json`` and ``OUT_DIR/repairs.txt``.

Parsing is vectorised: the file is read as bytes, stray bytes and irregular lines are found with
numpy on the byte array, only those few lines are repaired or dropped in Python, and every other
number is parsed in C (``np.loadtxt``). Every repair / drop / ignored file is recorded with its
file and line number; a room is never skipped silently (a room without annotations is an error).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..classes import S3DIS, ClassTable
from ..atomic import atomic_write_text
from ..checksum import sha256_of
from ..io.rooms import Room, save_room

log = logging.getLogger(__name__)

NUM_COLUMNS = 6
AREA_RE = re.compile(r"^Area_(\d+)$")
ANNOTATION_RE = re.compile(r"^([A-Za-z]+)_(\d+)\.txt$")
DUPLICATE_RE = re.compile(r".* \(\d+\)\.[^.]*$")   # "wall_3 (1).txt": a copy made by a file manager

# Bytes a well-formed line may hold. Everything else is a stray byte to repair.
_ALLOWED = np.zeros(256, dtype=bool)
_ALLOWED[np.frombuffer(b"0123456789.-+eE \t\r\n", dtype=np.uint8)] = True
_SPACE = np.zeros(256, dtype=bool)
_SPACE[np.frombuffer(b" \t\r\n", dtype=np.uint8)] = True


# --------------------------------------------------------------------------------------------
# Tolerant parser


def _event(file: str, line: int | None, action: str, detail: str) -> dict[str, Any]:
    return {"file": file, "line": line, "action": action, "detail": detail}


def _parse_tokens(text: bytes) -> np.ndarray | None:
    """All numbers of ``text`` (whitespace separated) or None when any token is not a number."""
    parts = text.split()
    try:
        vals = np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        return None
    return vals


def _repair_line(raw: bytes, ncols: int) -> tuple[np.ndarray | None, str]:
    """Try to make one irregular line hold exactly ``ncols`` finite numbers.

    Stray bytes are first read as separators (the S3DIS NUL sits *between* two colour values,
    ``185\\x00187``), then deleted (a control byte *inside* a number, ``3.0\\x0148``). The first
    candidate that yields exactly ``ncols`` finite numbers wins; otherwise the line is dropped.
    Returns (values or None, explanation).
    """
    arr = np.frombuffer(raw, dtype=np.uint8)
    stray = ~_ALLOWED[arr]
    shown = repr(raw[:80])[1:]
    if stray.any():
        bad = sorted({f"\\x{b:02x}" for b in arr[stray]})
        as_space = arr.copy()
        as_space[stray] = ord(" ")
        vals = _parse_tokens(as_space.tobytes())
        if vals is not None and len(vals) == ncols and np.isfinite(vals).all():
            return vals, f"stray byte(s) {' '.join(bad)} read as a separator in {shown}"
        vals = _parse_tokens(arr[~stray].tobytes())
        if vals is not None and len(vals) == ncols and np.isfinite(vals).all():
            return vals, f"stray byte(s) {' '.join(bad)} removed from a number in {shown}"
        return None, f"stray byte(s) {' '.join(bad)} and no repair gives {ncols} numbers: {shown}"
    vals = _parse_tokens(raw)
    if vals is None:
        return None, f"not {ncols} numbers: {shown}"
    if len(vals) != ncols:
        return None, f"expected {ncols} numbers, found {len(vals)}: {shown}"
    if not np.isfinite(vals).all():
        return None, f"non-finite value: {shown}"
    return vals, ""


def parse_points(data: bytes, source: str = "<bytes>", ncols: int = NUM_COLUMNS
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Parse whitespace-separated point lines into ``(n, ncols)`` float64, repairing what it can.

    Returns the rows (in file order) and the list of events (``repaired`` / ``dropped`` with a
    1-based line number). Blank lines are ignored silently.
    """
    events: list[dict[str, Any]] = []
    buf = np.frombuffer(data, dtype=np.uint8)
    n = len(buf)
    if n == 0:
        return np.zeros((0, ncols)), events
    stray_pos = np.flatnonzero(~_ALLOWED[buf])
    if len(stray_pos) == 0:
        # The common case (every file of the release but one): numpy's C reader checks the
        # column count of every line itself; the line-level scan below runs only if it fails.
        rows = _fast_parse(data, None, ncols)
        if rows is not None and np.isfinite(rows).all():
            return rows, events
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [n]))
    nlines = len(starts)

    # Tokens per line: a token starts at a non-space byte preceded by a space (or the file start).
    space = _SPACE[buf]
    tok_start = ~space
    tok_start[1:] &= space[:-1]
    tok_line = np.searchsorted(nl, np.flatnonzero(tok_start), side="left")
    counts = np.bincount(tok_line, minlength=nlines)
    del space, tok_start, tok_line

    has_stray = np.zeros(nlines, dtype=bool)
    if len(stray_pos):
        has_stray[np.searchsorted(nl, stray_pos, side="left")] = True
    irregular = ((counts != ncols) & (counts != 0)) | has_stray   # blank lines are fine
    good_lines = np.flatnonzero((counts == ncols) & ~has_stray)
    bad_lines = np.flatnonzero(irregular)

    clean = buf
    if len(bad_lines):
        clean = buf.copy()
        for i in bad_lines:
            clean[starts[i]:ends[i]] = ord(" ")
    good = _fast_parse(clean, len(good_lines), ncols)
    if good is None:
        # Some "well-formed" line holds something that is not a number (e.g. "1.2.3"): find it
        # chunk by chunk so the common case stays vectorised.
        good, extra_bad = _chunked_parse(clean, starts, ends, good_lines, ncols)
        if len(extra_bad):
            bad_lines = np.union1d(bad_lines, extra_bad)
            keep = ~np.isin(good_lines, extra_bad)
            good_lines = good_lines[keep]

    rep_rows, rep_lines = [], []
    for i in bad_lines:
        raw = bytes(buf[starts[i]:ends[i]])
        vals, why = _repair_line(raw, ncols)
        if vals is None:
            events.append(_event(source, int(i) + 1, "dropped", why))
        else:
            rep_rows.append(vals)
            rep_lines.append(i)
            events.append(_event(source, int(i) + 1, "repaired", why))
    if rep_rows:
        rows = np.concatenate((good, np.asarray(rep_rows)))
        order = np.argsort(np.concatenate((good_lines, rep_lines)), kind="stable")
        rows = rows[order]
        line_no = np.concatenate((good_lines, rep_lines))[order]
    else:
        rows, line_no = good, good_lines

    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        for i in line_no[~finite]:
            events.append(_event(source, int(i) + 1, "dropped", "non-finite value"))
        rows, line_no = rows[finite], line_no[finite]
    events.sort(key=lambda e: e["line"])
    return rows, events


def _fast_parse(clean: np.ndarray | bytes, nrows: int | None, ncols: int) -> np.ndarray | None:
    """numpy's C reader over the whole buffer; None if any line is not ``ncols`` numbers (or the
    row count differs from ``nrows`` when given). Whitespace-only lines are skipped."""
    if nrows == 0:
        return np.zeros((0, ncols))
    raw = clean if isinstance(clean, bytes) else clean.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "input contained no data"
        try:
            vals = np.loadtxt(io.BytesIO(raw), dtype=np.float64, comments=None, ndmin=2)
        except ValueError:
            return None
    if vals.shape[1:] != (ncols,) and vals.size:
        return None
    vals = vals.reshape(-1, ncols)
    if nrows is not None and len(vals) != nrows:
        return None
    return vals


def _chunked_parse(clean: np.ndarray, starts: np.ndarray, ends: np.ndarray, lines: np.ndarray,
                   ncols: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    out, bad = [], []
    for c in range(0, len(lines), chunk):
        sel = lines[c:c + chunk]
        piece = clean[starts[sel[0]]:ends[sel[-1]]]
        vals = _fast_parse(piece, len(sel), ncols)
        if vals is not None:
            out.append(vals)
            continue
        for i in sel:
            v = _parse_tokens(bytes(clean[starts[i]:ends[i]]))
            if v is None or len(v) != ncols:
                bad.append(i)
            else:
                out.append(v[None])
    rows = np.concatenate(out) if out else np.zeros((0, ncols))
    return rows, np.asarray(bad, dtype=np.int64)


def read_points_file(path: str | Path, name: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Read one ``x y z r g b`` file: xyz float32 ``(n, 3)``, rgb uint8 ``(n, 3)``, events.

    Colours outside 0..255 are clipped (logged); ``name`` is how the file is named in events.
    """
    path = Path(path)
    name = name or str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    rows, events = parse_points(data, name)
    rgb = rows[:, 3:6]
    out = (rgb < 0) | (rgb > 255)
    if out.any():
        bad_rows = np.flatnonzero(out.any(axis=1))
        for r in bad_rows[:20]:
            events.append(_event(name, None, "clipped", f"colour {rgb[r].tolist()} clipped to 0..255"))
        if len(bad_rows) > 20:
            events.append(_event(name, None, "clipped", f"... {len(bad_rows) - 20} more colours clipped"))
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return rows[:, :3].astype(np.float32), rgb, events


# --------------------------------------------------------------------------------------------
# Walking the release


@dataclass(frozen=True)
class RawRoom:
    area: int
    name: str
    path: Path          # the room folder (holds Annotations/)

    @property
    def key(self) -> str:
        return f"Area_{self.area}/{self.name}"


def find_release_root(raw_dir: str | Path) -> Path:
    """The folder holding ``Area_1`` ... (``raw_dir`` itself or its one release sub-folder)."""
    raw_dir = Path(raw_dir)
    if not raw_dir.exists():
        raise FileNotFoundError(f"{raw_dir}: no such folder")
    if not raw_dir.is_dir():
        raise NotADirectoryError(f"{raw_dir}: not a folder")

    def areas(d: Path) -> list[Path]:
        return [p for p in d.iterdir() if p.is_dir() and AREA_RE.match(p.name)]

    if areas(raw_dir):
        return raw_dir
    subs = [p for p in raw_dir.iterdir() if p.is_dir() and areas(p)]
    if len(subs) == 1:
        return subs[0]
    raise ValueError(
        f"{raw_dir}: not a raw S3DIS release (no Area_1 ... Area_6 folders here or in one sub-folder; "
        "expected Stanford3dDataset_v1.2_Aligned_Version/Area_k/<room>/Annotations/<class>_<i>.txt)")


def list_rooms(raw_dir: str | Path, areas: Sequence[int] | None = None
               ) -> tuple[list[RawRoom], list[dict[str, Any]]]:
    """Every room of the release (sorted by area, then name) and the junk entries ignored."""
    root = find_release_root(raw_dir)
    rooms: list[RawRoom] = []
    events: list[dict[str, Any]] = []
    area_dirs = sorted((int(AREA_RE.match(p.name).group(1)), p) for p in root.iterdir()
                       if p.is_dir() and AREA_RE.match(p.name))
    for k, adir in area_dirs:
        if areas is not None and k not in areas:
            continue
        for p in sorted(adir.iterdir()):
            if not p.is_dir() or p.name.startswith("."):
                events.append(_event(str(p.relative_to(root)), None, "ignored", "not a room folder"))
                continue
            if not (p / "Annotations").is_dir():
                raise ValueError(f"{p}: room has no Annotations folder (not a raw S3DIS room)")
            rooms.append(RawRoom(k, p.name, p))
    if not rooms:
        raise ValueError(f"{root}: no rooms found under Area_k/ (areas {list(areas) if areas else 'all'})")
    return rooms, events


def annotation_files(room: RawRoom, root: Path, classes: ClassTable = S3DIS
                     ) -> tuple[list[tuple[Path, int, str]], list[dict[str, Any]]]:
    """(file, class id, prefix) of a room's annotations in a stable order, and ignored junk."""
    files, events = [], []
    ann = room.path / "Annotations"
    for p in sorted(ann.iterdir(), key=lambda q: q.name):
        rel = str(p.relative_to(root))
        if p.name.startswith(".") or not p.is_file():
            events.append(_event(rel, None, "ignored", "hidden or not a file"))
            continue
        if DUPLICATE_RE.match(p.name):
            events.append(_event(rel, None, "ignored", "duplicate copy (name ends in ' (n)')"))
            continue
        m = ANNOTATION_RE.match(p.name)
        if not m:
            events.append(_event(rel, None, "ignored", "not an annotation file <class>_<i>.txt"))
            continue
        prefix = m.group(1)
        if prefix in classes.names:
            cid = classes.names.index(prefix)
        else:
            cid = classes.names.index("clutter")
            events.append(_event(rel, None, "relabelled", f"unknown class prefix '{prefix}' mapped to clutter"))
        files.append((p, cid, prefix))
    files.sort(key=lambda t: (t[2], int(ANNOTATION_RE.match(t[0].name).group(2))))
    return files, events


def read_room(room: RawRoom, root: Path, classes: ClassTable = S3DIS
              ) -> tuple[Room, list[dict[str, Any]]]:
    """Parse all annotation files of one raw room into a labelled :class:`Room`."""
    files, events = annotation_files(room, root, classes)
    if not files:
        raise ValueError(f"{room.path / 'Annotations'}: empty room (no <class>_<i>.txt annotation files)")
    xyzs, rgbs, labels = [], [], []
    for path, cid, _ in files:
        xyz, rgb, ev = read_points_file(path, str(path.relative_to(root)))
        events.extend(ev)
        if len(xyz) == 0:
            events.append(_event(str(path.relative_to(root)), None, "empty", "no points"))
        xyzs.append(xyz)
        rgbs.append(rgb)
        labels.append(np.full(len(xyz), cid, dtype=np.uint8))
    xyz = np.concatenate(xyzs)
    if len(xyz) == 0:
        raise ValueError(f"{room.path}: empty room (its annotation files hold no points)")
    return Room(room.name, xyz, np.concatenate(rgbs), np.concatenate(labels), classes.names), events


# --------------------------------------------------------------------------------------------
# prepare-s3dis


def _raw_sha256(room: RawRoom) -> str:
    """Checksum of a raw room: every file under it (relative names and contents), sorted."""
    h = hashlib.sha256()
    for f in sorted(p for p in room.path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(room.path)).encode("utf-8", "surrogateescape") + b"\0")
        h.update(sha256_of(f).encode())
    return h.hexdigest()


def _content_sha256(room: Room) -> str:
    """Checksum of the arrays themselves (the .npz container holds timestamps)."""
    h = hashlib.sha256()
    for a in (room.xyz, room.rgb, room.label):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _room_paths(out_dir: Path, room: RawRoom) -> tuple[Path, Path]:
    base = out_dir / f"Area_{room.area}"
    return base / f"{room.name}.npz", base / f"{room.name}.json"


def _prepare_one(job: tuple[RawRoom, Path, Path]) -> dict[str, Any]:
    room, root, out_dir = job
    npz, rec_path = _room_paths(out_dir, room)
    raw_hash = _raw_sha256(room)
    if npz.exists() and rec_path.exists():
        # Resume by content: the raw files must be those the room was prepared from and the
        # .npz must be the one written then; anything else (an edited raw file, a damaged
        # output of the same size) is prepared again.
        try:
            rec = json.loads(rec_path.read_text())
            if (isinstance(rec, dict) and rec.get("raw_sha256") == raw_hash
                    and rec.get("bytes") == npz.stat().st_size and rec.get("sha256") == sha256_of(npz)):
                rec["skipped"] = True
                return rec
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            pass   # an unreadable record: prepare the room again
    prepared, events = read_room(room, root)
    save_room(npz, prepared)
    counts = np.bincount(prepared.label, minlength=len(S3DIS.names))
    rec = {
        "area": room.area, "name": room.name, "file": str(npz.relative_to(out_dir)),
        "num_points": int(prepared.num_points),
        "class_counts": {n: int(c) for n, c in zip(S3DIS.names, counts)},
        "bbox_min": prepared.xyz.min(0).tolist(), "bbox_max": prepared.xyz.max(0).tolist(),
        "sha256": sha256_of(npz), "content_sha256": _content_sha256(prepared),
        "bytes": npz.stat().st_size, "raw_sha256": raw_hash, "events": events,
    }
    atomic_write_text(rec_path, json.dumps(rec, indent=1))
    rec["skipped"] = False
    return rec


def _format_event(e: dict[str, Any]) -> str:
    where = e["file"] if e["line"] is None else f"{e['file']}:{e['line']}"
    return f"{where}: {e['action']}: {e['detail']}"


def prepare_s3dis(raw_dir: str | Path, out_dir: str | Path, workers: int = 1,
                  areas: Sequence[int] | None = None, progress: bool = True) -> dict[str, Any]:
    """Convert the raw release into prepared rooms; returns the manifest (also written).

    Parallel over rooms (``workers`` processes, each holding one room at a time, so peak memory
    is about ``workers`` x the largest room). Rooms whose ``.npz`` and record already exist are
    skipped when their raw files and ``.npz`` still match the recorded sha256 checksums, so an
    interrupted run resumes where it stopped and an edited raw file or a damaged output is redone.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    root = find_release_root(raw_dir)
    rooms, junk = list_rooms(root, areas)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(r, root, out_dir) for r in rooms]
    records: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="prepare-s3dis", unit="room", disable=not progress)

    def collect(rec: dict[str, Any]) -> None:
        records.append(rec)
        bar.update(1)
        if not rec["skipped"]:
            for e in rec["events"]:
                if e["action"] in ("repaired", "dropped", "clipped", "relabelled"):
                    log.warning(_format_event(e))
                else:
                    log.info(_format_event(e))

    try:
        with logging_redirect_tqdm():
            if workers == 1 or len(jobs) == 1:
                for j in jobs:
                    collect(_prepare_one(j))
            else:
                ctx = mp.get_context("spawn" if os.name != "posix" else "fork")
                with ctx.Pool(min(workers, len(jobs)), maxtasksperchild=8) as pool:
                    for rec in pool.imap_unordered(_prepare_one, jobs):
                        collect(rec)
    finally:
        bar.close()

    records.sort(key=lambda r: (r["area"], r["name"]))
    total = np.zeros(len(S3DIS.names), dtype=np.int64)
    for r in records:
        total += np.array([r["class_counts"][n] for n in S3DIS.names])
    all_events = junk + [e for r in records for e in r["events"]]
    manifest = {
        "format": "pointseg-prepared-s3dis", "version": 1, "source": str(root),
        "classes": S3DIS.to_dict(),
        "num_rooms": len(records), "num_points": int(total.sum()),
        "class_counts": {n: int(c) for n, c in zip(S3DIS.names, total)},
        "areas": {str(k): sum(1 for r in records if r["area"] == k) for k in sorted({r["area"] for r in records})},
        "num_repaired": sum(e["action"] == "repaired" for e in all_events),
        "num_dropped": sum(e["action"] == "dropped" for e in all_events),
        "events": junk,
        "rooms": [{k: v for k, v in r.items() if k != "skipped"} for r in records],
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1))
    atomic_write_text(out_dir / "repairs.txt", "".join(_format_event(e) + "\n" for e in all_events))
    return manifest

