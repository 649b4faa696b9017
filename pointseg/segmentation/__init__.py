"""The segmentation application: S3DIS and user scans to labelled points.

Its own modules, on the generic engine (:mod:`pointseg.engine`: task protocol, trainer, device,
distributed, the checkpoint format): the training config (:mod:`.config`), the segmentation task
(:mod:`.task`), datasets (:mod:`.datasets`, :mod:`.scan_source`), the training entry (:mod:`.train`),
fine-tuning weights (:mod:`.init_weights`), the scan's frame (:mod:`.frame`), sliding inference
(:mod:`.inference`, :mod:`.compact`), segmenting a scan (:mod:`.segment`), evaluation
(:mod:`.evaluate`) and segmentation checkpoints (:mod:`.checkpoint`). The graph application is its
peer, ``graphs``.
"""
