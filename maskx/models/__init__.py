"""Mask^X R-CNN model parts; ``build_model`` wires them from a Config."""
from .maskx_rcnn import MaskXRCNN, build_model

__all__ = ["MaskXRCNN", "build_model"]
