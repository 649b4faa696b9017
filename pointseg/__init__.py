"""pointseg: deep graph convolutional networks for 3D room segmentation and graph learning."""
__version__ = "0.1.0"
