"""What the VOC and COCO datasets share: image files on disk and an annotation per image.

Lessons 07 and 08.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["read_rgb", "AnnotatedImages"]


def read_rgb(path: str | Path) -> Tensor:
    """An image file as a float ``Tensor[3, H, W]`` in [0, 1], RGB (grey and CMYK converted)."""
    with Image.open(path) as image:
        array = np.array(image.convert("RGB"))  # [H, W, 3] uint8, a writable copy
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255)


class AnnotatedImages(Dataset):
    """A dataset of image files with one annotation each.

    Subclasses provide ``__len__``, ``load_target(index)`` (with the image's ``size``),
    ``image_path(index)``, ``annotation_path(index)`` and a ``transform`` attribute.
    """

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        target = self.load_target(index)
        image = read_rgb(self.image_path(index))
        # A wrong size would silently misplace every normalized box: refuse it.
        if list(image.shape[1:]) != target["size"].tolist():
            raise ValueError(
                f"{self.image_path(index)} is {image.shape[2]}x{image.shape[1]} (width x height) "
                f"but {self.annotation_path(index)} says "
                f"{target['size'][1]}x{target['size'][0]}"
            )
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
