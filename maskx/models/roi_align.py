"""RoIAlign whose CPU backward is one sparse matrix product (torchvision's is a serial loop).

Profile (benchmarks/README.md): torchvision's CPU ``roi_align`` backward runs on one thread and
took about a third of a training step. RoIAlign is linear in the features: with the feature map
flattened channels-last, X [B·H·W, C], the output is ``A · X`` where A [R·PH·PW, B·H·W] holds
the bilinear weights of each bin's S × S sampling points (4 per point, divided by S²). The
forward stays torchvision's; the backward builds Aᵀ in CSR form (one row per feature pixel,
found by sorting the sampled pixel ids) and computes dX = Aᵀ · dOut, which runs multithreaded.
Same sampling rules as torchvision with ``aligned=False`` (tests compare both to 1e-5).
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


def _axis(v: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Bilinear neighbours along one axis, as torchvision's ``bilinear_interpolate``:
    (low index, high index, low weight, high weight, inside) for sample coordinates ``v``."""
    inside = (v >= -1.0) & (v <= size)
    v = v.clamp(min=0)
    low = v.floor().long()
    top = low >= size - 1
    low = torch.where(top, torch.full_like(low, size - 1), low)
    high = torch.where(top, low, low + 1)
    frac = torch.where(top, torch.zeros_like(v), v - low.to(v.dtype))
    return low, high, 1 - frac, frac, inside


def roi_align_transpose_matrix(rois: Tensor, feature_shape: tuple, output_size: tuple, spatial_scale: float,
                               sampling_ratio: int) -> Tensor:
    """Aᵀ as a sparse CSR [B·H·W, R·PH·PW] (rois [R, 5] = (batch index, x1, y1, x2, y2))."""
    B, _, H, W = feature_shape
    PH, PW = output_size
    R, S = rois.shape[0], sampling_ratio
    dtype = rois.dtype if rois.is_floating_point() else torch.float32
    x1, y1, x2, y2 = (rois[:, k].to(dtype) * spatial_scale for k in range(1, 5))
    bin_h = torch.clamp(y2 - y1, min=1.0) / PH
    bin_w = torch.clamp(x2 - x1, min=1.0) / PW
    s = (torch.arange(S, dtype=dtype) + 0.5) / S
    y = y1[:, None, None] + (torch.arange(PH, dtype=dtype)[None, :, None] + s) * bin_h[:, None, None]  # [R, PH, S]
    x = x1[:, None, None] + (torch.arange(PW, dtype=dtype)[None, :, None] + s) * bin_w[:, None, None]  # [R, PW, S]
    y_lo, y_hi, wy_lo, wy_hi, y_in = _axis(y, H)
    x_lo, x_hi, wx_lo, wx_hi, x_in = _axis(x, W)
    base = (rois[:, 0].long() * H * W)[:, None, None, None, None]
    inside = (y_in[:, :, :, None, None] & x_in[:, None, None, :, :]).to(dtype) / (S * S)
    pix, val = [], []
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):  # [R, PH, S, PW, S] each
            pix.append(base + yi[:, :, :, None, None] * W + xi[:, None, None, :, :])
            val.append(wy[:, :, :, None, None] * wx[:, None, None, :, :] * inside)
    pix = torch.stack(pix, -1).reshape(-1)
    val = torch.stack(val, -1).reshape(-1)
    out = torch.arange(R * PH * PW).view(R, PH, 1, PW, 1, 1).expand(R, PH, S, PW, S, 4).reshape(-1)
    order = torch.argsort(pix)
    crow = torch.zeros(B * H * W + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(pix, minlength=B * H * W), 0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, out[order], val[order], (B * H * W, R * PH * PW), check_invariants=False)


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: Tensor, rois: Tensor, output_size: tuple, spatial_scale: float, sampling_ratio: int):
        ctx.save_for_backward(rois)
        ctx.args = (tuple(features.shape), output_size, spatial_scale, sampling_ratio)
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=False)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (rois,) = ctx.saved_tensors
        shape, output_size, spatial_scale, sampling_ratio = ctx.args
        B, C, H, W = shape
        if rois.shape[0] == 0:
            return grad.new_zeros(shape), None, None, None, None
        at = roi_align_transpose_matrix(rois, shape, output_size, spatial_scale, sampling_ratio)
        g = grad.permute(0, 2, 3, 1).reshape(-1, C).to(at.dtype)  # [R·PH·PW, C]
        dx = (at @ g).view(B, H, W, C).permute(0, 3, 1, 2).contiguous()
        return dx.to(grad.dtype), None, None, None, None


def roi_align_cpu(features: Tensor, rois: Tensor, output_size: tuple, spatial_scale: float,
                  sampling_ratio: int) -> Tensor:
    """torchvision's ``roi_align`` (aligned=False) with the sparse CPU backward."""
    use_sparse = (features.device.type == "cpu" and sampling_ratio > 0 and torch.is_grad_enabled()
                  and features.requires_grad)
    if not use_sparse:
        return roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=False)
    return _RoIAlign.apply(features, rois, tuple(output_size), float(spatial_scale), int(sampling_ratio))


class SparseBackwardMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same level mapping and output) using ``roi_align_cpu``."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        feats = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        size = tuple(self.output_size)
        if len(feats) == 1:
            return roi_align_cpu(feats[0], rois, size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        result = feats[0].new_zeros((len(rois), feats[0].shape[1]) + size)
        for level, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            result[idx] = roi_align_cpu(feat, rois[idx], size, scale, self.sampling_ratio).to(result.dtype)
        return result
