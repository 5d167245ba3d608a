"""PASCAL VOC average precision, as the devkit computes it (the paper's Table 1). Lesson 08.

For one class, rank every detection of the test set by score. Walking down the list, each
detection is a true positive if it finds a not yet found object of its class with IoU >= 0.5,
else a false positive; objects marked ``difficult`` are neither required nor penalized.
VOC2007's AP is the mean over recall r in {0, 0.1, ..., 1} of the best precision at recall
>= r (11 points); VOC2010+'s the area under that interpolated curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .._validate import check_fraction
from ._common import _as_curve, _flatten, _key, _pair_iou, _same_key_pairs

__all__ = ["voc_ap", "evaluate_voc"]


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
    check_fraction(iou_threshold, "iou_threshold", low_open=True)
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
