"""Lesson 05's exercise: the softmax focal loss."""

import pytest
import torch
import torch.nn.functional as F

from ssdlearn import checks
from ssdlearn.checks.lesson05 import _FOCAL_MISTAKES, _focal


def independent_focal(logits, labels, gamma=2.0, alpha=0.25):
    """Written box by box, from RetinaNet's definition, to cross-check the batched reference."""
    total, positives = 0.0, int((labels > 0).sum())
    for b in range(labels.shape[0]):
        for p in range(labels.shape[1]):
            y = int(labels[b, p])
            if y < 0:
                continue
            p_t = torch.softmax(logits[b, p], dim=0)[y]
            a_t = 1.0 if alpha is None else (alpha if y > 0 else 1 - alpha)
            total += -a_t * (1 - p_t) ** gamma * torch.log(p_t)
    return total / max(positives, 1)


def test_reference_agrees_with_the_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, generator=g, dtype=torch.float64) * 2
    labels = torch.tensor([[0, 1, -1, 0, 4, 0, 0], [0] * 7, [2, -1, -1, 0, 0, 3, 0]])
    for gamma, alpha in [(0.0, None), (2.0, 0.25), (1.0, 0.5)]:
        assert torch.allclose(_focal(logits, labels, gamma, alpha),
                              torch.as_tensor(independent_focal(logits, labels, gamma, alpha)))


def test_gamma_zero_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([[0, 1, 0, 0, -1, 0, 3, 0, 0], [0] * 9])
    ce = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), ignore_index=-1,
                         reduction="sum")
    assert torch.allclose(_focal(logits, labels, 0.0, None), ce / 2)


def test_reference_passes_and_stub_is_not_done():
    assert checks.focal_loss_check(lambda *a: _focal(*a)).passed

    def my_focal_loss(conf_logits, labels, gamma=2.0, alpha=0.25):
        raise NotImplementedError

    result = checks.focal_loss_check(my_focal_loss)
    assert not result.done and repr(result) == "Focal loss: not done yet."


@pytest.mark.parametrize("mistake", _FOCAL_MISTAKES, ids=range(len(_FOCAL_MISTAKES)))
def test_each_mistake_fails_with_its_hint(mistake):
    result = checks.focal_loss_check(mistake.wrong)
    assert not result.passed and result.done
    assert mistake.hint in repr(result)


def test_a_crash_names_the_case():
    result = checks.focal_loss_check(lambda x, y, g, a: x @ y)
    assert not result.passed and "raised" in repr(result)
