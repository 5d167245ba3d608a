"""Lesson 05's explorer: which negatives hard negative mining keeps, as the ratio changes."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..boxes import cxcywh_to_xyxy
from ..loss import hard_negative_mask
from ..viz import draw_boxes, show_image
from ._explorer import Explorer, _slider

__all__ = ["MiningExplorer", "mining_explorer"]


class MiningExplorer(Explorer):
    """One image's default boxes: its positives and the negatives mining keeps.

    Control: ``ratio`` (FloatSlider, negatives kept per positive). ``kept`` is the
    BoolTensor[P] of kept negatives, computed by :func:`ssdlearn.loss.hard_negative_mask`.
    """

    figsize = (9.6, 4.4)

    def __init__(self, image: Tensor, labels: Tensor, conf_loss: Tensor, priors: Tensor,
                 target: dict[str, Tensor] | None, class_names: Sequence[str] | None,
                 ratio: float, max_ratio: float) -> None:
        self.picture, self.labels, self.conf_loss = image, labels, conf_loss.detach().double()
        self.corners = cxcywh_to_xyxy(priors.double())
        self.target, self.class_names = target, class_names
        negative = self.conf_loss[labels == 0]
        self.sorted_negatives = negative.sort(descending=True).values
        controls = {"ratio": _slider(widgets.FloatSlider, "neg : pos", ratio, 0, max_ratio,
                                     step=0.5, width="320px")}
        super().__init__([[controls["ratio"]]], controls, image_width="720px")

    def draw(self, fig: Figure) -> str:
        ratio = float(self.controls["ratio"].value)
        self.kept = hard_negative_mask(self.conf_loss[None], self.labels[None], ratio)[0]
        positives, kept = int((self.labels > 0).sum()), int(self.kept.sum())
        negatives = len(self.sorted_negatives)
        size = tuple(self.picture.shape[1:])

        ax = fig.add_subplot(1, 2, 1)
        show_image(ax, self.picture)
        draw_boxes(ax, self.corners[self.kept], color="white", linewidth=1, show_text=False,
                   image_size=size)
        if self.target is not None and len(self.target["boxes"]):
            draw_boxes(ax, self.target["boxes"], self.target["labels"],
                       class_names=self.class_names, image_size=size)
        ax.set_title(f"{kept} hard negatives kept (white)")

        curve = fig.add_subplot(1, 2, 2)
        if negatives:
            ranks = torch.arange(1, negatives + 1)
            curve.loglog(ranks, self.sorted_negatives.clamp(min=1e-8), color="tab:blue",
                         label="negatives, hardest first")
            if kept:
                curve.loglog(ranks[:kept], self.sorted_negatives[:kept].clamp(min=1e-8),
                             color="tab:red", lw=3, label=f"kept: {kept}")
        curve.set_xlabel("rank among this image's negatives (log)")
        curve.set_ylabel("cross-entropy (log)")
        curve.set_title(f"ratio {ratio:g} : 1 with {positives} positives")
        curve.legend(loc="lower left")

        total = float(self.sorted_negatives.sum()) if negatives else 0.0
        share = float(self.sorted_negatives[:kept].sum()) / total if total > 0 else 0.0
        return (f"{positives} positives · ratio {ratio:g} → <b>{kept}</b> of {negatives} "
                f"negatives kept ({100 * kept / max(negatives, 1):.2f}%), carrying "
                f"{100 * share:.0f}% of all negatives' cross-entropy")


def mining_explorer(image: Tensor, labels: Tensor, conf_loss: Tensor, priors: Tensor,
                    target: dict[str, Tensor] | None = None,
                    class_names: Sequence[str] | None = None, ratio: float = 3.0,
                    max_ratio: float = 20.0) -> MiningExplorer:
    """Make the mining explorer for one image.

    Args:
        image: Tensor[3, H, W] in [0, 1].
        labels: LongTensor[P] from matching (> 0 object, 0 background, -1 ignored).
        conf_loss: Tensor[P], each default box's cross-entropy.
        priors: Tensor[P, 4] (cxcywh, normalized).
        target: optional dict(boxes[G, 4] xyxy normalized, labels[G]) to draw the objects.
    """
    if labels.ndim != 1 or conf_loss.shape != labels.shape:
        raise ValueError(f"labels and conf_loss must both have shape [P], got "
                         f"{list(labels.shape)} and {list(conf_loss.shape)}")
    if priors.shape != (labels.shape[0], 4):
        raise ValueError(f"priors must have shape [{labels.shape[0]}, 4], got {list(priors.shape)}")
    if not 0 <= ratio <= max_ratio:
        raise ValueError(f"ratio must be in [0, {max_ratio}], got {ratio}")
    return MiningExplorer(image, labels, conf_loss, priors, target, class_names, ratio,
                          max_ratio)
