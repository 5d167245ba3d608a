"""Drawing helpers: images and boxes on matplotlib axes (every lesson, from 01 on).

They only draw what the rest of the library computes. Boxes are ``xyxy``; pass
``image_size=(height, width)`` to draw normalized boxes on an image in pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.patches as mpatches
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from .boxes import to_pixels

__all__ = ["PALETTE", "color_for", "show_image", "draw_boxes", "draw_box_pair"]

# Matplotlib's tab10 colours: distinct, readable on photos and on white.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip


def color_for(label: int) -> str:
    """The colour of class ``label`` (stable across every picture in the course)."""
    return PALETTE[int(label) % len(PALETTE)]


def _to_numpy_image(image: Tensor | np.ndarray) -> np.ndarray:
    """A CHW/HWC tensor or array in [0, 1] or [0, 255] as an HWC array matplotlib shows."""
    if isinstance(image, Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype.kind == "f":
        image = image.clip(0, 1)
    return image


def show_image(ax: Axes, image: Tensor | np.ndarray, title: str | None = None) -> Axes:
    """Show an image (``Tensor[3, H, W]`` or an ``[H, W, 3]`` array) without axis ticks."""
    ax.imshow(_to_numpy_image(image))
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title)
    return ax


def draw_boxes(
    ax: Axes,
    boxes: Tensor | Sequence[Sequence[float]],
    labels: Tensor | Sequence[int] | None = None,
    scores: Tensor | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    *,
    image_size: tuple[int, int] | None = None,
    color: str | None = None,
    linewidth: float = 2.0,
    linestyle: str = "-",
    fill: bool = False,
    show_text: bool = True,
) -> list[mpatches.Rectangle]:
    """Draw ``xyxy`` boxes on ``ax``, each with its class name and score.

    Args:
        boxes: Tensor[N, 4] (xyxy), in pixels, or normalized when ``image_size`` is given.
        labels: Tensor[N] class indices; they pick the colour and the name.
        scores: Tensor[N] confidences, printed after the name.
        class_names: names indexed by label (index 0 is the background).
        image_size: (height, width) to scale normalized boxes to pixels.
        color: one colour for every box, instead of a colour per class.
    Returns:
        The rectangles drawn, in the order of ``boxes``.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4)
    if image_size is not None:
        boxes = to_pixels(boxes, image_size)
    n = len(boxes)
    labels_list = [None] * n if labels is None else [int(v) for v in torch.as_tensor(labels)]
    scores_list = [None] * n if scores is None else [float(v) for v in torch.as_tensor(scores)]
    if len(labels_list) != n or len(scores_list) != n:
        raise ValueError(
            f"labels and scores must have one entry per box ({n} boxes), "
            f"got {len(labels_list)} labels and {len(scores_list)} scores"
        )
    patches = []
    for (x1, y1, x2, y2), label, score in zip(boxes.tolist(), labels_list, scores_list):
        box_color = color or (color_for(label) if label is not None else PALETTE[0])
        rect = mpatches.Rectangle(
            (x1, y1), x2 - x1, y2 - y1,
            fill=fill, alpha=0.25 if fill else 1.0,
            edgecolor=box_color, facecolor=box_color,
            linewidth=linewidth, linestyle=linestyle,
        )  # fmt: skip
        ax.add_patch(rect)
        patches.append(rect)
        text = _box_text(label, score, class_names)
        if show_text and text:
            ax.text(
                x1, y1, text, fontsize=8, color="white", va="bottom", ha="left",
                bbox=dict(facecolor=box_color, edgecolor="none", pad=1.5, alpha=0.9),
            )  # fmt: skip
    return patches


def _box_text(label: int | None, score: float | None, class_names: Sequence[str] | None) -> str:
    parts = []
    if label is not None:
        parts.append(class_names[label] if class_names is not None else str(label))
    if score is not None:
        parts.append(f"{score:.2f}")
    return " ".join(parts)


def draw_box_pair(ax: Axes, box_a: Sequence[float], box_b: Sequence[float]) -> None:
    """Draw two ``xyxy`` boxes, their intersection shaded and their IoU in the title."""
    from .boxes import box_iou  # viz draws; boxes computes

    a = torch.tensor(box_a, dtype=torch.float64)[None]
    b = torch.tensor(box_b, dtype=torch.float64)[None]
    iou = box_iou(a, b).item()
    draw_boxes(ax, a, color=PALETTE[0], show_text=False)
    draw_boxes(ax, b, color=PALETTE[1], show_text=False)
    x1, y1 = torch.maximum(a[0, :2], b[0, :2]).tolist()
    x2, y2 = torch.minimum(a[0, 2:], b[0, 2:]).tolist()
    if x2 > x1 and y2 > y1:
        ax.add_patch(
            mpatches.Rectangle((x1, y1), x2 - x1, y2 - y1, color=PALETTE[2], alpha=0.4, lw=0)
        )
    ax.set_title(f"IoU = {iou:.3f}")
    ax.legend(
        handles=[
            mpatches.Patch(edgecolor=PALETTE[0], facecolor="none", label="box A"),
            mpatches.Patch(edgecolor=PALETTE[1], facecolor="none", label="box B"),
            mpatches.Patch(color=PALETTE[2], alpha=0.4, label="A ∩ B"),
        ],
        loc="upper right",
        fontsize=8,
    )
