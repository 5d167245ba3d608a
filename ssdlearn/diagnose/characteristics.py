"""AP and recall by object size and by aspect ratio (SSD's Fig. 4, after Hoiem et al.).

Within each class, objects are split by percentile of their box area (or of width / height):

    XS: bottom 10%   S: next 20%   M: middle 40%   L: next 20%   XL: top 10%

(for the aspect ratio: extra-tall, tall, medium, wide, extra-wide, from the smallest
width / height up). An object's percentile is its mid-rank, (rank + 1/2) / count, equal
values sharing one; so a class with a single object puts it in M.

For a bin, objects outside it are ignored, exactly as VOC ignores ``difficult`` objects: not
required, and a detection matched to one is neither a true nor a false positive. Every other
false positive still counts against the bin, which would make a bin holding 10% of a class's
objects look worse than one holding 40% for that reason alone. Hoiem's *normalized* AP
removes that: precision is computed as if every bin had the same number N of objects,

    P_N = R * N / (R * N + FP)        (R recall, FP false positives so far)

with N the mean number of objects per class. Both APs are reported; the figure draws AP_N,
as the paper's Fig. 4 does. AP is VOC2007's 11-point AP at IoU 0.5 (:mod:`ssdlearn.metrics`).

Lesson 10 (diagnosing a detector) reads these numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from ..metrics import evaluate_voc, voc_ap
from .kinds import _check_lists, _check_values, _tensor

__all__ = ["SIZE_BINS", "ASPECT_BINS", "BIN_PERCENTILES", "characteristic_bins",
           "ap_by_characteristic"]  # fmt: skip

SIZE_BINS = ("XS", "S", "M", "L", "XL")
ASPECT_BINS = ("XT", "T", "M", "W", "XW")
BIN_PERCENTILES = (10, 30, 70, 90)  # bin edges, in percent
_NAMES = {"size": SIZE_BINS, "aspect": ASPECT_BINS}


def _measure(boxes: Tensor, characteristic: str) -> Tensor:
    """Area, or width / height (inf for a box of zero height, 1 for a point)."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if characteristic == "size":
        return w * h
    ratio = w / h.clamp(min=torch.finfo(h.dtype).tiny)
    return torch.where(h > 0, ratio, torch.where(w > 0, torch.inf, 1.0))


def _percentile_bins(values: Tensor) -> Tensor:
    """LongTensor[n]: bin 0..4 of each value by its mid-rank percentile, exactly.

    With ``less`` values below and ``equal`` values equal, the percentile is
    (less + equal / 2) / n; compared with the edges in integers, 20 n p against 20 n e.
    """
    n = len(values)
    ordered = values.sort().values
    less = torch.searchsorted(ordered, values, side="left")
    equal = torch.searchsorted(ordered, values, side="right") - less
    scaled = 10 * (2 * less + equal)  # 20 * n * percentile
    edges = torch.tensor([n * e // 5 for e in BIN_PERCENTILES], dtype=torch.long)  # 20*n*e/100
    return torch.bucketize(scaled, edges, right=True)


def characteristic_bins(targets: Sequence[Mapping[str, Tensor]],
                        characteristic: str = "size") -> list[Tensor]:  # fmt: skip
    """Each object's bin, per class, by size or by aspect ratio.

    Args:
        targets: per image, dict(boxes[G, 4] xyxy pixels, labels[G]), optional
            ``difficult[G]`` / ``iscrowd[G]``.
        characteristic: ``"size"`` (box area) or ``"aspect"`` (width / height).
    Returns:
        Per image, LongTensor[G]: 0..4 indexing ``SIZE_BINS`` or ``ASPECT_BINS``; -1 for a
        flagged (difficult or crowd) object, which is in no bin and is never required.
    """
    if characteristic not in _NAMES:
        raise ValueError(f"characteristic must be 'size' or 'aspect', got {characteristic!r}")
    _check_lists(targets, targets)
    boxes_all, values, labels, flags, counts = [], [], [], [], []
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping):
            raise TypeError(f"targets[{i}] must be a dict, got {type(target).__name__}")
        boxes = _tensor(target, "boxes", f"targets[{i}]", None).detach().to("cpu", torch.float64)
        labels.append(_tensor(target, "labels", f"targets[{i}]", len(boxes)).cpu().long())
        flag = torch.zeros(len(boxes), dtype=torch.bool)
        for key in ("difficult", "iscrowd"):
            if target.get(key) is not None:
                flag |= _tensor(target, key, f"targets[{i}]", len(boxes)).cpu().bool()
        boxes_all.append(boxes)
        values.append(_measure(boxes, characteristic))
        flags.append(flag)
        counts.append(len(boxes))
    if not counts:
        return []
    _check_values(torch.cat(boxes_all), counts, "targets")
    value, label, flag = torch.cat(values), torch.cat(labels), torch.cat(flags)
    bins = torch.full((len(value),), -1, dtype=torch.long)
    for c in torch.unique(label[~flag]).tolist():  # a loop over classes, not boxes
        members = ((label == c) & ~flag).nonzero(as_tuple=True)[0]
        bins[members] = _percentile_bins(value[members])
    return list(bins.split(counts))


def _normalized_ap(precision: Tensor, recall: Tensor, positives: int, norm: float,
                   use_07_metric: bool) -> float:  # fmt: skip
    """AP_N from a class's curves: TP = R * positives, FP = rank - TP."""
    if len(recall) == 0:
        return 0.0
    tp = (recall * positives).round()  # exact counts again
    fp = torch.arange(1, len(recall) + 1, dtype=torch.float64) - tp
    tp_n = recall * norm
    return voc_ap(recall, tp_n / (tp_n + fp), use_07_metric)


def ap_by_characteristic(
    predictions: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    characteristic: str = "size",
    use_07_metric: bool = True,
) -> dict:
    """AP, normalized AP and recall of each class in each size (or aspect-ratio) bin.

    Args:
        predictions: per image, dict(boxes[N, 4] xyxy pixels, scores[N], labels[N]).
        targets: per image, dict(boxes[G, 4] xyxy pixels, labels[G]), optional flags.
        characteristic: ``"size"`` or ``"aspect"``.
        use_07_metric: VOC2007's 11-point AP (the paper) or VOC2010+'s area.
    Returns:
        dict with ``characteristic``, ``bins`` (the five names, then ``"all"``),
        ``classes`` (list of labels with objects), ``normalized_count`` (N), and
        Tensor[K, 6] ``ap``, ``ap_n``, ``recall`` (NaN where a class has no object in a
        bin) and ``num_objects``; column 5 is every object of the class. ``mean_ap``,
        ``mean_ap_n``, ``mean_recall``: Tensor[6], the mean over the classes with objects.
    """
    bins = characteristic_bins(targets, characteristic)
    _check_lists(predictions, targets)
    flagged = [b < 0 for b in bins]
    all_labels = [torch.empty(0, dtype=torch.long)]  # counted objects' labels
    all_labels += [t["labels"].cpu().long()[~f] for t, f in zip(targets, flagged)]
    classes = torch.unique(torch.cat(all_labels))
    num_bins = len(_NAMES[characteristic]) + 1
    shape = (len(classes), num_bins)
    ap = torch.full(shape, float("nan"), dtype=torch.float64)
    ap_n, recall = ap.clone(), ap.clone()
    num_objects = torch.zeros(shape, dtype=torch.long)
    norm = sum(len(v) for v in all_labels) / max(len(classes), 1)
    for b in range(num_bins):
        # Column num_bins - 1 is "all": only the flagged objects are ignored.
        binned = [{"boxes": t["boxes"], "labels": t["labels"],
                   "difficult": (f if b == num_bins - 1 else (bb != b)).to(t["labels"].device)}
                  for t, f, bb in zip(targets, flagged, bins)]  # fmt: skip
        result = evaluate_voc(predictions, binned, use_07_metric=use_07_metric)
        for label, value in result["ap_per_class"].items():
            k = int(torch.searchsorted(classes, torch.tensor(label)))
            positives = result["num_positives"][label]
            curve_r, curve_p = result["recall"][label], result["precision"][label]
            ap[k, b] = value
            ap_n[k, b] = _normalized_ap(curve_p, curve_r, positives, norm, use_07_metric)
            recall[k, b] = float(curve_r[-1]) if len(curve_r) else 0.0
            num_objects[k, b] = positives
    return {"characteristic": characteristic, "bins": [*_NAMES[characteristic], "all"],
            "classes": classes.tolist(), "normalized_count": norm,
            "ap": ap, "ap_n": ap_n, "recall": recall, "num_objects": num_objects,
            "mean_ap": ap.nanmean(0), "mean_ap_n": ap_n.nanmean(0),
            "mean_recall": recall.nanmean(0)}
