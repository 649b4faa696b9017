r"""Optional compiled CPU kernels (``csrc/kernels.cpp``): exact rank selection for dilated kNN and
the fused EdgeConv edge pass.

The source is plain C++ with a C ABI, called through :mod:`ctypes` (which releases the GIL),
so it needs no torch headers and compiles in about one second with the system ``g++``. It is
compiled on first use into a per-user cache (``$POINTSEG_CACHE_DIR``, else
``$XDG_CACHE_HOME/pointseg`` or ``~/.cache/pointseg``), keyed by a hash of the source, the
compiler and its flags; the file is written to a temporary name and renamed, so concurrent
processes never load a half-written library. When no compiler is available, the build fails,
or ``POINTSEG_NATIVE=0`` is set, every caller falls back to its pure-torch path (same results)
after a single warning. CUDA tensors always take the torch path.

Every wrapper returns ``None`` when the kernel cannot serve the request, so callers read
``out = native.f(...); if out is None: <torch path>``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
FLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17", "-pthread"]
# Tried in order. -march=native: the edge kernels are written as wide vector operations (4x
# faster backward with AVX-512 than with baseline SSE2); the library is keyed by this CPU's
# identity, so a cache shared between machines never loads a build for another CPU. OpenMP: the
# kernels run on the thread pool of the OpenMP runtime torch has loaded (libgomp, shared by
# soname) instead of competing with its spinning workers.
FLAG_SETS = (FLAGS + ["-march=native", "-fopenmp"], FLAGS + ["-fopenmp"], FLAGS)
ABI_VERSION = 8

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_failure: str | None = None


def cache_dir() -> Path:
    env = os.environ.get("POINTSEG_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pointseg"


def _compiler() -> str | None:
    cxx = os.environ.get("CXX") or "g++"
    return shutil.which(cxx)


def _cpu_identity() -> str:
    """Model and feature flags of this CPU (what ``-march=native`` compiles for)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _library_path(cxx: str, flags: list[str]) -> Path:
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h = hashlib.sha256()
    cpu = _cpu_identity() if "-march=native" in flags else ""
    for part in (SOURCE.read_bytes(), cxx.encode(), version.encode(), " ".join(flags).encode(),
                 platform.machine().encode(), str(ABI_VERSION).encode(), cpu.encode()):
        h.update(part)
        h.update(b"\0")
    return cache_dir() / f"pointseg_kernels_{h.hexdigest()[:16]}.so"


def _build(cxx: str, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".so.tmp", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cxx, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for name in ("f32", "f64"):
        f = getattr(lib, f"ps_rank_select_{name}")
        f.argtypes = [p, i64, i64, i64, p, i64, p, i32]
        f.restype = i32
        f = getattr(lib, f"ps_knn_select_{name}")
        f.argtypes = [p, p, i64, i64, i64, i64, p, i64, p, i32]
        f.restype = i32
        f = getattr(lib, f"ps_knn_thresholds_{name}")
        f.argtypes = [p, p, i64, i64, i64, i64, i64, p, i32]
        f.restype = i32
        f = getattr(lib, f"ps_knn_tile_{name}")
        f.argtypes = [p, p, p, i64, i64, i64, i64, i64, i64, p, p, i64, i32]
        f.restype = i32
        f = getattr(lib, f"ps_knn_finish_{name}")
        f.argtypes = [p, p, i64, i64, p, i64, p, i32]
        f.restype = i32
        f = getattr(lib, f"ps_edge_forward_{name}")
        f.argtypes = [p, p, p, i64, i64, i64, i64, p, i32, f64, i32, p, p, p, i32]
        f.restype = i32
        f = getattr(lib, f"ps_edge_backward_{name}")
        f.argtypes = [p, p, p, i64, i64, i64, i64, i32, f64, p, p, p, p, p, i32]
        f.restype = i32
        f = getattr(lib, f"ps_max_backward_{name}")
        f.argtypes = [p, p, p, i64, i64, p, i32]
        f.restype = i32
    lib.ps_has_knn_fused.restype = i32
    lib.ps_knn_fused_f32.argtypes = [p, p, i64, i64, i64, p, i64, p, i32]
    lib.ps_knn_fused_f32.restype = i32
    lib.ps_edge_mlp_max_f32.argtypes = [p, i64, p, i64, p, i64, i64, i64, f64, i64, p, p, p, p, p, i64, i32]
    lib.ps_edge_mlp_max_f32.restype = i32
    lib.ps_abi_version.restype = i32
    if lib.ps_abi_version() != ABI_VERSION:
        raise RuntimeError(f"kernel ABI {lib.ps_abi_version()} != expected {ABI_VERSION}")


def _load_first(cxx: str) -> ctypes.CDLL:
    """The library of the first flag set that builds and loads."""
    errors = []
    for flags in FLAG_SETS:
        path = _library_path(cxx, flags)
        try:
            if not path.exists():
                _build(cxx, flags, path)
            lib = ctypes.CDLL(str(path))
            _declare(lib)
            return lib
        except Exception as exc:
            errors.append(str(exc))
    raise RuntimeError("; ".join(errors))


def load() -> ctypes.CDLL | None:
    """The compiled library, building it on first use; None (after one warning) when unavailable."""
    global _lib, _tried, _failure
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        try:
            if os.environ.get("POINTSEG_NATIVE", "1") == "0":
                raise RuntimeError("disabled by POINTSEG_NATIVE=0")
            cxx = _compiler()
            if cxx is None:
                raise RuntimeError("no C++ compiler found (set CXX or install g++)")
            _lib = _load_first(cxx)
        except Exception as exc:  # any failure means: use the torch path
            _failure = str(exc)
            if os.environ.get("POINTSEG_NATIVE", "1") != "0":
                warnings.warn(f"pointseg native CPU kernels unavailable ({_failure}); "
                              "using the slower pure-torch kNN selection and EdgeConv edge pass",
                              RuntimeWarning, stacklevel=2)
        _tried = True
        return _lib


def available() -> bool:
    return load() is not None


def failure() -> str | None:
    """Why the kernels are unavailable (None when loaded or not tried yet)."""
    return _failure


def _usable(*tensors: Tensor) -> bool:
    t0 = tensors[0]
    if t0.device.type != "cpu" or t0.dtype not in (torch.float32, torch.float64):
        return False
    return all(t.device.type == "cpu" for t in tensors) and load() is not None


def _suffix(t: Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def rank_select(dist: Tensor, ranks: Tensor) -> Tensor | None:
    """Column indices of the elements at ``ranks`` (ascending) of every row of ``dist (..., n)``.

    Ties are ordered by column index (as a stable sort). Returns ``(..., len(ranks))`` int64, or
    None when the kernel cannot be used.
    """
    if not _usable(dist) or dist.shape[-1] >= 2**32:
        return None
    d = dist if dist.stride(-1) == 1 else dist.contiguous()
    d2 = d.reshape(-1, d.shape[-1])
    if d2.shape[0] > 1 and d2.stride(0) < d2.shape[1]:
        d2 = d2.contiguous()
    r = ranks.to(device="cpu", dtype=torch.int64).contiguous()
    out = torch.empty(*dist.shape[:-1], r.numel(), dtype=torch.int64)
    rc = getattr(_lib, f"ps_rank_select_{_suffix(d2)}")(
        d2.data_ptr(), d2.shape[0], d2.shape[1], d2.stride(0), r.data_ptr(), r.numel(),
        out.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"rank_select: bad ranks {r.tolist()} for rows of {d2.shape[1]} (code {rc})")
    return out


def knn_select(dot: Tensor, sq: Tensor, self_offset: int, ranks: Tensor) -> Tensor | None:
    """kNN rank selection on ``v[b, r, j] = sq[b, j] - 2 dot[b, r, j]`` (``|q_r - x_j|^2`` up to the
    row constant ``|q_r|^2``), the row's own point ``self_offset + r`` counting as ``-inf``.

    ``dot (B, m, N)``, ``sq (B, N)``; returns ``(B, m, len(ranks))`` int64, or None when the kernel
    cannot be used. Saves the pass that would add ``sq`` to the whole matrix.
    """
    if not _usable(dot, sq) or dot.dtype != sq.dtype or dot.shape[-1] >= 2**32:
        return None
    B, m, N = dot.shape
    dot, sq = dot.contiguous(), sq.reshape(B, N).contiguous()
    r = ranks.to(device="cpu", dtype=torch.int64).contiguous()
    out = torch.empty(B, m, r.numel(), dtype=torch.int64)
    rc = getattr(_lib, f"ps_knn_select_{_suffix(dot)}")(
        dot.data_ptr(), sq.data_ptr(), B, m, N, int(self_offset), r.data_ptr(), r.numel(), out.data_ptr(),
        torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"knn_select: bad ranks {r.tolist()} for rows of {N} (code {rc})")
    return out


def has_knn_fused() -> bool:
    """Whether the compiled kernels have :func:`knn_fused` (builds with AVX-512 or AVX2 + FMA)."""
    return available() and bool(_lib.ps_has_knn_fused())


def knn_fused(x: Tensor, sq: Tensor, ranks: Tensor) -> Tensor | None:
    """The kNN of :func:`knn_select` over every row of a cloud, with the Gram matrix products fused
    into the selection (float32 builds with AVX-512 or AVX2 + FMA): ``x (B, C, N)``, ``sq (B, N)`` the squared
    norms; returns ``(B, N, len(ranks))`` int64, or None when this build or input cannot use it."""
    if not _usable(x, sq) or x.dtype != torch.float32 or sq.dtype != torch.float32 or x.shape[-1] >= 2**32:
        return None
    if not has_knn_fused():
        return None
    B, C, N = x.shape
    x, sq = x.contiguous(), sq.reshape(B, N).contiguous()
    r = ranks.to(device="cpu", dtype=torch.int64).contiguous()
    out = torch.empty(B, N, r.numel(), dtype=torch.int64)
    rc = _lib.ps_knn_fused_f32(x.data_ptr(), sq.data_ptr(), B, C, N, r.data_ptr(), r.numel(), out.data_ptr(),
                               torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"knn_fused: bad ranks {r.tolist()} for rows of {N} (code {rc})")
    return out


def knn_thresholds(sdot: Tensor, sq: Tensor, step: int, t: int) -> Tensor | None:
    """Per-row selection thresholds of the symmetric-tile kNN: the ``t``-th smallest (0-based) of
    ``sq[b, s*step] - 2 sdot[b, i, s]`` over the ``S`` sampled columns (the point itself ``-inf``).

    ``sdot (B, N, S)`` contiguous, ``sq (B, N)``; returns ``(B, N)`` or None (kernel unusable)."""
    if not _usable(sdot, sq) or sdot.dtype != sq.dtype:
        return None
    B, N, S = sdot.shape
    sdot, sq = sdot.contiguous(), sq.reshape(B, N).contiguous()
    thr = torch.empty(B, N, dtype=sdot.dtype)
    rc = getattr(_lib, f"ps_knn_thresholds_{_suffix(sdot)}")(
        sdot.data_ptr(), sq.data_ptr(), B, N, S, int(step), int(t), thr.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"knn_thresholds: bad sample (S={S}, step={step}, t={t}, N={N}; code {rc})")
    return thr


def knn_tile(g: Tensor, sq: Tensor, thr: Tensor, i0: int, j0: int, cand: Tensor, cnt: Tensor) -> None:
    """Append the survivors ``v <= thr`` of one Gram tile ``g (B, mi, mj)`` (rows ``i0:``, columns
    ``j0:``; ``i0 == j0``: a diagonal tile) to the per-row candidate lists ``cand (B*N, cap)`` (int64
    storage of packed (value, index) pairs; 16 bytes per entry for float64) with counts ``cnt (B*N,)``.
    All tensors contiguous CPU tensors of the caller (see :func:`pointseg.nn.knn._knn_symmetric`)."""
    B, mi, mj = g.shape
    N = sq.shape[-1]
    rc = getattr(_lib, f"ps_knn_tile_{_suffix(g)}")(
        g.data_ptr(), sq.data_ptr(), thr.data_ptr(), B, N, mi, mj, int(i0), int(j0), cand.data_ptr(),
        cnt.data_ptr(), _capacity(cand, g.dtype), torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"knn_tile: bad tile {tuple(g.shape)} at ({i0}, {j0}) of {N} points (code {rc})")


def knn_finish(cand: Tensor, cnt: Tensor, dtype: torch.dtype, ranks: Tensor) -> Tensor:
    """Neighbours ``(rows, len(ranks))`` at the kept ranks of each row's sorted candidates; a row
    whose candidate list was too short or overflowed gets ``-1`` in column 0 (recompute it)."""
    r = ranks.to(device="cpu", dtype=torch.int64).contiguous()
    rows = cnt.shape[0]
    out = torch.empty(rows, r.numel(), dtype=torch.int64)
    rc = getattr(_lib, f"ps_knn_finish_{'f32' if dtype == torch.float32 else 'f64'}")(
        cand.data_ptr(), cnt.data_ptr(), rows, _capacity(cand, dtype), r.data_ptr(), r.numel(),
        out.data_ptr(), torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"knn_finish: bad ranks {r.tolist()} (code {rc})")
    return out


def _capacity(cand: Tensor, dtype: torch.dtype) -> int:
    """Entries per row of a candidate list: one int64 per float32 entry, two per float64 entry."""
    return cand.shape[-1] // (1 if dtype == torch.float32 else 2)


def _channel_last(t: Tensor) -> Tensor:
    """``(B, C, N)`` -> contiguous ``(B, N, C)``: the kernels read one neighbour's channels at once."""
    return t.transpose(1, 2).contiguous()


def channel_last_view(t: Tensor) -> Tensor:
    """``t (B, C, N)`` as a view of channel-last memory (the edge kernels then need no copy), or
    ``t`` itself where the kernels cannot take it."""
    if not _usable(t):
        return t
    return _channel_last(t).transpose(1, 2)


def edge_forward(a: Tensor | None, b: Tensor, idx: Tensor, sgn: Tensor | None, act_stats: bool,
                 slope: float, want_stats: bool) -> tuple[Tensor, Tensor | None, Tensor | None] | None:
    """Dense edge pass: ``src (B, C, N)`` = argmax_j sgn_c b_j over the neighbours of each node and,
    with ``want_stats``, per-channel float64 sums of ``h`` and ``h^2`` over all ``B N k`` edges
    (``h = z`` or ``act(z)``, ``z = a_i + b_j``). None when the kernel cannot be used."""
    tensors = [b, idx] + ([a] if a is not None else [])
    if not _usable(*tensors) or (a is not None and a.dtype != b.dtype):
        return None
    B, C, N = b.shape
    k = idx.shape[-1]
    b = _channel_last(b)
    a = _channel_last(a) if a is not None else None
    idx = idx.to(torch.int64).contiguous()
    s = sgn.to(b.dtype).contiguous() if sgn is not None else None
    src = torch.empty(B, C, N, dtype=torch.int64)
    s1 = torch.empty(B, C, dtype=torch.float64) if want_stats else None
    s2 = torch.empty(B, C, dtype=torch.float64) if want_stats else None
    getattr(_lib, f"ps_edge_forward_{_suffix(b)}")(
        _ptr(a), b.data_ptr(), idx.data_ptr(), B, C, N, k, _ptr(s), int(act_stats), float(slope),
        int(want_stats), src.data_ptr(), _ptr(s1), _ptr(s2), torch.get_num_threads())
    if want_stats:
        return src, s1.sum(0), s2.sum(0)
    return src, None, None


def edge_backward(a: Tensor, b: Tensor, idx: Tensor, act_stats: bool, slope: float, p: Tensor,
                  q: Tensor, mu: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
    """Gradients of a and b for ``dL/dh_e = p_c + q_c (h_e - mu_c)`` on every edge (see
    ``edge_forward``); ``p``, ``q``, ``mu`` are per-channel, passed in float64 (``mu`` None: 0)."""
    if not _usable(a, b, idx) or a.dtype != b.dtype:
        return None
    B, C, N = b.shape
    a, b = _channel_last(a), _channel_last(b)
    idx = idx.to(torch.int64).contiguous()
    pc = p.to(torch.float64).contiguous()
    qc = q.to(torch.float64).contiguous()
    mc = torch.zeros_like(pc) if mu is None else mu.to(torch.float64).contiguous()
    ga, gb = torch.zeros_like(a), torch.zeros_like(b)
    getattr(_lib, f"ps_edge_backward_{_suffix(b)}")(
        a.data_ptr(), b.data_ptr(), idx.data_ptr(), B, C, N, idx.shape[-1], int(act_stats), float(slope),
        pc.data_ptr(), qc.data_ptr(), mc.data_ptr(), ga.data_ptr(), gb.data_ptr(), torch.get_num_threads())
    return ga.transpose(1, 2), gb.transpose(1, 2)


def max_backward(y: Tensor, v: Tensor, g: Tensor) -> Tensor | None:
    """Gradient of ``v = y.amax(-1, keepdim=True)`` for ``g`` (shaped like ``v``), exactly as autograd
    of ``amax`` forms it (split evenly over ties), in one sweep; None when the kernels cannot be used."""
    if not _usable(y, v, g) or not (y.dtype == v.dtype == g.dtype) or y.dim() < 1:
        return None
    n = y.shape[-1]
    rows = y.numel() // max(n, 1)
    y, v, g = y.contiguous(), v.contiguous(), g.contiguous()
    out = torch.empty_like(y)
    getattr(_lib, f"ps_max_backward_{_suffix(y)}")(y.data_ptr(), v.data_ptr(), g.data_ptr(), rows, n,
                                                   out.data_ptr(), torch.get_num_threads())
    return out



def edge_mlp_max(a: Tensor, b: Tensor, idx: Tensor, mlp, out: Tensor) -> bool:
    """The folded edge MLP of :class:`pointseg.nn.folded.FoldedEdgeMLP` (at least two layers) fused
    with its max over the neighbours, one query point at a time: ``a``, ``b`` the node terms
    ``(B N, C_1)`` (rows may be strided, channels contiguous), ``idx (B, N, k)``, result written to
    ``out (B, N, C_L)`` (rows may be strided). False (nothing written) when this build or these
    tensors cannot use it (float32 only, widths multiples of the vector width, AVX-512 or AVX2 + FMA)."""
    layers = mlp.layers
    if not layers or not _usable(a, b, out) or not (a.dtype == b.dtype == out.dtype == torch.float32):
        return False
    if not has_knn_fused():                      # same builds (the vector helpers are shared)
        return False
    B, N, k = idx.shape
    if a.stride(-1) != 1 or b.stride(-1) != 1 or out.stride(-1) != 1 or out.shape[:2] != (B, N):
        return False
    if out.stride(0) != N * out.stride(1) or a.shape[0] != B * N:
        return False
    idx = idx.to(torch.int64).contiguous()
    ws = [layer.weight_t.contiguous() for layer in layers]
    shifts = [layer.shift.contiguous() for layer in layers]
    if any(w.dtype != torch.float32 for w in ws + shifts):
        return False
    L = len(layers)
    wp = (ctypes.c_void_p * L)(*[w.data_ptr() for w in ws])
    sp = (ctypes.c_void_p * L)(*[t.data_ptr() for t in shifts])
    slopes = (ctypes.c_float * L)(*[layer.slope for layer in layers])
    widths = (ctypes.c_int64 * (L + 1))(a.shape[1], *[w.shape[1] for w in ws])
    rc = _lib.ps_edge_mlp_max_f32(a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), idx.data_ptr(), B, N, k,
                                  float(mlp.slope1), L, wp, sp, slopes, widths, out.data_ptr(), out.stride(1),
                                  torch.get_num_threads())
    if rc == 4:
        raise IndexError(f"edge_mlp_max: neighbour indices outside [0, {N})")
    return rc == 0
