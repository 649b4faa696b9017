"""Importers of checkpoints written by other projects into ordinary pointseg checkpoints.

``IMPORTERS`` maps a format name (``pointseg import FORMAT ...``) to an :class:`Importer`, each
defined by its own module; see :mod:`.importer` for the procedure they share, :mod:`.source` for
safe reading and :mod:`.strict` for the all-or-nothing tensor mapping.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import deepgcns, dgcnn_pytorch
from .importer import ImportResult, Importer, run_import

IMPORTERS: dict[str, Importer] = {imp.name: imp for imp in (deepgcns.IMPORTER, dgcnn_pytorch.IMPORTER)}


def importer(name: str) -> Importer:
    """The importer of format ``name``, refused by name when there is none."""
    if name not in IMPORTERS:
        raise ValueError(f"unknown import format {name!r} (known: {', '.join(sorted(IMPORTERS))})")
    return IMPORTERS[name]


def import_checkpoint(fmt: str, source: str | Path, dest: str | Path, overwrite: bool = False,
                      **options: Any) -> ImportResult:
    """Convert ``source`` (format ``fmt``) into the pointseg checkpoint ``dest`` (see :func:`run_import`)."""
    return run_import(importer(fmt), source, dest, overwrite, **options)


__all__ = ["IMPORTERS", "ImportResult", "Importer", "import_checkpoint", "importer"]
