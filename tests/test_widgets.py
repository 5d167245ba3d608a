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

    explorer.sliders["b_cx"].value = 45  # slide B over A
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
    explorer.sliders["a_w"].value = 100
    explorer.sliders["a_h"].value = 100
    explorer.sliders["a_cx"].value = 50
    explorer.sliders["a_cy"].value = 50
    # A now covers the canvas, B (100 px²) lies inside it: IoU = 100 / 10000.
    assert explorer.iou == pytest.approx(0.01)


def test_iou_explorer_rejects_bad_boxes():
    with pytest.raises(ValueError, match="box_b must be"):
        iou_explorer(box_b=(10, 10, 0, 5))
