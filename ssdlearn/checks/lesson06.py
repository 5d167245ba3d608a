"""Self-check of lesson 06: the boxes that survive a crop."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..augment import crop_boxes
from ..boxes import box_iou
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["crop_boxes_check"]


def _crop_reference(boxes: Tensor, patch: Tensor) -> Tensor:
    return crop_boxes(boxes, patch)[0]


def _crop_any_overlap(boxes: Tensor, patch: Tensor) -> Tensor:
    keep = box_iou(boxes, patch[None])[:, 0] > 0
    kept = torch.cat([torch.maximum(boxes[keep, :2], patch[:2]),
                      torch.minimum(boxes[keep, 2:], patch[2:])], dim=1)
    return (kept - patch[:2].repeat(2)) / (patch[2:] - patch[:2]).repeat(2)


def _crop_without_clipping(boxes: Tensor, patch: Tensor) -> Tensor:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((centres > patch[:2]) & (centres < patch[2:])).all(dim=1)
    return (boxes[keep] - patch[:2].repeat(2)) / (patch[2:] - patch[:2]).repeat(2)


def _crop_in_image_coordinates(boxes: Tensor, patch: Tensor) -> Tensor:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((centres > patch[:2]) & (centres < patch[2:])).all(dim=1)
    return torch.cat([torch.maximum(boxes[keep, :2], patch[:2]),
                      torch.minimum(boxes[keep, 2:], patch[2:])], dim=1)


_CROP_MISTAKES = [
    Mistake(_crop_any_overlap,
            "SSD keeps a box only if its centre lies inside the patch, not whenever it overlaps."),
    Mistake(_crop_without_clipping,
            "Clip the kept boxes to the patch, so they do not stick out of the new image."),
    Mistake(_crop_in_image_coordinates,
            "The new image is the patch: express the boxes relative to it "
            "(subtract its corner, divide by its size)."),
]  # fmt: skip


def crop_boxes_check(fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Check ``fn(boxes[G, 4], patch[4]) -> Tensor[K, 4]``: the boxes as the crop sees them."""
    t = partial(torch.tensor, dtype=torch.float64)
    cases = [
        ("one box fully inside the patch", t([[0.4, 0.4, 0.6, 0.6]]), t([0.2, 0.2, 0.8, 0.8])),
        ("a box sticking out of the patch, centre inside",
         t([[0.1, 0.3, 0.5, 0.5]]), t([0.2, 0.2, 0.8, 0.8])),
        ("a box overlapping the patch with its centre outside",
         t([[0.0, 0.0, 0.3, 0.3], [0.4, 0.4, 0.5, 0.5]]), t([0.2, 0.2, 0.8, 0.8])),
        ("several boxes and a non-square patch",
         t([[0.1, 0.1, 0.3, 0.2], [0.5, 0.0, 0.9, 0.6], [0.0, 0.7, 1.0, 1.0]]),
         t([0.0, 0.0, 0.6, 0.9])),
        ("an image with no objects", t([]).reshape(0, 4), t([0.1, 0.1, 0.5, 0.5])),
    ]  # fmt: skip
    return run_check("Crop boxes", fn,
                     [Case(d, (b, p), _crop_reference(b, p)) for d, b, p in cases],
                     _CROP_MISTAKES)
