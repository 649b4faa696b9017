"""Keeping the rendering engine's start-up lines off the terminal.

Open3D's Filament renderer announces itself on every start (``Vulkan device driver: llvmpipe
...``, ``FEngine feature level: 1``, ``[Open3D INFO] EngineInstance: ...``, a GLFW warning on a
machine without a display). Those lines are written by C++ straight to file descriptors 1 and 2,
past Python's ``sys.stdout``/``sys.stderr``, so only redirecting the descriptors silences them.

:func:`engine_output_silenced` does that around the renderer's whole life (creation, rendering,
release), and lowers Open3D's own log level to errors for that time. What is written meanwhile
goes to a temporary file (Python's own writes too: keep the block to the renderer's calls):
dropped when the block ends normally, written to stderr when the block raises, so a failure
still shows what the engine said. ``--verbose`` (``set_verbose(True)``)
or ``POINTSEG_VERBOSE=1`` leaves everything on the terminal.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from typing import Iterator

_verbose = os.environ.get("POINTSEG_VERBOSE", "") not in ("", "0")
_lock = threading.Lock()
_depth = 0          # nested blocks (one renderer inside another's lifetime) redirect once


def set_verbose(flag: bool) -> None:
    """Show (``True``) or silence (``False``, the default) the rendering engine's output."""
    global _verbose
    _verbose = bool(flag)


def verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def engine_output_shown() -> Iterator[None]:
    """Let the engine's output through while the block runs (``--verbose`` of one command)."""
    before = _verbose
    set_verbose(True)
    try:
        yield
    finally:
        set_verbose(before)


def _flush_native_stdio() -> None:
    """Flush C's stdio buffers, so text the engine wrote while redirected cannot surface later."""
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):   # no C library to call (not a POSIX libc)
        pass


def _flush_python_streams() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (AttributeError, ValueError, OSError):
            pass


def _lower_open3d_verbosity():
    """Open3D's log level to errors only; returns the previous level (None without Open3D)."""
    try:
        import open3d as o3d
    except ImportError:
        return None
    u = o3d.utility
    previous = u.get_verbosity_level()
    u.set_verbosity_level(u.VerbosityLevel.Error)
    return previous


@contextlib.contextmanager
def engine_output_silenced() -> Iterator[None]:
    """Send what native code writes to stdout/stderr to a temporary file while the block runs."""
    global _depth
    with _lock:
        outer = _depth == 0
        _depth += 1
    if _verbose or not outer:
        try:
            yield
        finally:
            with _lock:
                _depth -= 1
        return

    saved: dict[int, int] = {}
    sink = None
    previous_level = None
    try:
        _flush_python_streams()
        _flush_native_stdio()
        try:
            sink = tempfile.TemporaryFile(prefix="pointseg-engine-")
            for fd in (1, 2):
                saved[fd] = os.dup(fd)
        except OSError:             # a closed descriptor or no temporary space: leave output alone
            for copy in saved.values():
                os.close(copy)
            saved = {}
        else:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
        previous_level = _lower_open3d_verbosity()
        try:
            yield
        except BaseException:
            _restore(saved, sink, replay=True)
            saved, sink = {}, None
            raise
    finally:
        if previous_level is not None:
            import open3d as o3d
            o3d.utility.set_verbosity_level(previous_level)
        _restore(saved, sink, replay=False)
        with _lock:
            _depth -= 1


def _restore(saved: dict[int, int], sink, replay: bool) -> None:
    """Put fds 1 and 2 back; with ``replay``, copy what was captured to stderr."""
    if saved:
        _flush_python_streams()
        _flush_native_stdio()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
    if sink is None:
        return
    try:
        if replay and saved:
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            if text:
                sys.stderr.write(text if text.endswith("\n") else text + "\n")
                sys.stderr.flush()
    finally:
        sink.close()
