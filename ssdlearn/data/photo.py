"""A real photo that ships with matplotlib, so lessons show real images without a download."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.cbook import get_sample_data
from PIL import Image
from torch import Tensor

__all__ = ["sample_photo"]


def sample_photo(size: int | tuple[int, int] | None = None) -> Tensor:
    """Grace Hopper's portrait (600x512 pixels) as a float ``Tensor[3, H, W]`` in [0, 1].

    Args:
        size: resize to a square side or to (height, width), as SSD warps its inputs;
            None keeps the original size.
    """
    with get_sample_data("grace_hopper.jpg") as file, Image.open(file) as photo:
        photo = photo.convert("RGB")
        if size is not None:
            height, width = (size, size) if isinstance(size, int) else size
            photo = photo.resize((width, height), Image.BILINEAR)
        array = np.asarray(photo, dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
