"""Generated images of shapes: a detection dataset that needs no download. Lesson 00 on.

Five classes whose boxes have different aspect ratios (circles, squares and triangles are
1:1, bars are 4:1 and 1:4), from small to large, on a textured background, sometimes
overlapping. Every image is a pure function of ``(seed, index)``, so ``dataset[i]`` is the
same in any order, in any worker process, on any machine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SHAPE_CLASSES", "ShapesDataset"]

# Index 0 is the background, as for every dataset in the course.
SHAPE_CLASSES = ("background", "circle", "square", "triangle", "horizontal bar", "vertical bar")
_BAR_ASPECT = 4.0


def _overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> tuple[float, float]:
    """For one new xyxy box against those already placed: the largest IoU (float32, as
    ``box_iou``) and the largest fraction of a placed box that the new one covers."""
    others = np.stack(boxes)
    low = np.maximum(box[:2], others[:, :2])
    high = np.minimum(box[2:], others[:, 2:])
    inter = np.prod((high - low).clip(min=0), axis=1)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return float((inter / (area + areas - inter)).max()), float((inter / areas).max())


def _shape_mask(kind: str, xx: np.ndarray, yy: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Boolean [H, W] mask of a shape filling the pixel box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if kind == "circle":
        return ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
    if kind == "triangle":  # apex at the top centre, base along the bottom edge
        inside_y = (yy >= y1) & (yy <= y2)
        return inside_y & (np.abs(xx - cx) <= (yy - y1) / h * w / 2)
    return (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)  # squares and bars


class ShapesDataset(Dataset):
    """Images of coloured shapes with their boxes.

    Args:
        num_images: length of the dataset.
        image_size: side of the square images in pixels.
        seed: picks the whole dataset; the same seed gives the same images.
        min_objects, max_objects: objects per image, drawn uniformly.
        min_scale, max_scale: an object's longer side as a fraction of the image side,
            drawn log-uniformly so small objects are as common as large ones.
        max_overlap: the largest IoU a new object may have with one already placed;
            later objects are drawn on top, so overlaps occlude.
        max_occlusion: the largest fraction of a placed object's box that a later object
            may cover. IoU alone would let a large shape bury a small one whole: an object
            no detector can see, still in the labels.
        transform: optional ``transform(image, target) -> (image, target)``.

    A sample is ``(image, target)``: ``image`` a float ``Tensor[3, S, S]`` in [0, 1],
    ``target`` a dict with ``boxes: Tensor[G, 4]`` (xyxy, normalized) and
    ``labels: Tensor[G]`` (1..5, see ``SHAPE_CLASSES``).
    """

    classes = SHAPE_CLASSES

    def __init__(self, num_images: int, image_size: int = 300, seed: int = 0,
                 min_objects: int = 1, max_objects: int = 6,
                 min_scale: float = 0.06, max_scale: float = 0.8, max_overlap: float = 0.3,
                 max_occlusion: float = 0.5, transform: Callable | None = None) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
        if not 0 <= min_objects <= max_objects:
            raise ValueError(
                f"need 0 <= min_objects <= max_objects, got {min_objects} and {max_objects}"
            )
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(
                f"need 0 < min_scale <= max_scale <= 1, got {min_scale} and {max_scale}"
            )
        self.num_images = num_images
        self.image_size = image_size
        self.seed = seed
        self.min_objects, self.max_objects = min_objects, max_objects
        self.min_scale, self.max_scale = min_scale, max_scale
        if not 0 <= max_occlusion <= 1:
            raise ValueError(f"max_occlusion must be in [0, 1], got {max_occlusion}")
        self.max_overlap, self.max_occlusion = max_overlap, max_occlusion
        self.transform = transform

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        image, target = self.generate(index % self.num_images)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def generate(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Draw image ``index`` (without the transform)."""
        rng = np.random.default_rng([self.seed, index])
        size = self.image_size
        yy, xx = self._pixel_centres()
        image = self._background(rng, xx, yy)  # [3, H, W]
        boxes, labels = [], []
        wanted = rng.integers(self.min_objects, self.max_objects + 1)
        for _ in range(20 * wanted):  # rejection sampling; crowded images get fewer objects
            if len(boxes) == wanted:
                break
            label = int(rng.integers(1, len(SHAPE_CLASSES)))
            box = self._random_box(rng, SHAPE_CLASSES[label])
            if boxes:
                iou, covered = _overlaps(box, boxes)
                if iou > self.max_overlap or covered > self.max_occlusion:
                    continue
            # Paint only inside the box's pixels: cheap however large the image.
            x1, y1 = (np.floor(box[:2] * size)).astype(int)
            x2, y2 = (np.ceil(box[2:] * size)).astype(int)
            region = (slice(y1, y2), slice(x1, x2))
            mask = _shape_mask(SHAPE_CLASSES[label], xx[region], yy[region], box * size)
            colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
            colour[rng.integers(3)] = rng.uniform(0.8, 1.0)  # a saturated channel stands out
            image[(slice(None), *region)] = np.where(mask, colour[:, None, None],
                                                     image[(slice(None), *region)])
            boxes.append(box)
            labels.append(label)
        target = {
            "boxes": torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.array(labels, dtype=np.int64)),
        }
        return torch.from_numpy(image), target

    def _pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """y and x of every pixel's centre, [H, W] each; computed once per dataset."""
        if getattr(self, "_grid", None) is None:
            self._grid = np.mgrid[0 : self.image_size, 0 : self.image_size].astype(np.float32) + 0.5
        return self._grid[0], self._grid[1]

    def _background(self, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """A muted colour gradient with stripes and pixel noise: not a flat, trivial canvas."""
        size = self.image_size
        base = rng.uniform(0.2, 0.6, 3).astype(np.float32)
        tilt = rng.uniform(-0.2, 0.2, (2, 3)).astype(np.float32)
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.05, 0.3) * size
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period)  # float64
        image = rng.standard_normal((3, size, size), dtype=np.float32)
        image *= 0.04
        stripes = np.sin(phase, out=phase)
        stripes *= 0.05
        image += stripes
        image += (base + tilt[0] * (xx[0] / size - 0.5)[:, None]).T[:, None, :]
        image += (tilt[1] * (yy[:, 0] / size - 0.5)[:, None]).T[:, :, None]
        return image.clip(0, 1, out=image)

    def _random_box(self, rng: np.random.Generator, kind: str) -> np.ndarray:
        """A normalized xyxy box for a shape of this kind, inside the image."""
        long_side = np.exp(rng.uniform(np.log(self.min_scale), np.log(self.max_scale)))
        if kind == "horizontal bar":
            w, h = long_side, long_side / _BAR_ASPECT
        elif kind == "vertical bar":
            w, h = long_side / _BAR_ASPECT, long_side
        else:
            w = h = long_side
        cx = rng.uniform(w / 2, 1 - w / 2)
        cy = rng.uniform(h / 2, 1 - h / 2)
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float32)
