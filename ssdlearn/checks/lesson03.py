"""Self-checks of lesson 03: encoding, the matching rule, and Caffe's bipartite matching step."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..anchors import SSD300_VOC, default_boxes
from ..boxes import box_iou, cxcywh_to_xyxy
from ..matching import encode, match
from ._loops import loop_check
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["encode_check", "match_check", "bipartite_check"]


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


# ---- Caffe's bipartite step (MatchBBox, match_type BIPARTITE) -----------------------------


def _greedy(iou: Tensor, highest_first: bool = True, drop_object: bool = True,
            zero_matches: bool = False) -> Tensor:
    """Each object's default box by a greedy pass over ``iou[G, P]``, -1 for none.

    The reference (all defaults) is Caffe's: repeatedly the highest remaining pair, ties to
    the lower index, then that object and that default box leave; pairs with IoU 0 never
    match. The flags give typical wrong versions: objects served in index order, an object
    that stays in the race after it is served, or IoU 0 counted as a match.
    """
    iou = torch.as_tensor(iou, dtype=torch.float64)
    num_objects, num_priors = iou.shape
    chosen = torch.full((num_objects,), -1, dtype=torch.long)
    if num_priors == 0:
        return chosen
    work = iou.clone()
    for step in range(num_objects if drop_object else num_objects * num_priors):
        if highest_first:
            g, p = divmod(int(work.flatten().argmax()), num_priors)
        else:
            g, p = step, int(work[step].argmax())
        if work[g, p] < 0 or (work[g, p] == 0 and not zero_matches):
            if highest_first:
                break
            continue
        chosen[g] = p
        work[:, p] = -1  # the default box is taken
        if drop_object:
            work[g] = -1  # the object is served
    return chosen


# The one about -1 first: on an object with no free box, argmax(dim=1) can give its output.
_BIPARTITE_MISTAKES = [
    Mistake(lambda iou: _greedy(iou, zero_matches=True),
            "A pair with IoU 0 is no match: an object whose free default boxes all have "
            "IoU 0 (or that finds none free, when G > P) gets -1, not 0 (a real index)."),
    Mistake(lambda iou: iou.argmax(dim=1) if iou.shape[1] else torch.full((len(iou),), -1),
            "Objects never share a default box: once a box is taken, take its column out of "
            "the race (e.g. set it to -1) before the next pick."),
    Mistake(lambda iou: _greedy(iou, highest_first=False),
            "Do not serve the objects in their order: each step takes the highest IoU left "
            "in the whole table, whichever object it belongs to."),
    Mistake(lambda iou: _greedy(iou, drop_object=False),
            "Once an object has its default box, take its row out of the race too: each "
            "object gets exactly one box."),
]  # fmt: skip


def _ssd300_iou(num_objects: int, seed: int) -> Tensor:
    """IoU of a few random objects with SSD300's 8,732 default boxes: [G, 8732]."""
    generator = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.rand(num_objects, 2, generator=generator, dtype=torch.float64)
    sizes = 0.05 + 0.4 * torch.rand(num_objects, 2, generator=generator, dtype=torch.float64)
    objects = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    return box_iou(objects, cxcywh_to_xyxy(default_boxes(SSD300_VOC, dtype=torch.float64)))


def bipartite_check(fn: Callable[[Tensor], Tensor]) -> CheckResult:
    """Check ``fn(iou[G, P]) -> LongTensor[G]``: the default box each object takes in Caffe's
    bipartite step (-1 for none); then that it runs the same Python lines for 40 and 80
    default boxes (no loop over default boxes; a loop over the objects is fine)."""
    t = partial(torch.tensor, dtype=torch.float64)
    crowded = _ssd300_iou(6, seed=0)
    crowded[:, 100:] = crowded[:, 100:].flip(0)  # neighbouring objects want the same boxes
    cases = [
        ("one object", t([[0.1, 0.6, 0.3]])),
        ("two objects whose best default box is the same", t([[0.6, 0.5, 0.1], [0.7, 0.2, 0.4]])),
        ("three objects in a chain", t([[0.5, 0.4, 0.1], [0.6, 0.5, 0.3], [0.0, 0.55, 0.45]])),
        ("equal IoUs (ties go to the lower index)", t([[0.5, 0.5, 0.2], [0.5, 0.5, 0.5]])),
        ("an object that overlaps no default box", t([[0.0, 0.0, 0.0], [0.3, 0.0, 0.5]])),
        ("an object whose only overlapping box is taken", t([[0.8, 0.0], [0.5, 0.0]])),
        ("more objects than default boxes (G > P)", t([[0.3, 0.6], [0.7, 0.2], [0.5, 0.5]])),
        ("an image with no objects (G = 0)", t([]).reshape(0, 5)),
        ("4 objects against SSD300's 8,732 default boxes", _ssd300_iou(4, seed=1)),
        ("6 objects against SSD300's default boxes, crowded", crowded),
    ]  # fmt: skip
    result = run_check("Bipartite", fn, [Case(d, (iou,), _greedy(iou)) for d, iou in cases],
                       _BIPARTITE_MISTAKES)
    if not result:
        return result
    few = _ssd300_iou(3, seed=2)[:, :40].contiguous()
    many = torch.cat([few, torch.zeros(3, 40, dtype=torch.float64)], dim=1)  # same picks
    return loop_check("Bipartite", fn, (few,), (many,), "default boxes",
                      "loop over the objects only (one pick per step); find the highest "
                      "pair of the whole [G, P] table with one tensor operation (argmax of "
                      "the flattened table, then divmod by P).", result)
