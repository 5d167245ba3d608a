"""COCO box AP, the same numbers as pycocotools' ``COCOeval`` (iouType "bbox"). Lesson 08.

101 recall points, averaged over ten IoU thresholds 0.50:0.05:0.95, at most 100 detections
per image and class, and also per object size (small < 32^2 pixels of area, medium < 96^2,
large). Crowd regions (``iscrowd``) are neither required nor penalized.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ._common import _flatten, _key, _pair_iou, _rank_in_groups, _same_key_pairs

__all__ = ["evaluate_coco", "COCO_AREA_RANGES"]

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


def _coco_match_readable(
    det_boxes: Tensor, det_rank: Tensor, det_key: Tensor,
    gt_boxes: Tensor, gt_crowd: Tensor, gt_ignore: Tensor, gt_key: Tensor,
) -> Tensor:  # fmt: skip
    """pycocotools' greedy matching (``COCOeval.evaluateImg``), written as it is there.

    For each (image, class), area range and IoU threshold: objects that count first, ignored
    ones after (stable); detections best score first. Each detection takes, among the objects
    not yet taken (a crowd region is never used up) with IoU >= the threshold, the one of
    highest IoU, the later one on ties; once it holds an object that counts, it stops before
    the ignored ones. Loops in Python: the reference :func:`_coco_match` is tested against.

    Args:
        det_rank: LongTensor[D], rank inside its (image, class). gt_ignore: BoolTensor[G, A].
    Returns:
        LongTensor[D, A, T]: the matched ground truth, or -1.
    """
    num_areas, num_thresholds = gt_ignore.shape[1], len(_COCO_IOU_THRESHOLDS)
    matched = torch.full((len(det_key), num_areas, num_thresholds), -1, dtype=torch.long)
    for key in det_key.unique().tolist():
        dets = (det_key == key).nonzero()[:, 0]
        dets = dets[det_rank[dets].argsort()]  # best score first
        gts = (gt_key == key).nonzero()[:, 0]
        if len(gts) == 0:
            continue
        pairs_det = det_boxes[dets].repeat_interleave(len(gts), dim=0)
        pairs_gt = gt_boxes[gts].repeat(len(dets), 1)
        ious = _pair_iou(pairs_det, pairs_gt, gt_crowd[gts].repeat(len(dets)))
        ious = ious.view(len(dets), len(gts)).tolist()
        crowd = gt_crowd[gts].tolist()
        for a in range(num_areas):
            ignore = gt_ignore[gts, a].tolist()
            order = sorted(range(len(gts)), key=lambda g: ignore[g])  # counted ones first
            for t, threshold in enumerate(_COCO_IOU_THRESHOLDS.tolist()):
                taken = [False] * len(gts)
                for d in range(len(dets)):
                    best, m = min(threshold, 1 - 1e-10), -1
                    for g in order:
                        if taken[g] and not crowd[g]:
                            continue
                        if m > -1 and not ignore[m] and ignore[g]:
                            break  # an object that counts beats every ignored one
                        if ious[d][g] < best:
                            continue
                        best, m = ious[d][g], g
                    if m > -1:
                        taken[m] = True
                        matched[dets[d], a, t] = gts[m]
    return matched


def _coco_match(
    det_boxes: Tensor, det_rank: Tensor, det_key: Tensor,
    gt_boxes: Tensor, gt_crowd: Tensor, gt_ignore: Tensor, gt_key: Tensor,
) -> Tensor:  # fmt: skip
    """:func:`_coco_match_readable`'s result, for every area range and threshold at once.

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


def _target_areas(targets: Sequence[Mapping[str, Tensor]], gt_boxes: Tensor) -> Tensor:
    """Tensor[G] (float64): each object's ``area`` where its target gives one, else its box's
    area; ``gt_boxes`` are all targets' boxes, concatenated (float64)."""
    box_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    if not any(t.get("area") is not None for t in targets):
        return box_area
    parts, start = [], 0
    for i, target in enumerate(targets):
        count = len(target["boxes"])
        given = target.get("area")
        if given is None:
            parts.append(box_area[start:start + count])
        else:
            if not isinstance(given, Tensor) or list(given.shape) != [count]:
                shape = list(given.shape) if isinstance(given, Tensor) else type(given).__name__
                raise ValueError(f"targets[{i}]['area'] must be a Tensor[{count}] (one area "
                                 f"per box, pixels^2), got {shape}")
            parts.append(given.detach().to("cpu", torch.float64))
        start += count
    return torch.cat(parts)


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
      that match nothing; an object's area is its target's ``area`` where given (COCO's
      annotation ``area``, the segment's), else its box's (x2 - x1) * (y2 - y1); a
      detection's is its box's;
    - a class counts in a mean only if it has an object that is not ignored.

    Args:
        predictions: per image, dict(boxes[N, 4] xyxy pixels, scores[N], labels[N]).
        targets: per image, dict(boxes[G, 4] xyxy pixels, labels[G]), optional iscrowd[G]
            and area[G] (pixels^2).
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


    def outside_range(a: Tensor) -> Tensor:  # [N] areas -> [N, A]
        return (a[:, None] < ranges[:, 0]) | (a[:, None] > ranges[:, 1])

    gt_crowd = flat.gt_flag
    gt_ignore = gt_crowd[:, None] | outside_range(_target_areas(targets, flat.gt_boxes))
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
