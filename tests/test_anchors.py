import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from ssdlearn.anchors import (
    SSD300_COCO,
    SSD300_VOC,
    SSD512_COCO,
    SSD512_VOC,
    PriorConfig,
    default_boxes,
    paper_scales,
)
from ssdlearn.boxes import cxcywh_to_xyxy


def test_counts_match_the_paper():
    assert default_boxes(SSD300_VOC).shape == (8732, 4)
    assert default_boxes(SSD300_COCO).shape == (8732, 4)
    assert default_boxes(SSD512_VOC).shape == (24564, 4)
    assert default_boxes(SSD512_COCO).shape == (24564, 4)
    assert SSD300_VOC.num_priors == 8732 and SSD512_COCO.num_priors == 24564
    assert SSD300_VOC.boxes_per_cell == [4, 6, 6, 6, 4, 4]


def test_paper_scales_follow_eq4():
    assert paper_scales(6) == pytest.approx([0.2, 0.34, 0.48, 0.62, 0.76, 0.9])
    assert paper_scales(5, 0.15, 0.9) == pytest.approx([0.15, 0.3375, 0.525, 0.7125, 0.9])
    assert paper_scales(1, 0.3, 0.9) == [0.3]
    for bad in [(0,), (3, 0.0, 0.9), (3, 0.9, 0.2), (2.5,)]:
        with pytest.raises(ValueError):
            paper_scales(*bad)


def test_preset_scales_are_the_original_pixel_sizes():
    assert SSD300_VOC.scales() == pytest.approx([0.1, 0.2, 0.37, 0.54, 0.71, 0.88])
    assert SSD300_COCO.scales() == pytest.approx([0.07, 0.15, 0.33, 0.51, 0.69, 0.87])
    assert SSD512_VOC.min_sizes == pytest.approx([35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8])
    assert SSD512_COCO.max_sizes[-1] == pytest.approx(542.72)


def hand_derived_cell(config, k, i, j):
    """The boxes of cell (row i, column j) of map k, written out from the paper's formulas."""
    step, s = config.steps[k], config.image_size
    cx, cy = (j + 0.5) * step / s, (i + 0.5) * step / s
    s_k, s_next = config.min_sizes[k] / s, config.max_sizes[k] / s
    boxes = [(cx, cy, s_k, s_k), (cx, cy, math.sqrt(s_k * s_next), math.sqrt(s_k * s_next))]
    for a in config.aspect_ratios[k]:
        boxes.append((cx, cy, s_k * math.sqrt(a), s_k / math.sqrt(a)))
        boxes.append((cx, cy, s_k / math.sqrt(a), s_k * math.sqrt(a)))
    return torch.tensor(boxes)


@pytest.mark.parametrize("config", [SSD300_VOC, SSD512_COCO], ids=lambda c: c.name)
def test_cells_of_every_map_equal_the_hand_derived_boxes(config):
    boxes = default_boxes(config, dtype=torch.float64)
    start = 0
    for k, (f, per_cell) in enumerate(zip(config.feature_maps, config.boxes_per_cell)):
        for i, j in {(0, 0), (0, f - 1), (f - 1, 0), (f // 2, f // 3), (f - 1, f - 1)}:
            index = start + (i * f + j) * per_cell  # row-major: y slow, x fast
            got = boxes[index : index + per_cell]
            torch.testing.assert_close(got, hand_derived_cell(config, k, i, j).double())
        start += f * f * per_cell
    assert start == len(boxes)


def test_first_boxes_of_ssd300_by_hand():
    boxes = default_boxes(SSD300_VOC)
    s = math.sqrt(30 * 60) / 300  # the extra box of conv4_3
    expected = torch.tensor([
        [4 / 300, 4 / 300, 0.1, 0.1],
        [4 / 300, 4 / 300, s, s],
        [4 / 300, 4 / 300, 0.1 * math.sqrt(2), 0.1 / math.sqrt(2)],
        [4 / 300, 4 / 300, 0.1 / math.sqrt(2), 0.1 * math.sqrt(2)],
        [12 / 300, 4 / 300, 0.1, 0.1],  # next cell to the right
    ])
    torch.testing.assert_close(boxes[:5], expected)
    # The very last box: the 1x1 map's 1/2 box, centred, 264 px wide * sqrt(1/2).
    r = math.sqrt(2)
    torch.testing.assert_close(boxes[-1], torch.tensor([0.5, 0.5, 0.88 / r, 0.88 * r]))


def test_order_within_a_cell():
    cell = default_boxes(SSD300_VOC)[38 * 38 * 4 : 38 * 38 * 4 + 6]  # first cell of conv7
    w, h = cell[:, 2], cell[:, 3]
    ratio = w / h
    torch.testing.assert_close(ratio, torch.tensor([1, 1, 2, 0.5, 3, 1 / 3]))
    assert w[1] > w[0]  # the extra box sqrt(s_k s_k+1) is larger than s_k
    torch.testing.assert_close(w * h, torch.tensor([0.2**2] + [0.2 * 0.37] + [0.2**2] * 4))


def test_agrees_with_torchvision_default_box_generator_without_clipping():
    scales = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]  # torchvision's ssd300_vgg16
    ratios = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
    ours = PriorConfig.from_scales(300, SSD300_VOC.feature_maps, scales, ratios)
    generator = DefaultBoxGenerator(ratios, scales=scales, steps=list(SSD300_VOC.steps), clip=False)
    grid = [[f, f] for f in SSD300_VOC.feature_maps]
    theirs = generator._grid_default_boxes(grid, [300, 300], dtype=torch.float32)
    # from_scales spaces centres by image / map size; torchvision by its steps: equal except
    # for maps whose step is not image / size (10x10: 32 vs 30 px), so compare with steps.
    ours = PriorConfig(300, ours.feature_maps, ours.min_sizes, ours.max_sizes, ratios,
                       steps=SSD300_VOC.steps)
    torch.testing.assert_close(default_boxes(ours), theirs)


def test_clip_keeps_boxes_inside_the_image():
    clipped = PriorConfig(**{**SSD300_VOC.__dict__, "clip": True})
    boxes = default_boxes(clipped)
    corners = cxcywh_to_xyxy(boxes)
    assert corners.min() >= 0 and corners.max() <= 1
    unclipped = default_boxes(SSD300_VOC)
    inside = (cxcywh_to_xyxy(unclipped).min(dim=1).values >= 0) & (
        cxcywh_to_xyxy(unclipped).max(dim=1).values <= 1
    )
    torch.testing.assert_close(boxes[inside], unclipped[inside])  # only border boxes change
    assert not torch.allclose(boxes[~inside][:, :2], unclipped[~inside][:, :2])  # centres move


def test_non_square_and_small_configs():
    config = PriorConfig.from_scales(
        image_size=(120, 200), feature_maps=[(15, 25), (8, 13), (1, 1)],
        scales=[0.2, 0.45, 0.7, 0.95], aspect_ratios=[(2,), (2, 3), ()],
    )  # fmt: skip
    boxes = default_boxes(config)
    assert len(boxes) == 15 * 25 * 4 + 8 * 13 * 6 + 1 * 2 == config.num_priors
    # Cell centres of the first map: x steps of 200/25 px, y steps of 120/15 px.
    torch.testing.assert_close(boxes[0, :2], torch.tensor([4 / 200, 4 / 120]))
    torch.testing.assert_close(boxes[4, :2], torch.tensor([12 / 200, 4 / 120]))
    torch.testing.assert_close(boxes[25 * 4, :2], torch.tensor([4 / 200, 12 / 120]))
    # A square box is square in pixels: 0.2 * 120 px in both directions.
    torch.testing.assert_close(boxes[0, 2:] * torch.tensor([200, 120]), torch.tensor([24.0, 24.0]))
    tiny = PriorConfig.from_scales(32, [4, 2], [0.3, 0.6, 0.9], [(2,), (2,)])
    assert default_boxes(tiny).shape == (4 * 4 * 4 + 2 * 2 * 4, 4)


def test_device_and_dtype():
    boxes = default_boxes(SSD300_VOC, dtype=torch.float64, device="cpu")
    assert boxes.dtype == torch.float64 and boxes.device.type == "cpu"


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"min_sizes": (30, 60)}, r"min_sizes must have one entry per feature map \(6\), got 2"),
        ({"aspect_ratios": ((2,),) * 5}, "aspect_ratios must have one entry per feature map"),
        ({"steps": (8, 16)}, "steps must have one entry per feature map"),
        ({"feature_maps": ()}, "at least one feature map"),
        ({"min_sizes": (90, 60, 111, 162, 213, 264)}, r"0 < min_sizes\[0\] <= max_sizes\[0\]"),
        ({"aspect_ratios": ((0.5,),) + ((2,),) * 5}, r"ratios > 1.*reciprocals"),
        ({"aspect_ratios": ((2, 2),) + ((2,),) * 5}, "repeated ratio"),
        ({"feature_maps": (38.5, 19, 10, 5, 3, 1)}, "whole numbers"),
        ({"image_size": 0}, "image_size must be positive"),
    ],
)
def test_bad_configs_get_clear_errors(changes, words):
    with pytest.raises(ValueError, match=words):
        PriorConfig(**{**SSD300_VOC.__dict__, **changes})


def test_more_bad_input():
    with pytest.raises(TypeError, match=r"aspect_ratios\[0\] must be a sequence"):
        PriorConfig(**{**SSD300_VOC.__dict__, "aspect_ratios": (2,) * 6})
    with pytest.raises(ValueError, match="one entry per feature map plus one"):
        PriorConfig.from_scales(300, [38, 19], [0.1, 0.2], [(2,), (2,)])
    with pytest.raises(ValueError, match="s_min <= s_max"):
        paper_scales(4, 0.9, 0.2)
    with pytest.raises(TypeError, match="config must be a PriorConfig"):
        default_boxes({"image_size": 300})
