"""Lesson 02's explorers: the default boxes of one cell over eq. 4's scales, and which
default boxes overlap an object, map by map."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.patches as mpatches
import torch
from matplotlib.figure import Figure

from ..anchors import SSD300_VOC, PriorConfig, default_boxes, paper_scales
from ..boxes import box_iou, cxcywh_to_xyxy
from ..viz import PALETTE, draw_boxes, show_image
from ._explorer import Explorer, _pictures, _slider

__all__ = [
    "SSD300_LAYERS",
    "ssd300_like_config",
    "DefaultBoxExplorer",
    "default_box_explorer",
    "OverlapExplorer",
    "overlap_explorer",
    "MatchExplorer",
    "match_explorer",
]

SSD300_LAYERS = ("conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
_RATIO_NAMES = {2: ("2", "1/2"), 3: ("3", "1/3")}


def ssd300_like_config(s_min: float = 0.2, s_max: float = 0.9, ratio_2: bool = True,
                       ratio_3: bool = True) -> PriorConfig:
    """SSD300's six feature maps with scales from eq. 4 and a choice of aspect ratios.

    As in the paper's VOC model, conv4_3 gets half of ``s_min`` and the other five maps
    ``paper_scales(5, s_min, s_max)``; ratio 3 is used on the middle three maps only.
    With the defaults this gives SSD300's 8732 boxes (scales differ from the Caffe
    preset's integer pixel sizes by under 1%).
    """
    scales = [s_min / 2, *paper_scales(5, s_min, s_max)]
    scales.append(s_max + (s_max - s_min) / 4)  # s_{m+1}, for the last map's extra box
    outer = (2,) if ratio_2 else ()
    middle = outer + ((3,) if ratio_3 else ())
    ratios = [outer, middle, middle, middle, outer, outer]
    return PriorConfig.from_scales(300, SSD300_VOC.feature_maps, scales, ratios, name="explorer")


def _cell_box_names(ratios: tuple[float, ...]) -> list[str]:
    names = ["1 (s_k)", "1 (s'_k)"]
    for a in ratios:
        names += list(_RATIO_NAMES.get(a, (str(a), f"1/{a}")))
    return names


class DefaultBoxExplorer(Explorer):
    """The default boxes of one cell of one SSD300 feature map, over eq. 4's scales.

    Controls: ``s_min``, ``s_max`` (FloatSliders), ``ratio_2``, ``ratio_3`` (Checkboxes),
    ``feature_map`` (ToggleButtons of map indices), ``row``, ``col`` (IntSliders, the cell),
    ``picture`` ("photo" or "shapes"). ``config`` is the PriorConfig drawn now,
    ``cell_boxes`` the cell's boxes (cxcywh), ``num_boxes`` the total.
    """

    figsize = (5.0, 5.0)

    def __init__(self, feature_map: int = 2, row: int = 4, col: int = 5,
                 picture: str = "photo") -> None:
        maps = SSD300_VOC.feature_maps
        options = [(f"{f}x{f} ({name})", k) for k, (f, name) in enumerate(zip(maps, SSD300_LAYERS))]
        side = maps[feature_map]
        controls = {
            "s_min": _slider(widgets.FloatSlider, "s_min", 0.2, 0.05, 0.5, step=0.01),
            "s_max": _slider(widgets.FloatSlider, "s_max", 0.9, 0.5, 1.0, step=0.01),
            "ratio_2": widgets.Checkbox(value=True, description="ratios 2 and 1/2"),
            "ratio_3": widgets.Checkbox(value=True, description="ratios 3 and 1/3"),
            # ToggleButtons, not a Dropdown: in JupyterLab a focused, closed Dropdown loses its
            # arrow keys to the notebook (they move to the next cell instead).
            "feature_map": widgets.ToggleButtons(
                options=[(f"{f}x{f}", k) for k, f in enumerate(maps)], value=feature_map,
                description="map", tooltips=[label for label, _ in options],
                style={"button_width": "64px", "description_width": "60px"},
                layout=widgets.Layout(width="auto"),
            ),
            "row": _slider(widgets.IntSlider, "cell row", min(row, side - 1), 0, side - 1),
            "col": _slider(widgets.IntSlider, "cell col", min(col, side - 1), 0, side - 1),
            "picture": widgets.ToggleButtons(options=["photo", "shapes"], value=picture),
        }  # fmt: skip
        c = controls
        rows = [[c["s_min"], c["s_max"], c["ratio_2"], c["ratio_3"]],
                [c["feature_map"], c["picture"]], [c["row"], c["col"]]]
        super().__init__(rows, controls, image_width="400px")

    def _on_change(self, change: dict) -> None:
        if change["owner"] is self.controls["feature_map"]:
            side = SSD300_VOC.feature_maps[change["new"]]
            with self.hold_sync():
                for name in ("row", "col"):  # keep the cell on the new, smaller or larger grid
                    self.controls[name].value = min(self.controls[name].value, side - 1)
                    self.controls[name].max = side - 1
        self.redraw()

    def draw(self, fig: Figure) -> str:
        c = {name: control.value for name, control in self.controls.items()}
        self.config = ssd300_like_config(c["s_min"], c["s_max"], c["ratio_2"], c["ratio_3"])
        self.num_boxes = self.config.num_priors
        k_map, side = c["feature_map"], self.config.feature_maps[c["feature_map"]]
        row, col = min(c["row"], side - 1), min(c["col"], side - 1)
        per_cell = self.config.boxes_per_cell
        first = sum(f * f * k for f, k in zip(self.config.feature_maps[:k_map], per_cell))
        start = first + (row * side + col) * per_cell[k_map]
        boxes = default_boxes(self.config)
        self.cell_boxes = boxes[start : start + per_cell[k_map]]

        ax = fig.add_subplot()
        show_image(ax, _pictures()[c["picture"]])
        ax.set_xlim(-0.5, 299.5)
        ax.set_ylim(299.5, -0.5)
        step = 300 / side
        if side <= 19:  # the grid of a 38x38 map is too dense to help
            for line in range(1, side):
                ax.axhline(line * step, color="white", alpha=0.35, lw=0.6)
                ax.axvline(line * step, color="white", alpha=0.35, lw=0.6)
        ax.add_patch(mpatches.Rectangle((col * step, row * step), step, step,
                                        color="white", alpha=0.45, lw=0))
        names = _cell_box_names(self.config.aspect_ratios[k_map])
        corners = cxcywh_to_xyxy(self.cell_boxes) * 300
        for i, (box, name) in enumerate(zip(corners.tolist(), names)):
            draw_boxes(ax, [box], color=PALETTE[i], show_text=False, linewidth=2)
            ax.plot([], [], color=PALETTE[i], lw=2, label=f"ratio {name}")
        ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
        ax.set_title(f"{side}x{side} map, cell ({row}, {col}): {per_cell[k_map]} default boxes")

        scales = self.config.scales()
        counts = " + ".join(
            f"{f}²·{k}" for f, k in zip(self.config.feature_maps, per_cell)
        )
        return (
            f"map {side}x{side} ({SSD300_LAYERS[k_map]}): s_k = {scales[k_map]:.3f}, "
            f"{per_cell[k_map]} boxes per cell, {side * side * per_cell[k_map]} on this map"
            f"<br><b>{self.num_boxes} default boxes</b> in all = {counts}"
        )


def default_box_explorer(feature_map: int = 2, row: int = 4, col: int = 5,
                         picture: str = "photo") -> DefaultBoxExplorer:
    """Make the default-box explorer, starting on map ``feature_map`` (0 is 38x38)."""
    maps = SSD300_VOC.feature_maps
    if not 0 <= feature_map < len(maps):
        raise ValueError(f"feature_map must be 0..{len(maps) - 1}, got {feature_map}")
    if picture not in ("photo", "shapes"):
        raise ValueError(f"picture must be 'photo' or 'shapes', got {picture!r}")
    return DefaultBoxExplorer(feature_map, row, col, picture)


class OverlapExplorer(Explorer):
    """A ground-truth box drawn with sliders, and the SSD300 default boxes that overlap it
    (before any matching rule: that is lesson 03's :class:`MatchingExplorer`).

    Controls ``cx, cy, w, h`` (FloatSliders, fractions of the image) and ``threshold``.
    ``matches_per_map`` is the number of default boxes with IoU >= threshold on each map,
    ``best_iou_per_map`` the best IoU on each.
    """

    figsize = (9.0, 4.3)

    def __init__(self, box: tuple[float, float, float, float], config: PriorConfig,
                 threshold: float) -> None:
        self.config = config
        self.priors = default_boxes(config)
        self._prior_corners = cxcywh_to_xyxy(self.priors, check=False)
        sizes = [f * f * k for f, k in zip(config.feature_maps, config.boxes_per_cell)]
        self._map_of_prior = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        controls = {
            key: _slider(widgets.FloatSlider, key, value, 0.02 if key in ("w", "h") else 0.0, 1.0,
                         step=0.01)
            for key, value in zip(("cx", "cy", "w", "h"), box)
        }
        controls["threshold"] = _slider(widgets.FloatSlider, "threshold", threshold, 0.1, 0.9,
                                        step=0.05)
        rows = [[controls[k] for k in ("cx", "cy", "w", "h")], [controls["threshold"]]]
        super().__init__(rows, controls, image_width="720px")

    def draw(self, fig: Figure) -> str:
        names = ("cx", "cy", "w", "h", "threshold")
        cx, cy, w, h, threshold = (self.controls[name].value for name in names)
        gt = torch.tensor([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
        iou = box_iou(gt, self._prior_corners, check=False)[0]
        num_maps = len(self.config.feature_maps)
        matched = iou >= threshold
        counts = torch.bincount(self._map_of_prior[matched], minlength=num_maps)
        self.matches_per_map = counts.tolist()
        best = torch.zeros(num_maps).scatter_reduce(0, self._map_of_prior, iou, "amax")
        self.best_iou_per_map = best.tolist()
        labels = [f"{f}x{f}" for f in self.config.feature_maps]

        ax = fig.add_subplot(1, 2, 1)
        show_image(ax, _pictures()["photo"])
        ax.set_xlim(-0.5, 299.5)
        ax.set_ylim(299.5, -0.5)
        for k in range(num_maps):
            chosen = self._prior_corners[matched & (self._map_of_prior == k)] * 300
            if len(chosen):
                draw_boxes(ax, chosen, color=PALETTE[k], show_text=False, linewidth=1.2)
                ax.plot([], [], color=PALETTE[k], label=f"{labels[k]}: {len(chosen)}")
        draw_boxes(ax, gt * 300, color="white", show_text=False, linewidth=3, linestyle="--")
        ax.plot([], [], color="white", ls="--", lw=2, label="object")
        ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
        ax.set_title(f"default boxes with IoU ≥ {threshold:.2f}")

        bars = fig.add_subplot(1, 2, 2)
        bars.bar(labels, self.best_iou_per_map, color=[PALETTE[k] for k in range(num_maps)])
        bars.axhline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:.2f}")
        bars.set_ylim(0, 1)
        bars.set_xlabel("feature map")
        bars.set_ylabel("best IoU with the object")
        bars.set_title("best default box on each map")
        bars.legend(loc="upper right", fontsize=8)

        total = sum(self.matches_per_map)
        per_map = ", ".join(f"{name}: {n}" for name, n in zip(labels, self.matches_per_map))
        return (f"object {w:.2f} x {h:.2f} of the image: <b>{total} default boxes</b> "
                f"with IoU ≥ {threshold:.2f} ({per_map})")


def _check_object(box: tuple[float, float, float, float]) -> None:
    if len(box) != 4 or not (0 < box[2] <= 1 and 0 < box[3] <= 1):
        raise ValueError(f"box must be (cx, cy, w, h) with 0 < w, h <= 1, got {box}")


def overlap_explorer(box: tuple[float, float, float, float] = (0.5, 0.37, 0.36, 0.34),
                     config: PriorConfig = SSD300_VOC, threshold: float = 0.5
                     ) -> OverlapExplorer:
    """Make the explorer of which default boxes overlap an object ``(cx, cy, w, h)``.

    The default object is the face in the (warped) sample photo.
    """
    _check_object(box)
    return OverlapExplorer(box, config, threshold)


class MatchExplorer(OverlapExplorer):
    """The former name of :class:`OverlapExplorer`, kept while lesson 02 uses it."""


def match_explorer(box: tuple[float, float, float, float] = (0.5, 0.37, 0.36, 0.34),
                   config: PriorConfig = SSD300_VOC, threshold: float = 0.5) -> MatchExplorer:
    """The former name of :func:`overlap_explorer`, kept while lesson 02 uses it."""
    _check_object(box)
    return MatchExplorer(box, config, threshold)
