"""Datasets: S3DIS (block release and raw release), prepared rooms, synthetic rooms."""
