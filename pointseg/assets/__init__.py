"""Files shipped inside the package: the sample room and the bundled checkpoints.

Found through :mod:`importlib.resources`, so an installed wheel works from any directory
(the source tree's ``data/`` folder is only the default root for datasets a user downloads).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def asset(name: str) -> Path:
    """Path of the bundled file ``name`` (raises ``FileNotFoundError`` naming it when absent)."""
    ref = resources.files(__name__) / name
    path = Path(str(ref))
    if not path.is_file():
        raise FileNotFoundError(f"bundled file {name!r} is missing from {path.parent} (broken install?)")
    return path
