"""The sparse-backward RoIAlign equals torchvision's, forward and backward."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from maskx.ops import roi_align as roi_align_module
from maskx.ops.roi_align import SparseMultiScaleRoIAlign, roi_align_cpu, threaded_roi_align


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 summation order: 1e-5 of the largest gradient."""
    return bool((a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-6)


def _rois(n: int, b: int, size: float, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size * 1.1 - 0.05 * size  # some start outside the map
    wh = torch.rand(n, 2, generator=gen) * size * 0.5 + 0.2
    return torch.cat([torch.randint(0, b, (n, 1), generator=gen).float(), xy, xy + wh], 1)


@pytest.mark.parametrize("output_size, scale, sampling", [((14, 14), 0.25, 2), ((7, 7), 0.125, 2), ((7, 5), 0.5, 3)])
def test_matches_torchvision_forward_and_backward(output_size, scale, sampling):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 8, 13, 17, generator=gen, requires_grad=True)
    rois = _rois(40, 2, 17 / scale, gen)
    rois[0, 1:] = torch.tensor([0.0, 0.0, 0.5, 0.5])  # smaller than one feature pixel
    rois[1, 1:] = torch.tensor([16.9, 12.9, 17.5, 13.5]) / scale  # at the far edge
    ref = roi_align(feats, rois, output_size, scale, sampling, aligned=False)
    out = roi_align_cpu(feats, rois, output_size, scale, sampling)
    assert torch.equal(out, ref)  # the forward is torchvision's own kernel (on slices of the RoIs)
    g = torch.randn(ref.shape, generator=gen)
    (g_ref,) = torch.autograd.grad(ref, feats, g)
    (g_out,) = torch.autograd.grad(out, feats, g)
    assert _close(g_out, g_ref)


def test_no_rois_gives_zero_gradient():
    feats = torch.randn(1, 4, 8, 8, requires_grad=True)
    out = roi_align_cpu(feats, torch.zeros(0, 5), (7, 7), 1.0, 2)
    out.sum().backward()
    assert out.shape == (0, 4, 7, 7) and feats.grad is not None and not feats.grad.any()


def test_multiscale_pooler_matches_torchvision():
    gen = torch.Generator().manual_seed(1)
    x = OrderedDict((k, torch.randn(2, 8, 64 // 2 ** i, 64 // 2 ** i, generator=gen, requires_grad=True))
                    for i, k in enumerate(["0", "1", "2", "3"]))
    boxes = [_rois(30, 1, 256, gen)[:, 1:].clamp(0, 255) for _ in range(2)]
    boxes = [torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 1)], 1) for b in boxes]
    shapes = [(256, 256), (256, 256)]
    ref_pool = MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    new_pool = SparseMultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2)
    ref, out = ref_pool(x, boxes, shapes), new_pool(x, boxes, shapes)
    assert torch.allclose(out, ref, atol=1e-6)
    g = torch.randn(ref.shape, generator=gen)
    g_ref = torch.autograd.grad(ref, list(x.values()), g)
    g_out = torch.autograd.grad(out, list(x.values()), g)
    for a, b in zip(g_out, g_ref):
        assert _close(a, b)


def test_inference_uses_torchvision_directly():
    feats = torch.randn(1, 4, 8, 8)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 6.0]])
    with torch.inference_mode():
        out = roi_align_cpu(feats, rois, (7, 7), 1.0, 2)
    assert torch.equal(out, roi_align(feats, rois, (7, 7), 1.0, 2, aligned=False))


@pytest.mark.parametrize("n_rois", [0, 1, 31, 32, 33, 101])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threaded_forward_is_torchvisions_bit_for_bit(n_rois, threads, monkeypatch):
    gen = torch.Generator().manual_seed(4)
    feats = torch.randn(2, 8, 13, 17, generator=gen)
    rois = _rois(n_rois, 2, 17 / 0.25, gen)
    ref = roi_align(feats, rois, (7, 7), 0.25, 2, aligned=False)
    calls = []
    real = roi_align_module._slice_roi_align
    monkeypatch.setattr(roi_align_module, "_slice_roi_align", lambda f, r, *a: calls.append(len(r)) or real(f, r, *a))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            out = threaded_roi_align(feats, rois, (7, 7), 0.25, 2)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(out, ref) and out.shape == (n_rois, 8, 7, 7)
    # one slice per thread when each gets at least MIN_ROIS_PER_THREAD RoIs, else one call
    expect = max(1, min(threads, n_rois // roi_align_module.MIN_ROIS_PER_THREAD))
    assert len(calls) == expect and sum(calls) == n_rois


def test_threaded_forward_records_no_graph_and_keeps_autograd_where_asked():
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(1, 8, 16, 16, generator=gen, requires_grad=True)
    rois = _rois(64, 1, 64, gen)
    with torch.no_grad():  # the pool threads run with grad on unless told: no graph may leak out
        out = roi_align_cpu(feats, rois, (7, 7), 0.25, 2)
    assert not out.requires_grad and out.grad_fn is None
    # sampling_ratio 0 is not the sparse path: autograd goes through torchvision's own backward
    out = roi_align_cpu(feats, rois, (7, 7), 0.25, 0)
    ref = roi_align(feats, rois, (7, 7), 0.25, 0, aligned=False)
    assert torch.equal(out, ref) and out.requires_grad


def _pyramid(gen: torch.Generator, batch: int = 2, channels: int = 8, size: int = 64) -> OrderedDict:
    return OrderedDict((k, torch.randn(batch, channels, size // 2 ** i, size // 2 ** i, generator=gen,
                                       requires_grad=True)) for i, k in enumerate(["0", "1", "2", "3"]))


@pytest.mark.parametrize("levels, output_size, sampling", [(4, 14, 2), (4, 7, 2), (1, 7, 3), (2, (7, 5), 2)])
def test_sparse_forward_matches_torchvision_forward_and_backward(levels, output_size, sampling):
    gen = torch.Generator().manual_seed(2)
    x = OrderedDict(list(_pyramid(gen).items())[:levels])
    boxes = [_rois(n, 1, 256, gen)[:, 1:].clamp(-10, 270) for n in (37, 0 if levels == 2 else 21)]
    boxes = [torch.cat([b[:, :2], torch.maximum(b[:, 2:], b[:, :2] + 0.3)], 1) for b in boxes]
    boxes[0][0] = torch.tensor([0.0, 0.0, 250.0, 250.0])  # a large box: the coarsest level
    shapes = [(256, 256), (256, 256)]
    names = list(x)
    ref = MultiScaleRoIAlign(names, output_size, sampling)(x, boxes, shapes)
    out = SparseMultiScaleRoIAlign(names, output_size, sampling, sparse_forward=True)(x, boxes, shapes)
    assert out.shape == ref.shape and _close(out, ref)
    g = torch.randn(ref.shape, generator=gen)
    for a, b in zip(torch.autograd.grad(out, list(x.values()), g), torch.autograd.grad(ref, list(x.values()), g)):
        assert _close(a, b)


def test_sparse_forward_output_is_channels_last_and_handles_no_rois():
    gen = torch.Generator().manual_seed(3)
    x = _pyramid(gen)
    pool = SparseMultiScaleRoIAlign(list(x), 14, 2, sparse_forward=True)
    with torch.inference_mode():
        out = pool(x, [torch.tensor([[3.0, 4.0, 90.0, 60.0]]), torch.zeros(0, 4)], [(256, 256)] * 2)
        empty = pool(x, [torch.zeros(0, 4)] * 2, [(256, 256)] * 2)
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape == (1, 8, 14, 14)
    assert empty.shape == (0, 8, 14, 14)
    out = pool(x, [torch.zeros(0, 4)] * 2, [(256, 256)] * 2)
    (grad,) = torch.autograd.grad(out.sum(), [x["0"]], allow_unused=True)
    assert grad is not None and not grad.any()


def test_model_with_sparse_forward_detects_the_same():
    """A whole Mask^X R-CNN: ``roi_align_forward='sparse'`` gives torchvision-forward detections up to rounding."""
    from maskx.config import Config
    from maskx.models.maskx_rcnn import build_model

    cfg = Config(backbone="resnet18", pretrained_backbone=False, image_size=128, mask_dim=16, box_head_dim=32,
                 mlp_branch=True, mlp_hidden=16, score_thresh=0.0)
    torch.manual_seed(0)
    ref = build_model(cfg, [f"c{i}" for i in range(5)]).eval()
    new = build_model(cfg.replace(roi_align_forward="sparse"), [f"c{i}" for i in range(5)]).eval()
    new.load_state_dict(ref.state_dict())
    image = torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        a, b = ref([image])[0], new([image])[0]
    assert len(a["boxes"]) > 10 and torch.equal(a["labels"], b["labels"])
    for k in ("boxes", "scores", "masks"):
        assert torch.allclose(a[k], b[k], atol=1e-4), k
