"""SSD's data augmentation, box-aware, on tensors. Lesson 06.

The paper's ablation credits augmentation with 8.8 mAP on VOC2007 (65.5 -> 74.3). Per
training image, in this order (as in the original code):

1. photometric distortion: brightness, contrast, saturation, hue, channel swap;
2. zoom out: the image on a canvas up to 4x its side (16x its area) filled with the mean;
3. IoU crop: the whole image, or a patch whose Jaccard overlap with some object is at least
   0.1, 0.3, 0.5, 0.7 or 0.9, or a random patch; objects whose centre lies in the patch are
   kept, clipped to it;
4. horizontal flip with probability 0.5;
5. resize to the network's input size.

Images are float ``Tensor[3, H, W]`` in [0, 1]; targets are dicts with ``boxes: Tensor[G, 4]``
(xyxy, normalized to the image) and ``labels: Tensor[G]``, plus optional per-object fields
(``difficult``, ``truncated``, ``iscrowd``) that are kept or dropped together with their
boxes. Every random transform takes ``generator`` (a ``torch.Generator``) for reproducible
samples; without one it uses torch's global generator, which DataLoader workers seed.

Each step is a plain function taking its parameters (``zoom_out``, ``crop``, ``hflip``,
``resize``) and a class that draws those parameters at random; tests check the functions
and the lesson shows them one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .boxes import box_iou, to_normalized, to_pixels
from .model import IMAGENET_MEAN  # zoom-out fills with the mean: 0 once the network normalizes

__all__ = [
    "PER_OBJECT_KEYS",
    "IMAGENET_MEAN",
    "Compose",
    "PhotometricDistort",
    "ZoomOut",
    "IoUCrop",
    "RandomHorizontalFlip",
    "RandomQuarterTurn",
    "Resize",
    "zoom_out",
    "crop",
    "crop_boxes",
    "hflip",
    "rot90",
    "resize",
    "ssd_train_transform",
    "ssd_eval_transform",
]

Target = dict[str, Tensor]
# Target fields with one entry per object: filtered together with the boxes.
PER_OBJECT_KEYS = ("boxes", "labels", "difficult", "truncated", "iscrowd", "area")


def _uniform(low: float, high: float, generator: torch.Generator | None, size: int = 1) -> Tensor:
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def _coin(p: float, generator: torch.Generator | None) -> bool:
    return bool(torch.rand(1, generator=generator) < p)


def _select_objects(target: Target, keep: Tensor) -> Target:
    """The target with only the objects where ``keep`` is True (other fields untouched)."""
    return {key: value[keep] if key in PER_OBJECT_KEYS else value for key, value in target.items()}


def _check_sample(image: Tensor, target: Target) -> None:
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a Tensor[3, H, W], got {shape}")
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target must have 'boxes' and 'labels', got keys {sorted(target)}")
    boxes, labels = target["boxes"], target["labels"]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
        raise ValueError(
            f"target['boxes'] must be [G, 4] with one label each, got boxes "
            f"{list(boxes.shape)} and labels {list(labels.shape)}"
        )


# ---------------------------------------------------------------------------------------
# The geometric steps, as functions of their parameters
# ---------------------------------------------------------------------------------------


def zoom_out(image: Tensor, target: Target, ratio: float, left: int, top: int,
             fill: Sequence[float] = IMAGENET_MEAN) -> tuple[Tensor, Target]:
    """Place the image at (left, top) on a canvas ``ratio`` times its size, filled with ``fill``.

    Objects become smaller relative to the image: after resizing, they look like the small
    objects SSD finds hard, and there are more of them to learn from.
    """
    _, height, width = image.shape
    canvas_h, canvas_w = int(height * ratio), int(width * ratio)
    if not (0 <= left <= canvas_w - width and 0 <= top <= canvas_h - height):
        raise ValueError(f"the image ({width}x{height}) at ({left}, {top}) must fit the canvas "
                         f"({canvas_w}x{canvas_h})")
    canvas = torch.tensor(fill, dtype=image.dtype, device=image.device)[:, None, None]
    canvas = canvas.expand(3, canvas_h, canvas_w).clone()
    canvas[:, top : top + height, left : left + width] = image
    offset = torch.tensor([left, top, left, top]).to(target["boxes"])
    moved = to_normalized(to_pixels(target["boxes"], (height, width)) + offset,
                          (canvas_h, canvas_w))
    return canvas, {**target, "boxes": moved}


def crop_boxes(boxes: Tensor, patch: Tensor) -> tuple[Tensor, Tensor]:
    """Boxes seen through a patch: those whose centre is inside it, clipped to it.

    Args:
        boxes: Tensor[G, 4] (xyxy, normalized to the image).
        patch: Tensor[4] (xyxy, normalized to the image).
    Returns:
        (boxes[K, 4] normalized to the patch, keep: BoolTensor[G]).
    """
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((centres > patch[:2]) & (centres < patch[2:])).all(dim=1)
    kept = torch.cat([torch.maximum(boxes[keep, :2], patch[:2]),
                      torch.minimum(boxes[keep, 2:], patch[2:])], dim=1)
    size = (patch[2:] - patch[:2]).repeat(2)
    return (kept - patch[:2].repeat(2)) / size, keep


def crop(image: Tensor, target: Target, patch: Tensor) -> tuple[Tensor, Target]:
    """Cut ``patch`` (xyxy, normalized) out of the image; keep the objects centred inside it."""
    _, height, width = image.shape
    x1, y1, x2, y2 = to_pixels(patch.double(), (height, width)).round().long().tolist()
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    # Boxes are cut by the patch's whole pixels, so they line up with the image we return.
    pixel_patch = to_normalized(torch.tensor([x1, y1, x2, y2], dtype=torch.float64),
                                (height, width)).to(target["boxes"])
    boxes, keep = crop_boxes(target["boxes"], pixel_patch)
    target = _select_objects(target, keep)
    return image[:, y1:y2, x1:x2], {**target, "boxes": boxes}


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Mirror left to right: x becomes 1 - x, so x1 and x2 swap roles."""
    boxes = target["boxes"]
    flipped = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    return image.flip(-1), {**target, "boxes": flipped}


def rot90(image: Tensor, target: Target, k: int = 1) -> tuple[Tensor, Target]:
    """Turn ``k`` quarter turns counter-clockwise: a point (x, y) goes to (y, 1 - x)."""
    boxes = target["boxes"]
    for _ in range(k % 4):
        boxes = torch.stack([boxes[:, 1], 1 - boxes[:, 2], boxes[:, 3], 1 - boxes[:, 0]], dim=1)
    return torch.rot90(image, k, dims=(1, 2)), {**target, "boxes": boxes}


def resize(image: Tensor, target: Target, size: int | tuple[int, int]) -> tuple[Tensor, Target]:
    """Resize to ``size`` (side, or (height, width)), ignoring the aspect ratio, as SSD does.

    Normalized boxes do not change.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if image.shape[-2:] == (height, width):  # already that size: interpolation is exact
        return image.clamp(0, 1), target
    resized = F.interpolate(image[None], size=(height, width), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return resized.clamp(0, 1), target


# ---------------------------------------------------------------------------------------
# Random transforms
# ---------------------------------------------------------------------------------------


class Compose:
    """Apply transforms in order; each gets the same generator."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        _check_sample(image, target)
        for transform in self.transforms:
            image, target = transform(image, target, generator=generator)
        return image, target

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"


class PhotometricDistort:
    """The original code's colour distortions, each applied with probability ``p``:
    brightness (+-32/255), then contrast (x0.5..1.5) either first or last around saturation
    (x0.5..1.5) and hue (+-18 degrees), then a random permutation of the channels."""

    def __init__(self, p: float = 0.5, brightness: float = 32 / 255,
                 contrast: tuple[float, float] = (0.5, 1.5),
                 saturation: tuple[float, float] = (0.5, 1.5), hue: float = 18 / 360) -> None:
        self.p, self.brightness = p, brightness
        self.contrast, self.saturation, self.hue = contrast, saturation, hue

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        from torchvision.transforms.v2 import functional as TF

        if _coin(self.p, generator):
            image = image + _uniform(-self.brightness, self.brightness, generator).item()
        contrast_first = _coin(0.5, generator)
        steps = ["saturation", "hue"]
        steps = ["contrast", *steps] if contrast_first else [*steps, "contrast"]
        for step in steps:
            if not _coin(self.p, generator):
                continue
            image = image.clamp(0, 1)
            if step == "contrast":
                image = image * _uniform(*self.contrast, generator).item()
            elif step == "saturation":
                image = TF.adjust_saturation(image, _uniform(*self.saturation, generator).item())
            else:
                image = TF.adjust_hue(image, _uniform(-self.hue, self.hue, generator).item())
        if _coin(self.p, generator):
            image = image[torch.randperm(3, generator=generator)]
        return image.clamp(0, 1), target

    def __repr__(self) -> str:
        return f"PhotometricDistort(p={self.p})"


class ZoomOut:
    """With probability ``p``, :func:`zoom_out` by a ratio drawn from ``side_range``.

    The paper: a canvas of up to 16x the image's area (4x its side), filled with the mean.
    """

    def __init__(self, p: float = 0.5, side_range: tuple[float, float] = (1.0, 4.0),
                 fill: Sequence[float] = IMAGENET_MEAN) -> None:
        if not 1 <= side_range[0] <= side_range[1]:
            raise ValueError(f"side_range must satisfy 1 <= low <= high, got {side_range}")
        self.p, self.side_range, self.fill = p, side_range, fill

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        if not _coin(self.p, generator):
            return image, target
        _, height, width = image.shape
        ratio = _uniform(*self.side_range, generator).item()
        left = int(_uniform(0, int(width * ratio) - width, generator).item())
        top = int(_uniform(0, int(height * ratio) - height, generator).item())
        return zoom_out(image, target, ratio, left, top, self.fill)

    def __repr__(self) -> str:
        return f"ZoomOut(p={self.p}, side_range={self.side_range})"


class IoUCrop:
    """The paper's patch sampler.

    Each call picks one option at random: the whole image, a patch whose IoU with at least
    one object is >= one of ``min_ious``, or an unconstrained random patch. A patch's side
    is ``scale`` in [0.3, 1] of the image's (so its area is about 0.1 to 1 of the image, the
    paper's "[0.1, 1]") and its aspect ratio w / h is in [1/2, 2]. At least one object's
    centre must fall in the patch. Up to ``trials`` patches are drawn at once; if none
    qualifies, the image is left whole.
    """

    def __init__(self, min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 scale: tuple[float, float] = (0.3, 1.0), aspect: tuple[float, float] = (0.5, 2.0),
                 trials: int = 50) -> None:
        # None: keep the whole image; 0.0: a random patch with no overlap constraint.
        self.options: list[float | None] = [None, *min_ious, 0.0]
        self.scale, self.aspect, self.trials = scale, aspect, trials
        self.last_option: float | None = None  # what the last call chose, for the lesson

    def sample_patch(self, boxes: Tensor, min_iou: float,
                     generator: torch.Generator | None = None) -> Tensor | None:
        """A patch (xyxy, normalized) meeting ``min_iou`` with some box, or None."""
        n = self.trials
        scale = _uniform(*self.scale, generator, n)
        # As the original code: keep w and h <= 1 by narrowing the aspect range for big scales.
        low = torch.clamp(scale**2, min=self.aspect[0])
        high = torch.clamp(1 / scale**2, max=self.aspect[1])
        aspect = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
        w, h = scale * aspect.sqrt(), scale / aspect.sqrt()
        x1 = (1 - w) * torch.rand(n, generator=generator, dtype=torch.float64)
        y1 = (1 - h) * torch.rand(n, generator=generator, dtype=torch.float64)
        patches = torch.stack([x1, y1, x1 + w, y1 + h], dim=1).to(boxes.dtype)
        if len(boxes) == 0:
            ok = torch.full((n,), min_iou <= 0)
        else:
            iou = box_iou(patches, boxes, check=False)  # [trials, G]
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = ((centres[None] > patches[:, None, :2])
                      & (centres[None] < patches[:, None, 2:])).all(dim=-1)
            ok = (iou.max(dim=1).values >= min_iou) & inside.any(dim=1)
        found = ok.nonzero()
        return patches[found[0, 0]] if len(found) else None

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        choice = int(torch.randint(len(self.options), (1,), generator=generator))
        self.last_option = self.options[choice]
        if self.last_option is None:
            return image, target
        patch = self.sample_patch(target["boxes"], self.last_option, generator)
        if patch is None:
            self.last_option = None
            return image, target
        return crop(image, target, patch)

    def __repr__(self) -> str:
        return f"IoUCrop(options={self.options}, scale={self.scale}, aspect={self.aspect})"


class RandomHorizontalFlip:
    """:func:`hflip` with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        return hflip(image, target) if _coin(self.p, generator) else (image, target)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomQuarterTurn:
    """:func:`rot90` by 0, 1, 2 or 3 quarter turns, equally likely. For images with no "up"
    (aerial photos, microscopy): with a horizontal flip, all 8 symmetries of a square."""

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        k = int(torch.randint(4, (1,), generator=generator))
        return rot90(image, target, k) if k else (image, target)

    def __repr__(self) -> str:
        return "RandomQuarterTurn()"


class Resize:
    """:func:`resize` to a fixed size."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image: Tensor, target: Target,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Target]:
        return resize(image, target, self.size)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


def ssd_train_transform(size: int | tuple[int, int] = 300,
                        fill: Sequence[float] = IMAGENET_MEAN) -> Compose:
    """The paper's training augmentation, ending at the network's input size."""
    return Compose([PhotometricDistort(), ZoomOut(fill=fill), IoUCrop(),
                    RandomHorizontalFlip(), Resize(size)])


def ssd_eval_transform(size: int | tuple[int, int] = 300) -> Compose:
    """Evaluation: only the resize."""
    return Compose([Resize(size)])
