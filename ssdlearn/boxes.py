"""Boxes: the two formats SSD uses, their areas, and the Jaccard overlap (IoU). Lesson 01.

A box is a float tensor of 4 numbers in its last dimension:

- ``xyxy``: corners ``(x1, y1, x2, y2)`` with ``x1 <= x2`` and ``y1 <= y2``. Ground truth,
  detections and drawing use it.
- ``cxcywh``: centre and size ``(cx, cy, w, h)`` with ``w, h >= 0``. Default boxes and the
  regression targets use it, because offsets are measured from a centre in units of a size.

Inside the model, matching and loss, coordinates are normalized to [0, 1] of the image;
:func:`to_pixels` and :func:`to_normalized` convert at the edges (datasets, drawing,
evaluation).

Coordinates are continuous: a box from x1 = 0 to x2 = 10 is 10 wide (no "+1" pixel), as in
pycocotools and torchvision. Every function takes any number of leading batch dimensions.

The public functions check their input (shape, dtype, finite values, x2 >= x1) and raise a
clear error. Checking needs the values on the host, a device sync, so code on a hot path
inside the library passes ``check=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_area",
    "box_iou",
    "check_boxes",
    "to_pixels",
    "to_normalized",
]


def check_boxes(boxes: Tensor, name: str = "boxes", fmt: str = "xyxy") -> None:
    """Raise a clear error unless ``boxes`` is a valid ``Tensor[..., 4]`` in format ``fmt``.

    Valid means: a floating-point tensor, last dimension 4, every value finite, and a
    non-negative size (``x2 >= x1, y2 >= y1`` for xyxy; ``w, h >= 0`` for cxcywh).
    Empty tensors (``[0, 4]``) are valid.
    """
    if fmt not in ("xyxy", "cxcywh"):
        raise ValueError(f"fmt must be 'xyxy' or 'cxcywh', got {fmt!r}")
    if not isinstance(boxes, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape [..., 4], got {type(boxes).__name__}"
        )
    if not boxes.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor, got dtype {boxes.dtype}; "
            f"convert with {name}.float()"
        )
    if boxes.ndim == 0 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4] ({fmt}), got {list(boxes.shape)}")
    if boxes.numel() == 0:
        return
    if not torch.isfinite(boxes).all():
        raise ValueError(f"{name} must be finite, found NaN or inf")
    if fmt == "xyxy":
        size = boxes[..., 2:] - boxes[..., :2]
        expectation = "x2 >= x1 and y2 >= y1 (xyxy corners)"
    else:
        size = boxes[..., 2:]
        expectation = "w >= 0 and h >= 0 (cxcywh)"
    bad = (size < 0).any(dim=-1)
    if bad.any():
        index = tuple(i.item() for i in bad.nonzero()[0])
        raise ValueError(
            f"{name} must have {expectation}; box at index {index} is {boxes[index].tolist()}"
        )


def xyxy_to_cxcywh(boxes: Tensor, *, check: bool = True) -> Tensor:
    """Convert corners to centre and size.

    Args:
        boxes: Tensor[..., 4] (xyxy).
    Returns:
        Tensor[..., 4] (cxcywh), same dtype and device.
    """
    if check:
        check_boxes(boxes, "boxes", "xyxy")
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor, *, check: bool = True) -> Tensor:
    """Convert centre and size to corners.

    Args:
        boxes: Tensor[..., 4] (cxcywh).
    Returns:
        Tensor[..., 4] (xyxy), same dtype and device.
    """
    if check:
        check_boxes(boxes, "boxes", "cxcywh")
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: Tensor, *, check: bool = True) -> Tensor:
    """Area of each box.

    Args:
        boxes: Tensor[..., 4] (xyxy).
    Returns:
        Tensor[...]: ``(x2 - x1) * (y2 - y1)``.
    """
    if check:
        check_boxes(boxes, "boxes", "xyxy")
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor, *, check: bool = True) -> Tensor:
    """Jaccard overlap (intersection over union) of every pair of boxes.

    Args:
        boxes1: Tensor[..., N, 4] (xyxy).
        boxes2: Tensor[..., M, 4] (xyxy). Leading dimensions broadcast with ``boxes1``'s.
    Returns:
        Tensor[..., N, M] with values in [0, 1]. Two boxes whose union has zero area (two
        points, say) have IoU 0, not NaN.
    """
    if check:
        check_boxes(boxes1, "boxes1", "xyxy")
        check_boxes(boxes2, "boxes2", "xyxy")
        if boxes1.ndim < 2 or boxes2.ndim < 2:
            raise ValueError(
                "box_iou takes two sets of boxes, Tensor[..., N, 4] and Tensor[..., M, 4]; "
                f"got shapes {list(boxes1.shape)} and {list(boxes2.shape)} "
                "(use boxes[None] for a single box)"
            )
    area1 = box_area(boxes1, check=False)  # [..., N]
    area2 = box_area(boxes2, check=False)  # [..., M]
    # Pair every box of boxes1 (rows) with every box of boxes2 (columns).
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # [..., N, M, 2]
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    # Disjoint boxes give a negative width or height: clamp so they intersect in 0, not < 0.
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]  # [..., N, M]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), 0.0)


def _xyxy_scale(boxes: Tensor, image_size: int | float | Sequence[float]) -> Tensor:
    """``[width, height, width, height]`` in the boxes' dtype and device, after checking both."""
    if not isinstance(boxes, Tensor) or boxes.ndim == 0 or boxes.shape[-1] != 4:
        shape = list(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"boxes must have shape [..., 4] (xyxy), got {shape}")
    if not boxes.is_floating_point():
        raise TypeError(f"boxes must be a floating-point tensor, got dtype {boxes.dtype}")
    if isinstance(image_size, (int, float)) and not isinstance(image_size, bool):
        height = width = image_size
    elif isinstance(image_size, Sequence) and len(image_size) == 2:
        height, width = image_size
    else:
        raise ValueError(f"image_size must be a side or (height, width), got {image_size!r}")
    if not (height > 0 and width > 0):
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)


def to_pixels(boxes: Tensor, image_size: int | float | Sequence[float]) -> Tensor:
    """Scale normalized xyxy boxes to pixels.

    Args:
        boxes: Tensor[..., 4] (xyxy, normalized to [0, 1]).
        image_size: side of a square image, or (height, width) in pixels.
    Returns:
        Tensor[..., 4] (xyxy, pixels): x times the width, y times the height, in the
        boxes' dtype.
    """
    return boxes * _xyxy_scale(boxes, image_size)


def to_normalized(boxes: Tensor, image_size: int | float | Sequence[float]) -> Tensor:
    """Inverse of :func:`to_pixels`: pixel xyxy boxes as fractions of the image.

    Args:
        boxes: Tensor[..., 4] (xyxy, pixels).
        image_size: side of a square image, or (height, width) in pixels.
    Returns:
        Tensor[..., 4] (xyxy, normalized): x divided by the width, y by the height.
    """
    return boxes / _xyxy_scale(boxes, image_size)
