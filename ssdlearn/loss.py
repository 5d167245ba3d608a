"""The MultiBox loss: smooth L1 on the boxes, softmax cross-entropy on the classes. Lesson 05.

The paper's objective (eq. 1) over the N matched (positive) default boxes:

    L = (L_conf + alpha * L_loc) / N,    L = 0 when N = 0

- ``L_loc``: smooth L1 between predicted and encoded offsets, positives only.
- ``L_conf``: softmax cross-entropy over C classes (background included), over the
  positives and the *hard negatives*: most default boxes are background, so instead of all
  of them only the negatives the network gets most wrong are kept, at most 3 per positive.

Labels follow :func:`ssdlearn.matching.match_batch`: ``> 0`` positive, ``0`` background,
``-1`` ignored (never a positive, never a negative, no loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._validate import check_labels

__all__ = ["hard_negative_mask", "MultiBoxLoss"]


def _check_ratio(neg_pos_ratio: float) -> None:
    if isinstance(neg_pos_ratio, bool) or not isinstance(neg_pos_ratio, (int, float)):
        raise TypeError(f"neg_pos_ratio must be a number, got {type(neg_pos_ratio).__name__}")
    if not neg_pos_ratio >= 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")


def hard_negative_mask(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float = 3) -> Tensor:
    """Which background default boxes to keep: per image, the hardest negatives.

    In each image, the negatives (label 0) are ranked by confidence loss, highest first,
    and the top ``min(floor(neg_pos_ratio * num_positives), num_negatives)`` are kept.
    Positives (label > 0) and ignored boxes (label -1) are never selected.

    An image with no positives keeps no negatives, so it adds nothing to the loss; this is
    the behaviour of the original Caffe code, amdegroot's ssd.pytorch and torchvision.

    Ties in loss go to the lower default-box index (a stable sort), on CPU and CUDA alike.
    No loop and no device sync: one sort gives each negative its rank.

    Args:
        conf_loss: Tensor[B, P], the per-box cross-entropy (no gradient needed).
        labels: LongTensor[B, P].
        neg_pos_ratio: negatives kept per positive (3 in the paper).
    Returns:
        BoolTensor[B, P], True for the kept negatives.
    """
    if not isinstance(conf_loss, Tensor) or conf_loss.ndim != 2:
        shape = list(conf_loss.shape) if isinstance(conf_loss, Tensor) else type(conf_loss)
        raise ValueError(f"conf_loss must be a Tensor of shape [B, P], got {shape}")
    if not conf_loss.is_floating_point():
        raise TypeError(f"conf_loss must be floating point, got dtype {conf_loss.dtype}")
    check_labels(labels, "labels", conf_loss.shape, "[B, P]")
    _check_ratio(neg_pos_ratio)

    negative = labels == 0
    num_pos = (labels > 0).sum(dim=1, keepdim=True)  # [B, 1]
    num_neg = torch.minimum(
        torch.floor(num_pos * float(neg_pos_ratio)).long(), negative.sum(dim=1, keepdim=True)
    )
    # Non-negatives go last in the ranking; only negatives then fill the top num_neg.
    loss = conf_loss.detach().masked_fill(~negative, -torch.inf)
    order = loss.sort(dim=1, descending=True, stable=True).indices  # [B, P]
    positions = torch.arange(loss.shape[1], device=loss.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank of each box
    return (rank < num_neg) & negative


class MultiBoxLoss(nn.Module):
    """SSD's training loss, on a batch of matched targets.

    Args:
        neg_pos_ratio: hard negatives kept per positive (3 in the paper).
        alpha: weight of the localization loss (1 in the paper).

    ``forward(loc_pred, conf_pred, loc_target, labels) -> (loc_loss, conf_loss)``:

    - loc_pred: Tensor[B, P, 4], predicted offsets.
    - conf_pred: Tensor[B, P, C], class logits (C includes background).
    - loc_target: Tensor[B, P, 4], ``encode(matched_boxes, priors)``.
    - labels: LongTensor[B, P] from ``match_batch``: > 0 object, 0 background, -1 ignored.

    Returns two scalars: ``alpha * sum(smooth L1 over positives) / N`` and
    ``sum(cross-entropy over positives and hard negatives) / N``, N the number of positives
    in the whole batch. Both are exactly 0 when N == 0, and still part of the graph (their
    gradients are zeros, not NaN). No device sync, so it suits a training hot path.
    """

    def __init__(self, neg_pos_ratio: float = 3, alpha: float = 1.0) -> None:
        super().__init__()
        _check_ratio(neg_pos_ratio)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        self.neg_pos_ratio = neg_pos_ratio
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"neg_pos_ratio={self.neg_pos_ratio}, alpha={self.alpha}"

    def forward(
        self, loc_pred: Tensor, conf_pred: Tensor, loc_target: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        for name, value in (("loc_pred", loc_pred), ("conf_pred", conf_pred),
                            ("loc_target", loc_target)):  # fmt: skip
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a floating-point torch.Tensor")
        if loc_pred.ndim != 3 or loc_pred.shape[-1] != 4:
            raise ValueError(f"loc_pred must have shape [B, P, 4], got {list(loc_pred.shape)}")
        if loc_target.shape != loc_pred.shape:
            raise ValueError(
                f"loc_target must have loc_pred's shape {list(loc_pred.shape)}, "
                f"got {list(loc_target.shape)}"
            )
        if conf_pred.ndim != 3 or conf_pred.shape[:2] != loc_pred.shape[:2]:
            raise ValueError(
                f"conf_pred must have shape [B, P, C] with B, P = {list(loc_pred.shape[:2])}, "
                f"got {list(conf_pred.shape)}"
            )
        if conf_pred.shape[-1] < 2:
            raise ValueError(
                f"conf_pred needs C >= 2 classes (background + objects), got {conf_pred.shape[-1]}"
            )
        check_labels(labels, "labels", loc_pred.shape[:2], "[B, P]")

        positive = labels > 0  # [B, P]
        # N stays a tensor (no .item()); clamp so N == 0 divides zeros by 1, not by 0.
        num_pos = positive.sum().clamp(min=1)

        # Localization: smooth L1 (beta = 1) summed over the 4 offsets, positives only.
        # torch.where, not boolean indexing, which would sync to count the positives.
        loc = F.smooth_l1_loss(loc_pred, loc_target, reduction="none", beta=1.0).sum(dim=-1)
        loc_loss = torch.where(positive, loc, 0.0).sum() / num_pos

        # Confidence: cross-entropy of every box; ignored boxes (-1) get 0.
        num_classes = conf_pred.shape[-1]
        ce = F.cross_entropy(
            conf_pred.reshape(-1, num_classes), labels.reshape(-1),
            reduction="none", ignore_index=-1,
        ).view_as(labels)  # fmt: skip
        with torch.no_grad():  # mining is a selection, not part of the gradient
            hard_negative = hard_negative_mask(ce.detach(), labels, self.neg_pos_ratio)
        conf_loss = torch.where(positive | hard_negative, ce, 0.0).sum() / num_pos
        return self.alpha * loc_loss, conf_loss
