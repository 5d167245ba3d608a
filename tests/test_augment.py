import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from ssdlearn.augment import (
    IoUCrop,
    PhotometricDistort,
    RandomHorizontalFlip,
    ZoomOut,
    crop,
    crop_boxes,
    hflip,
    resize,
    ssd_eval_transform,
    ssd_train_transform,
    zoom_out,
)
from ssdlearn.boxes import box_iou


@st.composite
def samples(draw, max_objects: int = 6, allow_empty: bool = True):
    """An image of random size and G objects; label i+1 marks object i so we can follow it."""
    height = draw(st.integers(8, 64))
    width = draw(st.integers(8, 64))
    g = draw(st.integers(0 if allow_empty else 1, max_objects))
    rows = []
    for _ in range(g):
        x1 = draw(st.floats(0, 0.9))
        y1 = draw(st.floats(0, 0.9))
        w = draw(st.floats(0.02, 1 - x1))
        h = draw(st.floats(0.02, 1 - y1))
        rows.append([x1, y1, min(x1 + w, 1.0), min(y1 + h, 1.0)])
    boxes = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
    seed = draw(st.integers(0, 2**31 - 1))
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))
    target = {
        "boxes": boxes,
        "labels": torch.arange(1, g + 1),
        "difficult": torch.arange(g) % 2 == 0,
    }
    return image, target, seed


def assert_valid(image, target):
    boxes = target["boxes"]
    assert image.ndim == 3 and image.shape[0] == 3
    assert image.min() >= 0 and image.max() <= 1
    assert boxes.shape[1] == 4 and len(target["labels"]) == len(boxes)
    assert len(target["difficult"]) == len(boxes)
    assert (boxes >= -1e-6).all() and (boxes <= 1 + 1e-6).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()  # positive size


@settings(max_examples=60, deadline=None)
@given(samples())
def test_train_transform_keeps_boxes_valid_and_aligned(sample):
    image, target, seed = sample
    generator = torch.Generator().manual_seed(seed)
    out_image, out = ssd_train_transform(32)(image, target, generator=generator)
    assert out_image.shape == (3, 32, 32)
    assert_valid(out_image, out)
    # Labels still name their objects: label i+1 is object i, and difficult follows it.
    assert torch.equal(out["difficult"], (out["labels"] - 1) % 2 == 0)
    assert len(set(out["labels"].tolist())) == len(out["labels"])


@settings(max_examples=60, deadline=None)
@given(
    samples(), st.floats(0.0, 0.7), st.floats(0.0, 0.7), st.floats(0.3, 1.0), st.floats(0.3, 1.0)
)
def test_crop_keeps_exactly_the_boxes_centred_inside(sample, px, py, pw, ph):
    image, target, _ = sample
    patch = torch.tensor([px, py, min(px + pw, 1.0), min(py + ph, 1.0)])
    out_image, out = crop(image, target, patch)
    assert_valid(out_image, out)
    # crop() snaps the patch to whole pixels; recompute which centres fall in that patch.
    _, height, width = image.shape
    scale = torch.tensor([width, height, width, height], dtype=torch.float64)
    snapped = (patch.double() * scale).round()
    snapped[2:] = torch.maximum(snapped[2:], snapped[:2] + 1)
    snapped = (snapped / scale).float()
    centres = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
    inside = ((centres > snapped[:2]) & (centres < snapped[2:])).all(dim=1)
    assert torch.equal(out["labels"], target["labels"][inside])
    # Back in image coordinates, each kept box is the original clipped to the patch.
    size = snapped[2:] - snapped[:2]
    back = out["boxes"] * size.repeat(2) + snapped[:2].repeat(2)
    clipped = torch.cat(
        [
            torch.maximum(target["boxes"][inside, :2], snapped[:2]),
            torch.minimum(target["boxes"][inside, 2:], snapped[2:]),
        ],
        dim=1,
    )
    torch.testing.assert_close(back, clipped, atol=1e-5, rtol=1e-5)
    assert out_image.shape[1:] == (
        int(round(snapped[3].item() * height)) - int(round(snapped[1].item() * height)),
        int(round(snapped[2].item() * width)) - int(round(snapped[0].item() * width)),
    )


@settings(max_examples=60, deadline=None)
@given(samples())
def test_flip_twice_is_identity(sample):
    image, target, _ = sample
    once = hflip(image, target)
    twice_image, twice = hflip(*once)
    assert torch.equal(twice_image, image)
    torch.testing.assert_close(twice["boxes"], target["boxes"])
    assert_valid(*once)


@settings(max_examples=40, deadline=None)
@given(samples(), st.integers(0, 2**31 - 1))
def test_each_random_step_keeps_boxes_valid(sample, seed):
    image, target, _ = sample
    for step in (PhotometricDistort(p=1.0), ZoomOut(p=1.0), IoUCrop(), RandomHorizontalFlip(1.0)):
        out_image, out = step(image, target, generator=torch.Generator().manual_seed(seed))
        assert_valid(out_image, out)


def test_flip_agrees_with_torchvision():
    image = torch.rand(3, 20, 30)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 0.5]])
    _, out = hflip(image, {"boxes": boxes, "labels": torch.tensor([1, 2])})
    pixels = boxes * torch.tensor([30, 20, 30, 20])
    theirs = TF.horizontal_flip(
        tv_tensors.BoundingBoxes(pixels, format="XYXY", canvas_size=(20, 30))
    )
    torch.testing.assert_close(
        out["boxes"] * torch.tensor([30, 20, 30, 20]), theirs.as_subclass(torch.Tensor)
    )
    torch.testing.assert_close(
        hflip(image, {"boxes": boxes, "labels": torch.tensor([1, 2])})[0], TF.horizontal_flip(image)
    )


def test_zoom_out_agrees_with_torchvision_padding():
    image = torch.rand(3, 20, 30)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    ratio, left, top = 2.5, 17, 9
    canvas, out = zoom_out(
        image,
        {"boxes": boxes, "labels": torch.tensor([1])},
        ratio,
        left,
        top,
        fill=(0.25, 0.5, 0.75),
    )
    right, bottom = int(30 * ratio) - 30 - left, int(20 * ratio) - 20 - top
    theirs_image = TF.pad(image, [left, top, right, bottom], fill=[0.25, 0.5, 0.75])
    torch.testing.assert_close(canvas, theirs_image)
    pixels = tv_tensors.BoundingBoxes(
        boxes * torch.tensor([30, 20, 30, 20]), format="XYXY", canvas_size=(20, 30)
    )
    theirs = TF.pad(pixels, [left, top, right, bottom])
    size = torch.tensor([canvas.shape[2], canvas.shape[1]] * 2)
    torch.testing.assert_close(out["boxes"] * size, theirs.as_subclass(torch.Tensor))


def test_crop_sampler_meets_its_iou_constraint():
    boxes = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.6, 0.5, 0.9, 0.95]])
    sampler = IoUCrop()
    generator = torch.Generator().manual_seed(0)
    found = dict.fromkeys((0.1, 0.3, 0.5, 0.7), 0)
    for min_iou in found:
        for _ in range(20):
            patch = sampler.sample_patch(boxes, min_iou, generator)
            if patch is None:  # no qualifying patch in 50 trials: the image stays whole
                continue
            found[min_iou] += 1
            assert box_iou(patch[None], boxes).max() >= min_iou
            w, h = patch[2] - patch[0], patch[3] - patch[1]
            assert 0.5 - 1e-6 <= w / h <= 2 + 1e-6 and 0.3**2 - 1e-6 <= w * h <= 1 + 1e-6
    assert found[0.1] == found[0.3] == 20 and found[0.7] > 0


def test_image_with_no_objects_passes_through():
    image = torch.rand(3, 40, 50)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    for seed in range(20):
        out_image, out = ssd_train_transform(32)(
            image, target, generator=torch.Generator().manual_seed(seed)
        )
        assert out_image.shape == (3, 32, 32)
        assert out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_same_generator_seed_same_sample():
    image = torch.rand(3, 40, 50)
    target = {"boxes": torch.tensor([[0.2, 0.2, 0.6, 0.7]]), "labels": torch.tensor([3])}
    transform = ssd_train_transform(32)
    a = transform(image, target, generator=torch.Generator().manual_seed(7))
    b = transform(image, target, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_crop_boxes_and_resize():
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.4, 0.4, 0.8, 0.9], [0.45, 0.0, 0.55, 0.3]])
    kept, keep = crop_boxes(boxes, torch.tensor([0.3, 0.3, 0.7, 0.7]))
    assert keep.tolist() == [False, True, False]
    torch.testing.assert_close(kept, torch.tensor([[0.25, 0.25, 1.0, 1.0]]))
    image, target = resize(torch.rand(3, 10, 20), {"boxes": boxes, "labels": torch.arange(3)}, 16)
    assert image.shape == (3, 16, 16) and torch.equal(target["boxes"], boxes)
    out, _ = ssd_eval_transform((12, 18))(
        torch.rand(3, 50, 40), {"boxes": boxes, "labels": torch.arange(3)}
    )
    assert out.shape == (3, 12, 18)


def test_bad_input():
    with pytest.raises(ValueError, match=r"image must be a Tensor\[3, H, W\]"):
        ssd_eval_transform(8)(
            torch.rand(1, 8, 8), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}
        )
    with pytest.raises(ValueError, match="'boxes' and 'labels'"):
        ssd_eval_transform(8)(torch.rand(3, 8, 8), {"boxes": torch.zeros(0, 4)})
    with pytest.raises(ValueError, match="one label each"):
        ssd_eval_transform(8)(
            torch.rand(3, 8, 8), {"boxes": torch.zeros(2, 4), "labels": torch.zeros(1)}
        )
    with pytest.raises(ValueError, match="side_range"):
        ZoomOut(side_range=(0.5, 2))
    with pytest.raises(ValueError, match="must fit the canvas"):
        zoom_out(
            torch.rand(3, 10, 10),
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)},
            2.0,
            15,
            0,
        )
