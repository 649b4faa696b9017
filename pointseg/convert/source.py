"""Reading another project's checkpoint without ever unpickling code."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


def load_source(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure as one clear line.

    A file that holds pickled code (classes, functions) is refused by the weights-only unpickler
    and never executed; a truncated or non-torch file is reported as such.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise ValueError(f"{path}: refused: it holds pickled code or objects other than tensors, "
                             f"which are never unpickled ({first[:160]})") from None
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first[:160]}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, zipfile.BadZipFile,
            IndexError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {first[:160]}") from None
