"""The checkpoint format: plain tensors and containers only, written atomically, read with
``weights_only=True``. What a segmentation checkpoint holds and how its model is rebuilt is the
application's (:mod:`pointseg.segmentation.checkpoint`); graphs keep theirs in :mod:`graphs.checkpoint`.

One format (``pointseg-checkpoint``) for both applications, told apart by ``kind``: ``segmentation``
(``pointseg train`` / ``import``) or ``graph`` (``pointseg graphs train``); readers refuse the other kind.
A checkpoint holds everything needed to rebuild and use the model without the training code:
the preset name and full model config, the weights (``model``), the class table (names + palette) and
the input convention (channels, block size, normalisation) — or, for graphs, the task description
(dataset, family, metric, run) — plus provenance and the training state the trainer writes (epoch,
steps, best score, metrics). ``last.pt`` adds the optimizer, scheduler and RNG states for an exact
``--resume``.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path

FORMAT = "pointseg-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format tag) atomically."""
    data = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a pointseg checkpoint safely; a file that is not one is a clear ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a pointseg checkpoint, or it holds code that weights_only "
                         f"loading refuses ({first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pointseg checkpoint (no '{FORMAT}' tag)")
    if int(data.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: checkpoint version {data['version']} is newer than this pointseg ({VERSION})")
    return data
