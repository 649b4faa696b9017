"""The block input recipe: how a scan becomes the blocks a segmentation network sees.

One :class:`BlockRecipe` is the single statement of the recipe: block generation
(:mod:`pointseg.data.block_gen`), training (the config's ``data`` section makes one), the sliding
inference of ``segment`` / ``evaluate`` (including block-level scoring), the importers of published
checkpoints and the checkpoint itself (``ckpt["input"]``, written by :meth:`BlockRecipe.to_spec`
and read back by :meth:`BlockRecipe.from_spec`, which also reads checkpoints written before the
recipe recorded its stride).

The S3DIS recipe (:data:`S3DIS_RECIPE`) is the HDF5 block release's: 1 m x 1 m columns, 4096 points
per block, training blocks at a 0.5 m stride, the 9 channels below, kNN of the first block on the
first 3 channels (design notes §3, §4).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

# The 9 channels per point of the S3DIS block release.
S3DIS_CHANNELS: tuple[str, ...] = ("x", "y", "z", "r", "g", "b", "x_room", "y_room", "z_room")
NORMALISATIONS: tuple[str, ...] = ("s3dis-blocks",)   # the recipes this pointseg cuts blocks for
MAX_BLOCK_POINTS = 1_000_000       # points per block a checkpoint may ask for (the reference: 4096)
COLOUR_POLICIES: tuple[str, ...] = ("gray", "zeros")   # colour channels of a scan without colour


@dataclass(frozen=True)
class BlockRecipe:
    """How blocks are cut and what each point carries.

    Args:
        block_size: side of the square columns, metres.
        num_points: points per block (resampled).
        stride: step between training block corners, metres (inference slides at its own
            ``--stride``, defaulting to this).
        channels: the per-point input channels, in order.
        knn_channels: the input channels the first kNN graph is built on (None: the model's own).
        normalisation: the recipe family (``s3dis-blocks``).
        no_colour: the colour channels of a scan without colour: ``gray`` (128) or ``zeros``.
    """

    block_size: float = 1.0
    num_points: int = 4096
    stride: float = 0.5
    channels: tuple[str, ...] = S3DIS_CHANNELS
    knn_channels: tuple[int, ...] | None = None
    normalisation: str = "s3dis-blocks"
    no_colour: str = "gray"

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "input recipe") -> None:
        """Refuse values no block can be cut with, naming the field."""
        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"{where}: input recipe {self.normalisation!r} is not one this pointseg makes "
                             f"({', '.join(NORMALISATIONS)})")
        if not (number(self.block_size) and self.block_size > 0):
            raise ValueError(f"{where}: input.block_size={self.block_size!r}: expected a positive number of metres")
        if not (number(self.stride) and self.stride > 0):
            raise ValueError(f"{where}: input.stride={self.stride!r}: expected a positive number of metres")
        if not (number(self.num_points) and self.num_points == int(self.num_points)
                and 1 <= self.num_points <= MAX_BLOCK_POINTS):
            raise ValueError(f"{where}: input.num_points={self.num_points!r}: expected a whole number in "
                             f"1..{MAX_BLOCK_POINTS} points per block")
        if self.no_colour not in COLOUR_POLICIES:
            raise ValueError(f"{where}: input.no_colour={self.no_colour!r}: expected one of {list(COLOUR_POLICIES)}")
        if tuple(self.channels) != S3DIS_CHANNELS:
            raise ValueError(f"{where}: model expects channels {list(self.channels)}, the {self.normalisation} "
                             f"recipe gives {list(S3DIS_CHANNELS)}")

    def to_spec(self) -> dict[str, Any]:
        """The JSON-ready form a checkpoint stores as ``input``."""
        spec = asdict(self)
        spec["channels"] = list(self.channels)
        if self.knn_channels is None:
            del spec["knn_channels"]
        else:
            spec["knn_channels"] = list(self.knn_channels)
        return spec

    @classmethod
    def from_spec(cls, spec: Any, where: str = "checkpoint") -> "BlockRecipe":
        """The recipe a checkpoint's ``input`` states; what it leaves out is the S3DIS recipe's
        (checkpoints written before the stride was recorded)."""
        spec = spec if isinstance(spec, dict) else {}
        known = {k: spec[k] for k in ("block_size", "num_points", "stride", "normalisation", "no_colour") if k in spec}
        if "channels" in spec:
            known["channels"] = tuple(spec["channels"]) if isinstance(spec["channels"], (list, tuple)) else ()
        if isinstance(spec.get("knn_channels"), (list, tuple)):
            known["knn_channels"] = tuple(int(c) for c in spec["knn_channels"])
        try:
            recipe = replace(S3DIS_RECIPE, **known)
        except ValueError as e:                # check() names the field after its default "input recipe: "
            raise ValueError(f"{where}: {str(e).removeprefix('input recipe: ')}") from None
        if isinstance(recipe.num_points, float):
            recipe = replace(recipe, num_points=int(recipe.num_points))
        return recipe


S3DIS_RECIPE = BlockRecipe()
