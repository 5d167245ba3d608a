"""Lesson 01's new exercise: generalized IoU (GIoU) of every pair of boxes."""

import pytest
import torch
import torchvision

from ssdlearn import checks
from ssdlearn.checks.lesson01 import _GIOU_MISTAKES, _giou_reference


def random_boxes(n, generator):
    corners = torch.rand(n, 2, 2, generator=generator, dtype=torch.float64).sort(dim=1).values
    return torch.cat([corners[:, 0], corners[:, 1] + 1e-3], dim=1) * 10


def test_reference_agrees_with_torchvision():
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(7, g), random_boxes(11, g)
    assert torch.allclose(_giou_reference(a, b), torchvision.ops.generalized_box_iou(a, b))


def test_reference_bounds_and_special_values():
    g = torch.Generator().manual_seed(1)
    a, b = random_boxes(20, g), random_boxes(30, g)
    value = _giou_reference(a, b)
    assert (value >= -1).all() and (value <= 1).all()
    assert (value <= torchvision.ops.box_iou(a, b) + 1e-12).all()   # GIoU <= IoU
    assert torch.allclose(_giou_reference(a, a).diagonal(), torch.ones(20, dtype=torch.float64))
    far = torch.tensor([[0.0, 0.0, 1e-3, 1e-3]], dtype=torch.float64)
    assert _giou_reference(far, far + 100).item() < -0.999


def test_reference_solution_passes():
    result = checks.giou_check(_giou_reference)
    assert result and result.done and "✓" in result.message


def test_torchvision_passes():
    assert checks.giou_check(torchvision.ops.generalized_box_iou)


@pytest.mark.parametrize("mistake", _GIOU_MISTAKES, ids=lambda m: m.hint[:40])
def test_each_mistake_fails_with_its_hint(mistake):
    result = checks.giou_check(mistake.wrong)
    assert not result and result.done
    assert mistake.hint in result.message


def test_a_loop_over_boxes_is_caught():
    def one_row_at_a_time(boxes1, boxes2):
        rows = [_giou_reference(box[None], boxes2)[0] for box in boxes1]
        return torch.stack(rows) if rows else _giou_reference(boxes1, boxes2)

    result = checks.giou_check(one_row_at_a_time)
    assert not result and result.done and "loop" in result.message


def test_stub_is_not_done():
    def stub(boxes1, boxes2):
        raise NotImplementedError("your code here")

    result = checks.giou_check(stub)
    assert not result and not result.done and "not done" in result.message


def test_no_expected_numbers_in_messages():
    for mistake in _GIOU_MISTAKES:
        message = checks.giou_check(mistake.wrong).message
        assert "tensor(" not in message and "0." not in message.split("Hint:")[0]
