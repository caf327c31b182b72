"""Experiment configs: one frozen, JSON-serialisable dataclass, and a plain dict of named presets.

Every paper variant (Table 1a-d, Table 2) is a preset; every field can be overridden from the
command line (``--set field=value``) or in Python (``config.replace(**fields)``).

Training schedules follow the paper (§4.1): SGD, momentum 0.9, weight decay 1e-4, base lr 0.02
for 16 images per step, scaled linearly with the batch size, linear warm-up, decay by 0.1 at
2/3 and 8/9 of the iterations (60k and 80k of 90k).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Optional

MASK_HEADS = ("agnostic", "oracle", "transfer")
TRANSFER_INPUTS = ("cls", "box", "cls+box", "randn", "glove", "text")
ACTIVATIONS = ("relu", "leaky_relu")
TRANSFER_INITS = ("torch", "msra")
STAGES = ("e2e", "detector", "mask", "box")


class ConfigError(ValueError):
    """An unknown preset, field or value; the message says which and what is allowed."""


# Config fields used only at test time: changing them re-evaluates a trained model, never retrains it.
INFERENCE_FIELDS = ("score_thresh", "detections_per_img", "rpn_test_proposals")

# Reading a recorded config (a result's; not a user's file, where a missing field means today's
# default): a field it lacks had this value in the run that recorded it.
RECORDED_BEFORE = {"embedding_norm": 0.0, "transfer_init": "torch"}


@dataclass(frozen=True)
class Config:
    # model
    backbone: str = "resnet18"
    pretrained_backbone: Optional[bool] = None  # None: the backbone's default (ImageNet only for efficientnet_lite0)
    # trunk stages trained, from the top (stride 32) down (None: the backbone's default, 3 when pretrained,
    # else 5; 0: a frozen trunk, only the FPN and the heads learn)
    trainable_layers: Optional[int] = None
    fpn_dim: int = 256  # FPN width (paper: 256); the RPN head and the box head's input follow it
    # what the box head pools: "fpn" (one FPN level per box, Mask R-CNN's) or "trunk" (efficientnet_lite0's
    # stride 8/16/32 stages, every box from all three: maskx/models/trunk_box_head.py; docs/model-3k-design.md §9)
    box_features: str = "fpn"
    image_size: int = 256  # images are resized so the short side is this ...
    max_image_size: int = 0  # ... and the long side at most this (0: image_size; paper: 800 / 1333)
    mask_head: str = "transfer"  # agnostic (paper §3.3) | oracle (class-specific, masks on all classes) | transfer
    transfer_input: str = "cls+box"  # w_det: cls | box | cls+box | randn | glove | text (paper §3.1, Table 1a)
    transfer_layers: int = 2  # T's FC layers; 2 with LeakyReLU is Table 1b's best
    transfer_activation: str = "leaky_relu"
    transfer_hidden: int = 256
    # randn/GloVe/text rows are scaled to this L2 norm (0: as the source gives them), so a fixed embedding
    # reaches T at about the scale of the w_det rows it stands in for (paper §3.1, Table 1a); unscaled
    # randn rows are ~46x larger and drive T to zero mask logits at the study's mask lr
    # (docs/code-notes.md). Text rows are unit-norm already.
    embedding_norm: float = 1.0
    # T's FC layers: "torch" (nn.Linear's default, weights U(+-1/sqrt(fan_in)), small random biases) or
    # "msra" (the official seg_every_thing code: Detectron's MSRAFill, N(0, sqrt(2 / fan_out)), zero biases)
    transfer_init: str = "torch"
    stop_grad: bool = True  # w_seg = T(stop_grad(w_det)) (paper §3.2)
    mlp_branch: bool = False  # class-agnostic MLP mask logits added to every class (paper §3.4)
    mlp_hidden: int = 1024  # hidden width of that MLP (its first layer holds 6272 x mlp_hidden weights)
    mask_convs: int = 4  # FCN depth; 4 as Mask R-CNN, more is the "deeper head" option
    mask_dim: int = 256  # channels of the mask FCN and size of w_seg
    box_head_dim: int = 1024  # size of w_cls (paper: 1024)
    roi_align_backward: str = "sparse"  # CPU RoIAlign backward: sparse (multithreaded) | torchvision
    # CPU RoIAlign forward: torchvision | sparse (faster, equal up to float rounding; implies the sparse
    # backward). Off by default so trained checkpoints reproduce bit for bit; maskx.load(..., roi_align_forward=)
    roi_align_forward: str = "torchvision"
    # training
    # e2e | detector (boxes only) | mask (frozen detector, mask head only): paper §3.2; box: a trained
    # detector's box head re-trained on its cached RoI features (maskx.box_cache), the rest frozen
    stage: str = "e2e"
    detector: Optional[str] = None  # trained detector run: frozen under stage "mask", the start of stage "e2e"
    # stage e2e only: a finished stage-wise run (stage mask, same mask branch, on ``detector``) whose
    # weights this run starts from, so the joint iterations refine trained heads instead of training
    # a class-specific head from scratch in a short schedule
    mask_init: Optional[str] = None
    split: str = "voc2nonvoc"  # which classes have masks (A); 'all' for the oracle
    seed: int = 0
    iters: int = 1000
    batch_size: int = 2
    base_lr: float = 0.02  # for 16 images per step; scaled by batch_size / 16
    mask_lr_mult: float = 1.0  # the mask branch (FCN, w_seg source / T, MLP branch) trains at lr x this
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 1.0 / 3
    decay_at: tuple = (2 / 3, 8 / 9)  # fractions of iters where lr *= 0.1 (lr_schedule "step")
    lr_schedule: str = "step"  # "step" (paper §4.1: x0.1 at decay_at) | "cosine" (half a cosine to 0 over iters)
    grad_clip: float = 10.0  # max grad norm (0: off); from-scratch CPU runs spike early
    rois_per_image: int = 512
    mask_rois_per_image: int = 64  # cap on positive set-A RoIs fed to the mask head (0: no cap)
    # stage mask only: train on this many positive RoIs per image cached from the frozen detector
    # (maskx.roi_cache; sampled once, images not flipped); 0: from the images every step
    mask_roi_cache: int = 0
    hflip: float = 0.5
    optimizer: str = "sgd"  # sgd (paper §4.1: momentum, weight decay) | adamw (lr = base_lr x batch_size / 16)
    # stage box: RoIs cached per image from the detector's sampler (at most this many positives, negatives)
    # and each negative's weight in the classification loss (3: the sampler's 1:3 ratio in expectation)
    box_cache_positives: int = 24
    box_cache_negatives: int = 24
    box_background_weight: float = 3.0
    # stage box: in the same pass over the images, also cache this many positive RoIs per image for a
    # stage-mask run on the result (its mask_roi_cache): the backbone and RPN the box stage leaves
    # frozen are all that cache depends on, so the mask stage skips a second pass (0: off)
    box_cache_mask_rois: int = 0
    # stage box: cached positives overlapping their ground truth less than this are left out of the
    # classification loss (still regressed); the cached ground-truth boxes always count (maskx.box_cache)
    box_cls_iou: float = 0.5
    # stage box: start the box head from the detector's ("") or re-initialise its classifier and regressor
    # ("predictor") or all of it ("head"); docs/model-3k-design.md §6: from the detector's it does not fit set B
    box_reinit: str = ""
    # stage box: the class-specific regressor reads the FCs' output detached, so its loss (large while rare
    # classes' rows are untrained) does not drive the FCs the classifier needs (docs/model-3k-design.md §7)
    box_detach_regression: bool = False
    # stage box: an item (batch_size of them a step) is one image's cached RoIs (0) or this many RoIs drawn
    # at random from the whole cache (maskx.box_cache.CachedBoxRoIs)
    box_batch_rois: int = 0
    max_bad_steps: int = 5  # consecutive non-finite losses before training stops
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    num_workers: int = 1  # DataLoader workers loading ahead (decoding runs single-threaded there)
    # inference (INFERENCE_FIELDS: a trained model may be evaluated under other values)
    score_thresh: float = 0.05
    detections_per_img: int = 100
    rpn_test_proposals: int = 1000  # RPN proposals per image kept after NMS at test time

    def __post_init__(self):
        _check_choice("mask_head", self.mask_head, MASK_HEADS)
        _check_choice("transfer_input", self.transfer_input, TRANSFER_INPUTS)
        _check_choice("transfer_activation", self.transfer_activation, ACTIVATIONS)
        _check_choice("stage", self.stage, STAGES)
        _check_choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _check_choice("lr_schedule", self.lr_schedule, ("step", "cosine"))
        _check_choice("box_reinit", self.box_reinit, ("", "predictor", "head"))
        _check_choice("box_features", self.box_features, ("fpn", "trunk"))
        if self.box_features == "trunk" and self.backbone != "efficientnet_lite0":
            raise ConfigError(f"box_features='trunk' pools efficientnet_lite0's trunk stages; backbone is {self.backbone!r}: "
                              "use backbone=efficientnet_lite0 or box_features=fpn")
        _check_choice("transfer_init", self.transfer_init, TRANSFER_INITS)
        _check_choice("roi_align_backward", self.roi_align_backward, ("sparse", "torchvision"))
        _check_choice("roi_align_forward", self.roi_align_forward, ("torchvision", "sparse"))
        if self.transfer_layers not in (1, 2, 3):
            raise ConfigError(f"transfer_layers must be 1, 2 or 3, got {self.transfer_layers}")
        if self.trainable_layers is not None and not 0 <= self.trainable_layers <= 5:
            raise ConfigError(f"trainable_layers must be in 0..5 (or None: the backbone's default), got {self.trainable_layers}")
        for name in ("image_size", "iters", "batch_size", "fpn_dim", "mask_dim", "box_head_dim", "rois_per_image", "mlp_hidden",
                     "mask_lr_mult", "detections_per_img", "rpn_test_proposals"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.embedding_norm < 0:
            raise ConfigError(f"embedding_norm must be >= 0 (0: rows as the source gives them), "
                              f"got {self.embedding_norm}")
        if self.mask_convs < 1:
            raise ConfigError(f"mask_convs must be >= 1, got {self.mask_convs}")
        if min(self.box_cache_positives, self.box_cache_negatives, self.box_batch_rois) < 0 or self.box_background_weight <= 0:
            raise ConfigError("box_cache_positives, box_cache_negatives and box_batch_rois must be >= 0, "
                              "box_background_weight > 0")
        if not 0.5 <= self.box_cls_iou <= 1:
            raise ConfigError(f"box_cls_iou must be in [0.5, 1] (positives have IoU >= 0.5), got {self.box_cls_iou}")
        if self.detector and self.stage == "detector":
            raise ConfigError("stage 'detector' trains a detector; 'detector' (a run to start from) is for stages mask and e2e")
        if self.mask_init and (self.stage != "e2e" or not self.detector):
            raise ConfigError("mask_init (a stage-wise run to start from) is for stage 'e2e' with a 'detector'")
        if self.mask_roi_cache < 0:
            raise ConfigError(f"mask_roi_cache must be >= 0 (RoIs cached per image; 0: off), got {self.mask_roi_cache}")
        if self.box_cache_mask_rois < 0 or (self.box_cache_mask_rois and self.stage != "box"):
            raise ConfigError(f"box_cache_mask_rois (mask RoIs cached per image in stage box's pass; 0: off) must be "
                              f">= 0 and is for stage 'box', got {self.box_cache_mask_rois} in stage {self.stage!r}")
        if self.mask_roi_cache and self.stage != "mask":
            raise ConfigError("mask_roi_cache is for stage 'mask' (a frozen detector); stages e2e and detector "
                              "change the features every step")
        if self.mask_head == "oracle" and self.split != "all":
            raise ConfigError("the oracle trains masks on every class: use split='all'")
        object.__setattr__(self, "decay_at", tuple(float(x) for x in self.decay_at))

    @property
    def lr(self) -> float:
        """Base lr scaled linearly with the batch (paper: 0.02 at 16 images)."""
        return self.base_lr * self.batch_size / 16

    @property
    def has_fixed_embedding(self) -> bool:
        return self.mask_head == "transfer" and self.transfer_input in ("randn", "glove", "text")

    def unused_fields(self) -> set[str]:
        """Fields this config's model never reads (a difference there changes nothing trained)."""
        unused = set() if self.has_fixed_embedding else {"embedding_norm"}
        return unused if self.mask_head == "transfer" else unused | {"transfer_init"}

    def with_inference_of(self, other: "Config") -> "Config":
        """This config with ``other``'s inference settings (``INFERENCE_FIELDS``): training unchanged."""
        return self.replace(**{f: getattr(other, f) for f in INFERENCE_FIELDS})

    def replace(self, **changes) -> "Config":
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown config field(s) {sorted(unknown)}; valid: {sorted(f.name for f in fields(self))}")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["decay_at"] = list(self.decay_at)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Config":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        return cls().replace(**d)

    def with_overrides(self, items: list[str]) -> "Config":
        """Apply ``field=value`` strings (values parsed as JSON, else taken as strings)."""
        changes = {}
        types = {f.name: f for f in fields(self)}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like field=value")
            key, raw = item.split("=", 1)
            key = key.strip().replace("-", "_")
            if key not in types:
                raise ConfigError(f"unknown config field {key!r}; valid: {sorted(types)}")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            default = getattr(self, key)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if default is not None and not isinstance(value, type(default)) and not (
                    isinstance(default, tuple) and isinstance(value, list)):
                raise ConfigError(f"{key}={raw!r}: expected {type(default).__name__}")
            changes[key] = tuple(value) if isinstance(value, list) else value
        return self.replace(**changes)


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {list(allowed)}")


def _presets() -> dict[str, Config]:
    base = Config()
    p: dict[str, Config] = {
        # stage 1 of stage-wise training: Faster R-CNN on A ∪ B, boxes only
        "detector": base.replace(stage="detector", mask_head="agnostic"),
        # Table 1 baselines (stage-wise: the mask head on a frozen detector)
        "agnostic": base.replace(stage="mask", mask_head="agnostic"),
        "agnostic_mlp": base.replace(stage="mask", mask_head="agnostic", mlp_branch=True),
        # a control the paper lacks: the class-agnostic head trained with every class's masks; the oracle
        # minus it on B is what knowing the class is worth, apart from having B's masks (maskx.diagnostics)
        "agnostic_all": base.replace(stage="mask", mask_head="agnostic", split="all"),
        "oracle": base.replace(stage="mask", mask_head="oracle", split="all"),
        "oracle_mlp": base.replace(stage="mask", mask_head="oracle", split="all", mlp_branch=True),
    }
    # Table 1a: the input of T (2-layer LeakyReLU T)
    for inp, tag in (("randn", "randn"), ("glove", "glove"), ("text", "text"), ("cls", "cls"),
                     ("box", "box"), ("cls+box", "clsbox")):
        p[f"transfer_{tag}_2lrelu"] = base.replace(stage="mask", transfer_input=inp)
        p[f"transfer_{tag}_2lrelu_mlp"] = base.replace(stage="mask", transfer_input=inp, mlp_branch=True)
    # Table 1b: structure of T (cls+box input)
    for layers, act, tag in ((1, "relu", "1"), (2, "relu", "2relu"), (2, "leaky_relu", "2lrelu"),
                             (3, "relu", "3relu"), (3, "leaky_relu", "3lrelu")):
        p[f"transfer_clsbox_{tag}"] = base.replace(stage="mask", transfer_layers=layers, transfer_activation=act)
    # Table 1d and Table 2: end-to-end
    e2e = base.replace(stage="e2e")
    p.update({
        "agnostic_e2e": e2e.replace(mask_head="agnostic"),
        "agnostic_mlp_e2e": e2e.replace(mask_head="agnostic", mlp_branch=True),
        "agnostic_all_e2e": e2e.replace(mask_head="agnostic", split="all"),
        "oracle_e2e": e2e.replace(mask_head="oracle", split="all"),
        "oracle_mlp_e2e": e2e.replace(mask_head="oracle", split="all", mlp_branch=True),
        "transfer_clsbox_2lrelu_e2e": e2e,
        "transfer_clsbox_2lrelu_e2e_nostopgrad": e2e.replace(stop_grad=False),
        "transfer_clsbox_2lrelu_mlp_e2e": e2e.replace(mlp_branch=True),  # Mask^X R-CNN (Table 2)
        "transfer_clsbox_2lrelu_mlp_e2e_nostopgrad": e2e.replace(mlp_branch=True, stop_grad=False),
    })
    # beyond the paper: a deeper FCN mask head (DeepMAC: head capacity drives generalisation)
    p["agnostic_deep"] = p["agnostic"].replace(mask_convs=8)
    p["transfer_clsbox_2lrelu_deep"] = p["transfer_clsbox_2lrelu"].replace(mask_convs=8)
    # the 3000-class model (paper §5), stage-wise as there: a detector on A ∪ B (boxes of all 3000
    # classes), its box head re-trained on cached RoI features (stage box, maskx.box_cache: within the
    # CPU budget SGD leaves a 3001-way classifier untrained), then T + the MLP branch on the frozen
    # detector, trained on set A's masks (``python -m maskx ship`` runs the three; docs/model-3k-design.md
    # for how they were chosen). Sized for 90 minutes on 2 CPU cores and a 40 MB fp16 checkpoint: a 128-wide FPN
    # (its 3 x 3 convs and the RPN head are most of a step; at 128 a step costs half of one at 256), a
    # 512-wide box head (w_det: 5 x 512), the study's detector lr (4x linear scaling, 200 warm-up
    # iterations) and its stage-2 recipe (16 cached RoIs per image, the mask branch at 10x the linear-
    # scaling lr: 2.5 x this preset's 4x base lr), for 4000 steps of 2 images: about one pass over the
    # images with a set-A mask (at 1000 both mask heads stayed 0.15 IoU short on A, design log §15).
    # The trunk frozen and the box head pooling its stages 3-5
    # (box_features="trunk"): those ImageNet features name the world's classes, one FPN level per box does
    # not (docs/model-3k-design.md §9-10), and frozen, they can be cached for the box stage
    big = p["transfer_clsbox_2lrelu_mlp"].replace(
        backbone="efficientnet_lite0", split="coco80", fpn_dim=128, box_head_dim=512, mask_dim=128, mlp_hidden=256,
        box_features="trunk", trainable_layers=0,
        rois_per_image=128, mask_rois_per_image=16, mask_roi_cache=16, mask_lr_mult=2.5, base_lr=0.08,
        warmup_iters=200, iters=4000, checkpoint_every=250,
        # a 3001-way softmax spreads its mass: at 0.05 most true detections are dropped before
        # evaluation (LVIS evaluates 1000+ classes at 0.0001); 0.001 keeps inference under 2 s
        score_thresh=0.001)
    p["maskx_3k"] = big
    p["agnostic_mlp_3k"] = big.replace(mask_head="agnostic")  # its baseline, trained the same way
    p["maskx_3k_detector"] = big.replace(stage="detector", mask_head="agnostic", mlp_branch=False, mask_roi_cache=0,
                                         iters=1500)
    # AdamW on 16 images' cached RoIs per step (lr 1e-3, half a cosine after the warm-up): 3375 steps, 4.5
    # epochs of the default 12 000 images (at 3 epochs the head still underfits: set B named 31 / 59 % top-1 /
    # top-5 against 36 / 65 %, design log §14); the ground-truth boxes + 12 + 12 sampled RoIs per image (the
    # trunk's 472 channels: 46 kB a RoI, 15 GB for 12 000 images); only positives with IoU >= 0.7 teach the
    # classifier (§11 of the design log); the same pass caches the mask stage's RoIs (box_cache_mask_rois:
    # one forward of each image for both caches)
    p["maskx_3k_box"] = p["maskx_3k_detector"].replace(stage="box", optimizer="adamw", batch_size=16, base_lr=0.001,
                                                       warmup_iters=100, iters=3375, lr_schedule="cosine",
                                                       box_detach_regression=True,
                                                       box_cache_positives=12, box_cache_negatives=12, box_cls_iou=0.7,
                                                       box_cache_mask_rois=big.mask_roi_cache)
    return p


PRESETS: dict[str, Config] = _presets()


def get_preset(name: str) -> Config:
    """The preset ``name`` of ``PRESETS``; ``ConfigError`` listing them all when there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}") from None
