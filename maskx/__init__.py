"""maskx: Mask^X R-CNN (Learning to Segment Every Thing) in PyTorch."""
__version__ = "0.1.0"
