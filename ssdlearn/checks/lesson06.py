"""Self-check of lesson 06: the IoU-crop sampler's acceptance test.

The rule is the one :meth:`ssdlearn.augment.IoUCrop.sample_patch` applies to its candidate
patches (tests/test_checks_lesson06.py checks the two agree): a patch is accepted when some
object's IoU with it is at least ``min_iou`` *and* some object's centre lies strictly inside
it, not necessarily the same object. An image without objects has nothing to overlap: only
the unconstrained option (``min_iou <= 0``) accepts its patches.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..boxes import box_area, box_iou
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["accept_patches_check"]


def _centres_inside(boxes: Tensor, patches: Tensor, strict: bool = True) -> Tensor:
    """BoolTensor[P, G]: box g's centre inside patch p."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    low, high = patches[:, None, :2], patches[:, None, 2:]
    if strict:
        return ((centres[None] > low) & (centres[None] < high)).all(dim=-1)
    return ((centres[None] >= low) & (centres[None] <= high)).all(dim=-1)


def _accept(boxes: Tensor, patches: Tensor, min_iou: float, *, strict_centre: bool = True,
            strict_iou: bool = False, centre: str = "any", same_object: bool = False,
            overlap: str = "iou", empty_accepts: bool = True) -> Tensor:
    """BoolTensor[P]: the reference rule; keywords build the typical mistakes."""
    if len(boxes) == 0:
        return torch.full((len(patches),), empty_accepts and min_iou <= 0)
    iou = box_iou(patches, boxes, check=False)                           # [P, G]
    if overlap == "coverage":  # the fraction of each object inside the patch
        low = torch.maximum(patches[:, None, :2], boxes[None, :, :2])
        high = torch.minimum(patches[:, None, 2:], boxes[None, :, 2:])
        iou = (high - low).clamp(min=0).prod(dim=-1) / box_area(boxes)[None]
    enough = iou > min_iou if strict_iou else iou >= min_iou            # [P, G]
    inside = _centres_inside(boxes, patches, strict_centre)             # [P, G]
    if same_object:
        return (enough & inside).any(dim=1)
    if centre == "all":
        return enough.any(dim=1) & inside.all(dim=1)
    if centre == "ignored":
        return enough.any(dim=1)
    if centre == "all_iou":
        return enough.all(dim=1) & inside.any(dim=1)
    return enough.any(dim=1) & inside.any(dim=1)


_ACCEPT_MISTAKES = [
    Mistake(partial(_accept, strict_centre=False),
            "A centre exactly on the patch's edge is not inside it: the crop would keep the "
            "object as a box of zero width. Use strict comparisons for the centres."),
    Mistake(partial(_accept, strict_iou=True),
            "An overlap exactly equal to min_iou qualifies: the test is IoU >= min_iou."),
    Mistake(partial(_accept, centre="ignored"),
            "An overlap is not enough: the crop keeps only objects whose centre is inside "
            "the patch, so at least one centre must be, or the crop would have no object."),
    Mistake(partial(_accept, same_object=True),
            "The two conditions are separate: some object overlaps the patch enough, and some "
            "object (not necessarily the same one) has its centre inside it."),
    Mistake(partial(_accept, centre="all"),
            "One centre inside the patch is enough; the other objects are simply dropped by "
            "the crop."),
    Mistake(partial(_accept, centre="all_iou"),
            "The overlap is needed with at least one object, not with all of them."),
    Mistake(partial(_accept, overlap="coverage"),
            "The overlap is the Jaccard overlap (IoU: intersection over union), not the "
            "fraction of the object that lies inside the patch."),
    Mistake(partial(_accept, empty_accepts=False),
            "With no objects, the random-patch option (min_iou = 0) still accepts every "
            "patch; only a positive min_iou rejects them all."),
]  # fmt: skip


def accept_patches_check(fn: Callable[[Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Check ``fn(boxes[G, 4], patches[P, 4], min_iou) -> BoolTensor[P]``: which candidate
    patches the IoU-crop sampler accepts (boxes and patches xyxy, normalized)."""
    t = partial(torch.tensor, dtype=torch.float64)
    no_boxes = t([]).reshape(0, 4)
    around = t([[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.0, 1.0],
                [0.3, 0.3, 0.6, 0.6], [0.0, 0.6, 0.4, 1.0]])
    cases = [
        ("one object and five patches around it, min_iou 0.3",
         t([[0.3, 0.3, 0.6, 0.6]]), around, 0.3),
        ("the same with min_iou 0.9", t([[0.3, 0.3, 0.6, 0.6]]), around, 0.9),
        ("an overlap exactly equal to min_iou",
         t([[0.0, 0.0, 0.5, 0.5]]), t([[0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 0.5, 1.0]]), 0.5),
        ("one object overlaps enough but no centre is inside",
         t([[0.0, 0.0, 0.5, 1.0], [0.0, 0.8, 0.1, 0.9]]), t([[0.3, 0.0, 1.0, 1.0]]), 0.1),
        ("an object whose centre lies exactly on the patch's edge",
         t([[0.25, 0.25, 0.75, 0.75]]), t([[0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5]]), 0.1),
        ("two objects inside the patch, only one of them overlapping it enough",
         t([[0.05, 0.05, 0.45, 0.45], [0.4, 0.4, 0.45, 0.45]]), t([[0.0, 0.0, 0.5, 0.5]]), 0.5),
        ("one object in the patch, another far outside it",
         t([[0.05, 0.05, 0.45, 0.45], [0.7, 0.7, 0.9, 0.9]]), t([[0.0, 0.0, 0.5, 0.5]]), 0.5),
        ("one object overlaps enough, another has its centre inside",
         t([[0.0, 0.0, 0.5, 1.0], [0.8, 0.8, 0.9, 0.9]]), t([[0.3, 0.0, 1.0, 1.0]]), 0.1),
        ("a patch covering one of three objects, min_iou 0.5",
         t([[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9], [0.0, 0.5, 0.2, 1.0]]),
         t([[0.05, 0.05, 0.45, 0.45], [0.0, 0.0, 1.0, 1.0]]), 0.5),
        ("a small object inside a large patch: covered, but a low IoU",
         t([[0.4, 0.4, 0.5, 0.5]]), t([[0.2, 0.2, 0.8, 0.8]]), 0.1),
        ("the random-patch option (min_iou 0) with objects",
         t([[0.1, 0.1, 0.3, 0.3], [0.6, 0.1, 0.9, 0.4]]),
         t([[0.0, 0.0, 0.5, 0.5], [0.0, 0.5, 1.0, 1.0], [0.5, 0.0, 1.0, 0.5]]), 0.0),
        ("an image with no objects, min_iou 0.3", no_boxes, around, 0.3),
        ("an image with no objects, the random-patch option (min_iou 0)", no_boxes, around, 0.0),
        ("no candidate patches", t([[0.3, 0.3, 0.6, 0.6]]), no_boxes, 0.3),
    ]  # fmt: skip
    return run_check("Accept patches", fn,
                     [Case(d, (b, p, m), _accept(b, p, m)) for d, b, p, m in cases],
                     _ACCEPT_MISTAKES)
