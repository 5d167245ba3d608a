"""Batching detection samples: images stack, objects are padded to the most in the batch.
Lesson 03 (padded batches for match_batch).

Images have different numbers of objects, so PyTorch's default collate cannot stack the
targets. SSD's matching and loss work on a padded batch at once, so we pad here, once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["collate_detection"]

_OBJECT_KEYS = ("boxes", "labels")


def _check_sample(index: int, sample: object) -> tuple[Tensor, dict]:
    if not (isinstance(sample, (tuple, list)) and len(sample) == 2
            and isinstance(sample[1], dict)):
        raise TypeError(f"batch[{index}] must be an (image, target dict) pair, "
                        f"got {type(sample).__name__}")
    image, target = sample
    if not isinstance(image, Tensor) or image.ndim != 3:
        shape = list(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"batch[{index}] image must be a Tensor[3, H, W], got {shape}")
    for key in _OBJECT_KEYS:
        if key not in target:
            raise ValueError(f"batch[{index}] target has no {key!r}; it has {sorted(target)}")
    boxes, labels = target["boxes"], target["labels"]
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
        shape = list(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"batch[{index}] boxes must be a Tensor[G, 4], got {shape}")
    if not isinstance(labels, Tensor) or list(labels.shape) != [boxes.shape[0]]:
        shape = list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"batch[{index}] labels must be a Tensor[G] with G = "
                         f"{boxes.shape[0]} (one per box), got {shape}")
    return image, target


def collate_detection(batch: Sequence[tuple[Tensor, dict]]) -> tuple[Tensor, dict]:
    """Stack images and pad targets: the ``collate_fn`` for a detection ``DataLoader``.

    Args:
        batch: B samples ``(image: Tensor[3, H, W], target: dict)``, all images the same size
            (resize them in the dataset's transform). A target has ``boxes: Tensor[G_i, 4]``
            and ``labels: LongTensor[G_i]``, maybe per-object flags (``difficult``,
            ``iscrowd``: ``BoolTensor[G_i]``) and values (``area``: ``Tensor[G_i]``),
            ``image_id`` and ``size`` (original ``(height, width)``). Every target must
            have the same keys.
    Returns:
        images: Tensor[B, 3, H, W].
        targets: dict with

        - ``boxes: Tensor[B, G, 4]``, G = max G_i (0 when no image has objects); padding rows
          are zeros.
        - ``labels: LongTensor[B, G]``, -1 on padding rows.
        - every per-object bool flag as ``BoolTensor[B, G]``, False on padding rows, and
          every other per-object value (``area``) as ``Tensor[B, G]``, 0 on padding rows.
        - ``image_ids``: list of the B ``image_id`` (when the targets have one).
        - ``sizes: LongTensor[B, 2]``: each ``size``, or the image's own (H, W) when the
          targets have none.
        - any other key: the list of its B values, as they were.

        ``targets["boxes"], targets["labels"]`` are what :func:`ssdlearn.matching.match_batch`
        takes: it ignores the rows labelled -1.
    """
    if not isinstance(batch, Sequence) or len(batch) == 0:
        raise ValueError("batch must be a non-empty sequence of (image, target) samples")
    samples = [_check_sample(i, sample) for i, sample in enumerate(batch)]
    images = [image for image, _ in samples]
    targets = [target for _, target in samples]

    first = tuple(images[0].shape)
    for i, image in enumerate(images):
        if tuple(image.shape) != first:
            raise ValueError(
                f"images must all have the same size to be stacked: batch[0] is {list(first)} "
                f"and batch[{i}] is {list(image.shape)}; resize them in the dataset's transform"
            )
    keys = set(targets[0])
    for i, target in enumerate(targets):
        if set(target) != keys:
            raise ValueError(f"every target must have the same keys: batch[0] has "
                             f"{sorted(keys)}, batch[{i}] has {sorted(target)}")

    counts = [target["labels"].shape[0] for target in targets]
    size, most = len(batch), max(counts)
    boxes = targets[0]["boxes"].new_zeros((size, most, 4))
    labels = torch.full((size, most), -1, dtype=torch.int64, device=boxes.device)
    # Per-object flags and values: 1-D tensors with one value per object, in every target.
    per_object = sorted(
        key for key in keys - {*_OBJECT_KEYS, "size", "image_id"}
        if all(isinstance(t[key], Tensor) and list(t[key].shape) == [n]
               for t, n in zip(targets, counts))
    )
    padded_flags = {key: targets[0][key].new_zeros((size, most)).to(boxes.device)
                    for key in per_object}
    for i, (target, n) in enumerate(zip(targets, counts)):
        boxes[i, :n] = target["boxes"]
        labels[i, :n] = target["labels"]
        for key in per_object:
            padded_flags[key][i, :n] = target[key]

    out: dict = {"boxes": boxes, "labels": labels, **padded_flags}
    if "image_id" in keys:
        out["image_ids"] = [target["image_id"] for target in targets]
    if "size" in keys:
        out["sizes"] = torch.stack([torch.as_tensor(t["size"], dtype=torch.int64).reshape(2)
                                    for t in targets])
    else:
        out["sizes"] = torch.tensor([list(image.shape[1:]) for image in images],
                                    dtype=torch.int64)
    for key in sorted(keys - out.keys() - {"image_id", "size"}):
        out[key] = [target[key] for target in targets]
    return torch.stack(images), out
