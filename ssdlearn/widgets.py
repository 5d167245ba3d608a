"""Interactive explorers for the lessons, built from ipywidgets.

Each explorer is made by a factory function and is an :class:`Explorer`, an
``ipywidgets.VBox``: controls on top, a readout, and a picture rendered to PNG with
matplotlib's Agg backend into an ``ipywidgets.Image``. Rendering to an image (instead of a
live matplotlib backend) redraws the same way in JupyterLab, Notebook, VS Code and in tests:
a test sets ``explorer.controls["name"].value`` and reads ``explorer.readout.value`` or the
new ``explorer.image.value``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache

import ipywidgets as widgets
import matplotlib.patches as mpatches
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from .anchors import SSD300_VOC, PriorConfig, default_boxes, paper_scales
from .boxes import box_area, box_iou, cxcywh_to_xyxy
from .viz import PALETTE, draw_box_pair, draw_boxes, show_image

__all__ = [
    "Explorer",
    "figure_to_png",
    "IoUExplorer",
    "iou_explorer",
    "DefaultBoxExplorer",
    "default_box_explorer",
    "MatchExplorer",
    "match_explorer",
    "AugmentationExplorer",
    "augmentation_explorer",
    "MatchingExplorer",
    "matching_explorer",
    "NMSExplorer",
    "nms_explorer",
]


def figure_to_png(fig: Figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure (made with ``Figure()``, not pyplot) to PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class Explorer(widgets.VBox):
    """Rows of controls, a readout and a picture; redrawn whenever a control changes.

    Subclasses implement :meth:`draw`, which fills a figure and returns the readout's HTML.

    Attributes:
        controls: name -> control widget.
        readout: HTML widget with what the picture shows, in numbers.
        image: Image widget with the picture (PNG).
    """

    figsize: tuple[float, float] = (4.5, 4.5)

    def __init__(self, rows: list[list[widgets.Widget]], controls: dict[str, widgets.Widget],
                 image_width: str = "360px") -> None:
        self.controls = controls
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png", layout=widgets.Layout(width=image_width))
        super().__init__([*(widgets.HBox(row) for row in rows), self.readout, self.image])
        for control in controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def _on_change(self, change: dict) -> None:
        self.redraw()

    def redraw(self) -> None:
        fig = Figure(figsize=self.figsize)
        self.readout.value = self.draw(fig)
        fig.tight_layout()
        self.image.value = figure_to_png(fig)

    def draw(self, fig: Figure) -> str:
        raise NotImplementedError


def _slider(kind: type, description: str, value: float, low: float, high: float,
            step: float = 1, width: str = "220px") -> widgets.Widget:
    return kind(value=value, min=low, max=high, step=step, description=description,
                continuous_update=True, layout=widgets.Layout(width=width),
                style={"description_width": "60px"})


# ---------------------------------------------------------------------------------------
# Lesson 01: the IoU of two boxes
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Lesson 02: default boxes
# ---------------------------------------------------------------------------------------

SSD300_LAYERS = ("conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
_RATIO_NAMES = {2: ("2", "1/2"), 3: ("3", "1/3")}


@cache
def _pictures(size: int = 300) -> dict[str, Tensor]:
    from .data import ShapesDataset, sample_photo  # data is only needed once drawn

    return {"photo": sample_photo(size), "shapes": ShapesDataset(1, size, seed=7)[0][0]}


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


class MatchExplorer(Explorer):
    """A ground-truth box drawn with sliders, and the SSD300 default boxes that overlap it.

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


def match_explorer(box: tuple[float, float, float, float] = (0.5, 0.37, 0.36, 0.34),
                   config: PriorConfig = SSD300_VOC, threshold: float = 0.5) -> MatchExplorer:
    """Make the explorer of which default boxes overlap an object ``(cx, cy, w, h)``.

    The default object is the face in the (warped) sample photo.
    """
    if len(box) != 4 or not (0 < box[2] <= 1 and 0 < box[3] <= 1):
        raise ValueError(f"box must be (cx, cy, w, h) with 0 < w, h <= 1, got {box}")
    return MatchExplorer(box, config, threshold)


# ---------------------------------------------------------------------------------------
# Lesson 06: augmentation
# ---------------------------------------------------------------------------------------


class AugmentationExplorer(Explorer):
    """An image and its boxes before and after SSD's training augmentation.

    Controls: ``sample`` (IntSlider, the random seed: step through samples), and Checkboxes
    ``photometric``, ``zoom_out``, ``crop``, ``flip`` that switch each stage on or off.
    ``augmented`` is the (image, target) shown on the right.
    """

    figsize = (9.0, 4.6)

    def __init__(self, image: Tensor, target: dict[str, Tensor], class_names: Sequence[str],
                 size: int, fill: Sequence[float]) -> None:
        from . import augment

        self.original, self.class_names, self.size = (image, target), class_names, size
        self.stages = {
            "photometric": augment.PhotometricDistort(),
            "zoom_out": augment.ZoomOut(fill=fill),
            "crop": augment.IoUCrop(),
            "flip": augment.RandomHorizontalFlip(),
        }
        controls = {"sample": _slider(widgets.IntSlider, "sample", 0, 0, 99)}
        for name in self.stages:
            controls[name] = widgets.Checkbox(value=True, description=name.replace("_", " "),
                                              layout=widgets.Layout(width="150px"))
        rows = [[controls["sample"]], [controls[name] for name in self.stages]]
        super().__init__(rows, controls, image_width="720px")

    def draw(self, fig: Figure) -> str:
        from .augment import Compose, Resize

        enabled = [name for name in self.stages if self.controls[name].value]
        transform = Compose([*(self.stages[name] for name in enabled), Resize(self.size)])
        generator = torch.Generator().manual_seed(self.controls["sample"].value)
        self.augmented = transform(*self.original, generator=generator)
        for ax, (image, target), title in zip(
            (fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)),
            (self.original, self.augmented),
            ("original", f"augmented, sample {self.controls['sample'].value}"),
        ):
            show_image(ax, image, title=title)
            draw_boxes(ax, target["boxes"], target["labels"], class_names=self.class_names,
                       image_size=tuple(image.shape[1:]))
        crop = self.stages["crop"].last_option if "crop" in enabled else None
        crop_text = ("whole image" if crop is None else "random patch" if crop == 0
                     else f"patch with IoU ≥ {crop} with some object")
        kept = len(self.augmented[1]["boxes"])
        return (f"stages: {', '.join(enabled) or 'none'} · crop: {crop_text} · "
                f"<b>{kept} of {len(self.original[1]['boxes'])} objects kept</b>")


def augmentation_explorer(image: Tensor, target: dict[str, Tensor],
                          class_names: Sequence[str], size: int = 300,
                          fill: Sequence[float] = (0.485, 0.456, 0.406)) -> AugmentationExplorer:
    """Make the augmentation explorer for one sample (``target`` with normalized boxes)."""
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target must have 'boxes' and 'labels', got keys {sorted(target)}")
    return AugmentationExplorer(image, target, class_names, size, fill)


# ---------------------------------------------------------------------------------------
# Lesson 03: matching
# ---------------------------------------------------------------------------------------


class MatchingExplorer(Explorer):
    """The default boxes matched to each object of an image, as the threshold changes.

    Controls: ``threshold`` (FloatSlider) and ``best_first`` (Checkbox: the paper's step 1,
    each object first takes its best default box). ``matches`` is the number of default
    boxes matched to each object.
    """

    figsize = (5.2, 5.2)

    def __init__(self, image: Tensor, target: dict[str, Tensor], config: PriorConfig,
                 class_names: Sequence[str], threshold: float) -> None:
        self.picture, self.target, self.class_names = image, target, class_names
        self.priors = default_boxes(config, dtype=torch.float64)
        self.iou = box_iou(target["boxes"].double(), cxcywh_to_xyxy(self.priors))  # [G, P]
        controls = {
            "threshold": _slider(widgets.FloatSlider, "threshold", threshold, 0.1, 0.9, step=0.05),
            "best_first": widgets.Checkbox(value=True, description="best default box first"),
        }
        super().__init__([[controls["threshold"], controls["best_first"]]], controls,
                         image_width="420px")

    def draw(self, fig: Figure) -> str:
        from .matching import match

        threshold = self.controls["threshold"].value
        boxes, labels = self.target["boxes"].double(), self.target["labels"]
        if len(boxes) == 0:
            positive = torch.zeros(len(self.priors), dtype=torch.bool)
            owner = torch.zeros(len(self.priors), dtype=torch.long)
        elif self.controls["best_first"].value:
            matched_labels, matched_boxes = match(boxes, labels, self.priors, threshold)
            positive = matched_labels > 0
            # Which object each default box took: the one whose box it copied.
            owner = (matched_boxes[:, None, :] == boxes[None]).all(dim=-1).int().argmax(dim=1)
        else:  # the threshold alone
            best, owner = self.iou.max(dim=0)
            positive = best >= threshold
        self.matches = [int((positive & (owner == g)).sum()) for g in range(len(boxes))]

        ax = fig.add_subplot()
        show_image(ax, self.picture)
        size = tuple(self.picture.shape[1:])
        corners = cxcywh_to_xyxy(self.priors)
        for g in range(len(boxes)):
            chosen = corners[positive & (owner == g)]
            draw_boxes(ax, chosen, color=PALETTE[g % len(PALETTE)], show_text=False,
                       linewidth=1, image_size=size)
            draw_boxes(ax, boxes[g : g + 1], labels[g : g + 1], class_names=self.class_names,
                       color=PALETTE[g % len(PALETTE)], linewidth=3, image_size=size)
        rule = ("best box first + threshold" if self.controls["best_first"].value
                else "threshold only")
        ax.set_title(f"{rule}: {int(positive.sum())} positives at IoU ≥ {threshold:.2f}")
        names = [self.class_names[int(label)] for label in labels]
        unmatched = [n for n, m in zip(names, self.matches) if m == 0]
        lost = f" · <b>no default box for: {', '.join(unmatched)}</b>" if unmatched else ""
        return ("default boxes per object: "
                + ", ".join(f"{n} {m}" for n, m in zip(names, self.matches)) + lost)


def matching_explorer(image: Tensor, target: dict[str, Tensor], class_names: Sequence[str],
                      config: PriorConfig = SSD300_VOC, threshold: float = 0.5
                      ) -> MatchingExplorer:
    """Make the matching explorer for one image and its objects (boxes normalized)."""
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target must have 'boxes' and 'labels', got keys {sorted(target)}")
    return MatchingExplorer(image, target, config, class_names, threshold)


# ---------------------------------------------------------------------------------------
# Lesson 08: non-maximum suppression
# ---------------------------------------------------------------------------------------


class NMSExplorer(Explorer):
    """One image's decoded boxes before and after per-class NMS.

    Controls: ``iou_threshold`` (NMS overlap, 0.45 in the paper) and ``min_score`` (boxes
    drawn and kept above this score). ``kept`` is the number of detections after NMS.
    """

    figsize = (9.0, 4.6)

    def __init__(self, image: Tensor, boxes: Tensor, scores: Tensor,
                 class_names: Sequence[str]) -> None:
        self.picture, self.boxes, self.scores = image, boxes, scores
        self.class_names = class_names
        controls = {
            "iou_threshold": _slider(widgets.FloatSlider, "NMS IoU", 0.45, 0.05, 0.95, step=0.05),
            "min_score": _slider(widgets.FloatSlider, "min score", 0.3, 0.01, 0.95, step=0.01),
        }
        super().__init__([[controls["iou_threshold"], controls["min_score"]]], controls,
                         image_width="720px")

    def draw(self, fig: Figure) -> str:
        from .detect import batched_nms

        iou_threshold = self.controls["iou_threshold"].value
        min_score = self.controls["min_score"].value
        box_index, cls = (self.scores[:, 1:] > min_score).nonzero(as_tuple=True)
        boxes, scores, labels = self.boxes[box_index], self.scores[box_index, cls + 1], cls + 1
        kept = batched_nms(boxes, scores, labels, iou_threshold)
        self.kept = len(kept)
        size = tuple(self.picture.shape[1:])
        for position, (chosen, title) in enumerate(
            ((torch.arange(len(boxes)), f"before NMS: {len(boxes)} boxes above {min_score:.2f}"),
             (kept, f"after NMS at IoU {iou_threshold:.2f}: {len(kept)} boxes"))
        ):
            ax = fig.add_subplot(1, 2, position + 1)
            show_image(ax, self.picture, title=title)
            draw_boxes(ax, boxes[chosen], labels[chosen],
                       scores[chosen] if position else None, self.class_names,
                       image_size=size, linewidth=1 if not position else 2,
                       show_text=bool(position))
        return (f"{len(boxes)} (box, class) pairs score above {min_score:.2f}; "
                f"<b>{len(kept)} remain after NMS</b>")


def nms_explorer(image: Tensor, boxes: Tensor, scores: Tensor,
                 class_names: Sequence[str]) -> NMSExplorer:
    """Make the NMS explorer from one image's decoded ``boxes[P, 4]`` (xyxy, normalized) and
    class probabilities ``scores[P, C]`` (column 0 the background)."""
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 2 or len(scores) != len(boxes):
        raise ValueError(f"boxes must be [P, 4] and scores [P, C], got {list(boxes.shape)} "
                         f"and {list(scores.shape)}")
    return NMSExplorer(image, boxes.detach(), scores.detach(), class_names)
