"""Error kinds of detections (Hoiem et al., as SSD's Fig. 3 uses them), and their shares.

Every detection of a test set gets one kind, the first that applies, with detections taken
best score first over the whole set (equal scores: input order, image by image):

- ``correct``: its class, IoU >= 0.5 with an object of its class that no better detection
  claimed. It claims the free one it overlaps most (on equal IoU, the first in input order).
- ``duplicate``: its class, IoU >= 0.5, but every such object already claimed.
- ``localization``: its class, 0.1 <= IoU < 0.5.
- ``similar``: IoU >= 0.1 with an object of another class in one of its ``similar`` groups.
- ``other``: IoU >= 0.1 with an object of another class.
- ``background``: IoU < 0.1 with every object.

Objects flagged ``difficult`` (VOC) or ``iscrowd`` (COCO) are neither required nor
penalized, as in the VOC and COCO metrics: a detection that is not ``correct`` but has
IoU >= 0.5 with a flagged object of its class is ``ignored``, a seventh kind that never
appears without flags and that the shares leave out. Flagged objects are never claimed,
and for the lower kinds (localization, similar, other) they count like any object.

Hoiem's tool counts duplicates as localization errors; here they keep their own kind, and
the figure draws them next to ``localization``.

Lesson 10 (diagnosing a detector) builds this and reads the figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..boxes import box_iou

__all__ = ["KINDS", "IGNORED", "FIG3_MULTIPLES", "detection_kinds", "kind_shares"]

KINDS = ("correct", "duplicate", "localization", "similar", "other", "background")
IGNORED = "ignored"
_CODES = (*KINDS, IGNORED)  # code i is _CODES[i]
# Fig. 3's x axis: the number of top-ranked detections, in units of the number of objects.
FIG3_MULTIPLES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
HIGH_IOU, LOW_IOU = 0.5, 0.1


# ---- input -------------------------------------------------------------------------------


def _tensor(item: Mapping, key: str, where: str, rows: int | None) -> Tensor:
    """``item[key]`` checked: boxes [N, 4] float xyxy, scores [N] finite, labels/flags [N]."""
    if key not in item:
        raise ValueError(f"{where} is missing {key!r} (has {sorted(item)})")
    value = item[key]
    name = f"{where}[{key!r}]"
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if key == "boxes":
        if value.ndim != 2:
            raise ValueError(f"{name} must have shape [N, 4] (xyxy, pixels), "
                             f"got {list(value.shape)}")  # fmt: skip
        if value.shape[-1] != 4:
            raise ValueError(f"{name} must have shape [N, 4] (xyxy, pixels), "
                             f"got {list(value.shape)}")  # fmt: skip
        if not value.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {value.dtype}")
        return value
    if list(value.shape) != [rows]:
        raise ValueError(f"{name} must have shape [{rows}] (one per box), got {list(value.shape)}")
    if key == "scores":
        if not value.is_floating_point():
            raise TypeError(f"{name} must be floating point, got dtype {value.dtype}")
    elif value.is_floating_point() or value.is_complex():
        raise TypeError(f"{name} must be an integer{' (or bool)' if key != 'labels' else ''} "
                        f"tensor, got {value.dtype}")  # fmt: skip
    elif key == "labels" and value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {value.dtype}")
    return value


def _check_lists(predictions: object, targets: object) -> None:
    for name, value in (("predictions", predictions), ("targets", targets)):
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be a list with one dict per image, "
                            f"got {type(value).__name__}")  # fmt: skip
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must have one dict per image each, "
                         f"got {len(predictions)} and {len(targets)}")  # fmt: skip


def _check_groups(similar: object) -> list[list[int]]:
    """``similar`` as lists of ints: a sequence of groups, each a sequence of labels."""
    if not isinstance(similar, Sequence) or isinstance(similar, (str, bytes)):
        raise TypeError(f"similar must be a sequence of groups of labels, e.g. [[1, 2], [3, 4]], "
                        f"got {type(similar).__name__}")  # fmt: skip
    groups = []
    for g, group in enumerate(similar):
        if isinstance(group, Tensor):
            group = group.tolist()
        if not isinstance(group, Sequence) or isinstance(group, (str, bytes)):
            raise TypeError(f"similar[{g}] must be a sequence of labels, got {group!r}")
        for label in group:
            if isinstance(label, bool) or not isinstance(label, int):
                raise TypeError(f"similar[{g}] must hold integer labels, got {label!r}")
        groups.append(list(group))
    return groups


# ---- the analysis ------------------------------------------------------------------------


@dataclass
class _Analysis:
    """Every detection of the set, flattened in input order (image by image)."""

    kind: Tensor  # [D] long, index into _CODES
    weak: Tensor  # [D] bool: claims an object at IoU >= 0.1 (for the weak recall)
    score: Tensor  # [D] float64
    label: Tensor  # [D] long
    counts: list[int]  # detections per image
    gt_label: Tensor  # [G] long, the objects that count (not flagged)


def _share_group(groups: list[list[int]], labels_a: Tensor, labels_b: Tensor) -> Tensor:
    """BoolTensor[M]: labels_a[i] and labels_b[i] are in one of the groups together."""
    if not groups:
        return torch.zeros(len(labels_a), dtype=torch.bool)
    members = torch.tensor([label for group in groups for label in group], dtype=torch.long)
    group_of = torch.arange(len(groups)).repeat_interleave(
        torch.tensor([len(group) for group in groups], dtype=torch.long))
    # membership[i, k]: label universe[i] is in group k, over every label that occurs.
    universe = torch.unique(torch.cat([labels_a, labels_b, members]))
    membership = torch.zeros(len(universe), len(groups), dtype=torch.bool)
    membership[torch.searchsorted(universe, members), group_of] = True
    a = membership[torch.searchsorted(universe, labels_a)]
    b = membership[torch.searchsorted(universe, labels_b)]
    return (a & b).any(dim=1)


def _greedy_claims(det: Tensor, gt: Tensor, iou: Tensor, group: Tensor, rank: Tensor,
                   num_dets: int, num_gts: int) -> Tensor:  # fmt: skip
    """Best score first, each detection claims its free candidate of highest IoU.

    Args:
        det, gt, iou: Tensor[M] each, the candidate pairs (same image and class, IoU above
            the threshold, object not flagged).
        group: LongTensor[D], the (image, class) of each detection; rank: LongTensor[D], its
            position in the global score order.
    Returns:
        LongTensor[D]: the claimed object, or -1.

    Claims only compete inside an (image, class), so the walk is sequential only in a
    detection's place among the candidates of its group: step r handles the r-th detection
    of every group at once.
    """
    claim = torch.full((num_dets,), -1, dtype=torch.long)
    if len(det) == 0:
        return claim
    # Pairs by detection, then highest IoU, then first object: a detection's first free
    # pair is the one it claims.
    order = gt.argsort(stable=True)
    order = order[iou[order].argsort(descending=True, stable=True)]
    order = order[det[order].argsort(stable=True)]
    det, gt = det[order], gt[order]
    candidates = torch.unique(det)
    by_rank = candidates[rank[candidates].argsort()]
    by_group = by_rank[group[by_rank].argsort(stable=True)]
    sorted_groups = group[by_group]
    _, per_group = torch.unique_consecutive(sorted_groups, return_counts=True)
    step = torch.empty(num_dets, dtype=torch.long)
    step[by_group] = torch.arange(len(by_group)) - (per_group.cumsum(0) - per_group
                                                    ).repeat_interleave(per_group)
    taken = torch.zeros(num_gts, dtype=torch.bool)
    pair_step = step[det]
    for r in range(int(pair_step.max()) + 1):
        now = (pair_step == r) & ~taken[gt]
        d, g = det[now], gt[now]
        if len(d) == 0:
            continue
        first = torch.ones(len(d), dtype=torch.bool)
        first[1:] = d[1:] != d[:-1]
        claim[d[first]] = g[first]
        taken[g[first]] = True
    return claim


def _check_values(boxes: Tensor, counts: list[int], name: str) -> None:
    """Finite xyxy with x2 >= x1 and y2 >= y1, checked once on all images' boxes."""
    bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2:] < boxes[:, :2]).any(dim=1)
    if bad.any():
        row = int(bad.nonzero()[0])
        ends = torch.tensor(counts).cumsum(0)
        i = int(torch.searchsorted(ends, torch.tensor(row), right=True))
        local = row - (int(ends[i - 1]) if i else 0)
        raise ValueError(f"{name}[{i}]['boxes'][{local}] must be finite xyxy with x2 >= x1 and "
                         f"y2 >= y1, got {boxes[row].tolist()}")  # fmt: skip


def _analyse(predictions: Sequence[Mapping[str, Tensor]],
             targets: Sequence[Mapping[str, Tensor]], similar: object) -> _Analysis:  # fmt: skip
    _check_lists(predictions, targets)
    groups = _check_groups(similar)
    f64, long = torch.float64, torch.long
    fields: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "scores", "labels", "gt_boxes",
                                                       "gt_labels", "flags")}  # fmt: skip
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        for name, item in ((f"predictions[{i}]", pred), (f"targets[{i}]", target)):
            if not isinstance(item, Mapping):
                raise TypeError(f"{name} must be a dict, got {type(item).__name__}")
        boxes = _tensor(pred, "boxes", f"predictions[{i}]", None)
        fields["boxes"].append(boxes.detach().to("cpu", f64))
        fields["scores"].append(
            _tensor(pred, "scores", f"predictions[{i}]", len(boxes)).detach().to("cpu", f64))
        fields["labels"].append(_tensor(pred, "labels", f"predictions[{i}]", len(boxes)).cpu())
        gt_boxes = _tensor(target, "boxes", f"targets[{i}]", None)
        fields["gt_boxes"].append(gt_boxes.detach().to("cpu", f64))
        fields["gt_labels"].append(_tensor(target, "labels", f"targets[{i}]", len(gt_boxes)).cpu())
        flag = torch.zeros(len(gt_boxes), dtype=torch.bool)
        for key in ("difficult", "iscrowd"):
            if target.get(key) is not None:
                flag |= _tensor(target, key, f"targets[{i}]", len(gt_boxes)).cpu().bool()
        fields["flags"].append(flag)

    def cat(key: str, dtype: torch.dtype, shape: tuple[int, ...] = (0,)) -> Tensor:
        return torch.cat(fields[key]).to(dtype) if fields[key] else torch.empty(shape, dtype=dtype)

    boxes, score, label = cat("boxes", f64, (0, 4)), cat("scores", f64), cat("labels", long)
    gt_boxes, gt_label, flag = cat("gt_boxes", f64, (0, 4)), cat("gt_labels", long), cat(
        "flags", torch.bool)
    counts = [len(b) for b in fields["boxes"]]
    gt_counts = torch.tensor([len(b) for b in fields["gt_boxes"]], dtype=long)
    _check_values(boxes, counts, "predictions")
    _check_values(gt_boxes, gt_counts.tolist(), "targets")
    if not torch.isfinite(score).all():
        row = int((~torch.isfinite(score)).nonzero()[0])
        raise ValueError(f"predictions: scores must be finite, detection {row} of the set "
                         f"has {score[row].item()}")  # fmt: skip
    num_dets, num_gts = len(score), len(gt_label)
    image = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts, dtype=long))

    # Every (detection, object) pair of the same image, and its IoU.
    per_det = gt_counts[image]
    det = torch.arange(num_dets).repeat_interleave(per_det)
    first_gt = (gt_counts.cumsum(0) - gt_counts)[image]
    gt = first_gt.repeat_interleave(per_det) + torch.arange(len(det)) - (
        per_det.cumsum(0) - per_det).repeat_interleave(per_det)
    iou = box_iou(boxes[det, None], gt_boxes[gt, None], check=False)[:, 0, 0]  # [M]
    same = label[det] == gt_label[gt]
    near = iou >= LOW_IOU

    def any_per_det(pair_mask: Tensor) -> Tensor:
        return torch.bincount(det[pair_mask], minlength=num_dets) > 0

    classes = torch.unique(label)
    group = image * max(len(classes), 1) + torch.searchsorted(classes, label)
    rank = torch.empty(num_dets, dtype=long)
    rank[score.argsort(descending=True, stable=True)] = torch.arange(num_dets)

    def claims(threshold: float) -> Tensor:
        pair = same & ~flag[gt] & (iou >= threshold)
        return _greedy_claims(det[pair], gt[pair], iou[pair], group, rank, num_dets, num_gts)

    strong_claim = claims(HIGH_IOU)
    similar_pair = ~same & near & _share_group(groups, label[det], gt_label[gt])
    # Lowest priority first: each line overwrites the kinds below it.
    kind = torch.full((num_dets,), _CODES.index("background"), dtype=long)
    for mask, name in ((any_per_det(~same & near), "other"),
                       (any_per_det(similar_pair), "similar"),
                       (any_per_det(same & near), "localization"),
                       (any_per_det(same & ~flag[gt] & (iou >= HIGH_IOU)), "duplicate"),
                       (any_per_det(same & flag[gt] & (iou >= HIGH_IOU)), IGNORED),
                       (strong_claim >= 0, "correct")):  # fmt: skip
        kind[mask] = _CODES.index(name)
    return _Analysis(kind=kind, weak=claims(LOW_IOU) >= 0, score=score, label=label,
                     counts=counts, gt_label=gt_label[~flag])


# ---- public ------------------------------------------------------------------------------


def detection_kinds(
    predictions: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    similar: Sequence[Sequence[int]] = (),
) -> list[list[str]]:
    """The error kind of every detection (see the module docstring for the rules).

    Args:
        predictions: per image, dict(boxes[N, 4] xyxy pixels, scores[N], labels[N]).
        targets: per image, dict(boxes[G, 4] xyxy pixels, labels[G]), optional bool
            ``difficult[G]`` / ``iscrowd[G]``.
        similar: groups of labels that are easy to confuse, e.g. ``[[3, 8, 12], [2, 6]]``.
    Returns:
        Per image, in the order of that image's predictions, each detection's kind: one of
        ``KINDS``, or ``"ignored"`` (only where targets flag objects).
    """
    analysis = _analyse(predictions, targets, similar)
    names = [_CODES[k] for k in analysis.kind.tolist()]
    out, start = [], 0
    for count in analysis.counts:
        out.append(names[start:start + count])
        start += count
    return out


def kind_shares(
    predictions: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    similar: Sequence[Sequence[int]] = (),
    labels: Sequence[int] | None = None,
    multiples: Sequence[float] = FIG3_MULTIPLES,
) -> dict:
    """Fig. 3's data: the share of each kind among the top-ranked detections as they grow.

    The detections (of the classes in ``labels``, or all) are ranked by score over the
    whole set, ``ignored`` ones left out. For each multiple m, the top
    ``n = max(1, round(m * num_objects))`` are taken (all of them when there are fewer),
    where ``num_objects`` counts the objects of those classes that are not flagged. Hoiem's
    tool ranks each class on its own and averages a group's classes; here a group's
    detections are ranked together (pass one label for one class).

    Args:
        predictions, targets, similar: as for :func:`detection_kinds`.
        labels: the classes to analyse (the kinds still look at every object).
        multiples: positive, increasing: the x axis in units of the number of objects.
    Returns:
        dict with ``multiples`` (list), ``num_objects`` (int), ``num_detections`` (list: n
        for each multiple), ``shares`` {kind: Tensor[T]} (fractions of the top n; they sum
        to 1 over ``KINDS``; NaN where n is 0), ``recall`` Tensor[T] (objects found at IoU
        >= 0.5 by the top n, as a fraction) and ``recall_weak`` (at IoU >= 0.1, duplicates
        not counted: the paper's dashed line).
    """
    multiples = _check_multiples(multiples)
    analysis = _analyse(predictions, targets, similar)
    keep = analysis.kind != _CODES.index(IGNORED)
    gt_label = analysis.gt_label
    if labels is not None:
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in labels):
            raise TypeError(f"labels must be a sequence of integer labels, got {labels!r}")
        chosen = torch.tensor(list(labels), dtype=torch.long)
        keep &= torch.isin(analysis.label, chosen)
        gt_label = gt_label[torch.isin(gt_label, chosen)]
    kind, weak, score = analysis.kind[keep], analysis.weak[keep], analysis.score[keep]
    order = score.argsort(descending=True, stable=True)
    kind, weak = kind[order], weak[order]
    num_objects, total = len(gt_label), len(kind)
    n = [min(max(1, round(m * num_objects)) if num_objects else 0, total) for m in multiples]
    # Cumulative counts of each kind after 0, 1, ..., total detections.
    onehot = torch.nn.functional.one_hot(kind, len(_CODES)).double()
    cumulative = torch.cat([torch.zeros(1, len(_CODES), dtype=torch.float64), onehot.cumsum(0)])
    at = cumulative[torch.tensor(n, dtype=torch.long)]  # [T, codes]
    size = torch.tensor(n, dtype=torch.float64)
    shares = {name: at[:, k] / size for k, name in enumerate(KINDS)}  # 0 / 0 is NaN
    weak_found = torch.cat([torch.zeros(1, dtype=torch.float64), weak.double().cumsum(0)])
    objects = float(num_objects) if num_objects else float("nan")
    return {"multiples": list(multiples), "num_objects": num_objects, "num_detections": n,
            "shares": shares, "recall": at[:, 0] / objects,
            "recall_weak": weak_found[torch.tensor(n, dtype=torch.long)] / objects}


def _check_multiples(multiples: object) -> list[float]:
    if not isinstance(multiples, Sequence) or isinstance(multiples, (str, bytes)) or not all(
            isinstance(m, (int, float)) and not isinstance(m, bool) for m in multiples):
        raise TypeError(f"multiples must be a sequence of numbers, got {multiples!r}")
    values = [float(m) for m in multiples]
    if not values or any(not m > 0 or m == float("inf") for m in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"multiples must be positive, finite and increasing, got {multiples!r}")
    return values
