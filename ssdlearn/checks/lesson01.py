"""Self-checks of lesson 01: IoU of every pair of boxes, and generalized IoU (GIoU)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import Tensor

from ..boxes import box_iou
from ._loops import loop_check
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["iou", "giou_check"]


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


# ---- GIoU (Rezatofighi et al., CVPR 2019) ------------------------------------------------


def _giou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU = IoU - (|C| - |A u B|) / |C|, C the smallest box enclosing A and B: [N, M]."""
    top_left, bottom_right, area1, area2 = _pairwise(boxes1, boxes2)
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    union = area1 + area2 - inter
    hull = (torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
            - torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2]))  # fmt: skip
    enclosing = hull[..., 0] * hull[..., 1]
    return inter / union - (enclosing - union) / enclosing


def _giou_cases() -> list[Case]:
    cases = [
        ("two overlapping boxes", _boxes([0, 0, 4, 4]), _boxes([2, 2, 6, 6])),
        ("a box and itself", _boxes([1, 2, 5, 7]), _boxes([1, 2, 5, 7])),
        ("a box inside another", _boxes([0, 0, 10, 10]), _boxes([2, 2, 4, 4])),
        ("two small boxes far apart", _boxes([0, 0, 1, 1]), _boxes([9, 9, 10, 10])),
        ("two boxes apart in x that overlap in y", _boxes([0, 0, 2, 4]), _boxes([3, 1, 5, 3])),
        ("two boxes that touch along an edge", _boxes([0, 0, 2, 2]), _boxes([2, 0, 4, 2])),
        ("a zero-width box (a line) against boxes",
         _boxes([1, 0, 1, 2], [5, 0, 5, 2]), _boxes([0, 0, 2, 2])),
        ("3 boxes against 2 boxes",
         _boxes([0, 0, 4, 4], [1, 1, 3, 5], [10, 10, 12, 11]),
         _boxes([2, 2, 6, 6], [0, 0, 1, 8])),
        ("no boxes against 2 boxes", _boxes(), _boxes([0, 0, 1, 1], [0, 0, 2, 2])),
        ("2 boxes against no boxes", _boxes([0, 0, 1, 1], [0, 0, 2, 2]), _boxes()),
    ]  # fmt: skip
    out = []
    for text, a, b in cases:
        expected = _giou_reference(a, b)
        # The reference agrees with torchvision's on every case (none has a zero-area hull).
        assert torch.allclose(expected, torchvision.ops.generalized_box_iou(a, b))
        out.append(Case(text, (a, b), expected))
    return out


def _giou_with(boxes1: Tensor, boxes2: Tensor, penalty_over: str = "enclosing",
               subtract: str = "union", hull: str = "enclosing", clamp: bool = True) -> Tensor:
    """GIoU with one typical slip: what the penalty divides by, what it subtracts from the
    enclosing area, an "enclosing" box built like the intersection, or no clamp."""
    top_left, bottom_right, area1, area2 = _pairwise(boxes1, boxes2)
    size = bottom_right - top_left
    size = size.clamp(min=0) if clamp else size
    inter = size[..., 0] * size[..., 1]
    union = area1 + area2 - inter
    if hull == "enclosing":
        corners = (torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
                   - torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2]))  # fmt: skip
    else:
        corners = bottom_right - top_left
    enclosing = corners[..., 0] * corners[..., 1]
    covered = union if subtract == "union" else inter
    return inter / union - (enclosing - covered) / (enclosing if penalty_over == "enclosing"
                                                    else union)


_GIOU_MISTAKES = [
    Mistake(box_iou,
            "That is plain IoU. GIoU subtracts the share of the smallest enclosing box C that "
            "the union does not cover: IoU - (|C| - |A u B|) / |C|."),
    Mistake(lambda a, b: _giou_reference(a, b).clamp(min=0),
            "GIoU is negative for boxes that do not overlap (down to -1 for tiny boxes far "
            "apart): that is its point. Do not clamp the result."),
    Mistake(lambda a, b: 1 - _giou_reference(a, b),
            "1 - GIoU is the GIoU loss; return GIoU itself (1 for identical boxes)."),
    Mistake(lambda a, b: _giou_with(a, b, subtract="intersection"),
            "The penalty is the part of C outside the union, |C| - |A u B|, not |C| minus "
            "the intersection."),
    Mistake(lambda a, b: _giou_with(a, b, penalty_over="union"),
            "Divide the penalty by the area of the enclosing box C, not by the union."),
    Mistake(lambda a, b: _giou_with(a, b, hull="intersection"),
            "The enclosing box takes the smaller of the top-left corners and the larger of "
            "the bottom-right corners: the opposite of the intersection."),
    Mistake(lambda a, b: _giou_with(a, b, clamp=False),
            "When two boxes do not overlap, the intersection's width or height comes out "
            "negative. Clamp them at 0 (the enclosing box needs no clamp)."),
    Mistake(lambda a, b: _giou_reference(a, b).T,
            "The result needs one row per box of the first argument and one column per box "
            "of the second: shape [N, M]."),
]  # fmt: skip


def giou_check(fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Check a learner's ``fn(boxes1[N, 4], boxes2[M, 4]) -> Tensor[N, M]`` (xyxy GIoU),
    on the cases above and for a loop over boxes (it must run the same Python lines for
    2 x 3 and for 6 x 9 boxes)."""
    result = run_check("GIoU", fn, _giou_cases(), _GIOU_MISTAKES)
    if not result:
        return result
    generator = torch.Generator().manual_seed(1)

    def boxes(n: int) -> Tensor:
        corners = torch.rand(n, 2, 2, generator=generator, dtype=torch.float64).sort(dim=1)
        return torch.cat([corners.values[:, 0], corners.values[:, 1] + 0.01], dim=1)

    return loop_check("GIoU", fn, (boxes(2), boxes(3)), (boxes(6), boxes(9)), "boxes",
                      "compute the whole [N, M] table with broadcasting, as box_iou does.",
                      result)
