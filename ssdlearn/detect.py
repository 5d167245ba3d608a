"""Detection: from the network's raw outputs to a short list of boxes per image (lesson 08).

SSD predicts, for each of its P default boxes, 4 offsets and C class scores (background
included). At test time (section 3 of the paper) the original implementation:

1. decodes the offsets into boxes (:func:`ssdlearn.matching.decode`);
2. turns the class scores into probabilities with a softmax and drops the background;
3. keeps, class by class, the boxes whose probability exceeds a confidence threshold (0.01),
   at most the 400 best of them per class (Caffe's ``nms_param.top_k``; torchvision's
   ``topk_candidates``), so that the cost of NMS does not grow with the threshold;
4. runs non-maximum suppression (NMS) per class with Jaccard overlap 0.45, so that one
   object is reported once, by its best-scoring box;
5. keeps the 200 best detections per image.

:func:`nms` is the readable version of step 4 for the lesson; :func:`batched_nms` and
:func:`detect` use torchvision's compiled NMS. :func:`detect` handles a whole batch without
a Python loop over images or classes: one threshold and one top-k over the whole batch, and
every (image, class) pair is one NMS group, so boxes of different images or classes never
suppress each other. The NMS itself is not always one kernel call: on the CPU
:func:`detect` packs the groups into calls of about 3000 boxes, and
``torchvision.ops.batched_nms`` loops over the groups inside a call when the call has more
than 1000 boxes (CPU) or 25,000 boxes (GPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import Tensor

from .boxes import box_iou, check_boxes, to_pixels  # to_pixels: kept importable from here

__all__ = ["nms", "batched_nms", "detect", "to_pixels"]


def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_count(value: int | None, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_scored_boxes(boxes: Tensor, scores: Tensor) -> None:
    """Shapes and dtypes of an NMS input: boxes Tensor[N, 4], scores Tensor[N]."""
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
        shape = list(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must have shape [N, 4] (xyxy), got {shape}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be a floating-point tensor, got dtype {boxes.dtype}")
    if not isinstance(scores, Tensor) or list(scores.shape) != [boxes.shape[0]]:
        shape = list(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape [N] = [{boxes.shape[0]}], got {shape}")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got dtype {scores.dtype}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression, written to be read.

    Take the best-scoring box left, keep it, and remove every box that overlaps it by more
    than ``iou_threshold``; repeat until no box is left. Same result as
    ``torchvision.ops.nms`` (equal scores are taken in index order).

    Cost: the IoU matrix of all pairs is computed once, N^2 numbers of memory; then one loop
    step per *kept* box, each a pass over the boxes still left, so O(N * K) work and K small
    host syncs. Fine for a lesson; :func:`batched_nms` and :func:`detect` use torchvision's
    compiled kernel.

    Args:
        boxes: Tensor[N, 4] (xyxy).
        scores: Tensor[N].
        iou_threshold: a box whose IoU with a kept box is > this is suppressed.
    Returns:
        LongTensor[K]: indices of the kept boxes, best score first.
    """
    _check_scored_boxes(boxes, scores)
    check_boxes(boxes, "boxes", "xyxy")
    iou_threshold = _check_fraction(iou_threshold, "iou_threshold")
    order = scores.argsort(descending=True, stable=True)  # best first; ties by index
    iou = box_iou(boxes[order], boxes[order], check=False)  # [N, N], rows and columns by rank
    keep = []
    left = torch.arange(len(order), device=boxes.device)  # ranks not yet kept or removed
    while left.numel() > 0:
        best, rest = left[0], left[1:]
        keep.append(best)
        # The best box left survives; it removes the boxes that overlap it too much.
        left = rest[iou[best, rest] <= iou_threshold]
    if not keep:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return order[torch.stack(keep)]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes suppress only boxes with the same label.

    The fast path: ``torchvision.ops.batched_nms`` (compiled; on a CPU with many boxes it runs
    one NMS per label, otherwise it shifts each label's boxes far apart so that one NMS call
    cannot mix them). Same result as :func:`nms` run label by label.

    Args:
        boxes: Tensor[N, 4] (xyxy).
        scores: Tensor[N].
        labels: integer Tensor[N]: the group of each box (a class, or an image and a class).
        iou_threshold: a box whose IoU with a kept box of its group is > this is suppressed.
    Returns:
        LongTensor[K]: indices of the kept boxes, best score first.
    """
    _check_scored_boxes(boxes, scores)
    if not isinstance(labels, Tensor) or list(labels.shape) != [boxes.shape[0]]:
        shape = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must have shape [N] = [{boxes.shape[0]}], got {shape}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    iou_threshold = _check_fraction(iou_threshold, "iou_threshold")
    return torchvision.ops.batched_nms(boxes, scores.to(boxes.dtype), labels, iou_threshold)


# torchvision's CPU NMS kernel compares every kept box with every later box of the call, so
# one call over a batch's ~100k candidates is quadratic; and its batched_nms, above 4000
# coordinates (1000 boxes) on a CPU, loops over the groups, scanning all of the call's boxes
# for each. Whole groups packed into calls of about this many boxes bound both; 3000 measured
# no slower than 1000 or 500 (SSD300 outputs, batch 8, one thread).
_CPU_NMS_CHUNK = 3000


def _grouped_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS over many groups: one ``torchvision.ops.batched_nms`` call on a GPU
    (which itself loops over the groups above 25,000 boxes); on the CPU, one call per chunk
    of whole groups (a Python loop over about N / 3000 chunks, not over classes or images).
    Returns kept indices, best score first."""
    if boxes.device.type != "cpu" or len(boxes) <= _CPU_NMS_CHUNK:
        return torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)
    order = groups.argsort(stable=True)  # each group's boxes together
    sorted_groups = groups[order]
    first_of_group = torch.ones_like(sorted_groups, dtype=torch.bool)
    first_of_group[1:] = sorted_groups[1:] != sorted_groups[:-1]
    # Groups are packed by where they start: those starting in the same stretch of
    # _CPU_NMS_CHUNK boxes share a call (so a call can run over by its last group).
    group_start = torch.arange(len(order))[first_of_group]
    chunk = group_start // _CPU_NMS_CHUNK
    new_chunk = torch.ones_like(chunk, dtype=torch.bool)
    new_chunk[1:] = chunk[1:] != chunk[:-1]
    bounds = [*group_start[new_chunk].tolist(), len(order)]
    kept = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        index = order[start:end]
        kept.append(index[torchvision.ops.batched_nms(boxes[index], scores[index],
                                                      groups[index], iou_threshold)])
    kept = torch.cat(kept)
    return kept[scores[kept].argsort(descending=True, stable=True)]


def _top_k_per_group(groups: Tensor, scores: Tensor, k: int, num_groups: int) -> Tensor:
    """The (at most) ``k`` best-scoring entries of each group, without a loop over groups.

    Args:
        groups: LongTensor[M] in [0, num_groups); scores: Tensor[M].
    Returns:
        LongTensor: indices into the M entries, group by group, best score first in each.
    """
    order = scores.argsort(descending=True, stable=True)
    order = order[groups[order].argsort(stable=True)]  # by group; stable keeps score order
    sorted_groups = groups[order]
    counts = torch.bincount(sorted_groups, minlength=num_groups)
    starts = counts.cumsum(0) - counts
    # Rank of each entry inside its group: its position minus where the group starts.
    rank = torch.arange(len(order), device=groups.device) - starts[sorted_groups]
    return order[rank < k]


def _check_detect_inputs(loc: Tensor, conf: Tensor, priors: Tensor) -> None:
    for name, value in (("loc", loc), ("conf", conf), ("priors", priors)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if loc.ndim != 3 or loc.shape[-1] != 4:
        raise ValueError(f"loc must have shape [B, P, 4], got {list(loc.shape)}")
    if conf.ndim != 3:
        raise ValueError(f"conf must have shape [B, P, C] (class logits), got {list(conf.shape)}")
    if priors.ndim != 2 or priors.shape[-1] != 4:
        raise ValueError(f"priors must have shape [P, 4] (cxcywh), got {list(priors.shape)}")
    if conf.shape[:2] != loc.shape[:2]:
        raise ValueError(
            f"loc [B, P, 4] and conf [B, P, C] must agree on B and P, "
            f"got {list(loc.shape)} and {list(conf.shape)}"
        )
    if priors.shape[0] != loc.shape[1]:
        raise ValueError(
            f"priors must have one row per default box: P = {loc.shape[1]} in loc, "
            f"got {priors.shape[0]} priors"
        )
    if conf.shape[-1] < 2:
        raise ValueError(
            f"conf must have C >= 2 columns (background + at least one class), "
            f"got C = {conf.shape[-1]}"
        )


def detect(
    loc: Tensor,
    conf: Tensor,
    priors: Tensor,
    score_threshold: float = 0.01,
    nms_threshold: float = 0.45,
    top_k: int = 200,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    pre_nms_top_k: int | None = 400,
    clip: bool = False,
) -> list[dict[str, Tensor]]:
    """The paper's test-time pipeline on a batch: decode, softmax, threshold, the best
    ``pre_nms_top_k`` per class, NMS, the best ``top_k`` per image.

    Args:
        loc: Tensor[B, P, 4], predicted offsets (as ``encode`` makes them).
        conf: Tensor[B, P, C], class logits; column 0 is the background.
        priors: Tensor[P, 4] (cxcywh, normalized), the default boxes.
        score_threshold: keep a (box, class) only if its probability is > this.
        nms_threshold: IoU above which a box is suppressed by a better one of its class.
        top_k: detections kept per image, best first.
        variances: the same as for encoding.
        pre_nms_top_k: keep at most this many best candidates per image and class before
            NMS (400, as the original Caffe model and torchvision do), which bounds the work
            when many boxes pass the threshold. ``None`` keeps them all.
        clip: clamp the decoded boxes to the image, [0, 1], before NMS (torchvision's
            postprocessing does; the paper's code does not).
    Returns:
        One dict per image, with ``boxes`` Tensor[K, 4] (xyxy, normalized), ``scores``
        Tensor[K] (decreasing) and ``labels`` LongTensor[K] in 1..C-1, K <= top_k. An
        image without detections gets tensors with K = 0.
    """
    _check_detect_inputs(loc, conf, priors)
    score_threshold = _check_fraction(score_threshold, "score_threshold")
    nms_threshold = _check_fraction(nms_threshold, "nms_threshold")
    _check_count(top_k, "top_k")
    _check_count(pre_nms_top_k, "pre_nms_top_k", allow_none=True)
    # Imported on use: importing this module does not need matching (lesson 03).
    from .matching import decode

    batch, _, num_classes = conf.shape
    boxes = decode(loc, priors, variances, check=False)  # [B, P, 4] xyxy
    if clip:
        boxes = boxes.clamp(0, 1)
    scores = conf.softmax(dim=-1)[..., 1:].to(boxes.dtype)  # [B, P, C-1], background dropped

    # Every (image, box, class) above the threshold is a candidate; (image, class) is its
    # NMS group. One nonzero replaces the loops over images and classes.
    image, prior, cls = (scores > score_threshold).nonzero(as_tuple=True)
    groups = image * (num_classes - 1) + cls
    if pre_nms_top_k is not None:
        first = _top_k_per_group(groups, scores[image, prior, cls], pre_nms_top_k,
                                 batch * (num_classes - 1))  # fmt: skip
        image, prior, cls, groups = image[first], prior[first], cls[first], groups[first]
    cand_boxes, cand_scores = boxes[image, prior], scores[image, prior, cls]
    kept = _grouped_nms(cand_boxes, cand_scores, groups, nms_threshold)
    # The top_k best per image, image by image (the split below needs that order).
    kept = kept[_top_k_per_group(image[kept], cand_scores[kept], top_k, batch)]
    counts = torch.bincount(image[kept], minlength=batch).tolist()
    return [
        {"boxes": b, "scores": s, "labels": c + 1}  # +1: column 0 (background) was dropped
        for b, s, c in zip(
            cand_boxes[kept].split(counts), cand_scores[kept].split(counts),
            cls[kept].split(counts),
        )
    ]  # fmt: skip

