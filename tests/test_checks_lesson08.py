"""Lesson 08's exercise: COCO's 101-point interpolated AP of one precision-recall curve."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlearn.checks.lesson08 import _COCO_MISTAKES, _coco_ap, coco_ap_check
from ssdlearn.metrics import evaluate_coco


def reference(recall, precision):
    """The exercise's solution, written as a learner would."""
    if len(recall) == 0:
        return 0.0
    envelope = precision.flip(0).cummax(0).values.flip(0)
    points = torch.linspace(0, 1, 101, dtype=torch.float64)
    at = torch.searchsorted(recall, points, side="left")
    sampled = torch.where(at < len(recall), envelope[at.clamp(max=len(recall) - 1)], 0.0)
    return float(sampled.mean())


def pycocotools_style(recall, precision):
    """pycocotools' COCOeval.accumulate for one curve, with its Python loop, in numpy."""
    rc, pr = recall.numpy(), precision.numpy().tolist()
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]
    q = np.zeros(101)
    inds = np.searchsorted(rc, np.linspace(0.0, 1.0, 101), side="left")
    for ri, pi in enumerate(inds):
        if pi < len(pr):
            q[ri] = pr[pi]
    return float(q.mean())


def curve_of(hits, num_objects):
    tp = torch.tensor(hits, dtype=torch.float64).cumsum(0)
    return tp / num_objects, tp / torch.arange(1, len(hits) + 1)


def test_reference_solution_passes():
    result = coco_ap_check(reference)
    assert result.passed and result.done, result.message
    assert "✓" in result.message


@pytest.mark.parametrize("mistake", _COCO_MISTAKES, ids=lambda m: m.hint[:30])
def test_each_mistake_fails_with_its_hint(mistake):
    result = coco_ap_check(lambda r, p: float(mistake.wrong(r, p)))
    assert not result.passed and result.done
    assert mistake.hint in result.message, result.message


def test_stub_is_not_done():
    def stub(recall, precision):
        raise NotImplementedError

    result = coco_ap_check(stub)
    assert not result.passed and not result.done
    assert "not done" in result.message


def test_an_error_is_reported_with_the_case():
    def no_empty_case(recall, precision):
        envelope = precision.flip(0).cummax(0).values.flip(0)
        at = torch.searchsorted(recall, torch.linspace(0, 1, 101, dtype=torch.float64))
        return float(torch.where(at < len(recall), envelope[at.clamp(max=len(recall) - 1)],
                                 0.0).mean())  # indexes an empty tensor on an empty curve

    result = coco_ap_check(no_empty_case)
    assert not result.passed and result.done
    assert "no detections at all" in result.message and "raised" in result.message


def test_never_prints_the_expected_numbers():
    result = coco_ap_check(lambda r, p: 0.123)
    assert not result.passed
    assert "0.123" not in result.message
    assert not any(f"{v:.3f}" in result.message for v in (1.0, 2 / 3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), max_size=30), st.integers(0, 8))
def test_reference_equals_pycocotools_loop(hits, missed):
    num_objects = sum(hits) + missed
    if num_objects == 0:
        return
    recall, precision = curve_of(hits, num_objects)
    assert float(_coco_ap(recall, precision)) == pytest.approx(
        pycocotools_style(recall, precision), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_reference_equals_evaluate_coco(seed):
    """One class; every detection either sits exactly on a new object or far from all, so
    all ten IoU thresholds agree and COCO's AP@[.5:.95] is the AP of this one curve."""
    g = torch.Generator().manual_seed(seed)
    num_objects = 12
    hits = (torch.rand(20, generator=g) < 0.5).tolist()
    found = 0
    objects = torch.tensor([[10.0 * k, 0.0, 10.0 * k + 8, 8.0] for k in range(num_objects)])
    boxes = []
    for h in hits:
        if h and found < num_objects:
            boxes.append(objects[found])
            found += 1
        else:
            boxes.append(torch.tensor([500.0, 500.0, 508.0, 508.0]))
    hits = [bool((b == objects).all(1).any()) for b in boxes]
    scores = torch.linspace(1.0, 0.05, len(boxes))
    predictions = [{"boxes": torch.stack(boxes), "scores": scores,
                    "labels": torch.ones(len(boxes), dtype=torch.long)}]
    targets = [{"boxes": objects, "labels": torch.ones(num_objects, dtype=torch.long)}]
    coco = evaluate_coco(predictions, targets)
    recall, precision = curve_of(hits, num_objects)
    assert coco["map"] == pytest.approx(coco["map_50"], abs=1e-12)
    assert float(_coco_ap(recall, precision)) == pytest.approx(coco["map_50"], abs=1e-12)
