"""The paper's ablations (Tables 2 and 3) in miniature: the tiny SSD with one idea taken out.
Lesson 11; ``benchmarks/ablations.py`` runs them all and writes the table the lesson reads.

    base = ablation_base()                              # the shapes preset, every idea on
    model, loss_fn, best_box = build_variant("no_ratio_3", base)
    run = train_variant("no_ratio_3", base)             # trains, then scores held-out images

The ablations start from :func:`ablation_base`: the shapes preset's data, optimizer and
schedule, with the tiny SSD that has all of SSD's ideas (width 32, default boxes of ratios 1,
2, 3 and 4, eq. 4's scales 0.1 to 0.9, the paper's alpha of 1). The preset itself drops the
{1/2, 2} and {1/3, 3} boxes, as these ablations found it should. Each variant trains like
``ssdlearn.train.train`` trains a preset (same data and order, optimizer, schedule, clipping,
precision); one of SSD's ideas changes:

- ``full``: every idea on;
- ``no_mining``: every negative default box in L_conf, not the hardest 3 per positive;
- ``no_best_box``: matching without its first step (each object takes its best default box);
- ``no_ratio_3``: no {1/3, 3} default boxes (the tiny model keeps ratios 1, 2 and 4);
- ``no_ratio_2_3``: no {1/2, 2} either (1 and 4 left: the 1:4 bars need the 4);
- ``no_finest_map`` / ``no_coarsest_map``: the stride-4 map or the 1x1 map dropped, eq. 4
  scales spread over the 4 maps left (Table 3 removes layers the same way);
- ``augmentation``: the paper's augmentation added (the shapes preset trains without it).

The paper's other ablation, the atrous fc6, has no counterpart here: the tiny backbone has
no fully connected layers to convert.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .anchors import PriorConfig, paper_scales
from .config import CONFIGS, TrainConfig, build_datasets
from .data.loader import make_train_loader
from .evaluate import evaluate
from .loss import MultiBoxLoss
from .model import SSD, TinyFeatures
from .train import autocast_dtype, build_optimizer, learning_rate, train_step

__all__ = ["VARIANTS", "ablation_base", "build_variant", "train_variant", "summary",
           "paired_effect"]

VARIANTS = {
    "full": "every idea on",
    "no_mining": "all negatives in the confidence loss, no hard negative mining",
    "no_best_box": "matching without the best-default-box step",
    "no_ratio_3": "no {1/3, 3} default boxes",
    "no_ratio_2_3": "no {1/2, 2} and no {1/3, 3} default boxes",
    "no_finest_map": "the finest output map (stride 4) dropped",
    "no_coarsest_map": "the coarsest output map (1x1) dropped",
    "augmentation": "the paper's data augmentation added",
}
_MAPS = (4, 8, 16, 32, None)  # the tiny model's output maps: strides, then the global 1x1


class _SomeMaps(nn.Module):
    """A backbone's output maps, only those at ``keep`` (indices)."""

    def __init__(self, features: nn.Module, keep: list[int]) -> None:
        super().__init__()
        self.features, self.keep = features, keep

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.features(x)
        return [maps[i] for i in self.keep]


# The tiny SSD with every idea of the paper: TrainConfig's own width 32, default boxes of
# ratios 1, 2, 3 and 4 on eq. 4's scales 0.1 to 0.9, and alpha 1; every step at full size
# (no progressive resizing: the paper's training).
_EVERY_IDEA = {field.name: field.default for field in dataclasses.fields(TrainConfig)
               if field.name in ("width", "aspect_ratios", "scale_range", "alpha", "small_size",
                                 "small_fraction")}


def ablation_base(config: TrainConfig | None = None) -> TrainConfig:
    """``config`` (default: the shapes preset) with the tiny SSD that has every idea of the
    paper: width 32, default boxes of ratios 1, 2, 3 and 4 on eq. 4's scales 0.1 to 0.9,
    alpha 1, and every step on full-size images. ``assets/ablations.json`` (lesson 11) was
    trained from it."""
    return dataclasses.replace(config or CONFIGS["shapes"], **_EVERY_IDEA)


def build_variant(variant: str, config: TrainConfig) -> tuple[SSD, MultiBoxLoss, bool]:
    """(model, loss, best_box step on) for ``variant`` of ``config``'s tiny SSD; ``config``
    has the default boxes of :func:`ablation_base`, which each variant changes."""
    boxes = (_EVERY_IDEA["aspect_ratios"], _EVERY_IDEA["scale_range"])
    if (config.aspect_ratios, config.scale_range) != boxes:
        raise ValueError("the ablations start from the tiny SSD's own default boxes: "
                         f"aspect_ratios {boxes[0]} and scale_range {boxes[1]}, got "
                         f"{config.aspect_ratios} and {config.scale_range}; "
                         "ablation_base(config) gives them")
    size = config.image_size
    keep = list(range(len(_MAPS)))
    if variant == "no_finest_map":
        keep = keep[1:]
    if variant == "no_coarsest_map":
        keep = keep[:-1]
    ratios = {"no_ratio_3": (2, 4), "no_ratio_2_3": (4,)}.get(variant, (2, 3, 4))
    grids = [size // _MAPS[i] if _MAPS[i] else 1 for i in keep]
    priors = PriorConfig.from_scales(size, grids, paper_scales(len(grids) + 1, 0.1, 0.9),
                                     [ratios] * len(grids), name=f"{variant}{size}")
    features = TinyFeatures(config.width)
    channels = [features.channels[i] for i in keep]
    backbone = features if len(keep) == len(_MAPS) else _SomeMaps(features, keep)
    model = SSD(backbone, channels, priors, config.num_classes,
                image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))
    # "All negatives": a ratio no image reaches keeps every negative default box.
    loss = MultiBoxLoss(neg_pos_ratio=1e9 if variant == "no_mining" else 3)
    return model, loss, variant != "no_best_box"


def train_variant(variant: str, config: TrainConfig, steps: int | None = None) -> dict:
    """Train one variant as ``ssdlearn.train.train`` trains the preset (same data, order,
    optimizer, schedule, clipping and precision), then evaluate it on the held-out images.

    ``steps`` stops early (the schedule stays the config's). Returns the variant, seed,
    mAP, mAP@0.5, AP on small / medium / large objects, the number of default boxes,
    training images per second and seconds, and ``losses``: the loss of every step.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: {', '.join(VARIANTS)}")
    if variant == "augmentation":
        config = dataclasses.replace(config, augment=True)
    train_set, val_set, _ = build_datasets(config)
    torch.manual_seed(config.seed)
    model, loss_fn, best_box = build_variant(variant, config)
    optimizer = build_optimizer(model, config)
    device = torch.device("cpu")
    amp_dtype = autocast_dtype(device, config.amp)
    batches = make_train_loader(train_set, config)
    priors = model.priors
    scaler = torch.amp.GradScaler("cpu", enabled=False)  # float32 or bf16: no scaling
    model.train()
    start = time.perf_counter()
    losses = []
    for step in range(config.steps if steps is None else steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        images, targets = next(batches)
        values = train_step(model, loss_fn, optimizer, scaler, images, targets["boxes"],
                            targets["labels"], model.priors, amp_dtype, config.grad_clip,
                            best_box=best_box)
        losses.append(values[0])
    seconds = time.perf_counter() - start
    metrics = evaluate(model, val_set, config.batch_size)
    return {
        "variant": variant, "seed": config.seed,
        "map": metrics["map"], "map_50": metrics["map_50"],
        "map_small": metrics["map_small"], "map_medium": metrics["map_medium"],
        "map_large": metrics["map_large"],
        "default_boxes": int(priors.shape[0]),
        "images_per_second": round(len(losses) * config.batch_size / seconds, 1),
        "seconds": round(seconds, 1),
        "losses": torch.stack(losses).tolist() if losses else [],
    }


def summary(runs: list[dict]) -> list[dict]:
    """Mean and spread (max - min) over seeds, per variant, in VARIANTS order."""
    rows = []
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        if not mine:
            continue
        row = {"variant": variant, "seeds": len(mine)}
        for key in ("map", "map_50", "map_small", "map_medium", "map_large",
                    "images_per_second"):
            values = [run[key] for run in mine]
            row[key] = statistics.fmean(values)
            row[key + "_spread"] = max(values) - min(values)
        row["default_boxes"] = mine[0]["default_boxes"]
        rows.append(row)
    return rows


def paired_effect(full: Sequence[float], variant: Sequence[float]) -> tuple[float, bool]:
    """What a variant changes, seed by seed: ``full[s]`` and ``variant[s]`` come from the
    same seed (same initial weights, same batches), so their difference is the variant's
    effect on that run. Returns the mean difference ``variant - full`` and whether it is
    clear: at least two seeds, and every difference of the same sign (none zero)."""
    if len(full) != len(variant) or not full:
        raise ValueError(f"need one score per seed for both, got {len(full)} and {len(variant)}")
    differences = [v - f for f, v in zip(full, variant)]
    clear = len(differences) >= 2 and (all(d > 0 for d in differences)
                                       or all(d < 0 for d in differences))
    return statistics.fmean(differences), clear
