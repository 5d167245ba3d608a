"""Interactive explorers for the lessons, built from ipywidgets.

Each explorer is made by a factory function and is an ``ipywidgets.VBox``: sliders on
top, a readout, and a picture rendered to PNG with matplotlib's Agg backend into an
``ipywidgets.Image``. Rendering to an image (instead of a live matplotlib backend) redraws
the same way in JupyterLab, Notebook, VS Code and in tests: a test sets ``slider.value``
and reads ``readout.value`` or the new ``image.value``.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .boxes import box_area, box_iou
from .viz import draw_box_pair

__all__ = ["IoUExplorer", "iou_explorer", "figure_to_png"]


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure (made with ``Figure()``, not pyplot) to PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class IoUExplorer(widgets.VBox):
    """Two boxes on a square canvas, moved and resized with sliders; shows their IoU.

    Attributes:
        sliders: ``{"a_cx", "a_cy", "a_w", "a_h", "b_cx", ...}`` -> IntSlider, in pixels.
        readout: HTML widget with the intersection, union and IoU.
        image: Image widget with the picture.
        iou: the IoU shown now.
    """

    def __init__(self, box_a: tuple[int, int, int, int], box_b: tuple[int, int, int, int],
                 canvas: int = 100, threshold: float = 0.5) -> None:
        self.canvas = canvas
        self.threshold = threshold
        self.sliders: dict[str, widgets.IntSlider] = {}
        rows = []
        for name, box in (("a", box_a), ("b", box_b)):
            row = []
            for key, value in zip(("cx", "cy", "w", "h"), box):
                low = 1 if key in ("w", "h") else 0
                slider = widgets.IntSlider(
                    value=value, min=low, max=canvas, description=f"{name.upper()} {key}",
                    continuous_update=True, layout=widgets.Layout(width="220px"),
                    style={"description_width": "50px"},
                )  # fmt: skip
                slider.observe(self._on_change, names="value")
                self.sliders[f"{name}_{key}"] = slider
                row.append(slider)
            rows.append(widgets.HBox(row))
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width="360px"))
        super().__init__([*rows, self.readout, self.image])
        self._redraw()

    def boxes(self) -> tuple[list[float], list[float]]:
        """The two boxes as xyxy lists, in pixels."""
        out = []
        for name in ("a", "b"):
            cx, cy, w, h = (self.sliders[f"{name}_{k}"].value for k in ("cx", "cy", "w", "h"))
            out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        return out[0], out[1]

    def _on_change(self, change: dict) -> None:
        self._redraw()

    def _redraw(self) -> None:
        box_a, box_b = self.boxes()
        a = torch.tensor([box_a], dtype=torch.float64)
        b = torch.tensor([box_b], dtype=torch.float64)
        self.iou = box_iou(a, b).item()
        area_a, area_b = box_area(a).item(), box_area(b).item()
        inter_w = max(0.0, min(box_a[2], box_b[2]) - max(box_a[0], box_b[0]))
        inter_h = max(0.0, min(box_a[3], box_b[3]) - max(box_a[1], box_b[1]))
        inter = inter_w * inter_h
        verdict = "a match" if self.iou >= self.threshold else "not a match"
        self.readout.value = (
            f"<b>IoU = {self.iou:.3f}</b> &nbsp; intersection {inter:.0f} px², "
            f"union {area_a + area_b - inter:.0f} px² &nbsp; "
            f"({verdict} at SSD's threshold {self.threshold})"
        )
        fig = Figure(figsize=(4.5, 4.5))
        ax = fig.add_subplot()
        draw_box_pair(ax, box_a, box_b)
        ax.set_xlim(0, self.canvas)
        ax.set_ylim(self.canvas, 0)  # image coordinates: y grows downwards
        ax.set_aspect("equal")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        fig.tight_layout()
        self.image.value = figure_to_png(fig)


def iou_explorer(box_a: tuple[int, int, int, int] = (40, 45, 40, 50),
                 box_b: tuple[int, int, int, int] = (60, 55, 50, 40),
                 canvas: int = 100, threshold: float = 0.5) -> IoUExplorer:
    """Make an IoU explorer; boxes are ``(cx, cy, w, h)`` in pixels on a square canvas."""
    for name, box in (("box_a", box_a), ("box_b", box_b)):
        if len(box) != 4 or min(box[2], box[3]) < 1:
            raise ValueError(f"{name} must be (cx, cy, w, h) with w, h >= 1, got {box}")
    return IoUExplorer(box_a, box_b, canvas=canvas, threshold=threshold)
