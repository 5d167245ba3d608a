"""Lesson 06's exercise: the IoU-crop sampler's acceptance test."""

import pytest
import torch

from ssdlearn.augment import IoUCrop
from ssdlearn.checks.lesson06 import _ACCEPT_MISTAKES, _accept, accept_patches_check


def test_reference_passes():
    assert accept_patches_check(_accept).passed


def test_reference_agrees_with_the_library_sampler():
    """With one trial, ``sample_patch`` returns its only candidate exactly when it accepts it.

    The candidate does not depend on the boxes, so the same seed with no objects and
    min_iou 0 (always accepted) shows which candidate was drawn.
    """
    sampler = IoUCrop(trials=1)
    g = torch.Generator().manual_seed(0)
    no_boxes = torch.zeros(0, 4, dtype=torch.float64)
    checked = {True: 0, False: 0}
    for seed in range(300):
        n = int(torch.randint(0, 4, (1,), generator=g))
        corner = torch.rand(n, 2, generator=g, dtype=torch.float64) * 0.8
        boxes = torch.cat([corner, corner + 0.05 + 0.4 * torch.rand(n, 2, generator=g,
                                                                    dtype=torch.float64)], 1)
        boxes = boxes.clamp(max=1.0)
        min_iou = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9][seed % 6]
        candidate = sampler.sample_patch(no_boxes, 0.0, torch.Generator().manual_seed(seed))
        found = sampler.sample_patch(boxes, min_iou, torch.Generator().manual_seed(seed))
        accepted = bool(_accept(boxes, candidate[None], min_iou)[0])
        assert (found is not None) == accepted
        checked[accepted] += 1
    assert min(checked.values()) > 20      # both outcomes were exercised


@pytest.mark.parametrize("mistake", _ACCEPT_MISTAKES, ids=lambda m: m.hint[:30])
def test_each_mistake_is_caught_with_its_hint(mistake):
    result = accept_patches_check(mistake.wrong)
    assert not result.passed and result.done
    assert mistake.hint in repr(result)


def test_a_stub_is_not_done():
    def stub(boxes, patches, min_iou):
        raise NotImplementedError("your code here")

    result = accept_patches_check(stub)
    assert not result.passed and not result.done and "not done" in repr(result)


def test_an_error_is_reported_not_raised():
    result = accept_patches_check(lambda b, p, m: b[:, 5] > m)
    assert not result.passed and result.done and "raised" in repr(result)


def test_expected_values_are_never_printed():
    result = accept_patches_check(lambda b, p, m: torch.zeros(len(p), dtype=torch.bool))
    assert not result.passed and "tensor" not in repr(result).lower()
