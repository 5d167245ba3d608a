"""Lesson 03's explorer: the default boxes the matching rule gives each object."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..anchors import SSD300_VOC, PriorConfig, default_boxes
from ..boxes import box_iou, cxcywh_to_xyxy
from ..matching import match
from ..viz import PALETTE, draw_boxes, show_image
from ._explorer import Explorer, _slider

__all__ = ["MatchingExplorer", "matching_explorer"]


class MatchingExplorer(Explorer):
    """The default boxes matched to each object of an image, as the threshold changes.

    Controls: ``threshold`` (FloatSlider) and ``best_first`` (Checkbox: the paper's step 1,
    each object first takes its best default box). ``matches`` is the number of default
    boxes matched to each object.
    """

    figsize = (5.2, 5.2)

    def __init__(self, image: Tensor, target: dict[str, Tensor], config: PriorConfig,
                 class_names: Sequence[str], threshold: float) -> None:
        self.picture, self.target, self.class_names = image, target, class_names
        self.priors = default_boxes(config, dtype=torch.float64)
        self.iou = box_iou(target["boxes"].double(), cxcywh_to_xyxy(self.priors))  # [G, P]
        controls = {
            "threshold": _slider(widgets.FloatSlider, "threshold", threshold, 0.1, 0.9, step=0.05),
            "best_first": widgets.Checkbox(value=True, description="best default box first"),
        }
        super().__init__([[controls["threshold"], controls["best_first"]]], controls,
                         image_width="420px")

    def draw(self, fig: Figure) -> str:
        threshold = self.controls["threshold"].value
        boxes, labels = self.target["boxes"].double(), self.target["labels"]
        if len(boxes) == 0:
            positive = torch.zeros(len(self.priors), dtype=torch.bool)
            owner = torch.zeros(len(self.priors), dtype=torch.long)
        elif self.controls["best_first"].value:
            _, _, owner = match(boxes, labels, self.priors, threshold, return_index=True)
            positive = owner >= 0  # owner: the object each default box took, -1 for none
        else:  # the threshold alone
            best, owner = self.iou.max(dim=0)
            positive = best >= threshold
        self.matches = [int((positive & (owner == g)).sum()) for g in range(len(boxes))]

        ax = fig.add_subplot()
        show_image(ax, self.picture)
        size = tuple(self.picture.shape[1:])
        corners = cxcywh_to_xyxy(self.priors)
        for g in range(len(boxes)):
            chosen = corners[positive & (owner == g)]
            draw_boxes(ax, chosen, color=PALETTE[g % len(PALETTE)], show_text=False,
                       linewidth=1, image_size=size)
            draw_boxes(ax, boxes[g : g + 1], labels[g : g + 1], class_names=self.class_names,
                       color=PALETTE[g % len(PALETTE)], linewidth=3, image_size=size)
        rule = ("best box first + threshold" if self.controls["best_first"].value
                else "threshold only")
        ax.set_title(f"{rule}: {int(positive.sum())} positives at IoU ≥ {threshold:.2f}")
        names = [self.class_names[int(label)] for label in labels]
        unmatched = [n for n, m in zip(names, self.matches) if m == 0]
        lost = f" · <b>no default box for: {', '.join(unmatched)}</b>" if unmatched else ""
        return ("default boxes per object: "
                + ", ".join(f"{n} {m}" for n, m in zip(names, self.matches)) + lost)


def matching_explorer(image: Tensor, target: dict[str, Tensor], class_names: Sequence[str],
                      config: PriorConfig = SSD300_VOC, threshold: float = 0.5
                      ) -> MatchingExplorer:
    """Make the matching explorer for one image and its objects (boxes normalized)."""
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target must have 'boxes' and 'labels', got keys {sorted(target)}")
    return MatchingExplorer(image, target, config, class_names, threshold)
