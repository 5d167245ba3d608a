"""Self-check of lesson 05: hard negative mining."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..loss import hard_negative_mask
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["hard_negatives_check"]


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
