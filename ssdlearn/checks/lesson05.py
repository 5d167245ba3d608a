"""Self-check of lesson 05: the focal loss (RetinaNet), an alternative to hard negative mining."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["focal_loss_check"]


def _focal(conf_logits: Tensor, labels: Tensor, gamma: float = 2.0, alpha: float | None = 0.25,
           *, normalize: str = "batch", p_power: bool = False, alpha_on: str = "positives",
           keep_ignored: bool = False, sigmoid: bool = False) -> Tensor:
    """The softmax focal loss; keywords build the typical mistakes.

    conf_logits: Tensor[B, P, C]; labels: LongTensor[B, P] (> 0 object, 0 background,
    -1 ignored). Returns a scalar: the sum over non-ignored boxes of
    -alpha_t (1 - p_t)^gamma log p_t, divided by the batch's positives (at least 1).
    """
    counted = torch.ones_like(labels, dtype=torch.bool) if keep_ignored else labels >= 0
    target = labels.clamp(min=0)
    if sigmoid:
        log_p = F.logsigmoid(conf_logits.gather(-1, target[..., None]).squeeze(-1))
    else:
        log_p = F.log_softmax(conf_logits, dim=-1).gather(-1, target[..., None]).squeeze(-1)
    p = log_p.exp()
    weight = p.pow(gamma) if p_power else (1 - p).pow(gamma)
    loss = -weight * log_p
    if alpha is not None:
        positive_weight = alpha if alpha_on == "positives" else 1 - alpha
        loss = loss * torch.where(target > 0, positive_weight, 1 - positive_weight)
    loss = torch.where(counted, loss, 0.0)
    positives = (labels > 0).sum(dim=-1).to(loss.dtype)  # [B]
    if normalize == "image":
        return (loss.sum(dim=-1) / positives).sum()
    if normalize == "boxes":
        return loss.sum() / counted.sum().clamp(min=1)
    if normalize == "unclamped":
        return loss.sum() / positives.sum()
    return loss.sum() / positives.sum().clamp(min=1)


_FOCAL_MISTAKES = [
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, keep_ignored=True),
            "Boxes labelled -1 are ignored: they add nothing, neither as objects nor as "
            "background."),
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, p_power=True),
            "The factor is (1 - p_t)^gamma: it shrinks the loss of boxes that are already right "
            "(p_t near 1), not of the wrong ones."),
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, alpha_on="negatives"),
            "alpha weighs the objects (label > 0); background boxes get 1 - alpha."),
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, normalize="boxes"),
            "Divide the sum by the number of positives in the batch, not by the number of boxes."),
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, normalize="unclamped"),
            "A batch without any object has N = 0: divide by max(N, 1), so the loss stays "
            "finite and the negatives still teach 'background'."),
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, normalize="image"),
            "Divide by the positives of the whole batch, as the MultiBox loss does; an image "
            "without objects has no positives of its own to divide by."),
    Mistake(lambda x, y, g, a: _focal(x, y, g, a, sigmoid=True),
            "This is the softmax variant: p_t is the softmax probability of the box's label "
            "over all C classes."),
]  # fmt: skip


def focal_loss_check(fn: Callable[[Tensor, Tensor, float, float | None], Tensor]
                     ) -> CheckResult:
    """Check ``fn(conf_logits[B, P, C], labels[B, P], gamma, alpha) -> scalar Tensor``."""
    generator = torch.Generator().manual_seed(5)

    def case(description: str, labels: list[list[int]], gamma: float, alpha: float | None,
             classes: int = 4, scale: float = 3.0) -> Case:
        labels_t = torch.tensor(labels)
        logits = scale * torch.randn((*labels_t.shape, classes), generator=generator,
                                     dtype=torch.float64)
        return Case(description, (logits, labels_t, gamma, alpha),
                    _focal(logits, labels_t, gamma, alpha))

    cases = [
        case("gamma = 0, alpha = None: plain cross-entropy / N",
             [[0, 2, 0, 0, 1, 0], [3, 0, 0, 0, 0, 0]], 0.0, None),
        case("gamma = 2, alpha = 0.25, two images", [[0, 2, 0, 0, 1, 0], [3, 0, 0, 0, 0, 0]],
             2.0, 0.25),
        case("an image without objects next to one with an object",
             [[0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], 2.0, 0.25),
        case("ignored boxes (label -1)", [[1, -1, 0, 0, -1, 2, 0, -1]], 2.0, 0.25),
        case("a batch without any object", [[0, 0, 0], [0, -1, 0]], 2.0, 0.25),
        case("gamma = 5, alpha = 0.75, many classes", [[0, 7, 0, 0, 9, 0, 0, 1]], 5.0, 0.75,
             classes=11),
    ]
    return run_check("Focal loss", fn, cases, _FOCAL_MISTAKES)
