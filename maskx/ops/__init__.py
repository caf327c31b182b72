"""CPU kernels with the same output as torchvision's, faster on few cores: RoIAlign forward and
backward (``roi_align``) and the RPN's per-image proposal filtering on torch's threads (``rpn``)."""
