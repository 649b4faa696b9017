"""Pipelines: training, evaluation, segmentation, checkpoints and metrics."""
