"""What an importer is and the import procedure every importer goes through (read, map, rebuild,
write). The table of importers is :data:`pointseg.convert.IMPORTERS`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..classes import ClassTable
from ..checksum import sha256_of
from .source import load_source


@dataclass
class ImportResult:
    """What an importer returns: the rebuilt model with its weights and what to record."""

    preset: str
    model: nn.Module
    classes: ClassTable
    input_spec: dict[str, Any]
    provenance: dict[str, Any]
    summary: list[str] = field(default_factory=list)     # lines printed by the CLI


@dataclass(frozen=True)
class Importer:
    name: str
    description: str
    convert: Callable[[Any, dict[str, Any]], ImportResult]   # (loaded source, options) -> result


def run_import(imp: Importer, source: str | Path, dest: str | Path, overwrite: bool = False,
               **options: Any) -> ImportResult:
    """Convert ``source`` with ``imp`` into the pointseg checkpoint ``dest`` (written atomically).

    Nothing is written unless every tensor maps; an existing ``dest`` is refused unless ``overwrite``.
    """
    from ..engine.checkpoint import save_checkpoint
    from ..segmentation.checkpoint import model_payload
    fmt = imp.name
    source, dest = Path(source), Path(dest)
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} already exists (pass --overwrite to replace it)")
    if dest.exists() and dest.is_dir():
        raise ValueError(f"{dest} is a folder; --out needs a file name")
    obj = load_source(source)
    try:
        result = imp.convert(obj, dict(options))
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    result.provenance = {**result.provenance, "format": fmt, "source_file": source.name,
                         "source_sha256": sha256_of(source)}
    if options.get("test_area") is not None:
        result.provenance["test_area"] = int(options["test_area"])
    payload = model_payload(result.preset, result.model, result.classes, result.input_spec)
    payload["provenance"] = result.provenance
    save_checkpoint(dest, payload)
    return result
