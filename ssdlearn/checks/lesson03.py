"""Self-check of lesson 03: encoding and the matching rule."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..boxes import box_iou, cxcywh_to_xyxy
from ..matching import encode, match
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["encode_check", "match_check"]


def _small_priors() -> Tensor:
    """A few default boxes (cxcywh) of different sizes and shapes."""
    return torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.5, 0.5, 0.4, 0.2], [0.7, 0.3, 0.1, 0.3],
                         [0.5, 0.5, 0.8, 0.8], [0.2, 0.8, 0.3, 0.3], [0.8, 0.8, 0.2, 0.2]],
                        dtype=torch.float64)  # fmt: skip


def _encode_with(matched: Tensor, priors: Tensor, variances=(0.1, 0.2),
                 centre_scale: str = "size", use_log: bool = True) -> Tensor:
    centres = (matched[:, :2] + matched[:, 2:]) / 2
    sizes = matched[:, 2:] - matched[:, :2]
    if centre_scale == "size":
        offsets = (centres - priors[:, :2]) / (priors[:, 2:] * variances[0])
    else:  # divided by the width for both coordinates
        offsets = (centres - priors[:, :2]) / (priors[:, 2:3] * variances[0])
    ratio = sizes / priors[:, 2:]
    scales = (ratio.log() if use_log else ratio - 1) / variances[1]
    return torch.cat([offsets, scales], dim=1)


_ENCODE_MISTAKES = [
    Mistake(lambda m, p: _encode_with(m, p, variances=(1.0, 1.0)),
            "Divide by the variances: 0.1 for the centre offsets, 0.2 for the log sizes."),
    Mistake(lambda m, p: _encode_with(m, p, variances=(0.2, 0.1)),
            "The variances are the other way round: 0.1 for centres, 0.2 for sizes."),
    Mistake(lambda m, p: _encode_with(m, p, centre_scale="width"),
            "Measure the y offset in units of the default box's height, not its width."),
    Mistake(lambda m, p: _encode_with(m, p, use_log=False),
            "The size targets are logarithms of the size ratios: log(w / d_w)."),
    Mistake(lambda m, p: (m - cxcywh_to_xyxy(p)) / 0.1,
            "Encode centre and size offsets: convert the matched corners to (cx, cy, w, h) first."),
]  # fmt: skip


def encode_check(fn: Callable[[Tensor, Tensor], Tensor]) -> CheckResult:
    """Check ``fn(matched_boxes[P, 4] xyxy, priors[P, 4] cxcywh) -> Tensor[P, 4]``
    with the original variances (0.1, 0.2)."""
    priors = _small_priors()
    exact = cxcywh_to_xyxy(priors)
    generator = torch.Generator().manual_seed(3)
    jitter = exact + 0.05 * torch.rand(exact.shape, generator=generator, dtype=torch.float64)
    jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2] + 0.01)
    cases = [
        ("boxes equal to their default boxes", (exact, priors)),
        ("boxes shifted and resized a little", (jitter, priors)),
        ("one box twice as wide as its default box",
         (cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, 0.8, 0.2]], dtype=torch.float64)),
          priors[1:2])),
    ]  # fmt: skip
    return run_check("Encode", fn, [Case(d, args, encode(*args)) for d, args in cases],
                     _ENCODE_MISTAKES)


def _labels_only(fn: Callable) -> Callable:
    return lambda *args: fn(*args)[0]


def _threshold_only(gt_boxes, gt_labels, priors, threshold):
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))
    best, index = iou.max(dim=0)
    return torch.where(best >= threshold, gt_labels[index], 0)


def _object_index_not_label(gt_boxes, gt_labels, priors, threshold):
    labels = match(gt_boxes, gt_labels, priors, threshold)[0]
    index = torch.zeros_like(labels)
    for g, label in enumerate(gt_labels.tolist()):
        index[labels == label] = g + 1
    return index


def _strictly_above(gt_boxes, gt_labels, priors, threshold):
    return match(gt_boxes, gt_labels, priors, threshold + 1e-9)[0]


_MATCH_MISTAKES = [
    Mistake(_threshold_only,
            "Each object must first get the default box it overlaps best, even when that "
            "overlap is below the threshold: otherwise small objects get no default box."),
    Mistake(_object_index_not_label,
            "Return class labels (gt_labels[object]), not the index of the matched object."),
    Mistake(_strictly_above,
            "A default box with IoU exactly equal to the threshold is a match (>=)."),
]  # fmt: skip


def match_check(fn: Callable[[Tensor, Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Check ``fn(gt_boxes[G, 4], gt_labels[G], priors[P, 4], threshold) -> labels[P]``."""
    priors = _small_priors()
    t = partial(torch.tensor, dtype=torch.float64)
    cases = [
        ("one object that overlaps one default box well",
         (t([[0.15, 0.15, 0.35, 0.35]]), torch.tensor([3]), priors, 0.5)),
        ("a small object no default box overlaps by 0.5",
         (t([[0.72, 0.72, 0.8, 0.8]]), torch.tensor([2]), priors, 0.5)),
        ("two objects of different classes",
         (t([[0.3, 0.4, 0.7, 0.6], [0.05, 0.65, 0.35, 0.95]]), torch.tensor([1, 4]), priors, 0.5)),
        ("a default box whose IoU equals the threshold (0.5 exactly)",
         (t([[0.25, 0.25, 0.75, 0.5]]), torch.tensor([5]),
          t([[0.5, 0.375, 0.5, 0.25], [0.5, 0.5, 0.5, 0.5], [0.125, 0.875, 0.25, 0.25]]), 0.5)),
        ("an image with no objects",
         (t([]).reshape(0, 4), torch.tensor([], dtype=torch.long), priors, 0.5)),
    ]  # fmt: skip
    reference = _labels_only(match)
    return run_check("Matching", fn, [Case(d, args, reference(*args)) for d, args in cases],
                     _MATCH_MISTAKES)
