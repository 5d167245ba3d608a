"""MS COCO object detection, read from its own on-disk format (no pycocotools needed).
Lessons 07 and 08.

The layout the official zips unpack to::

    annotations/instances_val2017.json
    val2017/000000000139.jpg

The JSON holds ``images`` (id, file_name, width, height), ``annotations`` (image_id,
category_id, bbox as ``[x, y, w, h]`` in pixels, iscrowd, area) and ``categories`` (id, name).
The 80 category ids run from 1 to 90 with gaps; the network needs contiguous labels, so
categories become labels 1..80 in increasing id order, and evaluation maps them back with
``label_to_category_id``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..boxes import to_normalized
from .files import AnnotatedImages

__all__ = ["COCODataset"]


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO annotation file {path} not found. Download COCO with "
            "`python -m ssdlearn data coco2017 --root ...`, or pass annotation_file="
        )
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(
            f"{path} is not a COCO instances file: missing key(s) {', '.join(missing)} "
            "(expected images, annotations and categories)"
        )
    return data


def _columns(entries: list, keys: Sequence[str], path: Path, section: str) -> list[list]:
    """``[[entry[key] for entry in entries] for key in keys]``; an error naming the file, the
    section and the index of the first entry that lacks a key."""
    try:
        return [[entry[key] for entry in entries] for key in keys]
    except (KeyError, TypeError):
        for i, entry in enumerate(entries):  # the slow path runs only to word the error
            for key in keys:
                if not isinstance(entry, dict) or key not in entry:
                    raise ValueError(f"{path}: {section}[{i}] has no {key!r}") from None
        raise


class COCODataset(AnnotatedImages):
    """COCO detection, one sample per image (images without annotations included).

    Args:
        root: the folder holding ``annotations/`` and the image folder ``{split}/``.
        split: "train2017", "val2017", ...: names the image folder and, unless
            ``annotation_file`` is given, ``annotations/instances_{split}.json``.
        transform: optional ``transform(image, target) -> (image, target)``.
        annotation_file: another instances JSON for the same images (a subset, say).

    A sample is ``(image, target)``: ``image`` a float ``Tensor[3, H, W]`` in [0, 1] (RGB),
    ``target`` a dict with ``boxes: Tensor[G, 4]`` (xyxy, normalized by the image size),
    ``labels: LongTensor[G]`` (1..80), ``iscrowd: BoolTensor[G]``, ``area: Tensor[G]`` (the
    annotation's ``area``, the segment's, in pixels^2 of the original image: what COCO's
    size ranges use; ``w * h`` of the bbox where it is absent; transforms leave it as it
    is), ``image_id`` (the COCO int id) and ``size``: ``LongTensor[2]``, the original
    ``(height, width)``.

    Crowd regions are kept, flagged by ``iscrowd``: COCO evaluation needs them (detections
    on a crowd are ignored, not false positives); training code may drop them. Annotations
    whose box, clamped to the image, has no area (``w <= 0`` or ``h <= 0``) are skipped;
    ``num_skipped`` counts them. Images are in increasing id order.

    Attributes:
        classes: names, ``classes[0] == "background"``, then by increasing category id.
        label_to_category_id, category_id_to_label: dicts between labels 1..80 and COCO ids.
    """

    def __init__(self, root: str | Path, split: str = "val2017",
                 transform: Callable | None = None,
                 annotation_file: str | Path | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.image_dir = self.root / split
        self.annotation_file = (Path(annotation_file) if annotation_file is not None
                                else self.root / "annotations" / f"instances_{split}.json")
        path = self.annotation_file
        data = _load_json(path)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise ValueError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")

        category_ids, names = _columns(data["categories"], ("id", "name"), path, "categories")
        if len(set(category_ids)) != len(category_ids):
            raise ValueError(f"{path}: category ids repeat: {sorted(category_ids)}")
        order = sorted(range(len(category_ids)), key=category_ids.__getitem__)
        self.classes: tuple[str, ...] = ("background", *(names[i] for i in order))
        self.label_to_category_id = {k + 1: category_ids[i] for k, i in enumerate(order)}
        self.category_id_to_label = {c: k for k, c in self.label_to_category_id.items()}

        ids, files, widths, heights = _columns(
            data["images"], ("id", "file_name", "width", "height"), path, "images"
        )
        order = sorted(range(len(ids)), key=ids.__getitem__)
        self.ids: list[int] = [ids[i] for i in order]
        self.file_names: list[str] = [files[i] for i in order]
        self.sizes = torch.tensor([[heights[i], widths[i]] for i in order],
                                  dtype=torch.int64).reshape(-1, 2)  # [N, 2] (height, width)
        index_of = {image_id: i for i, image_id in enumerate(self.ids)}
        if len(index_of) != len(self.ids):
            raise ValueError(f"{path}: image ids repeat")
        self._load_annotations(data["annotations"], index_of)

    def _load_annotations(self, annotations: list, index_of: dict) -> None:
        """Pack every image's objects into flat arrays, image by image; ``self._offsets[i]``
        to ``self._offsets[i + 1]`` are image i's (flat arrays pickle fast to workers)."""
        path = self.annotation_file
        image_ids, category_ids, bboxes = _columns(
            annotations, ("image_id", "category_id", "bbox"), path, "annotations"
        )
        try:
            image_index = np.array([index_of[i] for i in image_ids], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"{path}: an annotation refers to image id {err}, "
                             "which is not in 'images'") from None
        try:
            labels = np.array([self.category_id_to_label[c] for c in category_ids],
                              dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"{path}: an annotation has category_id {err}, "
                             "which is not in 'categories'") from None
        try:
            xywh = np.array(bboxes, dtype=np.float64).reshape(-1, 4)
        except (ValueError, TypeError):
            raise ValueError(f"{path}: every annotation's bbox must be 4 numbers "
                             "[x, y, width, height]") from None
        iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
        area = np.array([a.get("area", np.nan) for a in annotations], dtype=np.float64)
        area = np.where(np.isnan(area), xywh[:, 2] * xywh[:, 3], area)  # absent: the box's

        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        size = self.sizes.numpy()[image_index]  # [A, 2] (height, width)
        limits = np.concatenate([size[:, ::-1], size[:, ::-1]], axis=1)
        boxes = np.minimum(boxes.clip(min=0), limits)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # NaN is dropped too
        self.num_skipped = int((~keep).sum())

        order = np.argsort(image_index[keep], kind="stable")  # file order within an image
        self._boxes = boxes[keep][order].astype(np.float32)  # [A, 4] xyxy, pixels
        self._labels = labels[keep][order]
        self._iscrowd = iscrowd[keep][order]
        self._area = area[keep][order].astype(np.float32)
        counts = np.bincount(image_index[keep], minlength=len(self.ids))
        self._offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"COCODataset({self.split}: {len(self)} images, {len(self._labels)} objects, "
                f"{len(self.classes) - 1} classes, {self.root})")

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.file_names[index]

    def load_target(self, index: int) -> dict:
        """The target of image ``index`` without reading the image or applying the transform
        (fast, for evaluation); normalized by the size the JSON gives."""
        start, end = self._offsets[index], self._offsets[index + 1]
        height, width = self.sizes[index].tolist()
        return {
            "boxes": to_normalized(torch.from_numpy(self._boxes[start:end]), (height, width)),
            "labels": torch.from_numpy(self._labels[start:end].copy()),
            "iscrowd": torch.from_numpy(self._iscrowd[start:end].copy()),
            "area": torch.from_numpy(self._area[start:end].copy()),
            "image_id": self.ids[index],
            "size": self.sizes[index].clone(),
        }

    def annotation_path(self, index: int) -> Path:
        """Where image ``index``'s annotation is: the one instances JSON."""
        return self.annotation_file
