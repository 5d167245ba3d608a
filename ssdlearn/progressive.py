"""Progressive resizing: the first steps of a run on smaller images. Lesson 07.

SSD is convolutional, so the same layers run on a smaller image: every feature map shrinks,
and with it the grid of default boxes. At 64x64 the tiny SSD's maps are 16x16 to 1x1
instead of 24x24 to 1x1, 1,364 default boxes instead of 3,064, and a training step costs
about half as much as at 96x96. The early steps, which learn colours, edges and roughly
where objects are, learn them almost as well from small images; the run then finishes at
full size, where the learning rate decays and the boxes get their precision. The trick
comes from training image classifiers fast (fast.ai's "progressive resizing").

On the coarser grid of a small image fewer default boxes reach IoU 0.5 with an object (about
5 an image instead of 9 on the shapes at 64x64), so the early steps would see fewer positives
and the run end less accurate; matching at ``small_match_iou`` (0.4) there gives back as many
as 0.5 gives at full size. The shapes preset trains the first half of its steps at 64x64:
the whole run 1.19 times faster than every step at 96x96, back to back, with the same targets
met on 3 seeds (benchmarks/README.md).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

from torch.utils.data import Dataset

from .anchors import PriorConfig, default_boxes
from .config import TrainConfig, build_datasets, default_box_template
from .data.loader import make_train_loader
from .model import SSD

__all__ = ["at_image_size", "small_config", "SmallPhase", "small_phase"]


def at_image_size(model: SSD, prior_config: PriorConfig) -> SSD:
    """``model`` for images of ``prior_config.image_size``: the same layers (training one
    trains the other) with that size's default boxes as its ``priors``. Raises ValueError
    when the network's feature maps at that size do not match the boxes."""
    twin = copy.copy(model)  # a shallow copy shares every layer
    twin._buffers = dict(model._buffers)  # but not the default boxes
    twin.prior_config = prior_config
    twin.priors = default_boxes(prior_config).to(model.priors.device)
    twin._check_feature_map_sizes([head.in_channels for head in model.loc_heads])
    return twin


def small_config(config: TrainConfig) -> TrainConfig:
    """``config`` as the small phase trains: images of ``small_size`` pixels, no phase of its
    own."""
    return dataclasses.replace(config, image_size=config.small_size, small_size=None,
                               small_fraction=0.0)


@dataclasses.dataclass
class SmallPhase:
    """What the first ``small_steps`` steps train with."""

    model: SSD  # the run's network for small images; its priors are their default boxes
    batches: Iterator  # batches of small images, resumable like the full-size ones

    def close(self) -> None:
        if hasattr(self.batches, "close"):  # a BurstLoader's processes
            self.batches.close()


def small_phase(config: TrainConfig, model: SSD, train_set: Dataset, step: int,
                world_size: int = 1, own_train_set: bool = False) -> SmallPhase | None:
    """The network, default boxes and batches of steps ``step`` to ``config.small_steps - 1``
    (the first ``small_fraction`` of the run, on images of ``config.small_size`` pixels);
    None when ``step`` is past them.

    A generated shapes set is drawn again at the small size (cheaper than drawing it large
    and shrinking it), unless the caller gave its own (``own_train_set``); other datasets'
    images are resized."""
    if step >= config.small_steps:
        return None
    if world_size > 1:
        raise ValueError("small_fraction (progressive resizing) trains in one process; set it "
                         "to 0 for a run over several processes")
    small = small_config(config)
    try:
        prior_config = default_box_template(small)
    except ValueError as error:
        raise ValueError(f"small_size {config.small_size} does not suit {config.model}: "
                         f"{error}") from None
    if config.dataset == "shapes" and not own_train_set:
        train_set = build_datasets(small)[0]
    return SmallPhase(at_image_size(model, prior_config), make_train_loader(train_set, small, step))
