"""Lesson 06's explorer: a sample before and after SSD's training augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..model import IMAGENET_MEAN
from ..viz import draw_boxes, show_image
from ._explorer import Explorer, _slider

__all__ = ["AugmentationExplorer", "augmentation_explorer"]


class AugmentationExplorer(Explorer):
    """An image and its boxes before and after SSD's training augmentation.

    Controls: ``sample`` (IntSlider, the random seed: step through samples), and Checkboxes
    ``photometric``, ``zoom_out``, ``crop``, ``flip`` that switch each stage on or off.
    ``augmented`` is the (image, target) shown on the right.
    """

    figsize = (9.0, 4.6)

    def __init__(self, image: Tensor, target: dict[str, Tensor], class_names: Sequence[str],
                 size: int, fill: Sequence[float]) -> None:
        from .. import augment

        self.original, self.class_names, self.size = (image, target), class_names, size
        self.stages = {
            "photometric": augment.PhotometricDistort(),
            "zoom_out": augment.ZoomOut(fill=fill),
            "crop": augment.IoUCrop(),
            "flip": augment.RandomHorizontalFlip(),
        }
        controls = {"sample": _slider(widgets.IntSlider, "sample", 0, 0, 99)}
        for name in self.stages:
            controls[name] = widgets.Checkbox(value=True, description=name.replace("_", " "),
                                              layout=widgets.Layout(width="150px"))
        rows = [[controls["sample"]], [controls[name] for name in self.stages]]
        super().__init__(rows, controls, image_width="720px")

    def draw(self, fig: Figure) -> str:
        from ..augment import Compose, Resize

        enabled = [name for name in self.stages if self.controls[name].value]
        transform = Compose([*(self.stages[name] for name in enabled), Resize(self.size)])
        generator = torch.Generator().manual_seed(self.controls["sample"].value)
        self.augmented = transform(*self.original, generator=generator)
        for ax, (image, target), title in zip(
            (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)),
            (self.original, self.augmented),
            ("original", f"augmented, sample {self.controls['sample'].value}"),
        ):
            show_image(ax, image, title=title)
            draw_boxes(ax, target["boxes"], target["labels"], class_names=self.class_names,
                       image_size=tuple(image.shape[1:]))
        crop = self.stages["crop"].last_option if "crop" in enabled else None
        crop_text = ("whole image" if crop is None else "random patch" if crop == 0
                     else f"patch with IoU ≥ {crop} with some object")
        kept = len(self.augmented[1]["boxes"])
        return (f"stages: {', '.join(enabled) or 'none'} · crop: {crop_text} · "
                f"<b>{kept} of {len(self.original[1]['boxes'])} objects kept</b>")


def augmentation_explorer(image: Tensor, target: dict[str, Tensor],
                          class_names: Sequence[str], size: int = 300,
                          fill: Sequence[float] = IMAGENET_MEAN) -> AugmentationExplorer:
    """Make the augmentation explorer for one sample (``target`` with normalized boxes)."""
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target must have 'boxes' and 'labels', got keys {sorted(target)}")
    return AugmentationExplorer(image, target, class_names, size, fill)
