"""Segmentation networks built from ``pointseg.nn``."""
from .dgcnn import DGCNN, DGCNNConfig
from .presets import ARCHITECTURES, PRESETS, architecture, build_model, model_config, preset_config
from .parameters import count_parameters
from .seg_gcn import SegGCN, SegGCNConfig

__all__ = ["ARCHITECTURES", "PRESETS", "architecture", "build_model", "model_config", "preset_config", "DGCNN",
           "DGCNNConfig", "SegGCN", "SegGCNConfig", "count_parameters"]
