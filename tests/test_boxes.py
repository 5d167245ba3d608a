import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdlearn.boxes import box_area, box_iou, check_boxes, cxcywh_to_xyxy, xyxy_to_cxcywh


def random_boxes(n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """n valid xyxy boxes inside [0, 1] with positive width and height."""
    corners = torch.rand(n, 2, 2, generator=generator, dtype=dtype)
    low, high = corners.min(dim=1).values, corners.max(dim=1).values
    return torch.cat([low, high + 1e-3], dim=-1)


# ---- hand-worked values --------------------------------------------------------------


def test_conversions_by_hand():
    xyxy = torch.tensor([[0.0, 10.0, 4.0, 30.0]])
    cxcywh = torch.tensor([[2.0, 20.0, 4.0, 20.0]])
    torch.testing.assert_close(xyxy_to_cxcywh(xyxy), cxcywh)
    torch.testing.assert_close(cxcywh_to_xyxy(cxcywh), xyxy)


def test_area_and_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[2.0, 2.0, 6.0, 6.0], [4.0, 0.0, 8.0, 4.0], [10.0, 10.0, 11.0, 11.0]])
    torch.testing.assert_close(box_area(b), torch.tensor([16.0, 16.0, 1.0]))
    # overlap 2x2 = 4, union 16 + 16 - 4 = 28; touching edge: 0; far apart: 0
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[4 / 28, 0.0, 0.0]]))


def test_iou_of_zero_area_boxes_is_zero_not_nan():
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    line = torch.tensor([[0.0, 1.0, 2.0, 1.0]])
    assert box_iou(point, point).item() == 0.0
    assert box_iou(line, line).item() == 0.0
    assert box_iou(point, torch.tensor([[0.0, 0.0, 2.0, 2.0]])).item() == 0.0


# ---- agreement with torchvision ------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_matches_torchvision(dtype):
    g = torch.Generator().manual_seed(0)
    boxes1, boxes2 = random_boxes(300, g, dtype), random_boxes(200, g, dtype)
    expected = torchvision.ops.box_iou(boxes1, boxes2)
    torch.testing.assert_close(box_iou(boxes1, boxes2), expected)


def test_area_and_conversions_match_torchvision():
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(500, g)
    torch.testing.assert_close(box_area(boxes), torchvision.ops.box_area(boxes))
    expected = torchvision.ops.box_convert(boxes, "xyxy", "cxcywh")
    torch.testing.assert_close(xyxy_to_cxcywh(boxes), expected)
    torch.testing.assert_close(cxcywh_to_xyxy(expected), boxes)


def test_batched_iou_equals_per_image_iou_and_broadcasts():
    g = torch.Generator().manual_seed(2)
    boxes1 = random_boxes(2 * 3 * 5, g).reshape(2, 3, 5, 4)
    boxes2 = random_boxes(7, g)  # [M, 4] broadcasts against [2, 3, N, 4]
    iou = box_iou(boxes1, boxes2)
    assert iou.shape == (2, 3, 5, 7)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(iou[i, j], box_iou(boxes1[i, j], boxes2))
    assert box_area(boxes1).shape == (2, 3, 5)
    assert xyxy_to_cxcywh(boxes1).shape == (2, 3, 5, 4)


# ---- properties ----------------------------------------------------------------------

coordinate = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)
size = st.floats(min_value=1e-2, max_value=1e3, width=64)


@st.composite
def box_sets(draw, max_boxes: int = 6) -> torch.Tensor:
    n = draw(st.integers(min_value=1, max_value=max_boxes))
    rows = [
        [x, y, x + w, y + h]
        for x, y, w, h in (draw(st.tuples(coordinate, coordinate, size, size)) for _ in range(n))
    ]
    return torch.tensor(rows, dtype=torch.float64)


@settings(max_examples=200, deadline=None)
@given(box_sets(), box_sets())
def test_iou_is_symmetric_and_in_unit_interval(boxes1, boxes2):
    iou = box_iou(boxes1, boxes2)
    torch.testing.assert_close(iou, box_iou(boxes2, boxes1).T)
    assert ((iou >= 0) & (iou <= 1)).all()


@settings(max_examples=200, deadline=None)
@given(box_sets())
def test_iou_of_a_box_with_itself_is_one(boxes):
    ones = torch.ones(len(boxes), dtype=boxes.dtype)
    torch.testing.assert_close(box_iou(boxes, boxes).diagonal(), ones)


@settings(max_examples=200, deadline=None)
@given(box_sets())
def test_format_round_trip(boxes):
    torch.testing.assert_close(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes)
    cxcywh = xyxy_to_cxcywh(boxes)
    torch.testing.assert_close(xyxy_to_cxcywh(cxcywh_to_xyxy(cxcywh)), cxcywh)


@settings(max_examples=100, deadline=None)
@given(box_sets(max_boxes=1), st.floats(min_value=-100, max_value=100, width=64))
def test_iou_unchanged_by_shifting_both_boxes(boxes, shift):
    other = boxes + torch.tensor([3.0, 1.0, 5.0, 4.0], dtype=boxes.dtype)
    moved = torch.tensor([shift, -shift, shift, -shift], dtype=boxes.dtype)
    torch.testing.assert_close(box_iou(boxes, other), box_iou(boxes + moved, other + moved))


# ---- empty inputs are normal ---------------------------------------------------------


def test_empty_inputs_give_empty_results():
    empty = torch.zeros(0, 4)
    some = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert box_iou(empty, some).shape == (0, 3)
    assert box_iou(some, empty).shape == (3, 0)
    assert box_iou(empty, empty).shape == (0, 0)
    assert box_area(empty).shape == (0,)
    assert xyxy_to_cxcywh(empty).shape == (0, 4)
    assert cxcywh_to_xyxy(empty).shape == (0, 4)
    assert box_iou(torch.zeros(2, 0, 4), some).shape == (2, 0, 3)


def test_results_follow_input_dtype():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=torch.float64)
    assert box_iou(boxes, boxes).dtype == torch.float64
    assert box_area(boxes.half()).dtype == torch.float16


# ---- bad input gets a clear error ----------------------------------------------------


@pytest.mark.parametrize(
    ("boxes", "error", "words"),
    [
        (torch.zeros(3, 5), ValueError, r"boxes1 must have shape \[\.\.\., 4\].*\[3, 5\]"),
        (torch.tensor(1.0), ValueError, r"shape \[\.\.\., 4\]"),
        (torch.tensor([0.0, 0.0, 1.0, 1.0]), ValueError, r"two sets of boxes.*boxes\[None\]"),
        (torch.tensor([[0.0, float("nan"), 1.0, 1.0]]), ValueError, "boxes1 must be finite"),
        (torch.tensor([[0.0, 0.0, float("inf"), 1.0]]), ValueError, "boxes1 must be finite"),
        (torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 4.0, 1.0]]), ValueError,
         r"x2 >= x1 and y2 >= y1.*index \(1,\) is \[5\.0, 0\.0, 4\.0, 1\.0\]"),
        (torch.tensor([[0.0, 3.0, 1.0, 1.0]]), ValueError, "x2 >= x1 and y2 >= y1"),
        (torch.tensor([[0, 0, 1, 1]]), TypeError, r"floating-point.*torch.int64.*\.float\(\)"),
        ([[0.0, 0.0, 1.0, 1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_box_iou_rejects_bad_input(boxes, error, words):
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(error, match=words):
        box_iou(boxes, good)


def test_second_argument_is_named_in_errors():
    good = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="boxes2 must be finite"):
        box_iou(good, torch.tensor([[float("nan"), 0.0, 1.0, 1.0]]))


def test_conversions_and_area_reject_bad_input():
    with pytest.raises(ValueError, match="w >= 0 and h >= 0"):
        cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, -0.1, 0.2]]))
    with pytest.raises(ValueError, match="x2 >= x1"):
        xyxy_to_cxcywh(torch.tensor([[0.5, 0.5, 0.1, 0.9]]))
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        box_area(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="fmt must be"):
        check_boxes(torch.zeros(1, 4), fmt="xywh")


def test_check_false_skips_validation():
    inverted = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    box_iou(inverted, inverted, check=False)  # no error: the caller vouches for its input
