"""What VOC and COCO scoring share: checked, flattened inputs and IoU of (detection, object)
pairs. Lesson 08.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


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
