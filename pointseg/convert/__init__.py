"""Importers of checkpoints written by other projects into ordinary pointseg checkpoints.

``IMPORTERS`` maps a format name (``pointseg import FORMAT ...``) to an :class:`Importer`; see
:mod:`.source` for safe reading and :mod:`.strict` for the all-or-nothing tensor mapping.
"""
from .registry import IMPORTERS, ImportResult, Importer, import_checkpoint, importer

__all__ = ["IMPORTERS", "ImportResult", "Importer", "import_checkpoint", "importer"]
