"""Lesson 10's exercise: the error kind of every detection of one image."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlearn.boxes import box_iou
from ssdlearn.checks import error_kinds_check
from ssdlearn.checks.lesson10 import _MISTAKES, _cases, _kinds, _reference
from ssdlearn.diagnose import KINDS


def reference(boxes, scores, labels, gt_boxes, gt_labels, similar):
    """The exercise's solution, written as a learner would (the lesson's solution cell)."""
    iou = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else torch.zeros(
        len(boxes), len(gt_boxes))
    claimed = torch.zeros(len(gt_boxes), dtype=torch.bool)
    kinds = [None] * len(boxes)
    for d in scores.argsort(descending=True, stable=True).tolist():
        same = gt_labels == labels[d]
        hits = same & (iou[d] >= 0.5)
        free = hits & ~claimed
        near = iou[d] >= 0.1
        grouped = torch.tensor([any(int(labels[d]) in g and int(c) in g for g in similar)
                                for c in gt_labels], dtype=torch.bool)
        if free.any():
            claimed[torch.where(free, iou[d], -1.0).argmax()] = True
            kinds[d] = "correct"
        elif hits.any():
            kinds[d] = "duplicate"
        elif (same & near).any():
            kinds[d] = "localization"
        elif (grouped & near).any():
            kinds[d] = "similar"
        elif near.any():
            kinds[d] = "other"
        else:
            kinds[d] = "background"
    return kinds


def test_reference_solution_passes():
    result = error_kinds_check(reference)
    assert result.passed and result.done, result.message
    assert "✓ all 20 cases pass" in result.message


def test_the_cases_cover_every_kind_ties_and_empty_inputs():
    kinds = [k for _, args in _cases() for k in _reference(*args)]
    assert set(kinds) == set(KINDS)
    texts = " ".join(text for text, _ in _cases())
    for words in ("no objects", "no detections", "equal scores", "equal IoU", "zero-width"):
        assert words in texts


@pytest.mark.parametrize("flags, hint", _MISTAKES, ids=[str(f) for f, _ in _MISTAKES])
def test_each_mistake_fails_with_its_hint(flags, hint):
    result = error_kinds_check(lambda *args: _kinds(*args, **flags))
    assert not result.passed and result.done
    assert hint in result.message, result.message


def test_the_mistake_switches_off_give_the_library_rule():
    for _, args in _cases():
        assert _kinds(*args) == _reference(*args)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_rule_agrees_with_detection_kinds_on_random_images(data):
    n = data.draw(st.integers(0, 6))
    g = data.draw(st.integers(0, 4))
    coords = st.integers(0, 12)

    def boxes(k):
        rows = [[data.draw(coords) for _ in range(4)] for _ in range(k)]
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        return torch.cat([t[:, :2].minimum(t[:, 2:]), t[:, :2].maximum(t[:, 2:])], dim=1)

    scores = torch.tensor([data.draw(st.sampled_from([0.2, 0.5, 0.9])) for _ in range(n)])
    labels = torch.tensor([data.draw(st.integers(1, 5)) for _ in range(n)], dtype=torch.long)
    gt_labels = torch.tensor([data.draw(st.integers(1, 5)) for _ in range(g)], dtype=torch.long)
    args = (boxes(n), scores, labels, boxes(g), gt_labels, ((1, 2, 3), (4, 5)))
    assert reference(*args) == _reference(*args) == _kinds(*args)


def test_stub_is_not_done():
    def stub(*args):
        raise NotImplementedError("your code here")

    result = error_kinds_check(stub)
    assert not result.passed and not result.done
    assert result.message == "Error kinds: not done yet."


def test_names_that_are_not_kinds_get_their_own_hint():
    result = error_kinds_check(lambda boxes, *rest: ["Correct"] * len(boxes))
    assert not result.passed and "one of 'correct', 'duplicate'" in result.message


def test_a_crash_on_an_image_without_objects_is_reported_with_the_case():
    def no_empty_image(boxes, scores, labels, gt_boxes, gt_labels, similar):
        best = box_iou(boxes, gt_boxes).max(dim=1).values  # fails with no objects
        return ["correct" if v >= 0.5 else "background" for v in best]

    result = error_kinds_check(no_empty_image)
    assert not result.passed and result.done
    assert "an image with no objects" in result.message and "raised" in result.message


def test_never_prints_the_expected_kinds():
    result = error_kinds_check(lambda boxes, *rest: ["other"] * len(boxes))
    assert not result.passed
    assert "one detection on its object" in result.message
    assert "'correct'" not in result.message and "[" not in result.message
