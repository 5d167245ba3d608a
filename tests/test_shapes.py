"""The generated shapes dataset: deterministic, valid boxes, and every object visible."""

import pytest
import torch

from ssdlearn.boxes import box_area, box_iou
from ssdlearn.data import ShapesDataset

BAR_CLASSES = (4, 5)  # horizontal and vertical bars, 4:1


def covered_fraction(boxes: torch.Tensor) -> torch.Tensor:
    """[G, G]: entry (i, j) is the fraction of box i that box j covers."""
    low = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(dim=-1)
    return inter / box_area(boxes)[:, None]


def test_same_seed_same_images_in_any_order():
    a, b = ShapesDataset(20, 64, seed=3), ShapesDataset(20, 64, seed=3)
    forward = [b[i] for i in range(20)]
    for i in reversed(range(20)):  # the other dataset, read backwards
        image, target = a[i]
        assert torch.equal(image, forward[i][0])
        assert torch.equal(target["boxes"], forward[i][1]["boxes"])
    assert not torch.equal(ShapesDataset(1, 64, seed=4)[0][0], a[0][0])
    assert torch.equal(a[-1][0], a[19][0])


def test_samples_are_valid():
    data = ShapesDataset(60, 96, seed=0, min_scale=0.1, max_scale=0.8, max_objects=6)
    for i in range(len(data)):
        image, target = data[i]
        boxes, labels = target["boxes"], target["labels"]
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert 1 <= len(labels) <= 6 and boxes.shape == (len(labels), 4)
        assert ((labels >= 1) & (labels <= 5)).all()
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        sides = boxes[:, 2:] - boxes[:, :2]
        long_side = sides.max(dim=1).values
        assert (long_side >= 0.1 - 1e-6).all() and (long_side <= 0.8 + 1e-6).all()
        bars = torch.isin(labels, torch.tensor(BAR_CLASSES))
        ratio = sides.max(dim=1).values / sides.min(dim=1).values
        assert torch.allclose(ratio[bars], torch.tensor(4.0), rtol=1e-4)
        assert torch.allclose(ratio[~bars], torch.tensor(1.0), rtol=1e-4)


@pytest.mark.parametrize("max_overlap, max_occlusion", [(0.3, 0.5), (0.5, 0.2), (1.0, 1.0)])
def test_overlap_and_occlusion_limits(max_overlap, max_occlusion):
    data = ShapesDataset(80, 64, seed=1, max_objects=8, max_overlap=max_overlap,
                         max_occlusion=max_occlusion)
    worst_iou, worst_cover = 0.0, 0.0
    for i in range(len(data)):
        boxes = data[i][1]["boxes"]
        if len(boxes) < 2:
            continue
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        # later objects are drawn on top: only j > i can hide object i
        cover = covered_fraction(boxes).triu(diagonal=1)
        worst_iou = max(worst_iou, iou.max().item())
        worst_cover = max(worst_cover, cover.max().item())
    assert worst_iou <= max_overlap + 1e-6
    assert worst_cover <= max_occlusion + 1e-6
    if max_occlusion == 1.0:  # without the limit some object is more than half hidden
        assert worst_cover > 0.5


def test_every_object_is_painted_inside_its_box():
    data = ShapesDataset(30, 96, seed=2, max_objects=4)
    for i in range(len(data)):
        image, target = data[i]
        last = target["boxes"][-1]  # drawn last, so nothing covers it
        x1, y1, x2, y2 = (last * 96).round().int().tolist()
        inside = image[:, y1:y2, x1:x2].reshape(3, -1)
        # the shape's flat colour fills a good part of its box
        _, counts = inside.T.unique(dim=0, return_counts=True)
        assert counts.max() >= 0.3 * inside.shape[1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        ShapesDataset(-1)
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(1, image_size=8)
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        ShapesDataset(1, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        ShapesDataset(1, min_scale=0.5, max_scale=0.2)
    with pytest.raises(ValueError, match="max_occlusion"):
        ShapesDataset(1, max_occlusion=1.5)
    with pytest.raises(IndexError, match="out of range"):
        ShapesDataset(3)[3]


def test_no_objects_is_a_normal_image():
    image, target = ShapesDataset(2, 32, min_objects=0, max_objects=0)[0]
    assert image.shape == (3, 32, 32)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
