import pytest
import torch

from ssdlearn.boxes import box_iou
from ssdlearn.widgets import iou_explorer


def shown_iou(explorer) -> float:
    """The IoU printed in the readout, as the learner reads it."""
    return float(explorer.readout.value.split("IoU = ")[1].split("<")[0])


def test_iou_explorer_updates_when_a_slider_moves():
    explorer = iou_explorer(box_a=(40, 40, 40, 40), box_b=(60, 40, 40, 40))
    # Two 40x40 boxes 20 px apart: intersection 20*40, union 2*1600 - 800.
    assert shown_iou(explorer) == pytest.approx(800 / 2400, abs=1e-3)
    assert "not a match" in explorer.readout.value
    picture = explorer.image.value

    explorer.controls["b_cx"].value = 45  # slide B over A
    a, b = explorer.boxes()
    expected = box_iou(torch.tensor([a]), torch.tensor([b])).item()
    assert explorer.iou == pytest.approx(expected)
    assert shown_iou(explorer) == pytest.approx(expected, abs=1e-3)
    assert "a match" in explorer.readout.value
    assert explorer.image.value != picture  # the picture was redrawn
    assert explorer.image.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_iou_explorer_disjoint_and_resized_boxes():
    explorer = iou_explorer(box_a=(20, 20, 10, 10), box_b=(80, 80, 10, 10))
    assert explorer.iou == 0.0
    assert "intersection 0 px²" in explorer.readout.value
    explorer.controls["a_w"].value = 100
    explorer.controls["a_h"].value = 100
    explorer.controls["a_cx"].value = 50
    explorer.controls["a_cy"].value = 50
    # A now covers the canvas, B (100 px²) lies inside it: IoU = 100 / 10000.
    assert explorer.iou == pytest.approx(0.01)


def test_iou_explorer_rejects_bad_boxes():
    with pytest.raises(ValueError, match="box_b must be"):
        iou_explorer(box_b=(10, 10, 0, 5))


# ---- lesson 02 ------------------------------------------------------------------------

from ssdlearn.anchors import SSD300_VOC, default_boxes  # noqa: E402
from ssdlearn.boxes import cxcywh_to_xyxy  # noqa: E402
from ssdlearn.widgets import (  # noqa: E402
    MatchExplorer,
    OverlapExplorer,
    default_box_explorer,
    match_explorer,
    overlap_explorer,
    ssd300_like_config,
)


def test_ssd300_like_config_counts_8732_and_follows_eq4():
    config = ssd300_like_config()
    assert config.num_priors == 8732
    assert config.scales() == pytest.approx([0.1, 0.2, 0.375, 0.55, 0.725, 0.9])
    # Within 1% of the Caffe preset's integer pixel sizes.
    ours, caffe = default_boxes(config), default_boxes(SSD300_VOC)
    assert torch.allclose(ours, caffe, rtol=0.05, atol=0.02)


def test_default_box_explorer_count_and_boxes_follow_the_controls():
    explorer = default_box_explorer(feature_map=2, row=4, col=5)
    assert explorer.num_boxes == 8732
    assert "8732 default boxes" in explorer.readout.value
    assert len(explorer.cell_boxes) == 6
    # The cell's boxes are centred on cell (4, 5) of the 10x10 map.
    centre = torch.tensor([(5 + 0.5) / 10, (4 + 0.5) / 10])
    assert torch.allclose(explorer.cell_boxes[:, :2], centre.expand(6, 2))
    picture = explorer.image.value

    explorer.controls["ratio_3"].value = False  # the paper's ablation: no 3 and 1/3
    assert explorer.num_boxes == 7760
    assert "7760 default boxes" in explorer.readout.value
    assert len(explorer.cell_boxes) == 4
    assert explorer.image.value != picture

    explorer.controls["ratio_2"].value = False
    assert explorer.num_boxes == 2 * (38**2 + 19**2 + 10**2 + 5**2 + 3**2 + 1)
    assert len(explorer.cell_boxes) == 2


def test_default_box_explorer_scales_and_feature_map():
    explorer = default_box_explorer(feature_map=2, row=9, col=9)
    before = explorer.cell_boxes.clone()
    explorer.controls["s_min"].value = 0.3
    assert explorer.config.scales()[2] == pytest.approx(0.3 + 0.6 / 4)
    assert (explorer.cell_boxes[:, 2:] > before[:, 2:]).all()  # larger boxes

    explorer.controls["feature_map"].value = 5  # 1x1: the cell is clamped to (0, 0)
    assert explorer.controls["row"].max == 0 and explorer.controls["row"].value == 0
    assert torch.allclose(explorer.cell_boxes[:, :2], torch.full((4, 2), 0.5))
    assert "map 1x1 (conv11_2)" in explorer.readout.value
    explorer.controls["picture"].value = "shapes"
    assert explorer.image.value[:4] == b"\x89PNG"


def test_match_explorer_small_objects_land_on_large_maps():
    explorer = match_explorer(box=(0.5, 0.5, 0.1, 0.1))
    assert explorer.matches_per_map[0] > 0  # 38x38 (s = 0.1) matches a 0.1 object
    assert sum(explorer.matches_per_map[3:]) == 0
    explorer.controls["w"].value = 0.8
    explorer.controls["h"].value = 0.8
    assert explorer.matches_per_map[0] == 0
    assert sum(explorer.matches_per_map[4:]) > 0  # 3x3 and 1x1 take large objects
    # The counts agree with box_iou on the preset's default boxes.
    gt = torch.tensor([[0.1, 0.1, 0.9, 0.9]])
    iou = box_iou(gt, cxcywh_to_xyxy(default_boxes(SSD300_VOC)))[0]
    assert sum(explorer.matches_per_map) == int((iou >= 0.5).sum())
    assert max(explorer.best_iou_per_map) == pytest.approx(iou.max().item())
    assert "default boxes" in explorer.readout.value


def test_explorer_factories_reject_bad_arguments():
    with pytest.raises(ValueError, match="feature_map must be 0..5"):
        default_box_explorer(feature_map=6)
    with pytest.raises(ValueError, match="picture must be"):
        default_box_explorer(picture="cat")
    with pytest.raises(ValueError, match="box must be"):
        match_explorer(box=(0.5, 0.5, 0.0, 0.2))


# ---- lesson 06 ------------------------------------------------------------------------

from ssdlearn.data import ShapesDataset  # noqa: E402
from ssdlearn.widgets import augmentation_explorer  # noqa: E402


def test_augmentation_explorer_steps_through_samples_and_stages():
    dataset = ShapesDataset(1, 96, seed=3, min_objects=3, max_objects=3)
    image, target = dataset[0]
    explorer = augmentation_explorer(image, target, dataset.classes, size=64)
    first_image, first_target = explorer.augmented
    assert first_image.shape == (3, 64, 64)
    picture = explorer.image.value
    explorer.controls["sample"].value = 5
    assert explorer.image.value != picture
    for stage in ("photometric", "zoom_out", "crop", "flip"):
        explorer.controls[stage].value = False
    # Nothing but the resize: the boxes are the original ones.
    assert torch.equal(explorer.augmented[1]["boxes"], target["boxes"])
    assert "stages: none" in explorer.readout.value
    count = len(target["boxes"])
    assert f"{count} of {count} objects kept" in explorer.readout.value
    with pytest.raises(ValueError, match="'boxes' and 'labels'"):
        augmentation_explorer(image, {"boxes": target["boxes"]}, dataset.classes)


# ---- lesson 03 ------------------------------------------------------------------------

from ssdlearn.widgets import matching_explorer  # noqa: E402


def test_matching_explorer_threshold_and_best_box_rule():
    image = torch.rand(3, 300, 300)
    target = {"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.70, 0.70, 0.74, 0.76]]),
              "labels": torch.tensor([1, 2])}
    explorer = matching_explorer(image, target, ["bg", "big", "tiny"])
    big, tiny = explorer.matches
    assert big > 1 and tiny >= 1  # the tiny object keeps its best default box
    assert "no default box" not in explorer.readout.value
    explorer.controls["best_first"].value = False
    assert explorer.matches[1] == 0  # by the threshold alone the tiny object is lost
    assert "no default box for: tiny" in explorer.readout.value
    explorer.controls["threshold"].value = 0.3
    assert explorer.matches[0] > big  # a lower threshold matches more default boxes


# ---- lesson 08 ------------------------------------------------------------------------

from ssdlearn.widgets import nms_explorer  # noqa: E402


def test_nms_explorer_counts_follow_the_threshold():
    # Three overlapping boxes of class 1 and one far-away box of class 2.
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.3, 0.3, 0.7, 0.7],
                          [0.8, 0.8, 0.9, 0.9]])
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.4, 0.0, 0.6]])
    explorer = nms_explorer(torch.rand(3, 64, 64), boxes, scores, ["bg", "a", "b"])
    assert explorer.kept == 3  # box 1 is suppressed by box 0 (IoU 0.9 > 0.45)
    explorer.controls["iou_threshold"].value = 0.1
    assert explorer.kept == 2  # box 2 (IoU 0.14 with box 0) goes too
    explorer.controls["iou_threshold"].value = 0.95
    assert explorer.kept == 4
    explorer.controls["min_score"].value = 0.75
    assert explorer.kept == 2 and "2 remain after NMS" in explorer.readout.value
    with pytest.raises(ValueError, match=r"boxes must be \[P, 4\]"):
        nms_explorer(torch.rand(3, 8, 8), boxes[:, :2], scores, ["bg", "a", "b"])


def test_overlap_explorer_keeps_its_former_name():
    new, old = overlap_explorer(), match_explorer()
    assert type(new) is OverlapExplorer and isinstance(old, OverlapExplorer)
    assert type(old) is MatchExplorer  # its repr (stored in lesson 02) keeps the old name
    assert new.matches_per_map == old.matches_per_map
    with pytest.raises(ValueError, match="0 < w, h <= 1"):
        overlap_explorer(box=(0.5, 0.5, 0.0, 0.2))


def test_explorer_output_carries_a_png_of_its_first_view():
    # A viewer without a kernel (GitHub, nbviewer, the student handout) shows the PNG.
    import base64

    explorer = iou_explorer()
    first_view = explorer.image.value
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG") and png == first_view
    explorer.controls[next(iter(explorer.controls))].value += 5   # the live view moves on
    assert explorer.image.value != first_view
