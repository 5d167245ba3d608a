"""Default boxes fitted to a dataset: measure how well they cover its objects, and propose
scales and aspect ratios that cover them better.

Lesson 09 (your own data) uses it; it is lesson 02's coverage idea applied to the learner's
data. An object can only be learned from the default boxes matched to it (IoU >= 0.5, or
its single best one). An object with no default box at IoU >= 0.5 gets one weak match, so
it is learned poorly: the share of objects with a default box at IoU >= 0.5 is a quick,
training-free check of a :class:`ssdlearn.anchors.PriorConfig` for a dataset.

Each image is resized to ``config.image_size`` as the network sees it, so boxes are
compared in normalized coordinates. With ``tile`` the network sees tiles (or training crops)
of ``tile`` pixels instead: a box is measured relative to the tile, placed where it falls in
its tile (its position modulo the tile side).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .anchors import PriorConfig, _pair, cell_box_sizes, default_boxes, paper_scales
from .boxes import box_iou, cxcywh_to_xyxy

__all__ = [
    "SIZE_BINS",
    "RATIO_BINS",
    "normalized_boxes",
    "best_prior_iou",
    "coverage",
    "propose_prior_config",
    "dataset_boxes",
    "fit_priors",
    "prior_fields",
    "plot_coverage",
]

# Bins of sqrt(w * h) (normalized) and of w / h, for the coverage tables.
SIZE_BINS = (0.0, 0.05, 0.1, 0.2, 0.4, 1.0)
RATIO_BINS = (0.0, 1 / 3, 2 / 3, 3 / 2, 3.0, math.inf)


def normalized_boxes(boxes: Sequence[Tensor], image_sizes: Sequence[Sequence[int]],
                     tile: int | None = None) -> Tensor:
    """All objects of a dataset as the network sees them.

    Args:
        boxes: per image, Tensor[G_i, 4] (xyxy, pixels).
        image_sizes: per image, (height, width) in pixels.
        tile: if given, the network sees ``tile`` x ``tile`` pieces of the images: each box
            is divided by the tile side and moved into the tile its centre falls in.
    Returns:
        Tensor[N, 4] (xyxy, normalized), N = sum of G_i.
    """
    if len(boxes) != len(image_sizes):
        raise ValueError(f"boxes and image_sizes must have one entry per image, got "
                         f"{len(boxes)} and {len(image_sizes)}")
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive integer (pixels) or None, got {tile!r}")
    out = []
    for i, (b, size) in enumerate(zip(boxes, image_sizes)):
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
        height, width = (float(v) for v in size)
        if height <= 0 or width <= 0:
            raise ValueError(f"image_sizes[{i}] must be a positive (height, width), got {size}")
        if tile is None:
            out.append(b / torch.tensor([width, height, width, height]))
            continue
        centre = (b[:, :2] + b[:, 2:]) / 2
        shift = torch.div(centre, tile, rounding_mode="floor") * tile
        out.append((b - shift.repeat(1, 2)) / tile)
    return torch.cat(out) if out else torch.zeros(0, 4)


def best_prior_iou(objects: Tensor, config: PriorConfig, chunk: int = 4096) -> Tensor:
    """Tensor[N]: each object's best IoU with a default box of ``config``.

    Two boxes of fixed sizes overlap most when their centres are closest, so on each map
    only the cell nearest to the object's centre can hold its best box of each shape: the
    cost is N times the shapes per cell, not N times P. With ``config.clip`` (boxes cut at
    the border) every default box is compared, ``chunk`` objects at a time.

    Args:
        objects: Tensor[N, 4] (xyxy, normalized).
    """
    if len(objects) == 0:
        return objects.new_zeros(0)
    if config.clip:
        priors = cxcywh_to_xyxy(default_boxes(config), check=False).to(objects)
        return torch.cat([box_iou(part, priors, check=False).amax(dim=1)
                          for part in objects.split(chunk)])
    image_h, image_w = _pair(config.image_size, "image_size")
    centre = (objects[:, :2] + objects[:, 2:]) / 2  # [N, 2] (x, y)
    best = objects.new_zeros(len(objects))
    for k, fmap in enumerate(config.feature_maps):
        fh, fw = (int(v) for v in _pair(fmap, "feature_map"))
        if config.steps is None:
            step_h, step_w = image_h / fh, image_w / fw
        else:
            step_h, step_w = _pair(config.steps[k], "steps")
        step = objects.new_tensor([step_w / image_w, step_h / image_h])
        cells = objects.new_tensor([fw - 1, fh - 1])
        index = torch.minimum((centre / step - 0.5).round().clamp(min=0), cells)
        nearest = (index + 0.5) * step  # [N, 2]
        wh = objects.new_tensor(cell_box_sizes(config.min_sizes[k], config.max_sizes[k],
                                                config.aspect_ratios[k]))
        wh = wh / objects.new_tensor([image_w, image_h])  # [S, 2]
        boxes = torch.cat([nearest[:, None] - wh / 2, nearest[:, None] + wh / 2], dim=-1)
        low = torch.maximum(objects[:, None, :2], boxes[..., :2])
        high = torch.minimum(objects[:, None, 2:], boxes[..., 2:])
        inter = (high - low).clamp(min=0).prod(dim=-1)  # [N, S]
        area = (objects[:, 2:] - objects[:, :2]).prod(dim=-1)
        iou = inter / (area[:, None] + wh.prod(dim=-1) - inter)
        best = torch.maximum(best, iou.amax(dim=1))
    return best


def _bin_table(values: Tensor, hit: Tensor, edges: Sequence[float]) -> list[dict]:
    """Per bin [low, high): the number of objects and the share with a hit."""
    index = torch.bucketize(values, torch.tensor(edges[1:-1], dtype=values.dtype), right=True)
    count = torch.bincount(index, minlength=len(edges) - 1)
    hits = torch.bincount(index, weights=hit.double(), minlength=len(edges) - 1)
    return [{"low": lo, "high": hi, "objects": int(n),
             "covered": float(h / n) if n else float("nan")}
            for lo, hi, n, h in zip(edges[:-1], edges[1:], count.tolist(), hits.tolist())]


def coverage(boxes: Sequence[Tensor], image_sizes: Sequence[Sequence[int]],
             config: PriorConfig, tile: int | None = None, threshold: float = 0.5) -> dict:
    """The share of objects with a default box at IoU >= ``threshold``, overall and binned.

    Args:
        boxes, image_sizes, tile: as :func:`normalized_boxes`.
        config: the default boxes to test.
    Returns:
        dict: ``covered`` (share, nan when there are no objects), ``objects`` (N),
        ``best_iou`` Tensor[N], ``size`` (sqrt(w*h), normalized) and ``ratio`` (w / h)
        Tensor[N], and ``by_size`` / ``by_ratio``: lists of bins (``low``, ``high``,
        ``objects``, ``covered``) over :data:`SIZE_BINS` / :data:`RATIO_BINS`.
    """
    objects = normalized_boxes(boxes, image_sizes, tile)
    wh = (objects[:, 2:] - objects[:, :2]).clamp(min=1e-9)
    best = best_prior_iou(objects, config)
    hit = best >= threshold
    size, ratio = wh.prod(dim=1).sqrt(), wh[:, 0] / wh[:, 1]
    return {
        "covered": float(hit.float().mean()) if len(hit) else float("nan"),
        "objects": len(hit),
        "best_iou": best,
        "size": size,
        "ratio": ratio,
        "by_size": _bin_table(size, hit, SIZE_BINS),
        "by_ratio": _bin_table(ratio, hit, RATIO_BINS),
    }


def _ratios_for(ratio: Tensor, candidates: Sequence[float] = (2, 3, 4)) -> tuple[float, ...]:
    """The ratios > 1 (of ``candidates``) within 1.25x of the 90th percentile of
    max(w/h, h/w): none for about square objects."""
    if len(ratio) == 0:
        return (2,)
    q = torch.quantile(ratio.log().abs(), 0.9).exp().item()  # 90% of objects within 1/q..q
    needed = tuple(a for a in candidates if a <= q * 1.25)
    return needed


def propose_prior_config(boxes: Sequence[Tensor], image_sizes: Sequence[Sequence[int]],
                         template: PriorConfig, tile: int | None = None,
                         ratios: Sequence[float] | None = None,
                         s_max: Sequence[float] = (0.5, 0.7, 0.9),
                         name: str = "fitted") -> PriorConfig:
    """Scales and aspect ratios for ``template``'s feature maps that cover the data.

    Candidates are eq. 4's evenly spaced scales from ``s_min`` to each of ``s_max``, with
    ``s_min`` at 0.6, 0.8 and 1.0 times the 1st, 5th, 10th, 25th and 50th percentile of the
    objects' sizes (sqrt(w * h), normalized); the first map, the finest, gets the smallest
    objects. The candidate with the highest :func:`coverage` wins (ties: the first found).
    Ratios: given, or those of 2, 3, 4 needed to reach 90% of the objects' w / h (none when
    the objects are about square).

    Args:
        boxes, image_sizes, tile: the data, as :func:`coverage` takes it.
        template: keeps its ``image_size``, ``feature_maps``, ``steps`` and ``clip``.
        ratios: aspect ratios > 1 for every map; measured from the data when None.
        s_max: the largest scales to try.
    Returns:
        A :class:`PriorConfig` named ``name``.
    """
    objects = normalized_boxes(boxes, image_sizes, tile)
    if len(objects) == 0:
        raise ValueError("the dataset has no objects to fit default boxes to")
    wh = (objects[:, 2:] - objects[:, :2]).clamp(min=1e-9)
    size, ratio = wh.prod(dim=1).sqrt(), wh[:, 0] / wh[:, 1]
    chosen = tuple(_ratios_for(ratio) if ratios is None else ratios)
    m, side = len(template.feature_maps), _side(template)
    quantiles = torch.quantile(size, torch.tensor([0.01, 0.05, 0.1, 0.25, 0.5])).tolist()
    best, best_share = None, -1.0
    for low in sorted({round(q * f, 4) for q in quantiles for f in (0.6, 0.8, 1.0)}):
        for high in s_max:
            if high <= low:
                continue
            scales = paper_scales(m + 1, low, high)
            candidate = PriorConfig(template.image_size, list(template.feature_maps),
                                    [s * side for s in scales[:-1]],
                                    [s * side for s in scales[1:]], [chosen] * m,
                                    steps=template.steps, clip=template.clip, name=name)
            share = float((best_prior_iou(objects, candidate) >= 0.5).float().mean())
            if share > best_share + 1e-9:
                best, best_share = candidate, share
    if best is None:
        raise ValueError(f"no candidate: every s_max {tuple(s_max)} is below the objects' sizes")
    return best


def dataset_boxes(dataset) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """(per image Tensor[G, 4] xyxy pixels, per image (height, width)) of a dataset, read
    from its annotations (``load_target``) without decoding any image."""
    boxes, sizes = [], []
    for index in range(len(dataset)):
        target = dataset.load_target(index)
        height, width = (int(v) for v in target["size"])
        boxes.append(target["boxes"] * torch.tensor([width, height, width, height]))
        sizes.append((height, width))
    return boxes, sizes


def fit_priors(dataset, template: PriorConfig, tile: int | None = None,
               name: str = "fitted") -> PriorConfig:
    """:func:`propose_prior_config` for a dataset with ``load_target`` (e.g. the
    ``ssdlearn.data`` readers); ``tile`` as the network will see the images."""
    boxes, sizes = dataset_boxes(dataset)
    return propose_prior_config(boxes, sizes, template, tile=tile, name=name)


def prior_fields(config: PriorConfig) -> dict:
    """A PriorConfig as plain numbers and lists (for a TrainConfig, JSON and checkpoints
    loaded with ``weights_only=True``); ``PriorConfig(**fields)`` rebuilds it."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return float(value) if isinstance(value, float) else value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _side(config: PriorConfig) -> float:
    size = config.image_size
    return float(size) if isinstance(size, (int, float)) else float(min(size))


def plot_coverage(result: dict, title: str = "", ax=None):
    """Draw a :func:`coverage` result: objects by size and ratio, coloured by best IoU.

    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, (ax, bar) = plt.subplots(1, 2, figsize=(10, 4))
    else:
        fig, bar = ax.figure, None
    points = ax.scatter(result["size"], result["ratio"], c=result["best_iou"], s=8,
                        cmap="RdYlGn", vmin=0, vmax=1)
    ax.set(xscale="log", yscale="log", xlabel="object size sqrt(w*h), fraction of the input",
           ylabel="aspect ratio w / h",
           title=title or f"{result['covered']:.0%} of {result['objects']} objects covered")
    fig.colorbar(points, ax=ax, label="best IoU with a default box")
    if bar is not None:
        rows = [r for r in result["by_size"] if r["objects"]]
        labels = [f"{r['low']:g}-{r['high']:g}\n({r['objects']})" for r in rows]
        bar.bar(labels, [r["covered"] for r in rows], color="tab:green")
        bar.set(ylim=(0, 1), xlabel="size bin (objects)", ylabel="share with IoU >= 0.5",
                title="coverage by size")
    fig.tight_layout()
    return fig
