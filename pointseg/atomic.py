"""Write-then-rename helpers: a crash or a bad input never leaves a half-written file."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary name keeps the suffix so libraries that dispatch on it (h5py, Open3D,
    numpy) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())    # mkstemp makes 0600; files should look normal
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


MARKER = ".pointseg-output"
WRITER = ".pointseg-writer"          # inside a temporary folder while it is being written: "pid host"


def remove_stale_temp_dirs(path: Path) -> list[Path]:
    """Remove temporary folders of ``atomic_dir(path)`` left by a killed run of ours: same name
    pattern, and a writer file naming a process of this host that no longer exists."""
    import socket
    removed = []
    for cand in path.parent.glob(f".{path.name}.*.tmp"):
        w = cand / WRITER
        if not cand.is_dir() or cand.is_symlink() or not w.is_file():
            continue
        try:
            pid_s, host = w.read_text().split()[:2]
            pid = int(pid_s)
        except (OSError, ValueError):
            continue
        if host != socket.gethostname() or _alive(pid):
            continue
        shutil.rmtree(cand, ignore_errors=True)
        removed.append(cand)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _entries_not_ours(path: Path) -> list[str]:
    """Entries of an output folder that pointseg did not write there (per its marker file)."""
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return []
    marker = path / MARKER
    ours = {MARKER}
    if marker.is_file():
        try:
            ours |= {ln for ln in marker.read_text(errors="replace").splitlines() if ln}
        except OSError:
            pass
    return [e for e in entries if e not in ours]


def check_replaceable(path: Path) -> None:
    """``--overwrite`` replaces only a folder pointseg wrote: refuse a file, or a folder holding
    anything its marker does not list, naming what is in the way."""
    if path.is_symlink() or not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder pointseg wrote (it is a "
                              f"{'symlink' if path.is_symlink() else 'file'}); --overwrite replaces only "
                              "pointseg's own output folders: move it away or choose another output")
    extra = _entries_not_ours(path)
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        raise FileExistsError(f"{path} holds files pointseg did not write ({shown}); --overwrite "
                              "replaces only pointseg's own outputs: move them away or choose another output")


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` on success.

    An existing ``path`` is an error unless ``overwrite``, and even then only a folder that
    pointseg wrote (a marker file lists its entries) is replaced, after the new content is
    complete. Nothing that this run did not create is deleted: a folder that appears at
    ``path`` while writing is an error (without ``overwrite``) and is left alone.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists (pass --overwrite to replace it)")
        check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        import socket
        (tmp / WRITER).write_text(f"{os.getpid()} {socket.gethostname()}\n")
        yield tmp
        (tmp / WRITER).unlink(missing_ok=True)
        (tmp / MARKER).write_text("".join(f"{p.name}\n" for p in sorted(tmp.iterdir())))
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{path} appeared while this run was writing; it was left as it is "
                                      "and nothing was written (pass --overwrite, or choose another output)")
            check_replaceable(path)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            if _entries_not_ours(old / "d"):
                # Something was added while we swapped: keep it rather than delete it.
                warnings.warn(f"{path}: files appeared in the replaced folder; kept in {old / 'd'}",
                              RuntimeWarning, stacklevel=3)
            else:
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
