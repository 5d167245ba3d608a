"""Lesson 08's explorer: one image's boxes before and after per-class NMS."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..viz import draw_boxes, show_image
from ._explorer import Explorer, _slider

__all__ = ["NMSExplorer", "nms_explorer"]


class NMSExplorer(Explorer):
    """One image's decoded boxes before and after per-class NMS.

    Controls: ``iou_threshold`` (NMS overlap, 0.45 in the paper) and ``min_score`` (boxes
    drawn and kept above this score). ``kept`` is the number of detections after NMS.
    """

    figsize = (9.0, 4.6)

    def __init__(self, image: Tensor, boxes: Tensor, scores: Tensor,
                 class_names: Sequence[str]) -> None:
        self.picture, self.boxes, self.scores = image, boxes, scores
        self.class_names = class_names
        controls = {
            "iou_threshold": _slider(widgets.FloatSlider, "NMS IoU", 0.45, 0.05, 0.95, step=0.05),
            "min_score": _slider(widgets.FloatSlider, "min score", 0.3, 0.01, 0.95, step=0.01),
        }
        super().__init__([[controls["iou_threshold"], controls["min_score"]]], controls,
                         image_width="720px")

    def draw(self, fig: Figure) -> str:
        from ..detect import batched_nms

        iou_threshold = self.controls["iou_threshold"].value
        min_score = self.controls["min_score"].value
        box_index, cls = (self.scores[:, 1:] > min_score).nonzero(as_tuple=True)
        boxes, scores, labels = self.boxes[box_index], self.scores[box_index, cls + 1], cls + 1
        kept = batched_nms(boxes, scores, labels, iou_threshold)
        self.kept = len(kept)
        size = tuple(self.picture.shape[1:])
        for position, (chosen, title) in enumerate(
            ((torch.arange(len(boxes)), f"before NMS: {len(boxes)} boxes above {min_score:.2f}"),
             (kept, f"after NMS at IoU {iou_threshold:.2f}: {len(kept)} boxes"))
        ):
            ax = fig.add_subplot(1, 2, position + 1)
            show_image(ax, self.picture, title=title)
            draw_boxes(ax, boxes[chosen], labels[chosen],
                       scores[chosen] if position else None, self.class_names,
                       image_size=size, linewidth=1 if not position else 2,
                       show_text=bool(position))
        return (f"{len(boxes)} (box, class) pairs score above {min_score:.2f}; "
                f"<b>{len(kept)} remain after NMS</b>")


def nms_explorer(image: Tensor, boxes: Tensor, scores: Tensor,
                 class_names: Sequence[str]) -> NMSExplorer:
    """Make the NMS explorer from one image's decoded ``boxes[P, 4]`` (xyxy, normalized) and
    class probabilities ``scores[P, C]`` (column 0 the background)."""
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 2 or len(scores) != len(boxes):
        raise ValueError(f"boxes must be [P, 4] and scores [P, C], got {list(boxes.shape)} "
                         f"and {list(scores.shape)}")
    return NMSExplorer(image, boxes.detach(), scores.detach(), class_names)
