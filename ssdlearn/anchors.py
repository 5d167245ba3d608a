"""Default boxes: SSD's fixed set of boxes tiled over several feature maps. Lesson 02.

Feature map k (of m) has a scale s_k, a fraction of the image side, from eq. 4 of the paper:

    s_k = s_min + (s_max - s_min) * (k - 1) / (m - 1),   s_min = 0.2, s_max = 0.9

Every cell of map k gets one box per aspect ratio a, of width s_k * sqrt(a) and height
s_k / sqrt(a), plus an extra square box of scale sqrt(s_k * s_{k+1}), centred on the cell.

The original Caffe code writes the scales as integer pixel sizes (``min_sizes``, and
``max_sizes`` for the extra box) and the cell pitch as ``steps``; the presets below copy
them, so SSD300 has exactly the paper's 8732 boxes. Boxes come out in the Caffe order the
prediction heads use: map by map from the largest, cells row-major (y, then x), and within
a cell ``[1 at s_k, 1 at sqrt(s_k * s_{k+1}), 2, 1/2, 3, 1/3]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = [
    "paper_scales",
    "PriorConfig",
    "default_boxes",
    "cell_box_sizes",
    "SSD300_VOC",
    "SSD300_COCO",
    "SSD512_VOC",
    "SSD512_COCO",
]

Size = tuple[float, float]  # (height, width)


def paper_scales(num_maps: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """The scales of eq. 4: ``num_maps`` values evenly spaced from ``s_min`` to ``s_max``."""
    if not isinstance(num_maps, int) or num_maps < 1:
        raise ValueError(f"num_maps must be a positive integer, got {num_maps!r}")
    if not 0 < s_min <= s_max:
        raise ValueError(f"need 0 < s_min <= s_max, got s_min={s_min}, s_max={s_max}")
    if num_maps == 1:
        return [s_min]
    return [s_min + (s_max - s_min) * k / (num_maps - 1) for k in range(num_maps)]


def _pair(value: float | Sequence[float], name: str) -> Size:
    """An int/float side or a (height, width) pair, as (height, width)."""
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    if len(value) != 2:
        raise ValueError(f"{name} must be a number or a (height, width) pair, got {value!r}")
    return (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class PriorConfig:
    """Where the default boxes of an SSD go, in the original implementation's terms.

    Attributes:
        image_size: input side in pixels, or (height, width).
        feature_maps: side of each feature map, or (height, width), largest first.
        steps: pixels between neighbouring cell centres on each map (the map's stride);
            by default ``image_size / feature_map``.
        min_sizes: side in pixels of each map's square box at scale s_k.
        max_sizes: pixels for s_{k+1}; the extra square box has side sqrt(min * max).
        aspect_ratios: for each map, the ratios > 1 to use (e.g. ``(2, 3)``); each brings
            its reciprocal too, and ratio 1 is always there. ``()`` means square boxes only.
        clip: clamp every box to the image. The original code does not clip.
    """

    image_size: int | Size
    feature_maps: Sequence[int | Size]
    min_sizes: Sequence[float]
    max_sizes: Sequence[float]
    aspect_ratios: Sequence[Sequence[float]]
    steps: Sequence[float | Size] | None = None
    clip: bool = False
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        m = len(self.feature_maps)
        if m == 0:
            raise ValueError("feature_maps must list at least one feature map")
        lengths = {
            "min_sizes": len(self.min_sizes),
            "max_sizes": len(self.max_sizes),
            "aspect_ratios": len(self.aspect_ratios),
        }
        if self.steps is not None:
            lengths["steps"] = len(self.steps)
        for name, length in lengths.items():
            if length != m:
                raise ValueError(
                    f"{name} must have one entry per feature map ({m}), got {length}"
                )
        image_h, image_w = _pair(self.image_size, "image_size")
        if image_h <= 0 or image_w <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size!r}")
        for k, fmap in enumerate(self.feature_maps):
            fh, fw = _pair(fmap, f"feature_maps[{k}]")
            if fh < 1 or fw < 1 or fh != int(fh) or fw != int(fw):
                raise ValueError(f"feature_maps[{k}] must be whole numbers >= 1, got {fmap!r}")
        for k, (low, high) in enumerate(zip(self.min_sizes, self.max_sizes)):
            if not 0 < low <= high:
                raise ValueError(
                    f"map {k}: need 0 < min_sizes[{k}] <= max_sizes[{k}], got {low} and {high}"
                )
        for k, ratios in enumerate(self.aspect_ratios):
            if isinstance(ratios, (int, float)):
                raise TypeError(
                    f"aspect_ratios[{k}] must be a sequence like (2, 3), got {ratios!r}"
                )
            for a in ratios:
                if not a > 1:
                    raise ValueError(
                        f"aspect_ratios[{k}] lists ratios > 1 (their reciprocals and 1 are "
                        f"added automatically), got {a!r}"
                    )
            if len(set(ratios)) != len(ratios):
                raise ValueError(f"aspect_ratios[{k}] has a repeated ratio: {tuple(ratios)}")

    @classmethod
    def from_scales(
        cls,
        image_size: int | Size,
        feature_maps: Sequence[int | Size],
        scales: Sequence[float],
        aspect_ratios: Sequence[Sequence[float]],
        clip: bool = False,
        name: str = "custom",
    ) -> PriorConfig:
        """A config from fractional scales, as the paper writes them.

        Args:
            scales: m + 1 values: s_1 ... s_m for the m maps, then s_{m+1} for the last
                map's extra box (e.g. ``paper_scales(m + 1, ...)`` or eq. 4 plus one step).
        """
        m = len(feature_maps)
        if len(scales) != m + 1:
            raise ValueError(
                f"scales must have one entry per feature map plus one ({m + 1}), got {len(scales)}"
            )
        # Pixel sizes are relative to the shorter side, so a square box stays square.
        side = min(_pair(image_size, "image_size"))
        sizes = [s * side for s in scales]
        return cls(image_size, list(feature_maps), sizes[:-1], sizes[1:],
                   [tuple(r) for r in aspect_ratios], clip=clip, name=name)

    @property
    def boxes_per_cell(self) -> list[int]:
        """k for each map: 2 square boxes plus 2 per aspect ratio."""
        return [2 + 2 * len(ratios) for ratios in self.aspect_ratios]

    @property
    def num_priors(self) -> int:
        """P, the total number of default boxes."""
        total = 0
        for fmap, k in zip(self.feature_maps, self.boxes_per_cell):
            fh, fw = _pair(fmap, "feature_map")
            total += int(fh) * int(fw) * k
        return total

    def scales(self) -> list[float]:
        """s_k of each map (``min_sizes`` as fractions of the shorter image side)."""
        side = min(_pair(self.image_size, "image_size"))
        return [size / side for size in self.min_sizes]


def cell_box_sizes(min_size: float, max_size: float, ratios: Sequence[float]) -> list[Size]:
    """(width, height) of one cell's default boxes, in Caffe order: the square of side
    ``min_size`` (s_k), the square of side sqrt(min_size * max_size), then for each ratio a
    the pair (min_size * sqrt(a), min_size / sqrt(a)) and its transpose. In the units of
    the sizes given (pixels in a PriorConfig, fractions of the image in lesson 02)."""
    sizes = [(min_size, min_size)]
    extra = math.sqrt(min_size * max_size)
    sizes.append((extra, extra))
    for a in ratios:
        r = math.sqrt(a)
        sizes += [(min_size * r, min_size / r), (min_size / r, min_size * r)]
    return sizes


def default_boxes(config: PriorConfig, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Every default box of ``config``.

    Returns:
        Tensor[P, 4] (cxcywh, normalized to the image), in Caffe order.
    """
    if not isinstance(config, PriorConfig):
        raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
    image_h, image_w = _pair(config.image_size, "image_size")
    levels = []
    for k, fmap in enumerate(config.feature_maps):
        fh, fw = (int(v) for v in _pair(fmap, f"feature_maps[{k}]"))
        if config.steps is None:
            step_h, step_w = image_h / fh, image_w / fw
        else:
            step_h, step_w = _pair(config.steps[k], f"steps[{k}]")
        # Cell centres, row-major: y is the slow index, x the fast one.
        cy = (torch.arange(fh, dtype=torch.float64) + 0.5) * step_h / image_h
        cx = (torch.arange(fw, dtype=torch.float64) + 0.5) * step_w / image_w
        grid_y, grid_x = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 1, 2)  # [cells, 1, 2]
        sizes = cell_box_sizes(config.min_sizes[k], config.max_sizes[k], config.aspect_ratios[k])
        wh = torch.tensor(sizes, dtype=torch.float64) / torch.tensor([image_w, image_h])
        wh = wh.expand(centres.shape[0], -1, -1)  # [cells, k, 2]
        levels.append(torch.cat([centres.expand(-1, wh.shape[1], -1), wh], dim=-1).reshape(-1, 4))
    boxes = torch.cat(levels)
    if config.clip:
        boxes = xyxy_to_cxcywh(cxcywh_to_xyxy(boxes, check=False).clamp(0, 1), check=False)
    return boxes.to(device=device, dtype=dtype)


# The presets of the original implementation (weiliu89/caffe, branch ssd). The pixel sizes
# come from integer percentages: SSD300 VOC puts conv4_3 at 10% and spaces the other maps
# by floor((90 - 20) / 4) = 17%, so 20, 37, 54, 71, 88 (and 105 for the last extra box).
_SSD300_MAPS = (38, 19, 10, 5, 3, 1)
_SSD300_STEPS = (8, 16, 32, 64, 100, 300)
_SSD300_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
_SSD512_MAPS = (64, 32, 16, 8, 4, 2, 1)
_SSD512_STEPS = (8, 16, 32, 64, 128, 256, 512)
_SSD512_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))


def _percent_sizes(image_size: int, percents: Sequence[float]) -> list[float]:
    return [p * image_size / 100 for p in percents]


SSD300_VOC = PriorConfig(
    image_size=300, feature_maps=_SSD300_MAPS, steps=_SSD300_STEPS,
    min_sizes=(30, 60, 111, 162, 213, 264), max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=_SSD300_RATIOS, name="SSD300_VOC",
)  # fmt: skip
SSD300_COCO = PriorConfig(
    image_size=300, feature_maps=_SSD300_MAPS, steps=_SSD300_STEPS,
    min_sizes=(21, 45, 99, 153, 207, 261), max_sizes=(45, 99, 153, 207, 261, 315),
    aspect_ratios=_SSD300_RATIOS, name="SSD300_COCO",
)  # fmt: skip
SSD512_VOC = PriorConfig(
    image_size=512, feature_maps=_SSD512_MAPS, steps=_SSD512_STEPS,
    min_sizes=_percent_sizes(512, (7, 15, 30, 45, 60, 75, 90)),
    max_sizes=_percent_sizes(512, (15, 30, 45, 60, 75, 90, 105)),
    aspect_ratios=_SSD512_RATIOS, name="SSD512_VOC",
)  # fmt: skip
SSD512_COCO = PriorConfig(
    image_size=512, feature_maps=_SSD512_MAPS, steps=_SSD512_STEPS,
    min_sizes=_percent_sizes(512, (4, 10, 26, 42, 58, 74, 90)),
    max_sizes=_percent_sizes(512, (10, 26, 42, 58, 74, 90, 106)),
    aspect_ratios=_SSD512_RATIOS, name="SSD512_COCO",
)  # fmt: skip
