"""Self-checks for the exercises.

A check runs the learner's function on a list of cases, edge cases included, and answers
with a :class:`CheckResult`: a pass, "not done yet" while the function still raises
``NotImplementedError``, or the first failing case with a hint. Hints come from typical
mistakes: when the learner's output on the failing case equals what a known wrong version
computes, the check names that mistake. It never prints the expected numbers.

Every lesson adds its checks here, written the same way: a list of :class:`Case`, a list of
:class:`Mistake`, and a call to :func:`run_check`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from .anchors import _cell_box_sizes
from .augment import crop_boxes
from .boxes import box_iou, cxcywh_to_xyxy
from .loss import hard_negative_mask
from .matching import encode, match
from .metrics import voc_ap

__all__ = [
    "Case", "Mistake", "CheckResult", "run_check",
    "iou", "cell_box_sizes", "encode_check", "match_check", "flatten_predictions",
    "crop_boxes_check", "hard_negatives_check", "lr_schedule_check", "voc07_ap_check",
]


@dataclass(frozen=True)
class Case:
    """One input for the learner's function, and the reference answer."""

    description: str
    args: tuple
    expected: Tensor


@dataclass(frozen=True)
class Mistake:
    """A typical wrong version of the function, and the hint to give when it is matched."""

    wrong: Callable
    hint: str


@dataclass(frozen=True)
class CheckResult:
    """What a check found. ``bool(result)`` is True when every case passed."""

    exercise: str
    passed: bool
    done: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def _as_tensor(value) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _agrees(got: Tensor, expected: Tensor, atol: float) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=atol))


def run_check(exercise: str, fn: Callable, cases: Sequence[Case],
              mistakes: Sequence[Mistake] = (), atol: float = 1e-5) -> CheckResult:
    """Run ``fn`` on every case; stop at the first that fails and explain it."""
    for case in cases:
        try:
            got = _as_tensor(fn(*case.args))
        except NotImplementedError:
            return CheckResult(exercise, False, False, f"{exercise}: not done yet.")
        except Exception as exc:  # the learner's code may raise anything; report it
            return CheckResult(
                exercise, False, True,
                f"{exercise}: ✗ on {case.description}, your function raised "
                f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
        expected = case.expected.to(torch.float64)
        if _agrees(got, expected, atol):
            continue
        if got.shape != expected.shape:
            problem = f"the result has shape {list(got.shape)}, expected {list(expected.shape)}"
        else:
            problem = "the values are wrong"
        hint = next(
            (m.hint for m in mistakes if _agrees(got, _as_tensor(m.wrong(*case.args)), atol)),
            "Work this case out on paper and compare it with what your function returns.",
        )
        message = f"{exercise}: ✗ on {case.description}: {problem}.\nHint: {hint}"
        return CheckResult(exercise, False, True, message)
    return CheckResult(exercise, True, True, f"{exercise}: ✓ all {len(cases)} cases pass.")


# ---------------------------------------------------------------------------------------
# Lesson 01: IoU of every pair of boxes
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Lesson 02: the boxes of one cell
# ---------------------------------------------------------------------------------------


def _reference_cell_sizes(s_k: float, s_next: float, ratios: Sequence[float]) -> Tensor:
    return torch.tensor(_cell_box_sizes(s_k, s_next, ratios), dtype=torch.float64)


def _cell_sizes_case(description: str, s_k: float, s_next: float, ratios: tuple) -> Case:
    return Case(description, (s_k, s_next, ratios), _reference_cell_sizes(s_k, s_next, ratios))


def _cell_sizes_swapped(s_k, s_next, ratios):
    return _reference_cell_sizes(s_k, s_next, ratios)[:, [1, 0]]


def _cell_sizes_without_sqrt(s_k, s_next, ratios):
    sizes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
    for a in ratios:
        sizes += [(s_k * a, s_k / a), (s_k / a, s_k * a)]
    return torch.tensor(sizes, dtype=torch.float64)


def _cell_sizes_arithmetic_extra(s_k, s_next, ratios):
    sizes = _reference_cell_sizes(s_k, s_next, ratios)
    sizes[1] = (s_k + s_next) / 2
    return sizes


def _cell_sizes_reciprocals_last(s_k, s_next, ratios):
    sizes = _reference_cell_sizes(s_k, s_next, ratios)
    pairs = range(len(ratios))
    order = [0, 1] + [2 + 2 * i for i in pairs] + [3 + 2 * i for i in pairs]
    return sizes[order]


def _cell_sizes_extra_last(s_k, s_next, ratios):
    sizes = _reference_cell_sizes(s_k, s_next, ratios)
    return torch.cat([sizes[:1], sizes[2:], sizes[1:2]])


_CELL_SIZE_MISTAKES = [
    Mistake(_cell_sizes_swapped,
            "For a ratio a > 1 the first box of the pair is wider than tall: "
            "w = s_k * sqrt(a), h = s_k / sqrt(a)."),
    Mistake(_cell_sizes_without_sqrt,
            "w / h must equal a while the area stays s_k²: that needs the square root of a."),
    Mistake(_cell_sizes_arithmetic_extra,
            "The extra square box uses the geometric mean of s_k and s_k+1, not the average."),
    Mistake(_cell_sizes_reciprocals_last,
            "Put each ratio next to its reciprocal: 2, 1/2, then 3, 1/3."),
    Mistake(_cell_sizes_extra_last,
            "The extra square box comes second, right after the box of scale s_k."),
]  # fmt: skip


def cell_box_sizes(fn: Callable[[float, float, Sequence[float]], Tensor]) -> CheckResult:
    """Check ``fn(s_k, s_next, ratios) -> Tensor[k, 2]``: (w, h) of one cell's boxes, in order."""
    cases = [
        _cell_sizes_case("conv7 of SSD300 (s_k = 0.2, s_k+1 = 0.37, ratios 2 and 3)",
                         0.2, 0.37, (2, 3)),
        _cell_sizes_case("conv4_3 (s_k = 0.1, s_k+1 = 0.2, ratio 2)", 0.1, 0.2, (2,)),
        _cell_sizes_case("a map with square boxes only (ratios ())", 0.5, 0.7, ()),
        _cell_sizes_case("the last map (s_k = 0.88, s_k+1 = 1.05, ratio 2)", 0.88, 1.05, (2,)),
    ]  # fmt: skip
    return run_check("Cell box sizes", fn, cases, _CELL_SIZE_MISTAKES)


# ---------------------------------------------------------------------------------------
# Lesson 04: from a predictor's output map to one row per default box
# ---------------------------------------------------------------------------------------


def _flatten_reference(head_output: Tensor, values_per_box: int) -> Tensor:
    batch = head_output.shape[0]
    return head_output.permute(0, 2, 3, 1).reshape(batch, -1, values_per_box)


def _flatten_without_permute(head_output: Tensor, values_per_box: int) -> Tensor:
    return head_output.reshape(head_output.shape[0], -1, values_per_box)


def _flatten_columns_first(head_output: Tensor, values_per_box: int) -> Tensor:
    return head_output.permute(0, 3, 2, 1).reshape(head_output.shape[0], -1, values_per_box)


def _flatten_values_outer(head_output: Tensor, values_per_box: int) -> Tensor:
    b, channels, h, w = head_output.shape
    k = channels // values_per_box
    grouped = head_output.reshape(b, values_per_box, k, h, w)  # channel = value * k + box
    return grouped.permute(0, 3, 4, 2, 1).reshape(b, -1, values_per_box)


_FLATTEN_MISTAKES = [
    Mistake(_flatten_without_permute,
            "A reshape alone mixes channels of different cells. Move the channels last "
            "first (permute), so each cell's k * values numbers are contiguous."),
    Mistake(_flatten_columns_first,
            "Cells must go row by row (y, then x), like the default boxes: "
            "[B, C, H, W] -> [B, H, W, C]."),
    Mistake(_flatten_values_outer,
            "Channels are grouped box by box: channels 0..3 are box 0's values, 4..7 box 1's."),
]  # fmt: skip


def flatten_predictions(fn: Callable[[Tensor, int], Tensor]) -> CheckResult:
    """Check ``fn(head_output[B, k*v, H, W], v) -> Tensor[B, H*W*k, v]`` in default-box order."""
    generator = torch.Generator().manual_seed(0)
    shapes = [("a 2x3 map with 2 boxes per cell, 4 offsets each", (1, 8, 2, 3), 4),
              ("a batch of 2 on a 3x3 map, 6 boxes, 21 class scores", (2, 126, 3, 3), 21),
              ("a 1x1 map with 4 boxes", (3, 16, 1, 1), 4),
              ("a 5x4 map with 3 boxes", (2, 12, 5, 4), 4)]
    cases = []
    for description, shape, values in shapes:
        head_output = torch.randn(shape, generator=generator, dtype=torch.float64)
        cases.append(Case(description, (head_output, values),
                          _flatten_reference(head_output, values)))
    return run_check("Flatten predictions", fn, cases, _FLATTEN_MISTAKES)


# ---------------------------------------------------------------------------------------
# Lesson 06: the boxes that survive a crop
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Lesson 03: encoding and the matching rule
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Lesson 05: hard negative mining
# ---------------------------------------------------------------------------------------


def _mine_over_batch(conf_loss: Tensor, labels: Tensor, ratio: float = 3) -> Tensor:
    negative = labels == 0
    keep = int(min(ratio * int((labels > 0).sum()), int(negative.sum())))
    scores = torch.where(negative, conf_loss, -float("inf")).flatten()
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[scores.argsort(descending=True)[:keep]] = True
    return mask.view_as(labels)


def _mine_including_positives(conf_loss: Tensor, labels: Tensor, ratio: float = 3) -> Tensor:
    rank = conf_loss.argsort(dim=1, descending=True).argsort(dim=1)
    keep = (ratio * (labels > 0).sum(dim=1, keepdim=True)).clamp(max=labels.shape[1])
    return (rank < keep) & (labels == 0)


def _mine_lowest_loss(conf_loss: Tensor, labels: Tensor, ratio: float = 3) -> Tensor:
    return hard_negative_mask(-conf_loss, labels, ratio)


_MINING_MISTAKES = [
    Mistake(_mine_over_batch,
            "Mine per image: each image keeps at most 3 negatives per positive of its own, "
            "so one crowded image does not take every negative of the batch."),
    Mistake(_mine_including_positives,
            "Rank only the negatives: give positives (and ignored boxes) the lowest score "
            "before sorting, so they do not take a negative's place."),
    Mistake(_mine_lowest_loss,
            "Keep the hardest negatives: the ones with the highest confidence loss."),
]  # fmt: skip


def hard_negatives_check(fn: Callable[[Tensor, Tensor, float], Tensor]) -> CheckResult:
    """Check ``fn(conf_loss[B, P], labels[B, P], ratio) -> BoolTensor[B, P]``."""
    generator = torch.Generator().manual_seed(5)

    def case(description: str, labels: list[list[int]]) -> Case:
        labels_t = torch.tensor(labels)
        loss = torch.rand(labels_t.shape, generator=generator, dtype=torch.float64)
        return Case(description, (loss, labels_t, 3),
                    hard_negative_mask(loss, labels_t, 3).to(torch.float64))

    cases = [
        case("one image, one positive among 9 boxes", [[0, 0, 2, 0, 0, 0, 0, 0, 0]]),
        case("two images with 1 and 3 positives",
             [[1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 2, 2, 0, 1, 0, 0, 0, 0, 0]]),
        case("more positives than negatives allow", [[1, 1, 1, 0, 0, 2]]),
        case("an image with no positives", [[0, 0, 0, 0, 0, 0], [0, 0, 3, 0, 0, 0]]),
        case("ignored boxes (label -1)", [[1, -1, -1, 0, 0, 0, 0, 0, 0, -1, 0]]),
    ]
    return run_check("Hard negatives", lambda *a: fn(*a).to(torch.float64), cases,
                     [Mistake(lambda *a, m=m: m.wrong(*a).to(torch.float64), m.hint)
                      for m in _MINING_MISTAKES])


# ---------------------------------------------------------------------------------------
# Lesson 08: VOC2007's 11-point average precision
# ---------------------------------------------------------------------------------------


def _ap_without_interpolation(recall: Tensor, precision: Tensor) -> float:
    points = torch.arange(11, dtype=torch.float64) / 10
    values = []
    for r in points:  # the precision at the first detection reaching recall r
        reached = (recall >= r).nonzero()
        values.append(float(precision[reached[0, 0]]) if len(reached) else 0.0)
    return sum(values) / 11


def _ap_ten_points(recall: Tensor, precision: Tensor) -> float:
    points = torch.arange(1, 11, dtype=torch.float64) / 10
    best = [float(torch.where(recall >= r, precision, 0.0).max()) for r in points]
    return sum(best) / 10


_AP_MISTAKES = [
    Mistake(_ap_without_interpolation,
            "Interpolate: at each recall level r, take the best precision at any recall >= r, "
            "not the precision where the curve first reaches r."),
    Mistake(_ap_ten_points, "VOC2007 uses 11 points, r = 0, 0.1, ..., 1.0 (0 included)."),
    Mistake(lambda r, p: voc_ap(r, p, use_07_metric=False),
            "That is VOC2010's area under the curve; VOC2007 averages 11 points."),
]  # fmt: skip


def voc07_ap_check(fn: Callable[[Tensor, Tensor], float]) -> CheckResult:
    """Check ``fn(recall[N], precision[N]) -> float``, VOC2007's 11-point AP."""
    t = partial(torch.tensor, dtype=torch.float64)
    cases = [
        ("a perfect detector", t([0.25, 0.5, 0.75, 1.0]), t([1.0, 1.0, 1.0, 1.0])),
        ("a false positive ranked first", t([0.0, 0.5, 1.0]), t([0.0, 0.5, 2 / 3])),
        ("a curve that never reaches recall 1", t([0.25, 0.45, 0.45, 0.65]),
         t([1.0, 1.0, 2 / 3, 0.8])),
        ("a zig-zag curve", t([0.1, 0.1, 0.3, 0.3, 0.5, 0.7, 0.7, 0.9]),
         t([1.0, 0.5, 0.67, 0.5, 0.56, 0.64, 0.58, 0.6])),
        ("no detections at all", t([]), t([])),
    ]
    return run_check("VOC07 AP", lambda r, p: torch.tensor(float(fn(r, p))),
                     [Case(d, (r, p), torch.tensor(voc_ap(r, p))) for d, r, p in cases],
                     [Mistake(lambda r, p, m=m: torch.tensor(float(m.wrong(r, p))), m.hint)
                      for m in _AP_MISTAKES])


# ---------------------------------------------------------------------------------------
# Lesson 07: the learning-rate schedule
# ---------------------------------------------------------------------------------------


def _schedule(step: int, lr: float, warmup_steps: int, milestones: Sequence[int], gamma: float,
              decay_during_warmup: bool = False, after_milestone: bool = False,
              warmup_from_zero: bool = False) -> float:
    if step < warmup_steps:
        ramp = step / warmup_steps if warmup_from_zero else (step + 1) / warmup_steps
        base = lr * ramp
        if not decay_during_warmup:
            return base
    else:
        base = lr
    passed = sum((step > m) if after_milestone else (step >= m) for m in milestones)
    return base * gamma**passed


_SCHEDULE_MISTAKES = [
    Mistake(partial(_schedule, warmup_from_zero=True),
            "Warmup starts at lr / warmup_steps on step 0, not at 0: a step with learning "
            "rate 0 is wasted."),
    Mistake(partial(_schedule, after_milestone=True),
            "The decay takes effect at the milestone step itself (step >= milestone)."),
]  # fmt: skip


def lr_schedule_check(fn: Callable[[int, float, int, Sequence[int], float], float]
                      ) -> CheckResult:
    """Check ``fn(step, lr, warmup_steps, milestones, gamma) -> float``: linear warmup to
    ``lr``, then multiplied by ``gamma`` at each milestone."""
    settings = [("the paper's VOC schedule", 1e-3, 500, (80_000, 100_000), 0.1),
                ("a short run with two decays", 0.02, 10, (30, 45), 0.5),
                ("no warmup", 0.1, 0, (5,), 0.1)]
    cases = []
    for description, lr, warmup, milestones, gamma in settings:
        steps = sorted({0, 1, max(warmup - 1, 0), warmup, *milestones,
                        *(m - 1 for m in milestones), milestones[-1] + 7})
        for step in steps:
            args = (step, lr, warmup, milestones, gamma)
            cases.append(Case(f"{description}, step {step}", args,
                              torch.tensor(_schedule(*args), dtype=torch.float64)))
    return run_check("Learning rate", lambda *a: torch.tensor(float(fn(*a))), cases,
                     [Mistake(lambda *a, m=m: torch.tensor(float(m.wrong(*a))), m.hint)
                      for m in _SCHEDULE_MISTAKES], atol=1e-12)
