"""Average precision: how PASCAL VOC and COCO score a detector.

For one class, rank every detection of the whole test set by score. Walking down the list,
each detection is a true positive (TP) if it finds a ground-truth object not found before,
with IoU above a threshold, and a false positive (FP) otherwise. After the first n detections:

    recall(n) = TP(n) / number of objects,      precision(n) = TP(n) / (TP(n) + FP(n))

Average precision (AP) summarizes the precision-recall curve; mAP is the mean over classes.

- VOC2007 (the paper's Table 1): the 11-point AP, the mean over recall r in {0, 0.1, ..., 1}
  of the best precision at recall >= r. VOC2010+: the area under that "interpolated" curve.
  IoU >= 0.5. Objects marked ``difficult`` are neither required nor penalized.
- COCO: 101 recall points, averaged over ten IoU thresholds 0.50:0.05:0.95, at most 100
  detections per image and class, and also per object size (small < 32^2 pixels of area,
  medium < 96^2, large). Crowd regions (``iscrowd``) are neither required nor penalized.

Inputs are one dict per image, boxes in pixels (xyxy, continuous coordinates, no "+1"):
predictions ``dict(boxes[N, 4], scores[N], labels[N])``, targets ``dict(boxes[G, 4],
labels[G])`` with optional ``difficult[G]`` (VOC) or ``iscrowd[G]`` (COCO) bool tensors.
Evaluation happens on the CPU in float64, whatever the inputs' device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["voc_ap", "evaluate_voc", "evaluate_coco", "COCO_AREA_RANGES"]

# pycocotools' area ranges (in pixels^2): an object is "small" if its area is in [0, 32^2].
COCO_AREA_RANGES = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
# Generated as pycocotools generates them, so that both compare the very same numbers.
_COCO_IOU_THRESHOLDS = torch.from_numpy(np.linspace(0.5, 0.95, 10))
_COCO_RECALL_POINTS = torch.from_numpy(np.linspace(0.0, 1.0, 101))
_COCO_MAX_DETECTIONS = 100


# ---- input -----------------------------------------------------------------------------


@dataclass
class _Flat:
    """All images' boxes in one tensor per field (float64 on the CPU), in input order."""

    det_boxes: Tensor  # [D, 4]
    det_scores: Tensor  # [D]
    det_labels: Tensor  # [D] long
    det_image: Tensor  # [D] long, index of the image
    gt_boxes: Tensor  # [G, 4]
    gt_labels: Tensor  # [G] long
    gt_image: Tensor  # [G] long
    gt_flag: Tensor  # [G] bool: difficult (VOC) or iscrowd (COCO)


def _field(item: Mapping, key: str, where: str, rows: int | None) -> Tensor:
    """``item[key]``, checked: boxes [N, 4] float, scores [N] float, labels/flags [N] int."""
    if key not in item:
        raise ValueError(f"{where} is missing {key!r} (has {sorted(item)})")
    value = item[key]
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
    if key == "boxes":
        if value.ndim != 2 or value.shape[-1] != 4:
            raise ValueError(
                f"{where}['boxes'] must have shape [N, 4] (xyxy, pixels), got {list(value.shape)}"
            )
        if not value.is_floating_point():
            raise TypeError(f"{where}['boxes'] must be floating point, got dtype {value.dtype}")
        return value
    if list(value.shape) != [rows]:
        raise ValueError(
            f"{where}[{key!r}] must have shape [{rows}] (one per box), got {list(value.shape)}"
        )
    if key == "scores":
        if not value.is_floating_point():
            raise TypeError(f"{where}['scores'] must be floating point, got dtype {value.dtype}")
    elif key == "labels":
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{where}['labels'] must be an integer tensor, got {value.dtype}")
    elif value.is_floating_point() or value.is_complex():  # difficult / iscrowd
        raise TypeError(f"{where}[{key!r}] must be a bool (or 0/1 integer) tensor, "
                        f"got {value.dtype}")  # fmt: skip
    return value


def _cat(tensors: list[Tensor], dtype: torch.dtype, shape: tuple[int, ...]) -> Tensor:
    if not tensors:
        return torch.empty(shape, dtype=dtype)
    return torch.cat([t.detach().to("cpu", dtype) for t in tensors])


def _check_values(boxes: Tensor, scores: Tensor | None, image: Tensor, name: str) -> None:
    """Finite values and x2 >= x1, y2 >= y1, checked once on the concatenated boxes."""
    bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2:] < boxes[:, :2]).any(dim=1)
    what = "finite xyxy with x2 >= x1 and y2 >= y1"
    if scores is not None:
        bad |= ~torch.isfinite(scores)
        what += ", and a finite score"
    if bad.any():
        row = int(bad.nonzero()[0])
        i = int(image[row])
        local = row - int((image < i).sum())
        raise ValueError(
            f"{name}[{i}]: box {local} must be {what}; got {boxes[row].tolist()}"
            + (f" with score {scores[row].item()}" if scores is not None else "")
        )


def _flatten(predictions: Sequence[Mapping], targets: Sequence[Mapping], flag: str) -> _Flat:
    for name, value in (("predictions", predictions), ("targets", targets)):
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be a list with one dict per image, "
                            f"got {type(value).__name__}")  # fmt: skip
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions and targets must have one dict per image each, "
            f"got {len(predictions)} and {len(targets)}"
        )
    det = {"boxes": [], "scores": [], "labels": [], "count": []}
    gt = {"boxes": [], "labels": [], "flag": [], "count": []}
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        for name, item in ((f"predictions[{i}]", pred), (f"targets[{i}]", target)):
            if not isinstance(item, Mapping):
                raise TypeError(f"{name} must be a dict, got {type(item).__name__}")
        boxes = _field(pred, "boxes", f"predictions[{i}]", None)
        det["boxes"].append(boxes)
        det["scores"].append(_field(pred, "scores", f"predictions[{i}]", len(boxes)))
        det["labels"].append(_field(pred, "labels", f"predictions[{i}]", len(boxes)))
        det["count"].append(len(boxes))
        boxes = _field(target, "boxes", f"targets[{i}]", None)
        gt["boxes"].append(boxes)
        gt["labels"].append(_field(target, "labels", f"targets[{i}]", len(boxes)))
        if target.get(flag) is not None:
            gt["flag"].append(_field(target, flag, f"targets[{i}]", len(boxes)))
        else:
            gt["flag"].append(torch.zeros(len(boxes), dtype=torch.bool))
        gt["count"].append(len(boxes))
    f64, long = torch.float64, torch.long
    images = torch.arange(len(targets))
    flat = _Flat(
        det_boxes=_cat(det["boxes"], f64, (0, 4)),
        det_scores=_cat(det["scores"], f64, (0,)),
        det_labels=_cat(det["labels"], long, (0,)),
        det_image=images.repeat_interleave(torch.tensor(det["count"], dtype=long)),
        gt_boxes=_cat(gt["boxes"], f64, (0, 4)),
        gt_labels=_cat(gt["labels"], long, (0,)),
        gt_image=images.repeat_interleave(torch.tensor(gt["count"], dtype=long)),
        gt_flag=_cat(gt["flag"], torch.bool, (0,)),
    )
    _check_values(flat.det_boxes, flat.det_scores, flat.det_image, "predictions")
    _check_values(flat.gt_boxes, None, flat.gt_image, "targets")
    return flat


# ---- shared steps ----------------------------------------------------------------------


def _rank_in_groups(sorted_groups: Tensor) -> Tensor:
    """Position of each entry inside its group, for a LongTensor[M] sorted by group."""
    if sorted_groups.numel() == 0:
        return sorted_groups.clone()
    counts = torch.bincount(sorted_groups)
    starts = counts.cumsum(0) - counts
    return torch.arange(len(sorted_groups)) - starts[sorted_groups]


def _same_key_pairs(det_key: Tensor, gt_key: Tensor) -> tuple[Tensor, Tensor]:
    """Every (detection, ground truth) pair with the same key (an image and a class).

    Returns:
        (det_index, gt_index), LongTensor[M] each: pairs detection by detection, and for one
        detection its ground truths in input order.
    """
    gt_order = gt_key.argsort(stable=True)
    sorted_keys = gt_key[gt_order]
    start = torch.searchsorted(sorted_keys, det_key, side="left")
    count = torch.searchsorted(sorted_keys, det_key, side="right") - start
    det_index = torch.arange(len(det_key)).repeat_interleave(count)
    offset = torch.arange(len(det_index)) - (count.cumsum(0) - count).repeat_interleave(count)
    return det_index, gt_order[start[det_index] + offset]


def _pair_iou(det: Tensor, gt: Tensor, crowd: Tensor | None = None) -> Tensor:
    """IoU of detection i with ground truth i: Tensor[M, 4] x Tensor[M, 4] -> Tensor[M].

    The same arithmetic as ``box_iou`` (and as pycocotools' C code), pair by pair. For a
    crowd region, the overlap is measured as intersection over the *detection's* area, as
    in pycocotools: a detection inside a crowd counts as covered by it.
    """
    size = (torch.minimum(det[:, 2:], gt[:, 2:]) - torch.maximum(det[:, :2], gt[:, :2]))
    inter = size.clamp(min=0).prod(dim=1)
    area_det = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    union = area_det + area_gt - inter
    if crowd is not None:
        union = torch.where(crowd, area_det, union)
    # No overlap means IoU 0, also for boxes of zero area (0 / 0).
    return torch.where(inter > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def _key(image: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
    """One integer per (image, class): the group a box belongs to. ``classes`` sorted."""
    return image * len(classes) + torch.searchsorted(classes, labels)


def _as_curve(values: Tensor | Sequence[float], name: str) -> Tensor:
    try:
        curve = torch.as_tensor(values, dtype=torch.float64).cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a 1-D sequence of numbers: {error}") from None
    if curve.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per detection), got {list(curve.shape)}")
    if not (torch.isfinite(curve) & (curve >= 0) & (curve <= 1)).all():
        raise ValueError(f"{name} must be finite and in [0, 1]")
    return curve


# ---- VOC -------------------------------------------------------------------------------


def voc_ap(
    recall: Tensor | Sequence[float],
    precision: Tensor | Sequence[float],
    use_07_metric: bool = True,
) -> float:
    """Average precision of one class from its precision-recall curve, VOC style.

    Args:
        recall: Tensor[N], non-decreasing: recall after each of the N ranked detections.
        precision: Tensor[N], precision after each detection.
        use_07_metric: True for VOC2007's 11-point AP, the mean over r in {0, 0.1, ..., 1}
            of the best precision at recall >= r (0 if recall never reaches r); False for
            VOC2010+'s area under the interpolated curve, where the precision at recall r
            is the best precision at any recall >= r.
    Returns:
        AP in [0, 1]; 0 for an empty curve.

    The 11 points are exactly k / 10. (The devkit's Python port uses
    ``np.arange(0, 1.1, 0.1)``, whose 0.30000000000000004 misses a recall of exactly 0.3.)
    """
    recall = _as_curve(recall, "recall")
    precision = _as_curve(precision, "precision")
    if recall.shape != precision.shape:
        raise ValueError(
            f"recall and precision must have the same length, "
            f"got {len(recall)} and {len(precision)}"
        )
    if (recall[1:] < recall[:-1]).any():
        raise ValueError("recall must be non-decreasing (detections ranked by score)")
    if use_07_metric:
        points = torch.arange(11, dtype=torch.float64) / 10
        reached = recall[None, :] >= points[:, None]  # [11, N]
        if len(recall) == 0:
            return 0.0
        best = torch.where(reached, precision[None, :], 0.0).amax(dim=1)  # [11]
        return float(best.sum() / 11)
    # Pad the curve to recall 0 and 1, then make precision non-increasing from the right:
    # the interpolated precision at r is the best precision at any recall >= r.
    mrec = torch.cat([recall.new_zeros(1), recall, recall.new_ones(1)])
    mpre = torch.cat([precision.new_zeros(1), precision, precision.new_zeros(1)])
    mpre = mpre.flip(0).cummax(0).values.flip(0)
    # Sum of rectangles: each recall step times the precision at its right end.
    return float(((mrec[1:] - mrec[:-1]) * mpre[1:]).sum())


def _check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def evaluate_voc(
    predictions: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> dict:
    """PASCAL VOC mean average precision, as the official devkit computes it.

    For each class, detections are ranked by score over all images (stable: equal scores
    keep the input order, image by image). Each detection looks at the ground truth of its
    class in its image that it overlaps most (the first one on ties). If that IoU is
    >= ``iou_threshold`` (the MATLAB devkit's rule; a match needs a positive overlap) and the
    object is difficult, the detection is ignored; if the object was already found by a
    better detection, it is a false positive; else a true positive. Below the threshold it
    is a false positive. Difficult objects are not counted in the number of positives.

    Args:
        predictions: per image, dict(boxes[N, 4] xyxy pixels, scores[N], labels[N]).
        targets: per image, dict(boxes[G, 4] xyxy pixels, labels[G]), optional difficult[G].
        iou_threshold: overlap a true positive needs, in (0, 1].
        use_07_metric: 11-point AP (VOC2007, the paper) or area under the curve (VOC2010+).
    Returns:
        dict with ``map`` (mean of ``ap_per_class``; NaN when no class has an object),
        ``ap_per_class`` {label: AP} for the classes with at least one non-difficult
        object (others are not averaged), ``num_positives`` {label: count}, and the curves
        ``precision`` and ``recall`` {label: Tensor[n]} over the class's ranked detections,
        ignored ones left out.
    """
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold must be a number, got {type(iou_threshold).__name__}")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    _check_bool(use_07_metric, "use_07_metric")
    flat = _flatten(predictions, targets, "difficult")
    difficult = flat.gt_flag
    # Only classes with a non-difficult object get an AP; no other detection can change one.
    classes, num_positives = torch.unique(flat.gt_labels[~difficult], return_counts=True)
    gt_keep = torch.isin(flat.gt_labels, classes)
    det_keep = torch.isin(flat.det_labels, classes)
    gt_boxes, gt_labels = flat.gt_boxes[gt_keep], flat.gt_labels[gt_keep]
    gt_image, difficult = flat.gt_image[gt_keep], difficult[gt_keep]
    det_boxes, det_scores = flat.det_boxes[det_keep], flat.det_scores[det_keep]
    det_labels, det_image = flat.det_labels[det_keep], flat.det_image[det_keep]
    num_dets, num_gts = len(det_scores), len(gt_labels)

    # Rank: class by class, best score first; equal scores keep the input order.
    order = det_scores.argsort(descending=True, stable=True)
    order = order[det_labels[order].argsort(stable=True)]
    rank = torch.empty(num_dets, dtype=torch.long)
    rank[order] = torch.arange(num_dets)

    # Each detection's best ground truth among those of its image and class. (The threshold
    # is > 0, so a match always has a positive overlap, as the devkit requires.)
    det_index, gt_index = _same_key_pairs(_key(det_image, det_labels, classes),
                                          _key(gt_image, gt_labels, classes))  # fmt: skip
    iou = _pair_iou(det_boxes[det_index], gt_boxes[gt_index])
    best_iou = torch.full((num_dets,), -1.0, dtype=torch.float64)
    best_iou.scatter_reduce_(0, det_index, iou, "amax")
    tie = iou == best_iou[det_index]
    best_gt = torch.full((num_dets,), num_gts, dtype=torch.long)
    best_gt.scatter_reduce_(0, det_index[tie], gt_index[tie], "amin")  # the first on ties

    hit = best_iou >= iou_threshold  # a detection without candidates has best_iou -1
    # best_gt is num_gts for a detection without candidates: pad so that it can index.
    ignored = hit & torch.cat([difficult, difficult.new_zeros(1)])[best_gt]
    claims = hit & ~ignored
    # Each detection only ever looks at its best ground truth, claimed or not, so the
    # greedy walk down the ranking reduces to: the best-ranked claim on an object wins.
    first = torch.full((num_gts + 1,), num_dets, dtype=torch.long)
    first.scatter_reduce_(0, best_gt[claims], rank[claims], "amin")
    tp = claims & (rank == first[best_gt])

    # Curves in rank order, ignored detections left out (they move neither TP nor FP).
    kept = order[~ignored[order]]
    tp, kept_labels = tp[kept], det_labels[kept]
    ends = torch.searchsorted(kept_labels, classes, side="right").tolist()
    result: dict = {"ap_per_class": {}, "num_positives": {}, "precision": {}, "recall": {}}
    start = 0
    for label, positives, end in zip(classes.tolist(), num_positives.tolist(), ends):
        tp_sum = tp[start:end].cumsum(0).double()
        fp_sum = (~tp[start:end]).cumsum(0).double()
        recall = tp_sum / positives
        precision = tp_sum / (tp_sum + fp_sum)
        result["ap_per_class"][label] = voc_ap(recall, precision, use_07_metric)
        result["num_positives"][label] = positives
        result["precision"][label], result["recall"][label] = precision, recall
        start = end
    aps = list(result["ap_per_class"].values())
    result["map"] = sum(aps) / len(aps) if aps else float("nan")
    return result


# ---- COCO ------------------------------------------------------------------------------


def _coco_match(
    det_boxes: Tensor, det_rank: Tensor, det_key: Tensor,
    gt_boxes: Tensor, gt_crowd: Tensor, gt_ignore: Tensor, gt_key: Tensor,
) -> Tensor:  # fmt: skip
    """pycocotools' greedy matching for every area range and IoU threshold at once.

    Within an (image, class), detections go best score first; each takes, among the ground
    truths still free (a crowd region is never used up) with IoU >= the threshold, the one
    of highest IoU (the last one on ties), preferring any object that is not ignored
    (crowd, or outside the area range) over an ignored one.

    The walk is sequential in the rank (a detection's choice depends on what better ones
    took), so we loop over ranks, at most 100, each step doing one detection of every
    (image, class) at once. Only pairs with IoU >= 0.5, the lowest threshold, can match, and
    a detection seldom has more than a few: each step walks a small table of them.

    Args:
        det_rank: LongTensor[D], rank inside its (image, class). gt_ignore: BoolTensor[G, A].
    Returns:
        LongTensor[D, A, T]: the matched ground truth, or -1.
    """
    num_areas, num_thresholds = gt_ignore.shape[1], len(_COCO_IOU_THRESHOLDS)
    thresholds = _COCO_IOU_THRESHOLDS.clamp(max=1 - 1e-10)  # as pycocotools
    matched = torch.full((len(det_key), num_areas, num_thresholds), -1, dtype=torch.long)
    det_index, gt_index = _same_key_pairs(det_key, gt_key)
    iou = _pair_iou(det_boxes[det_index], gt_boxes[gt_index], gt_crowd[gt_index])
    candidate = iou >= thresholds[0]
    det_index, gt_index, iou = det_index[candidate], gt_index[candidate], iou[candidate]
    if len(det_index) == 0:
        return matched

    # A table with one row per detection that has candidates: its ground truths (in input
    # order, -1 for padding) and their IoUs; rows sorted by rank.
    dets, per_det = torch.unique_consecutive(det_index, return_counts=True)
    row = torch.arange(len(dets)).repeat_interleave(per_det)
    slot = torch.arange(len(det_index)) - (per_det.cumsum(0) - per_det)[row]
    width = int(per_det.max())
    table_gt = torch.full((len(dets), width), -1, dtype=torch.long)
    table_gt[row, slot] = gt_index
    table_iou = torch.full((len(dets), width), -1.0, dtype=torch.float64)
    table_iou[row, slot] = iou
    by_rank = det_rank[dets].argsort(stable=True)
    dets, table_gt, table_iou = dets[by_rank], table_gt[by_rank], table_iou[by_rank]
    counts = torch.bincount(det_rank[dets]).tolist()

    taken = torch.zeros(len(gt_key), num_areas, num_thresholds, dtype=torch.bool)
    counted = (~gt_ignore).to(torch.int8)[:, :, None]  # [G, A, 1]: 1 counts, 0 is ignored
    area_grid = torch.arange(num_areas)[:, None].expand(num_areas, num_thresholds)
    threshold_grid = torch.arange(num_thresholds).expand(num_areas, num_thresholds)
    for d, g, o in zip(dets.split(counts), table_gt.split(counts), table_iou.split(counts)):
        if len(d) == 0:
            continue
        shape = (len(d), num_areas, num_thresholds)
        best = torch.full(shape, -1, dtype=torch.long)
        best_iou = torch.full(shape, -1.0, dtype=torch.float64)
        best_level = torch.full(shape, -1, dtype=torch.int8)  # -1: no match yet
        # Like pycocotools, walk the candidates in input order and keep the best so far: an
        # object that counts beats an ignored one (crowd, or outside the area range), then
        # the higher IoU, and on equal IoU the later one.
        for gt, value in zip(g.unbind(1), o.unbind(1)):
            valid = gt >= 0  # padding reads ground truth 0 and is masked out
            gt = gt.clamp(min=0)
            ok = (~taken[gt] | gt_crowd[gt, None, None]) & (value[:, None, None] >= thresholds)
            ok &= valid[:, None, None]
            level = counted[gt]  # [u, A, 1]
            value = value[:, None, None]
            better = ok & ((level > best_level) | ((level == best_level) & (value >= best_iou)))
            best = torch.where(better, gt[:, None, None], best)
            best_iou = torch.where(better, value, best_iou)
            best_level = torch.where(better, level, best_level)
        matched[d] = best
        hit = best >= 0
        taken[best[hit], area_grid.expand(shape)[hit], threshold_grid.expand(shape)[hit]] = True
    return matched


def evaluate_coco(
    predictions: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
) -> dict:
    """COCO box AP, the same numbers as pycocotools' ``COCOeval`` (iouType "bbox").

    Per class and area range: detections ranked by score over all images; matched greedily
    at each IoU threshold 0.50:0.05:0.95 (see pycocotools); precision interpolated at 101
    recall points. As in pycocotools:

    - at most the 100 best detections of each image *and class* are used;
    - a crowd region (``iscrowd``) can absorb any number of detections, overlap with it is
      intersection over the detection's area, and detections on it are ignored;
    - for an area range, objects outside it are ignored, and so are detections outside it
      that match nothing; areas are the boxes' (x2 - x1) * (y2 - y1);
    - a class counts in a mean only if it has an object that is not ignored.

    Args:
        predictions: per image, dict(boxes[N, 4] xyxy pixels, scores[N], labels[N]).
        targets: per image, dict(boxes[G, 4] xyxy pixels, labels[G]), optional iscrowd[G].
    Returns:
        dict with ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``map_small``,
        ``map_medium``, ``map_large``, as floats, -1.0 where no object counts (pycocotools'
        convention), and ``ap_per_class`` {label: AP@[.5:.95]} for the classes with objects.
    """
    flat = _flatten(predictions, targets, "iscrowd")
    classes = torch.unique(flat.gt_labels)
    det_keep = torch.isin(flat.det_labels, classes)  # other classes' detections count nowhere
    det_boxes, det_scores = flat.det_boxes[det_keep], flat.det_scores[det_keep]
    det_labels = flat.det_labels[det_keep]
    det_key = _key(flat.det_image[det_keep], det_labels, classes)
    gt_key = _key(flat.gt_image, flat.gt_labels, classes)

    # The 100 best detections per (image, class); equal scores keep the input order.
    order = det_scores.argsort(descending=True, stable=True)
    order = order[det_key[order].argsort(stable=True)]
    rank = _rank_in_groups(det_key[order])
    order, rank = order[rank < _COCO_MAX_DETECTIONS], rank[rank < _COCO_MAX_DETECTIONS]
    back = order.argsort()  # back to input order
    order, rank = order[back], rank[back]
    det_boxes, det_scores, det_labels = det_boxes[order], det_scores[order], det_labels[order]
    det_key = det_key[order]

    def area(boxes: Tensor) -> Tensor:
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    ranges = torch.tensor(list(COCO_AREA_RANGES.values()), dtype=torch.float64)  # [A, 2]

    def outside(boxes: Tensor) -> Tensor:  # [N, A]
        a = area(boxes)[:, None]
        return (a < ranges[:, 0]) | (a > ranges[:, 1])

    gt_crowd = flat.gt_flag
    gt_ignore = gt_crowd[:, None] | outside(flat.gt_boxes)  # [G, A]
    matched = _coco_match(det_boxes, rank, det_key,
                          flat.gt_boxes, gt_crowd, gt_ignore, gt_key)  # fmt: skip
    hit = matched >= 0  # [D, A, T]
    areas = torch.arange(len(ranges))[None, :, None]
    ignored = torch.where(hit, gt_ignore[matched.clamp(min=0), areas],
                          outside(det_boxes)[:, :, None])  # fmt: skip
    tp, fp = hit & ~ignored, ~hit & ~ignored

    # Rank per class over all images: best score first, equal scores by image then input
    # order (pycocotools' stable sorts do the same).
    order = det_scores.argsort(descending=True, stable=True)
    order = order[det_labels[order].argsort(stable=True)]
    tp = tp[order].permute(1, 2, 0).contiguous()  # [A, T, D]
    fp = fp[order].permute(1, 2, 0).contiguous()
    ends = torch.searchsorted(det_labels[order], classes, side="right").tolist()
    label_index = torch.searchsorted(classes, flat.gt_labels)
    num_positives = torch.zeros(len(classes), len(ranges), dtype=torch.long)
    num_positives.index_put_((label_index,), (~gt_ignore).long(), accumulate=True)  # [K, A]

    num_t, num_r = len(_COCO_IOU_THRESHOLDS), len(_COCO_RECALL_POINTS)
    precision = torch.full((num_t, num_r, len(classes), len(ranges)), -1.0, dtype=torch.float64)
    eps = float(np.spacing(1))
    start = 0
    for k, end in enumerate(ends):
        tp_sum = tp[:, :, start:end].cumsum(-1).double()  # [A, T, n]
        fp_sum = fp[:, :, start:end].cumsum(-1).double()
        start = end
        npig = num_positives[k]  # [A]
        recall = tp_sum / npig[:, None, None]
        prec = tp_sum / (fp_sum + tp_sum + eps)
        prec = prec.flip(-1).cummax(-1).values.flip(-1)  # interpolated: best at >= recall
        points = _COCO_RECALL_POINTS.expand(*recall.shape[:2], num_r).contiguous()
        at = torch.searchsorted(recall.contiguous(), points, side="left")  # [A, T, R]
        n = recall.shape[-1]
        q = prec.gather(-1, at.clamp(max=max(n - 1, 0))) if n else torch.zeros_like(points)
        q = torch.where(at < n, q, 0.0)  # a recall never reached has precision 0
        counted = npig > 0
        precision[:, :, k, counted] = q[counted].permute(1, 2, 0)

    def mean(values: Tensor) -> float:
        values = values[values > -1]
        return float(values.mean()) if values.numel() else -1.0

    result = {
        "map": mean(precision[..., 0]),
        "map_50": mean(precision[0, :, :, 0]),
        "map_75": mean(precision[5, :, :, 0]),
        "map_small": mean(precision[..., 1]),
        "map_medium": mean(precision[..., 2]),
        "map_large": mean(precision[..., 3]),
    }
    result["ap_per_class"] = {
        label: mean(precision[:, :, k, 0])
        for k, label in enumerate(classes.tolist()) if num_positives[k, 0] > 0
    }
    return result
