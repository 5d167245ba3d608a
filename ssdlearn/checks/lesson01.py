"""Self-check of lesson 01: IoU of every pair of boxes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..boxes import box_iou
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["iou"]


def _boxes(*rows: Sequence[float]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def _iou_cases() -> list[Case]:
    cases = [
        ("two overlapping boxes", _boxes([0, 0, 4, 4]), _boxes([2, 2, 6, 6])),
        ("a box and itself", _boxes([1, 2, 5, 7]), _boxes([1, 2, 5, 7])),
        ("a box inside another", _boxes([0, 0, 10, 10]), _boxes([2, 2, 4, 4])),
        ("two boxes far apart", _boxes([0, 0, 2, 2]), _boxes([5, 5, 8, 8])),
        ("two boxes apart in x that overlap in y", _boxes([0, 0, 2, 4]), _boxes([3, 1, 5, 3])),
        ("two boxes that touch along an edge", _boxes([0, 0, 2, 2]), _boxes([2, 0, 4, 2])),
        ("3 boxes against 2 boxes",
         _boxes([0, 0, 4, 4], [1, 1, 3, 5], [10, 10, 12, 11]),
         _boxes([2, 2, 6, 6], [0, 0, 1, 8])),
        ("no boxes against 2 boxes", _boxes(), _boxes([0, 0, 1, 1], [0, 0, 2, 2])),
    ]  # fmt: skip
    return [Case(text, (a, b), box_iou(a, b)) for text, a, b in cases]


def _pairwise(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, ...]:
    """Intersection corners and areas, shared by the wrong versions below."""
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    return top_left, bottom_right, area1[:, None], area2[None, :]


def _iou_without_clamp(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    top_left, bottom_right, area1, area2 = _pairwise(boxes1, boxes2)
    size = bottom_right - top_left
    inter = size[..., 0] * size[..., 1]
    return inter / (area1 + area2 - inter)


def _iou_union_counts_intersection_twice(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    top_left, bottom_right, area1, area2 = _pairwise(boxes1, boxes2)
    size = (bottom_right - top_left).clamp(min=0)
    return size[..., 0] * size[..., 1] / (area1 + area2)


def _iou_plus_one_pixel(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    one = torch.tensor([0, 0, 1, 1], dtype=boxes1.dtype)
    return box_iou(boxes1 + one, boxes2 + one)


def _iou_transposed(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return box_iou(boxes1, boxes2).T


def _iou_intersection_over_smaller(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    top_left, bottom_right, area1, area2 = _pairwise(boxes1, boxes2)
    size = (bottom_right - top_left).clamp(min=0)
    return size[..., 0] * size[..., 1] / torch.minimum(area1, area2)


_IOU_MISTAKES = [
    Mistake(_iou_without_clamp,
            "When two boxes do not overlap, the intersection's width or height comes out "
            "negative (and two negatives multiply to a positive area). Clamp them at 0."),
    Mistake(_iou_union_counts_intersection_twice,
            "area1 + area2 counts the intersection twice; the union is "
            "area1 + area2 - intersection."),
    Mistake(_iou_plus_one_pixel,
            "Coordinates are continuous: a box from x1 = 0 to x2 = 10 is 10 wide, no '+ 1'."),
    Mistake(_iou_transposed,
            "The result needs one row per box of the first argument and one column per box "
            "of the second: shape [N, M]."),
    Mistake(_iou_intersection_over_smaller,
            "Divide the intersection by the union of the two boxes, not by the smaller area."),
]  # fmt: skip


def iou(fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Check a learner's ``fn(boxes1[N, 4], boxes2[M, 4]) -> Tensor[N, M]`` (xyxy IoU)."""
    return run_check("IoU", fn, _iou_cases(), _IOU_MISTAKES)
