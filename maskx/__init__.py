"""maskx: Mask^X R-CNN (Learning to Segment Every Thing) in PyTorch.

    import maskx
    predictor = maskx.load("runs/maskx")   # a trained run folder (or a ckpt_*.json)
    instances = predictor.predict("image.jpg")
"""
__version__ = "0.1.0"


def load(path, class_names=None, **kwargs):
    """Load a trained model for prediction; see ``maskx.predictor.load`` (``device``, ``inference``,
    ``roi_align_forward="sparse"`` for faster CPU prediction)."""
    from .predictor import load as _load

    return _load(path, class_names=class_names, **kwargs)
