"""Segmentation networks built from ``pointseg.nn``."""
from .presets import PRESETS, build_model, preset_config
from .seg_gcn import SegGCN, SegGCNConfig, count_parameters

__all__ = ["PRESETS", "build_model", "preset_config", "SegGCN", "SegGCNConfig", "count_parameters"]
