"""The generic engine both applications (:mod:`pointseg.segmentation`, ``graphs``) run on: the task
protocol, the trainer, devices, distributed set-up and the checkpoint format."""
