"""torchvision's RPN with the per-image proposal filtering of a batch on threads.

``RegionProposalNetwork.filter_proposals`` ends in a loop over the batch's images (clip, drop small and
low-scoring boxes, NMS per FPN level, keep the top ``post_nms_top_n``), and torchvision's CPU NMS kernel
is serial, so on CPU one core filters while the others wait (``benchmarks/threaded_kernels.py`` measures
the gain). Here the batched part (top-n per level, gather, sigmoid) runs as torchvision
runs it, and each image's loop body runs on its own thread (the kernels release the GIL) on the same
rows: every image is filtered by the same code from the same inputs, so the proposals are
torchvision's bit for bit (tested) and trained checkpoints reproduce exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import boxes as box_ops

from .roi_align import thread_pool


class ThreadedRPN(RegionProposalNetwork):
    """``RegionProposalNetwork`` whose ``filter_proposals`` filters the images of a CPU batch on
    ``min(images, torch.get_num_threads())`` threads; the same proposals as torchvision's.

    ``featmap_names`` (set by ``build_model``): the maps the RPN reads of a backbone that returns more
    (the trunk maps of ``box_features="trunk"``); None reads them all, as torchvision's.
    """

    featmap_names = None

    def forward(self, images, features, targets=None):
        if self.featmap_names is not None:
            features = {k: features[k] for k in self.featmap_names}
        return super().forward(images, features, targets)

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: list[tuple[int, int]],
                         num_anchors_per_level: list[int]) -> tuple[list[Tensor], list[Tensor]]:
        """proposals [N, A, 4] and objectness [N·A, 1] → per image boxes [P_i, 4] and scores [P_i]."""
        num_images = proposals.shape[0]
        threads = min(num_images, torch.get_num_threads())
        if threads < 2 or proposals.device.type != "cpu":
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        # torchvision 0.29's batched part, unchanged
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat([torch.full((n,), idx, dtype=torch.int64) for idx, n in enumerate(num_anchors_per_level)])
        levels = levels.reshape(1, -1).expand_as(objectness)
        top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)
        batch_idx = torch.arange(num_images)[:, None]
        objectness = objectness[batch_idx, top_n_idx]
        levels = levels[batch_idx, top_n_idx]
        proposals = proposals[batch_idx, top_n_idx]
        objectness_prob = torch.sigmoid(objectness)
        inference = torch.is_inference_mode_enabled()  # per thread, like grad mode: carried into the pool

        def one_image(i: int) -> tuple[Tensor, Tensor]:
            with torch.inference_mode(inference), torch.no_grad():
                return self._filter_one(proposals[i], objectness_prob[i], levels[i], image_shapes[i])

        parts = list(thread_pool(threads).map(one_image, range(num_images)))
        return [b for b, _ in parts], [s for _, s in parts]

    def _filter_one(self, boxes: Tensor, scores: Tensor, lvl: Tensor, img_shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The body of torchvision's per-image loop: boxes [M, 4], scores [M], levels [M] → kept boxes, scores."""
        boxes = box_ops.clip_boxes_to_image(boxes, img_shape)
        keep = box_ops.remove_small_boxes(boxes, self.min_size)
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = torch.where(scores >= self.score_thresh)[0]
        boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
        keep = box_ops.batched_nms(boxes, scores, lvl, self.nms_thresh)[: self.post_nms_top_n()]
        return boxes[keep], scores[keep]
