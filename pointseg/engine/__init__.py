"""Pipelines: training, evaluation, segmentation and checkpoints."""
