"""Lesson 01's explorer: two boxes moved with sliders, and their IoU."""

from __future__ import annotations

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure

from ..boxes import box_area, box_iou
from ..viz import draw_box_pair
from ._explorer import Explorer, _slider

__all__ = ["IoUExplorer", "iou_explorer"]


class IoUExplorer(Explorer):
    """Two boxes on a square canvas, moved and resized with sliders; shows their IoU.

    Controls ``a_cx, a_cy, a_w, a_h, b_cx, ...`` are IntSliders in pixels. ``iou`` is the
    IoU shown now.
    """

    def __init__(self, box_a: tuple[int, int, int, int], box_b: tuple[int, int, int, int],
                 canvas: int = 100, threshold: float = 0.5) -> None:
        self.canvas, self.threshold = canvas, threshold
        controls, rows = {}, []
        for name, box in (("a", box_a), ("b", box_b)):
            row = []
            for key, value in zip(("cx", "cy", "w", "h"), box):
                low = 1 if key in ("w", "h") else 0
                slider = _slider(widgets.IntSlider, f"{name.upper()} {key}", value, low, canvas)
                controls[f"{name}_{key}"] = slider
                row.append(slider)
            rows.append(row)
        super().__init__(rows, controls)

    def boxes(self) -> tuple[list[float], list[float]]:
        """The two boxes as xyxy lists, in pixels."""
        out = []
        for name in ("a", "b"):
            cx, cy, w, h = (self.controls[f"{name}_{k}"].value for k in ("cx", "cy", "w", "h"))
            out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        return out[0], out[1]

    def draw(self, fig: Figure) -> str:
        box_a, box_b = self.boxes()
        a = torch.tensor([box_a], dtype=torch.float64)
        b = torch.tensor([box_b], dtype=torch.float64)
        self.iou = box_iou(a, b).item()
        area_a, area_b = box_area(a).item(), box_area(b).item()
        inter_w = max(0.0, min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]))
        inter_h = max(0.0, min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]))
        inter = inter_w * inter_h
        ax = fig.add_subplot()
        draw_box_pair(ax, box_a, box_b)
        ax.set_xlim(0, self.canvas)
        ax.set_ylim(self.canvas, 0)  # image coordinates: y grows downwards
        ax.set_aspect("equal")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        verdict = "a match" if self.iou >= self.threshold else "not a match"
        return (
            f"<b>IoU = {self.iou:.3f}</b> &nbsp; intersection {inter:.0f} px², "
            f"union {area_a + area_b - inter:.0f} px² &nbsp; "
            f"({verdict} at SSD's threshold {self.threshold})"
        )


def iou_explorer(box_a: tuple[int, int, int, int] = (40, 45, 40, 50),
                 box_b: tuple[int, int, int, int] = (60, 55, 50, 40),
                 canvas: int = 100, threshold: float = 0.5) -> IoUExplorer:
    """Make an IoU explorer; boxes are ``(cx, cy, w, h)`` in pixels on a square canvas."""
    for name, box in (("box_a", box_a), ("box_b", box_b)):
        if len(box) != 4 or min(box[2], box[3]) < 1:
            raise ValueError(f"{name} must be (cx, cy, w, h) with w, h >= 1, got {box}")
    return IoUExplorer(box_a, box_b, canvas=canvas, threshold=threshold)
