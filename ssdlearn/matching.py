"""Matching ground truth to default boxes, and encoding the regression targets. Lesson 03.

Training needs, for every default box (prior), a class label and a box to regress to. The
paper's rule (section 2.2):

1. Each ground-truth object first takes the default box it overlaps best (as in MultiBox),
   so that no object is left without a default box.
2. Then every default box whose best IoU over the objects is at least the threshold (0.5)
   takes that object too. Several default boxes may predict one object.

Every other default box is background (label 0). Its matched box is still filled in (with
its best-overlapping object, or its own box when the image has no objects) so that
:func:`encode` stays finite everywhere; the loss never looks at it.

Three rules settle the cases the paper leaves open; they hold on CPU and CUDA alike:

- Ties in IoU go to the lowest index: an object's best default box is the first of equal
  best ones, a default box's best object is the first of equal best ones
  (``torch.max`` returns the first maximal index).
- When two objects share the same best default box, the **later object in the list wins**
  it, as in the Caffe-derived PyTorch ports (amdegroot's ssd.pytorch loops over the objects
  writing ``best_truth_idx[best_prior_idx[j]] = j``). The earlier object keeps only the
  default boxes it wins by the threshold rule, and may then have none. The assignment is a
  ``scatter_reduce`` "amax" over the object index, not an indexed write with repeated
  indices, whose winner PyTorch does not define (on CUDA it may vary between runs).
- An object that overlaps no default box at all (best IoU 0, e.g. a zero-area box) is not
  forced onto a default box: a match with IoU 0 is no match.

:func:`encode` turns matched boxes into the offsets the network regresses (the paper's
l-hat, divided by the "variances" of the original code); :func:`decode` inverts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _scratch
from ._validate import check_fraction, check_labels
from .boxes import check_boxes, cxcywh_to_xyxy

__all__ = ["match", "match_batch", "encode", "decode"]

# Smallest width/height encode takes the log of, in image units: far below a pixel for any
# real image, so only degenerate (zero-size) boxes are changed.
_MIN_SIZE = 1e-6


def match(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    priors: Tensor,
    iou_threshold: float = 0.5,
    *,
    check: bool = True,
    return_index: bool = False,
    best_box: bool = True,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Match the objects of one image to the default boxes (the paper's rule).

    Args:
        gt_boxes: Tensor[G, 4] (xyxy, normalized); G may be 0.
        gt_labels: LongTensor[G], classes 1..C-1.
        priors: Tensor[P, 4] (cxcywh, normalized), e.g. ``default_boxes(SSD300_VOC)``.
        iou_threshold: a default box whose best IoU is >= this takes that object.
        check: validate the values (finite, x2 >= x1, labels >= 1); needs a device sync.
        best_box: step 1 (each object takes its best default box). ``False`` keeps only
            the threshold rule: an object no default box overlaps by ``iou_threshold`` then
            gets no match at all (the ablation of lesson 11).
    Returns:
        labels: LongTensor[P], the matched object's class, 0 for background.
        matched_boxes: Tensor[P, 4] (xyxy), the matched object's box. Background default
        boxes get their best-overlapping object (their own box if G == 0).
        index: only with ``return_index=True``, LongTensor[P]: the row of ``gt_boxes``
        each default box is matched to, -1 for background (torchvision's ``SSDMatcher``
        convention). Where ``index >= 0``, ``labels == gt_labels[index]`` and
        ``matched_boxes == gt_boxes[index]``.
    Ties: see the module docstring (lowest index on equal IoU; later object wins a shared
    best default box; an object with IoU 0 everywhere is not forced).
    """
    _check_gt_boxes(gt_boxes, "[G, 4]", check)
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[:1], "one label per ground-truth box")
    _check_priors(priors, check)
    check_fraction(iou_threshold, "iou_threshold")
    if check and gt_labels.numel() and not (gt_labels >= 1).all():
        raise ValueError("gt_labels must be object classes >= 1 (0 is background)")

    priors_xyxy = cxcywh_to_xyxy(priors.to(gt_boxes), check=False)  # [P, 4]
    num_priors = priors.shape[0]
    if gt_boxes.shape[0] == 0:  # no objects: everything is background
        labels = torch.zeros(num_priors, dtype=torch.long, device=gt_boxes.device)
        if return_index:
            return labels, priors_xyxy, labels - 1
        return labels, priors_xyxy

    iou = _iou_with_priors(gt_boxes, priors_xyxy, reuse=True)  # [G, P], as box_iou
    best_iou, best_gt = iou.max(dim=0)  # [P]: each default box's best object
    best_prior_iou, best_prior = iou.max(dim=1)  # [G]: each object's best default box

    # Step 1: each object takes its best default box. Where objects share one, the max
    # object index (the later object) wins; -1 means "not forced".
    objects = torch.arange(gt_boxes.shape[0], device=iou.device)
    objects = torch.where(best_prior_iou > 0, objects, -1)
    forced = torch.full((num_priors,), -1, dtype=torch.long, device=iou.device)
    if best_box:
        forced.scatter_reduce_(0, best_prior, objects, reduce="amax")

    # Step 2: the threshold rule, for the default boxes step 1 left alone.
    assigned = torch.where(forced >= 0, forced, best_gt)  # [P]
    positive = (forced >= 0) | (best_iou >= iou_threshold)
    labels = torch.where(positive, gt_labels[assigned], 0)
    if return_index:
        return labels, gt_boxes[assigned], torch.where(positive, assigned, -1)
    return labels, gt_boxes[assigned]


def match_batch(
    gt_boxes: Tensor,
    gt_labels: Tensor,
    priors: Tensor,
    iou_threshold: float = 0.5,
    *,
    check: bool = True,
    return_index: bool = False,
    best_box: bool = True,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """:func:`match` for a padded batch of images at once, with no loop and no device sync.

    Args:
        gt_boxes: Tensor[B, G, 4] (xyxy, normalized), G the most objects in an image; the
            padding rows may hold any valid box (zeros, say).
        gt_labels: LongTensor[B, G], classes 1..C-1, and -1 on padding rows, which are
            ignored entirely.
        priors: Tensor[P, 4] (cxcywh, normalized).
        iou_threshold: as in :func:`match`.
        check: validate the values first (needs a device sync; pass False on a hot path).
        best_box: as in :func:`match`.
    Returns:
        labels: LongTensor[B, P]; matched_boxes: Tensor[B, P, 4] (xyxy); with
        ``return_index=True`` also index: LongTensor[B, P], the object (0..G-1, never a
        padding row) each default box is matched to, -1 for background. Image b gives
        exactly ``match(its real boxes, its real labels, priors)``.
    """
    _check_gt_boxes(gt_boxes, "[B, G, 4]", check)
    check_labels(gt_labels, "gt_labels", gt_boxes.shape[:2], "one label per ground-truth box")
    _check_priors(priors, check)
    check_fraction(iou_threshold, "iou_threshold")
    if check and gt_labels.numel() and not ((gt_labels >= 1) | (gt_labels == -1)).all():
        raise ValueError("gt_labels must be object classes >= 1, or -1 on padding rows")

    batch, num_objects = gt_boxes.shape[:2]
    priors_xyxy = cxcywh_to_xyxy(priors.to(gt_boxes), check=False)  # [P, 4]
    num_priors = priors.shape[0]
    if num_objects == 0:  # a batch of images with no objects (a shape, so no sync)
        labels = gt_labels.new_zeros((batch, num_priors))
        if return_index:
            return labels, priors_xyxy.expand(batch, -1, -1).clone(), labels - 1
        return labels, priors_xyxy.expand(batch, -1, -1).clone()

    valid = gt_labels >= 0  # [B, G]
    iou = _iou_with_priors(gt_boxes, priors_xyxy, reuse=True)  # [B, G, P], once
    # Padding rows go down by 2, below every real object's IoU (in [0, 1]), so they never
    # win a max over objects (unless the image has none, handled at the end), never pass
    # the threshold and are never forced (IoU > 0).
    iou.add_(torch.where(valid, 0.0, -2.0).to(iou.dtype)[..., None])
    best_prior_iou, best_prior = iou.max(dim=2)  # [B, G]: each object's best default box
    best_iou = iou.amax(dim=1, keepdim=True)  # [B, 1, P]: each default box's best object...
    best_gt = _first_argmax_(iou, best_iou, dim=1)  # ...and which; iou is used up here
    best_iou = best_iou.squeeze(1)

    # Step 1, as in match: the later object wins a shared best default box. Padding rows
    # (IoU < 0) and objects overlapping nothing (IoU 0) scatter -1, which forces nothing.
    objects = torch.arange(num_objects, device=iou.device).expand(batch, -1)
    objects = torch.where(best_prior_iou > 0, objects, -1)
    forced = torch.full((batch, num_priors), -1, dtype=torch.long, device=iou.device)
    if best_box:
        forced.scatter_reduce_(1, best_prior, objects, reduce="amax")

    # Step 2: the threshold rule.
    is_forced = forced >= 0
    positive = is_forced | (best_iou >= iou_threshold)
    assigned = torch.where(is_forced, forced, best_gt)  # [B, P]
    index = torch.where(positive, assigned, -1) if return_index else None
    # Gather by row number from one table of boxes, the B * G objects then the P default
    # boxes: an image with no objects takes its default boxes' own boxes (encode gives 0).
    rows = assigned.add_(torch.arange(batch, device=iou.device)[:, None] * num_objects)
    labels = gt_labels.take(rows).masked_fill_(~positive, 0)  # [B, P]
    own = batch * num_objects + torch.arange(num_priors, device=iou.device)  # [P]
    rows = torch.where(valid.any(dim=1, keepdim=True), rows, own)
    table = torch.cat([gt_boxes.reshape(-1, 4), priors_xyxy])  # [B * G + P, 4]
    matched = table.index_select(0, rows.view(-1)).view(batch, num_priors, 4)
    if return_index:
        return labels, matched, index
    return labels, matched


def encode(
    matched_boxes: Tensor,
    priors: Tensor,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    check: bool = True,
) -> Tensor:
    """The regression targets: matched boxes as offsets from their default boxes.

    ``g_cx = (cx - d_cx) / (d_w * v0)``, ``g_cy = (cy - d_cy) / (d_h * v0)``,
    ``g_w = log(w / d_w) / v1``, ``g_h = log(h / d_h) / v1``. Dividing by the variances
    (0.1, 0.2 in the original code) scales the targets to roughly unit size.

    Args:
        matched_boxes: Tensor[..., P, 4] (xyxy, normalized).
        priors: Tensor[P, 4] (cxcywh, normalized), w, h > 0.
        variances: (v0, v1) for centres and sizes.
        check: validate the values first (needs a device sync).
    Returns:
        Tensor[..., P, 4], always finite: widths and heights below 1e-6 of the image (only
        degenerate boxes, such as a background default box's filler) are raised to 1e-6
        before the log.
    """
    if not isinstance(matched_boxes, Tensor) or not matched_boxes.is_floating_point():
        raise TypeError("matched_boxes must be a floating-point torch.Tensor [..., P, 4] (xyxy)")
    if check:
        check_boxes(matched_boxes, "matched_boxes", "xyxy")
    _check_priors(priors, check)
    v0, v1 = _check_variances(variances)
    if matched_boxes.ndim < 2 or matched_boxes.shape[-2] != priors.shape[0]:
        raise ValueError(
            f"matched_boxes must have shape [..., P, 4] with P = {priors.shape[0]} priors, "
            f"got {list(matched_boxes.shape)}"
        )
    priors = priors.to(matched_boxes)
    low, high = matched_boxes[..., :2], matched_boxes[..., 2:]  # corners
    # In place on fresh contiguous tensors: on 8732 boxes per image, allocating is as slow
    # as computing, and ops on the strided [..., 2:] views themselves are not vectorized.
    centres = (low + high).div_(2).sub_(priors[:, :2]).div_(priors[:, 2:] * v0)
    sizes = (high - low).clamp_(min=_MIN_SIZE).div_(priors[:, 2:]).log_().div_(v1)
    return torch.cat([centres, sizes], dim=-1)


def decode(
    loc: Tensor,
    priors: Tensor,
    variances: Sequence[float] = (0.1, 0.2),
    *,
    check: bool = True,
) -> Tensor:
    """Inverse of :func:`encode`: predicted offsets back to boxes.

    Args:
        loc: Tensor[..., P, 4], offsets as :func:`encode` makes them.
        priors: Tensor[P, 4] (cxcywh, normalized).
        variances: (v0, v1), the same as for encoding.
        check: validate the priors' values first (needs a device sync).
    Returns:
        Tensor[..., P, 4] (xyxy, normalized).
    """
    if not isinstance(loc, Tensor) or not loc.is_floating_point():
        raise TypeError("loc must be a floating-point torch.Tensor of shape [..., P, 4]")
    _check_priors(priors, check)
    v0, v1 = _check_variances(variances)
    if loc.ndim < 2 or loc.shape[-1] != 4 or loc.shape[-2] != priors.shape[0]:
        raise ValueError(
            f"loc must have shape [..., P, 4] with P = {priors.shape[0]} priors, "
            f"got {list(loc.shape)}"
        )
    priors = priors.to(loc)
    centres = priors[:, :2] + loc[..., :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[..., 2:] * v1)
    return cxcywh_to_xyxy(torch.cat([centres, sizes], dim=-1), check=False)


# ---- argument checks -------------------------------------------------------------------


def _check_gt_boxes(gt_boxes: Tensor, shape: str, check: bool) -> None:
    """``shape`` is ``"[G, 4]"`` or ``"[B, G, 4]"``; values are checked only if ``check``."""
    if not isinstance(gt_boxes, Tensor):
        raise TypeError(f"gt_boxes must be a torch.Tensor {shape}, got {type(gt_boxes).__name__}")
    if gt_boxes.ndim != shape.count(",") + 1 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must have shape {shape} (xyxy), got {list(gt_boxes.shape)}")
    if check:
        check_boxes(gt_boxes, "gt_boxes", "xyxy")
    elif not gt_boxes.is_floating_point():
        raise TypeError(f"gt_boxes must be a floating-point tensor, got dtype {gt_boxes.dtype}")


def _check_priors(priors: Tensor, check: bool) -> None:
    if not isinstance(priors, Tensor) or priors.ndim != 2 or priors.shape[-1] != 4:
        shape = list(priors.shape) if isinstance(priors, Tensor) else type(priors).__name__
        raise ValueError(f"priors must have shape [P, 4] (cxcywh), got {shape}")
    if priors.shape[0] == 0:
        raise ValueError("priors must hold at least one default box, got shape [0, 4]")
    if check:
        check_boxes(priors, "priors", "cxcywh")
        if not (priors[:, 2:] > 0).all():
            raise ValueError("priors must have w > 0 and h > 0 (offsets are in units of them)")


def _check_variances(variances: Sequence[float]) -> tuple[float, float]:
    if len(variances) != 2 or not all(v > 0 for v in variances):
        raise ValueError(
            f"variances must be two positive numbers (centre, size), got {tuple(variances)!r}"
        )
    return float(variances[0]), float(variances[1])


# ---- speed (CPU): the [B, G, P] IoU planes are the only big tensors ------------------
# Float ops in place are fast; comparisons that produce bool tensors, torch.where and
# index-returning reductions over a middle dimension are several times slower, so the hot
# path avoids them on those planes, and keeps the planes between calls (ssdlearn._scratch).


def _iou_with_priors(gt_boxes: Tensor, priors_xyxy: Tensor, reuse: bool = False) -> Tensor:
    """IoU of every object with every default box: Tensor[..., G, 4] x [P, 4] -> [..., G, P].

    The same numbers as ``box_iou`` (the same arithmetic in the same order), written for
    speed on this one hot path: one coordinate at a time on contiguous [..., G, P] planes,
    in place, instead of [..., G, P, 2] corner tensors. Computed in float32 at least
    (half-precision boxes are promoted), so thresholds and ties are not rounded.
    With ``reuse`` the result lives in the kept CPU planes of :mod:`ssdlearn._scratch`: the
    caller must be done with it before the next ``reuse`` call in the same thread.
    """
    dtype = torch.promote_types(gt_boxes.dtype, torch.float32)
    gx1, gy1, gx2, gy2 = gt_boxes.to(dtype)[..., None].unbind(-2)  # each [..., G, 1]
    px1, py1, px2, py2 = priors_xyxy.to(dtype).t().contiguous()  # each [P]
    shape = (*gt_boxes.shape[:-1], priors_xyxy.shape[0])
    if reuse:
        inter, buffer, union = _scratch.planes(3, shape, dtype, gt_boxes.device)
    else:
        inter, buffer, union = None, None, None  # allocated by the ops
    inter = torch.minimum(gx2, px2, out=inter)  # [..., G, P]
    buffer = torch.maximum(gx1, px1, out=buffer)
    inter.sub_(buffer).clamp_(min=0)  # overlap width; disjoint boxes overlap by 0, not < 0
    union = torch.maximum(gy1, py1, out=union)
    torch.minimum(gy2, py2, out=buffer).sub_(union).clamp_(min=0)  # overlap height
    inter.mul_(buffer)
    area_gt = (gx2 - gx1) * (gy2 - gy1)  # [..., G, 1]
    # A default box of zero area (never a real one) would give 0 / 0 with a zero-area
    # object; with a tiny area instead the union is never 0 and the IoU is box_iou's 0.
    area_priors = ((px2 - px1) * (py2 - py1)).clamp_(min=torch.finfo(px1.dtype).tiny)  # [P]
    torch.add(area_gt, area_priors, out=union).sub_(inter)
    return inter.div_(union)


def _first_argmax_(values: Tensor, best: Tensor, dim: int) -> Tensor:
    """The first index along ``dim`` where ``values`` equals its maximum ``best``.

    What ``torch.max(values, dim).indices`` returns, several times faster on a CPU for a
    middle ``dim``, with float ops in place: 1 where a value is the maximum, else 0; times
    size, size - 1, ..., 1 along ``dim``; the largest product marks the first maximum.
    Overwrites ``values``.

    Args:
        values: Tensor[..., N, ...]; best: its ``amax(dim, keepdim=True)``.
    Returns:
        LongTensor with ``dim`` removed.
    """
    size = values.shape[dim]
    weights = torch.arange(size, 0, -1, dtype=values.dtype, device=values.device)
    weights = weights.view([size] + [1] * (values.ndim - dim - 1))  # along dim
    return values.eq_(best).mul_(weights).amax(dim).neg_().add_(size).long()
