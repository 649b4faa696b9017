"""Segmentation of scans larger than memory: the scan streamed through spatial tiles on disk.

A whole floor or building (tens to hundreds of millions of points) is never held in memory. The
scan is read in chunks (:mod:`pointseg.io.chunks`) and goes through the same steps as an
in-memory scan (:mod:`pointseg.segmentation.segment`), each done so that its result equals the
whole-scan one:

1. **plan** (one read): the point count, the coordinate bounds (the local origin of georeferenced
   coordinates, as the reader sets it) and an evenly spaced sample of at most
   ``SAMPLE_POINTS`` points, on which the frame is decided (up, units, walls: the estimates read
   a 20,000-point subsample of the scan anyway).
2. **spill** (second read): every point in the model frame (float32, bit for bit what the
   whole-scan path computes) goes to the file of its ``tile_size`` cell of an absolute grid,
   with its row in the file, its colour and its ground truth.
3. **voxel** (only for scans much denser than a block needs, or ``--voxel SIZE``): a voxel belongs
   to the tile holding its min corner; a point whose voxel another tile owns (it lies within a
   voxel of a border) is sent to that tile, so every voxel is whole in one tile, which keeps the
   first point of the file in it, as the whole-scan subsampling does. The automatic size counts
   the voxels the same way (one read of every tile per size tried).
4. **statistics** over the network's points: the outlier box from exact order statistics
   (counted over the bits of the float32 values in two passes), the room normalisation and the
   occupied tiles of the sliding inference.
5. **predict**: the sliding inference's own tiles, in its order, each from the points of the
   tile grown by one block (read from the spill tiles it overlaps) and the same
   :class:`~pointseg.segmentation.inference.TileScorer`, whose random draws continue from tile
   to tile. Each finished tile's labels are saved atomically with the random state after it,
   so ``--resume`` continues from the first unfinished tile and gives the uninterrupted labels.
6. **merge**: labels joined back to every point of the file by bucketed passes (file rows in
   buckets of ``BUCKET_ROWS``), written in file order.

Peak memory is set by the tile size and the chunk size, not by the scan: what is kept across
tiles is the tile list, the columns' counts (one entry per occupied ``block_size`` column) and the
outliers (points far outside the bulk, rare by definition).

Differences from the whole-scan run: the frame is decided on the evenly spaced sample (the whole
scan when it has at most ``SAMPLE_POINTS`` points; on a larger one a turn to the walls may differ
by the estimate's own noise, and the summary names the sample's size), and an outlier equally
near two inliers in different tiles may take the other one's label. Everything else is the
whole-scan computation on the same numbers (``tests/test_stream.py`` compares labels and
confidences point for point).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..data.block_gen import RoomNorm
from ..metrics import SegMetrics
from ..voxels import count_distinct
from .checkpoint import LoadedModel, check_input_recipe, sliding_for
from .frame import FileHints, Frame, resolve_frame
from .inference import (SlidingConfig, TileScorer, box_from_bulk, box_ranks, grown_mask, outside,
                        resolved)
from .segment import (DENSE_FACTOR, TARGET_FACTOR, NetworkInput, model_input_colours, sanity_report)

SAMPLE_POINTS = 2_000_000      # the frame is decided on at most this many evenly spaced points
BUCKET_ROWS = 1 << 20          # file rows per merge bucket
STREAM_POINTS = 20_000_000     # ``pointseg segment`` streams scans of more points than this by itself
WORK_VERSION = 1
# the work folder's most, per point of the scan: spill 27 B, representatives and their back links
# up to 51 B, results, merge buckets and per-row labels (measured: 3.1 GB for 50 M points mid-run)
DISK_BYTES_PER_POINT = 120

SPILL = np.dtype([("row", "<i8"), ("xyz", "<f4", (3,)), ("rgb", "u1", (3,)), ("gt", "<i4")])
REPS = np.dtype([("order", "<i8"), ("row", "<i8"), ("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
BACK = np.dtype([("row", "<i8"), ("rep", "<i8"), ("gt", "<i4")])
VOTE = np.dtype([("row", "<i8"), ("label", "<i4"), ("conf", "<f4")])
POINT = np.dtype([("row", "<i8"), ("label", "<i4"), ("conf", "<f4"), ("gt", "<i4")])


class Interrupted(Exception):
    """The streamed run stopped before its end; the work folder keeps what is done."""


# ----------------------------------------------------------------------------- small helpers

def _append(path: Path, records: np.ndarray) -> None:
    with open(path, "ab") as f:
        records.tofile(f)


def _read(path: Path, dtype: np.dtype) -> np.ndarray:
    return np.fromfile(path, dtype=dtype) if path.exists() else np.zeros(0, dtype=dtype)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def float_keys(v: np.ndarray) -> np.ndarray:
    """uint32 keys of float32 values in the same order as the values (-0.0 just below +0.0)."""
    b = np.ascontiguousarray(v, dtype=np.float32).view(np.uint32)
    return np.where(b >> 31, ~b, b | np.uint32(0x80000000)).astype(np.uint32)


def _key_value(k: int) -> float:
    b = np.uint32(k)
    b = b & np.uint32(0x7FFFFFFF) if b >> 31 else ~b
    return float(np.array([b], dtype=np.uint32).view(np.float32)[0])


def order_statistics(passes: Callable[[], Iterator[np.ndarray]], ranks: list[int]) -> np.ndarray:
    """The values of rank ``ranks`` (0-based, ascending) of every column of float32 values
    ``(n, D)`` streamed in arrays by ``passes()`` (called twice): ``(len(ranks), D)``, exact, in
    two passes over the data with 65,536 counters per column and rank."""
    hi: np.ndarray | None = None
    for v in passes():
        k = float_keys(v).reshape(len(v), -1) >> 16
        counts = np.stack([np.bincount(k[:, d], minlength=1 << 16) for d in range(k.shape[1])])
        hi = counts if hi is None else hi + counts
    assert hi is not None, "order_statistics: no values"
    cum = np.cumsum(hi, axis=1)
    dims = range(len(cum))
    bucket = np.array([[int(np.searchsorted(cum[d], r, side="right")) for d in dims] for r in ranks])
    lo = np.zeros(bucket.shape + (1 << 16,), dtype=np.int64)
    for v in passes():
        k = float_keys(v).reshape(len(v), -1)
        for i in range(len(ranks)):
            for d in dims:
                lo[i, d] += np.bincount(k[:, d][(k[:, d] >> 16) == bucket[i, d]] & 0xFFFF, minlength=1 << 16)
    out = np.empty(bucket.shape)
    for i, r in enumerate(ranks):
        for d in dims:
            b = int(bucket[i, d])
            below = int(cum[d, b - 1]) if b else 0
            low = int(np.searchsorted(np.cumsum(lo[i, d]), r - below, side="right"))
            out[i, d] = _key_value((b << 16) | low)
    return out


def _groups(keys: np.ndarray) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """``(key, indices)`` for every distinct row of ``keys (n, 2)``."""
    if not len(keys):
        return
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for t, (a, b) in enumerate(uniq.tolist()):
        yield (a, b), order[starts[t]:starts[t + 1]]


# ----------------------------------------------------------------------------- tiles on disk

class TileFiles:
    """Records of one kind in one file per tile of a ``size`` grid (absolute, in the model frame)."""

    def __init__(self, folder: Path, size: float, dtype: np.dtype) -> None:
        self.folder, self.size, self.dtype = folder, size, dtype
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: tuple[int, int]) -> Path:
        return self.folder / f"{key[0]}_{key[1]}.bin"

    def keys(self) -> list[tuple[int, int]]:
        out = []
        for p in self.folder.glob("*.bin"):
            a, b = p.stem.split("_")
            out.append((int(a), int(b)))
        return sorted(out)

    def cell(self, xy: np.ndarray) -> np.ndarray:
        return np.floor(np.asarray(xy, dtype=np.float64) / self.size).astype(np.int64)

    def append(self, records: np.ndarray) -> None:
        if not len(records):
            return
        for key, idx in _groups(self.cell(records["xyz"][:, :2])):
            _append(self.path(key), records[idx])

    def read(self, key: tuple[int, int]) -> np.ndarray:
        return _read(self.path(key), self.dtype)

    def near(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Records of every tile meeting the box ``[lo, hi]`` (x, y), filtered to the box."""
        a, b = self.cell(lo), self.cell(hi)
        parts = []
        for kx in range(int(a[0]), int(b[0]) + 1):
            for ky in range(int(a[1]), int(b[1]) + 1):
                r = self.read((kx, ky))
                if len(r):
                    xy = r["xyz"][:, :2].astype(np.float64)
                    parts.append(r[((xy >= lo) & (xy <= hi)).all(axis=1)])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=self.dtype)


# ----------------------------------------------------------------------------- the run

@dataclass
class StreamResult:
    """What a streamed segmentation leaves: per-row labels and confidences on disk (``labels_rows``
    int32 and ``conf_rows`` float32, one per row of the file, -1 / NaN for dropped rows), the
    summary (class histogram included) and timings, and the confusion against the ground truth."""

    labels_rows: Path
    conf_rows: Path
    gt_rows: Path | None             # the ground truth per row (-1: none), when the scan has one
    rows: int
    points: int
    summary: dict[str, Any]
    timings: dict[str, float]
    confusion: np.ndarray | None


def identity(source: Any, checkpoint: str, settings: dict[str, Any]) -> dict[str, Any]:
    """What a work folder was made for: the scan file, the checkpoint and every setting; a resumed
    run must match it."""
    def stat(p: Any) -> list:
        st = os.stat(p)
        return [str(Path(p).resolve()), st.st_size, st.st_mtime_ns]
    return {"version": WORK_VERSION, "scan": stat(source.path), "checkpoint": stat(checkpoint),
            "settings": settings}


class StreamRun:
    """One streamed segmentation in its work folder (see the module docstring for the steps)."""

    def __init__(self, model: LoadedModel, source: Any, work: Path, *, checkpoint: str | Path,
                 sliding: SlidingConfig | None = None,
                 color_policy: str | None = None, up: str = "auto", units: str = "auto",
                 voxel: float | str | None = "auto", walls: str = "auto", chunk_points: int = 1_000_000,
                 progress: bool = True, say: Callable[[str], None] | None = None, resume: bool = False,
                 stop_after_tiles: int | None = None) -> None:
        """``source``: the scan in chunks (:func:`pointseg.io.chunks.open_chunks`); ``work``: the
        folder of this run (new, or with ``resume`` the one an interrupted run left);
        ``checkpoint``: the model's file (a resumed run must use the same); the rest as
        :func:`pointseg.segmentation.segment.segment_scan`."""
        self.model, self.source, self.work = model, source, Path(work)
        self.classes = model.classes
        self.cfg = resolved(sliding_for(model.ckpt, sliding))
        self.color_policy = color_policy or check_input_recipe(model.ckpt).no_colour
        self.up, self.units, self.voxel_arg, self.walls = up, units, voxel, walls
        self.chunk_points, self.progress = int(chunk_points), progress
        self.say = say or (lambda line: None)
        self.stop_after_tiles = stop_after_tiles       # tests: stop as a kill would, after this many tiles
        settings = {"sliding": self.cfg.__dict__, "color_policy": self.color_policy, "up": up, "units": units,
                    "voxel": voxel, "walls": walls, "chunk_points": self.chunk_points}
        self.ident = identity(source, str(checkpoint), settings)
        self.state_path = self.work / "state.json"
        self.state: dict[str, Any] = {}
        if resume:
            self._open_for_resume()
        else:
            if self.work.exists():
                raise FileExistsError(f"{self.work} holds an unfinished streamed run: pass --resume to "
                                      "continue it, or remove that folder to start again")
            need = DISK_BYTES_PER_POINT * int(source.count)
            parent = next(p for p in self.work.absolute().parents if p.exists())
            free = shutil.disk_usage(parent).free
            if free < need:
                raise ValueError(f"{parent}: {free / 1e9:.1f} GB free, a streamed run of {int(source.count):,} "
                                 f"points needs about {need / 1e9:.1f} GB for its work folder {self.work}")
            self.work.mkdir(parents=True)
            self.state = {"identity": self.ident, "done": []}
            _atomic_json(self.state_path, self.state)
        self.T = float(self.cfg.tile_size)
        self.spill = TileFiles(self.work / "spill", self.T, SPILL)
        self.reps = TileFiles(self.work / "reps", self.T, REPS)
        self.back = TileFiles(self.work / "back", self.T, BACK)
        # seconds per step, kept in the state so a resumed run reports the steps done before it
        self.timings: dict[str, float] = dict(self.state.get("timings", {}))

    def _open_for_resume(self) -> None:
        if not self.state_path.exists():
            raise FileNotFoundError(f"--resume: no unfinished streamed run in {self.work}")
        self.state = json.loads(self.state_path.read_text())
        old, new = self.state.get("identity") or {}, json.loads(json.dumps(self.ident))   # as JSON keeps it
        if old != new:
            what = [k for k in ("scan", "checkpoint", "settings") if old.get(k) != new.get(k)]
            raise ValueError(f"--resume: {self.work} was made for another {' and '.join(what) or 'version'} "
                             "(the scan file, checkpoint and settings must be those of the first run)")

    def _done(self, step: str, **values: Any) -> None:
        self.state["done"].append(step)
        self.state.update(values)
        _atomic_json(self.state_path, self.state)

    def _step(self, step: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run ``fn`` unless the state says it is done; a step cut short is redone from its start."""
        if step in self.state["done"]:
            return
        t = time.perf_counter()
        values = fn()
        self.timings[f"{step}_s"] = time.perf_counter() - t
        self._done(step, timings=self.timings, **values)

    def _chunks(self, what: str) -> Iterator[Any]:
        """The file's chunks, with a progress bar in points (``what``: the pass)."""
        from tqdm import tqdm
        with tqdm(total=int(self.source.count), unit="pt", unit_scale=True, desc=what, leave=False,
                  disable=not self.progress, dynamic_ncols=True) as bar:
            for ch in self.source.chunks(self.chunk_points):
                yield ch
                bar.update(len(ch.xyz))

    # ------------------------------------------------------------------ 1. plan
    def _plan(self) -> dict[str, Any]:
        src = self.source
        every = max(1, -(-int(src.count) // SAMPLE_POINTS))
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        finite_n, sample = 0, []
        for ch in self._chunks("read"):
            fin = np.isfinite(ch.xyz).all(axis=1)
            finite_n += int(fin.sum())
            if fin.any():
                lo = np.minimum(lo, ch.xyz[fin].min(0))
                hi = np.maximum(hi, ch.xyz[fin].max(0))
            # every ``every``-th row of the file: the sample, also what the picture and the page show
            sample.append(ch.xyz[fin & ((ch.start + np.arange(len(ch.xyz))) % every == 0)])
        if finite_n == 0:
            raise ValueError(f"{src.path}: the scan holds no points with finite coordinates")
        shift = src.local_shift(lo, hi)             # the reader's rule for georeferenced coordinates
        pts = np.concatenate(sample)
        local = (pts - shift if shift is not None else pts).astype(np.float32)
        # the file's own origin (a PLY comment) plus the shift, as the reader sets Scan.origin
        origin = getattr(src, "origin", None)
        if shift is not None:
            origin = shift if origin is None else np.asarray(origin, dtype=np.float64) + shift
        frame = resolve_frame(local, self.up, self.units, self.walls, FileHints.of(src.scan_stub(origin)))
        np.save(self.work / "sample.npy", local)
        return {"rows": int(src.count), "points": finite_n, "sample_every": every, "sample_points": len(local),
                "shift": None if shift is None else shift.tolist(),
                "origin": None if origin is None else np.asarray(origin).tolist(), "frame": frame.to_dict()}

    def frame(self) -> Frame:
        return Frame.from_dict(self.state["frame"])

    # ------------------------------------------------------------------ 2. spill
    def _spill(self) -> dict[str, Any]:
        from ..data.class_map import scan_ground_truth
        shutil.rmtree(self.spill.folder, ignore_errors=True)
        self.spill.folder.mkdir(parents=True)
        frame = self.frame()
        shift = None if self.state["shift"] is None else np.asarray(self.state["shift"])
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        gt_ok, left_out = True, 0
        ckpt, c = self.model.ckpt, self.classes.num_classes
        for ch in self._chunks("spill"):
            fin = np.isfinite(ch.xyz).all(axis=1)
            if not fin.any():
                continue
            xyz = ch.xyz[fin]
            local = (xyz - shift if shift is not None else xyz).astype(np.float32)
            net = frame.forward(local).astype(np.float32, copy=False)
            rec = np.zeros(len(net), dtype=SPILL)
            rec["row"] = ch.start + np.flatnonzero(fin)
            rec["xyz"] = net
            rec["rgb"] = model_input_colours(None if ch.rgb is None else ch.rgb[fin], len(net), self.color_policy)
            rec["gt"] = -1
            if gt_ok and getattr(ch, "label", None) is not None:
                lab = np.asarray(ch.label)[fin]
                stub = _LabelStub(lab, getattr(self.source, "label_field", None))
                gt, lost = scan_ground_truth(stub, ckpt, c)
                if gt is None:
                    gt_ok = False
                else:
                    rec["gt"] = gt
                    left_out += lost
            elif getattr(ch, "label", None) is None:
                gt_ok = False
            self.spill.append(rec)
            lo = np.minimum(lo, net.min(0).astype(np.float64))
            hi = np.maximum(hi, net.max(0).astype(np.float64))
        return {"net_min": lo.tolist(), "net_max": hi.tolist(), "has_gt": gt_ok, "gt_left_out": left_out}

    # ------------------------------------------------------------------ columns and voxel size
    def _columns(self) -> dict[str, Any]:
        """Points per occupied ``block_size`` column (as the whole-scan path keys them)."""
        b = self.cfg.block_size
        origin = np.asarray(self.state["net_min"])[:2]
        cells, counts = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
        for key in self.spill.keys():
            xy = self.spill.read(key)["xyz"][:, :2].astype(np.float64)
            c, n = np.unique(np.floor((xy - origin) / b).astype(np.int64), axis=0, return_counts=True)
            cells = np.concatenate([cells, c])
            counts = np.concatenate([counts, n])
            if len(cells) > 4 * len(c) + 1_000_000:
                cells, inv = np.unique(cells, axis=0, return_inverse=True)
                counts = np.bincount(inv.reshape(-1), weights=counts).astype(np.int64)
        cells, inv = np.unique(cells, axis=0, return_inverse=True)
        counts = np.bincount(inv.reshape(-1), weights=counts).astype(np.int64)
        np.save(self.work / "column_counts.npy", counts)
        return {"columns": int(len(counts))}

    def _voxel_grid(self, size: float) -> tuple[np.ndarray, np.ndarray]:
        """The whole-scan voxel grid of ``size``: its origin (the network points' min corner) and
        its cells per axis, as :func:`pointseg.voxels.voxel_keys` numbers them."""
        gmin = np.asarray(self.state["net_min"])
        dims = np.floor((np.asarray(self.state["net_max"]) - gmin) / size).astype(np.int64) + 1
        if float(np.prod(dims.astype(np.float64))) >= 2.0 ** 62:
            raise ValueError(f"--voxel {size:g} m is too small for a scan this large")
        return gmin, dims

    def _voxels(self, rec: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
        """Voxel keys of ``rec``'s points and the tile owning each one's voxel: the tile of the
        voxel's min corner, the same for all its points, so every voxel has one owner."""
        gmin, dims = self._voxel_grid(size)
        cells = np.floor((rec["xyz"].astype(np.float64) - gmin) / size).astype(np.int64)
        owner = np.floor((gmin[:2] + cells[:, :2] * size) / self.T).astype(np.int64)
        return np.ravel_multi_index(cells.T, dims), owner

    def _count_voxels(self, size: float, limit: float = np.inf) -> int:
        """The scan's occupied voxels of ``size``, one read of every tile: each tile counts the
        voxels it owns; points whose voxel another tile owns (within a voxel of a border) are
        sent to that tile and counted there unless it already holds their voxel. Stops early,
        with a count over ``limit``, once the tiles read so far hold more than ``limit``."""
        total, border, sent = 0, {}, {}
        for key in self.spill.keys():
            if total > limit:
                return total
            rec = self.spill.read(key)
            vk, owner = self._voxels(rec, size)
            own = (owner == key).all(axis=1)
            total += count_distinct(vk[own])
            # the owned voxels a foreign point can share lie within two voxels of the border
            xy = rec["xyz"][:, :2].astype(np.float64) - np.asarray(key) * self.T
            near = own & ((xy < 2.001 * size) | (xy > self.T - 2.001 * size)).any(axis=1)
            border[key] = np.unique(vk[near])
            for okey, idx in _groups(owner[~own]):
                sent.setdefault(okey, []).append(vk[~own][idx])
        for okey, parts in sent.items():
            total += len(np.setdiff1d(np.unique(np.concatenate(parts)), border.get(okey, np.zeros(0, np.int64))))
        return total

    def _voxel_size(self) -> dict[str, Any]:
        v = self.voxel_arg
        lines = []
        if v == "off" or v is None:
            v = None
        elif v == "auto":
            counts = np.load(self.work / "column_counts.npy")
            num, b = self.cfg.num_points, self.cfg.block_size
            v = None
            if counts.mean() > DENSE_FACTOR * num:
                size = b / np.sqrt(num) / 4
                for _ in range(40):
                    if self._count_voxels(size, TARGET_FACTOR * num * len(counts)) / len(counts) \
                            <= TARGET_FACTOR * num:
                        break
                    size *= 1.25
                v = float(size)
                lines.append(f"voxel {v * 100:.2f} cm (auto: the scan is over {DENSE_FACTOR:g} blocks of "
                             f"{num} points per {b:g} m column)")
        return {"voxel": None if v is None else float(v), "voxel_lines": lines}

    # ------------------------------------------------------------------ 3. voxel representatives
    def _representatives(self) -> dict[str, Any]:
        foreign = TileFiles(self.work / "foreign", self.T, SPILL)
        for f in (self.reps.folder, self.back.folder, foreign.folder):
            shutil.rmtree(f, ignore_errors=True)
            f.mkdir(parents=True)
        size = self.state["voxel"]
        network = 0
        if size is None:
            for key in self.spill.keys():
                rec = self.spill.read(key)
                reps = np.zeros(len(rec), dtype=REPS)
                reps["order"] = rec["row"]
                reps["row"], reps["xyz"], reps["rgb"] = rec["row"], rec["xyz"], rec["rgb"]
                self.reps.append(reps)
                network += len(reps)
            return {"network_points": network}
        # the points of voxels owned by another tile (even one without points of its own) go there
        for key in self.spill.keys():
            rec = self.spill.read(key)
            _, owner = self._voxels(rec, size)
            away = ~(owner == key).all(axis=1)
            for okey, idx in _groups(owner[away]):
                _append(foreign.path(okey), rec[away][idx])
        for key in sorted(set(self.spill.keys()) | set(foreign.keys())):
            rec = self.spill.read(key)
            _, owner = self._voxels(rec, size)
            rec = np.concatenate([rec[(owner == key).all(axis=1)], foreign.read(key)])
            if not len(rec):
                continue
            vk, _ = self._voxels(rec, size)
            # the first point of the file in each voxel, voxels in key order (as np.unique gives)
            order = np.lexsort((rec["row"], vk))
            rec, vk = rec[order], vk[order]
            first = np.r_[True, vk[1:] != vk[:-1]]
            group = np.cumsum(first) - 1
            heads = rec[first]
            reps = np.zeros(len(heads), dtype=REPS)
            reps["order"] = vk[first]
            reps["row"], reps["xyz"], reps["rgb"] = heads["row"], heads["xyz"], heads["rgb"]
            back = np.zeros(len(rec), dtype=BACK)
            back["row"], back["rep"], back["gt"] = rec["row"], heads["row"][group], rec["gt"]
            _append(self.back.path(key), back)
            # stored under the tile of the representative's own position
            self.reps.append(reps)
            network += len(reps)
        shutil.rmtree(foreign.folder)
        return {"network_points": network}

    def _rep_arrays(self) -> Iterator[np.ndarray]:
        for key in self.reps.keys():
            yield self.reps.read(key)

    # ------------------------------------------------------------------ 4. statistics
    def _statistics(self) -> dict[str, Any]:
        m = self.state["network_points"]
        box = None
        if m >= 100:
            lo_v, hi_v = order_statistics(lambda: (r["xyz"] for r in self._rep_arrays()), list(box_ranks(m)))
            box = box_from_bulk(lo_v, hi_v)
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        outliers = []
        for r in self._rep_arrays():
            far = outside(r["xyz"], box)
            if far.any():
                outliers.append(r[far])
            if (~far).any():
                p = r["xyz"][~far].astype(np.float64)
                lo, hi = np.minimum(lo, p.min(0)), np.maximum(hi, p.max(0))
        out = np.concatenate(outliers) if outliers else np.zeros(0, dtype=REPS)
        np.save(self.work / "outliers.npy", out)
        # the sliding inference's tiles: cells of the inliers from their min corner
        lo_xy = lo[:2]
        keys = set()
        for r in self._rep_arrays():
            p = r["xyz"][~outside(r["xyz"], box)]
            c = np.floor((p[:, :2].astype(np.float64) - lo_xy) / self.T).astype(np.int64)
            keys.update(map(tuple, np.unique(c, axis=0).tolist()))
        return {"box": None if box is None else [box[0].tolist(), box[1].tolist()],
                "norm_offset": lo.tolist(), "norm_extent": (hi - lo).tolist(),
                "tiles": sorted(keys), "outliers": int(len(out))}

    # ------------------------------------------------------------------ 5. predict
    def _tile_points(self, kx: int, ky: int, box: Any) -> tuple[np.ndarray, np.ndarray]:
        lo = np.asarray(self.state["norm_offset"])[:2]
        tx, ty = lo[0] + kx * self.T, lo[1] + ky * self.T
        m = self.cfg.block_size
        rec = self.reps.near(np.array([tx - m, ty - m]) - 1e-3, np.array([tx + self.T + m, ty + self.T + m]) + 1e-3)
        rec = rec[~outside(rec["xyz"], box)]
        x, y = rec["xyz"][:, 0], rec["xyz"][:, 1]
        rec = rec[grown_mask(x, y, tx, ty, self.T, m)]
        rec = rec[np.argsort(rec["order"], kind="stable")]
        cells = np.floor((rec["xyz"][:, :2].astype(np.float64) - lo) / self.T).astype(np.int64)
        local = np.flatnonzero((cells[:, 0] == kx) & (cells[:, 1] == ky))
        return rec, local

    def _predict(self) -> None:
        from scipy.spatial import cKDTree
        from tqdm import tqdm
        results = self.work / "results"
        results.mkdir(exist_ok=True)
        tiles = [tuple(t) for t in self.state["tiles"]]
        box = None if self.state["box"] is None else (np.asarray(self.state["box"][0]), np.asarray(self.state["box"][1]))
        norm = RoomNorm(np.asarray(self.state["norm_offset"]), np.asarray(self.state["norm_extent"]))
        scorer = TileScorer(self.model.network, self.classes.num_classes, self.model.device, self.cfg, norm)
        self.model.network.eval()
        outl = np.load(self.work / "outliers.npy")
        best = np.full(len(outl), np.inf)
        best_lab = np.zeros(len(outl), dtype=np.int32)
        best_conf = np.zeros(len(outl), dtype=np.float32)
        start, done_points, spent = 0, 0, 0.0
        # resume: the first unfinished tile, with the random state and outlier matches after the last
        while (results / f"{start:06d}.npz").exists():
            start += 1
        if start:
            last = np.load(results / f"{start - 1:06d}.npz")
            scorer.rng.bit_generator.state = json.loads(str(last["rng"]))
            scorer.stats = json.loads(str(last["stats"]))
            best, best_lab, best_conf = last["best"], last["best_lab"], last["best_conf"]
            done_points = int(last["done_points"])
            spent = float(last["predict_s"])
            self.say(f"resuming at tile {start + 1} of {len(tiles)} ({done_points:,} points done)")
        total = self.state["network_points"]
        bar = tqdm(total=total, initial=done_points, unit="pt", unit_scale=True, desc="segment",
                   disable=not self.progress, dynamic_ncols=True)
        t0 = time.perf_counter()
        for i in range(start, len(tiles)):
            if self.stop_after_tiles is not None and i - start >= self.stop_after_tiles:
                bar.close()
                raise Interrupted(f"stopped after {i} of {len(tiles)} tiles")
            kx, ky = tiles[i]
            rec, local = self._tile_points(kx, ky, box)
            lab, conf, _ = scorer.score(rec["xyz"], rec["rgb"], local)
            inner = rec[local]
            if len(outl):
                d, j = cKDTree(inner["xyz"].astype(np.float64)).query(outl["xyz"].astype(np.float64))
                better = d < best
                best = np.where(better, d, best)
                best_lab = np.where(better, lab[np.minimum(j, len(lab) - 1)], best_lab).astype(np.int32)
                best_conf = np.where(better, conf[np.minimum(j, len(conf) - 1)], best_conf).astype(np.float32)
            done_points += len(inner)
            tmp = results / f".{i:06d}.tmp.npz"
            np.savez(tmp, row=inner["row"], label=lab.astype(np.int32), conf=conf.astype(np.float32),
                     rng=json.dumps(scorer.rng.bit_generator.state), stats=json.dumps(scorer.stats),
                     best=best, best_lab=best_lab, best_conf=best_conf, done_points=done_points,
                     predict_s=spent + time.perf_counter() - t0)
            os.replace(tmp, results / f"{i:06d}.npz")
            bar.set_postfix_str(f"tile {i + 1}/{len(tiles)}", refresh=False)
            bar.update(len(inner))
        bar.close()
        # the predicting time of every run that worked on this scan (a resumed one included)
        self.timings["predict_s"] = spent + time.perf_counter() - t0
        if len(outl):
            rec = np.zeros(len(outl), dtype=VOTE)
            rec["row"], rec["label"], rec["conf"] = outl["row"], best_lab, best_conf
            np.save(self.work / "outlier_votes.npy", rec)
        self.state["stats"] = scorer.stats

    # ------------------------------------------------------------------ 6. merge
    def _back_records(self, key: tuple[int, int]) -> np.ndarray:
        if self.state["voxel"] is not None:
            return self.back.read(key)
        rec = self.spill.read(key)
        back = np.zeros(len(rec), dtype=BACK)
        back["row"], back["rep"], back["gt"] = rec["row"], rec["row"], rec["gt"]
        return back

    def _merge(self) -> dict[str, Any]:
        join = self.work / "join"
        shutil.rmtree(join, ignore_errors=True)
        join.mkdir()
        B = BUCKET_ROWS

        def bucketed(prefix: str, records: np.ndarray, by: str) -> None:
            b = records[by] // B
            order = np.argsort(b, kind="stable")
            keys, starts = np.unique(b[order], return_index=True)
            for k, s, e in zip(keys.tolist(), starts.tolist(), list(starts[1:]) + [len(order)]):
                _append(join / f"{prefix}{k}.bin", records[order[s:e]])

        results = sorted((self.work / "results").glob("[0-9]*.npz"))
        for p in results:
            r = np.load(p)
            v = np.zeros(len(r["row"]), dtype=VOTE)
            v["row"], v["label"], v["conf"] = r["row"], r["label"], r["conf"]
            bucketed("v", v, "row")
        if (self.work / "outlier_votes.npy").exists():
            bucketed("v", np.load(self.work / "outlier_votes.npy"), "row")
        for key in (self.spill if self.state["voxel"] is None else self.back).keys():
            bucketed("b", self._back_records(key), "rep")
        rows = int(self.state["rows"])
        n_buckets = -(-rows // B)
        for k in range(n_buckets):
            votes = _read(join / f"v{k}.bin", VOTE)
            back = _read(join / f"b{k}.bin", BACK)
            lab = np.full(B, -1, dtype=np.int32)
            conf = np.full(B, np.nan, dtype=np.float32)
            lab[votes["row"] - k * B], conf[votes["row"] - k * B] = votes["label"], votes["conf"]
            pts = np.zeros(len(back), dtype=POINT)
            pts["row"], pts["gt"] = back["row"], back["gt"]
            pts["label"], pts["conf"] = lab[back["rep"] - k * B], conf[back["rep"] - k * B]
            bucketed("p", pts, "row")
        c = self.classes.num_classes
        hist = np.zeros(c, dtype=np.int64)
        confusion = np.zeros((c, c), dtype=np.int64)
        lab_path, conf_path, gt_path = (self.work / n for n in ("labels_rows.i32", "conf_rows.f32", "gt_rows.i32"))
        labelled = 0
        with open(lab_path, "wb") as fl, open(conf_path, "wb") as fc, open(gt_path, "wb") as fg:
            for k in range(n_buckets):
                n = min(B, rows - k * B)
                pts = _read(join / f"p{k}.bin", POINT)
                lab = np.full(n, -1, dtype=np.int32)
                conf = np.full(n, np.nan, dtype=np.float32)
                lab[pts["row"] - k * B], conf[pts["row"] - k * B] = pts["label"], pts["conf"]
                labelled += int((lab >= 0).sum())
                lab.tofile(fl)
                conf.tofile(fc)
                if self.state["has_gt"]:
                    gt = np.full(n, -1, dtype=np.int32)
                    gt[pts["row"] - k * B] = pts["gt"]
                    gt.tofile(fg)
                hist += np.bincount(pts["label"], minlength=c)
                g = pts["gt"] >= 0
                confusion += np.bincount(pts["gt"][g] * c + pts["label"][g], minlength=c * c).reshape(c, c)
                for prefix in ("v", "b", "p"):
                    (join / f"{prefix}{k}.bin").unlink(missing_ok=True)
        if labelled != self.state["points"]:        # every finite point has a voxel and a label
            raise RuntimeError(f"streamed run: {self.state['points'] - labelled:,} point(s) without a label")
        np.save(self.work / "histogram.npy", hist)
        np.save(self.work / "confusion.npy", confusion)
        return {}

    # ------------------------------------------------------------------ all
    def run(self) -> StreamResult:
        self._step("plan", self._plan)
        for line in self.frame_lines():
            self.say(line)
        self._step("spill", self._spill)
        self._step("columns", self._columns)
        self._step("voxel_size", self._voxel_size)
        for line in self.state["voxel_lines"]:
            self.say(line)
        self._step("representatives", self._representatives)
        if self.state["voxel"] is not None:
            self.say(f"subsampled {self.state['points']:,} -> {self.state['network_points']:,} points for the "
                     f"network (voxel {self.state['voxel'] * 100:.2f} cm); every point takes its voxel's label")
        self._step("statistics", self._statistics)
        if "predict" not in self.state["done"]:
            self._predict()
            self._done("predict", stats=self.state["stats"], timings=self.timings)
        self._step("merge", self._merge)
        return self.result()

    def frame_lines(self) -> list[str]:
        return [f"streaming {self.state['points']:,} points in {self.T:g} m tiles (frame decided on "
                f"{self.state['sample_points']:,} "
                "evenly spaced points)"] + self.frame().lines()

    def result(self) -> StreamResult:
        c = self.classes
        hist = np.load(self.work / "histogram.npy")
        confusion = np.load(self.work / "confusion.npy") if self.state["has_gt"] else None
        stats = self.state["stats"]
        counts = np.load(self.work / "column_counts.npy")
        frame = self.frame()
        ckpt = self.model.ckpt
        trained_on = (ckpt.get("train_config", {}).get("data", {}).get("source")
                      or ckpt.get("provenance", {}).get("project"))
        # the room-size check on the frame's sample, the density check on every column's count
        net = NetworkInput(frame.forward(np.load(self.work / "sample.npy")), None, None, frame,
                           self.state["voxel"], [])
        sanity = sanity_report(net, bool(self.source.has_colour), self.cfg.block_size, self.cfg.num_points,
                               rooms=trained_on != "scans", per_col=counts)
        summary: dict[str, Any] = {
            "model": ckpt.get("preset"), "device": str(self.model.device), "classes": c.to_dict(),
            "histogram": {n: int(v) for n, v in zip(c.names, hist)},
            "sliding": self.cfg.__dict__, "blocks": stats["blocks"], "unvoted_points": stats["unvoted_points"],
            "tiles": stats["tiles"], "occupied_tiles": len(self.state["tiles"]),
            "outliers": self.state["outliers"], "compact_blocks": stats["compact_blocks"],
            "frame": frame.to_dict(), "sanity": sanity, "network_points": self.state["network_points"],
            "voxel": self.state["voxel"], "trained_on": trained_on, "notes": [],
            "stream": {"tile_size": self.T, "chunk_points": self.chunk_points,
                       "frame_sample_every": self.state["sample_every"], "spill_tiles": len(self.spill.keys())},
        }
        notes = summary["notes"]
        if not self.source.has_colour:
            notes.append(f"the scan has no colour: colour channels set to {self.color_policy}; "
                         "a model trained with colour is less accurate on such scans")
        if self.state["outliers"]:
            notes.append(f"warning: {self.state['outliers']} point(s) lie far outside the rest of the scan; they "
                         "were left out of the blocks and labelled like their nearest point")
        if confusion is not None:
            summary["metrics"] = SegMetrics(confusion, c.names).to_dict()
            if self.state["gt_left_out"]:
                notes.append(f"{self.state['gt_left_out']:,} point(s) carry label values the class map "
                             "ignores or does not list: left out of the metrics")
        return StreamResult(self.work / "labels_rows.i32", self.work / "conf_rows.f32",
                            self.work / "gt_rows.i32" if confusion is not None else None, int(self.state["rows"]),
                            int(self.state["points"]), summary, dict(self.timings), confusion)


class _LabelStub:
    """A chunk's labels in the shape :func:`pointseg.data.class_map.scan_ground_truth` reads."""

    def __init__(self, labels: np.ndarray, label_field: str | None) -> None:
        self.label = labels
        self.raw_label = labels
        self.label_field = label_field


def read_rows(path: Path, dtype: Any, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of a flat binary file of ``dtype`` values (no mapping kept)."""
    dt = np.dtype(dtype)
    with open(path, "rb") as f:
        f.seek(start * dt.itemsize)
        return np.fromfile(f, dtype=dt, count=max(0, stop - start))
