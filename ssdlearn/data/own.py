"""Your own data for the train command: the trees preset's images, a held-out split of any
annotation file, and large images served as crops. Lesson 09.

``python -m ssdlearn train --config trees`` trains on two NEON images (``data/trees``) and
holds out a third; ``--config custom --annotations FILE_OR_FOLDER`` reads a VOC folder, a
COCO JSON or a CSV (:mod:`ssdlearn.data.custom`) and holds out a seeded share of its
images. Both keep the images at their own scale: training cuts crops of ``config.crop``
pixels from them (``ssdlearn.tiling.RandomCrop``) and evaluation detects over tiles of the
same size, so a 40-pixel tree stays 40 pixels wherever the image is large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .custom import DetectionFiles, VOCFolder, load_annotations

__all__ = [
    "TREES_TRAIN",
    "TREES_HELD_OUT",
    "trees_folder",
    "ImageSubset",
    "held_out_split",
    "CropSource",
    "own_datasets",
]

TREES_TRAIN = ("2019_YELL_2_528000_4978000_image_crop2.jpg", "OSBS_029.jpg")
TREES_HELD_OUT = ("2019_YELL_2_541000_4977000_image_crop.jpg",)


def trees_folder(data_root: str | Path = "data") -> Path:
    """``data_root/trees`` when it exists, else the copy next to the package (a checkout)."""
    for folder in (Path(data_root) / "trees",
                   Path(__file__).resolve().parents[2] / "data" / "trees"):
        if (folder / TREES_HELD_OUT[0]).is_file():
            return folder
    raise FileNotFoundError(
        f"the NEON tree images are not in {Path(data_root) / 'trees'}; they ship in the "
        "repository's data/trees (rebuild them with scripts/fetch_trees.py)")


class ImageSubset(Dataset):
    """Some images of a :class:`~ssdlearn.data.DetectionFiles`, with its ``classes``,
    ``load_target``, ``pixel_boxes`` and ``sizes`` (what fitting default boxes reads).

    ``one_class``: a name for every object, whatever its class in the files (label 1).
    """

    def __init__(self, files: DetectionFiles, indices: Sequence[int],
                 transform=None, one_class: str | None = None) -> None:
        self.files, self.indices, self.transform = files, list(indices), transform
        self.one_class = one_class
        self.classes = files.classes if one_class is None else ("background", one_class)
        self.sizes = files.sizes[self.indices] if self.indices else files.sizes[:0]

    def __len__(self) -> int:
        return len(self.indices)

    def load_target(self, index: int) -> dict:
        return self._relabel(self.files.load_target(self.indices[index]))

    def _relabel(self, target: dict) -> dict:
        if self.one_class is None:
            return target
        return {**target, "labels": torch.ones_like(target["labels"])}

    def pixel_boxes(self, index: int) -> Tensor:
        return self.files.pixel_boxes(self.indices[index])

    def image_id(self, index: int) -> str:
        return self.load_target(index)["image_id"]

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, target = self.files[self.indices[index]]
        target = self._relabel(target)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def held_out_split(files: DetectionFiles, fraction: float, seed: int = 0,
                   held_out: Sequence[str] = ()) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices) of ``files``' images.

    ``held_out`` names the held-out images (their ``image_id``, the path relative to the
    image folder); otherwise a seeded draw holds out ``round(fraction * N)`` images, at least
    one and never all. Raises ValueError when there are too few images to hold any out.
    """
    ids = [files.load_target(i)["image_id"] for i in range(len(files))]
    if held_out:
        missing = [name for name in held_out if name not in ids]
        if missing:
            raise ValueError(f"{files.annotation_file}: no image {missing[0]!r} to hold out; "
                             f"its images are {ids[:5]}{' ...' if len(ids) > 5 else ''}")
        val = [ids.index(name) for name in held_out]
    else:
        if not 0 < fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1, got {fraction}")
        if len(ids) < 2:
            raise ValueError(f"{files.annotation_file}: {len(ids)} image; holding images out "
                             "for evaluation needs at least 2")
        count = min(max(1, round(fraction * len(ids))), len(ids) - 1)
        order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
        val = sorted(order[:count].tolist())
    held = set(val)
    train = [i for i in range(len(ids)) if i not in held]
    return train, val


class CropSource(Dataset):
    """Each image of ``dataset`` repeated in proportion to its area in ``crop`` x ``crop``
    pieces (at least once), so that random crops (``ssdlearn.tiling.RandomCrop``) cover a
    large image as often as a small one per pixel. Images are decoded once and kept as
    bytes (uint8, a quarter of float32) when they all fit in ``cache_bytes``; such an image
    comes out as uint8, which the crop converts (only the crop: a whole float copy of a
    2,300-pixel image per sample would cost more than the training step).

    ``dataset`` is a DetectionFiles or :class:`ImageSubset` (its ``sizes`` are read without
    decoding any image).
    """

    def __init__(self, dataset, crop: int, cache_bytes: int = 2 * 1024**3) -> None:
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
            raise ValueError(f"crop must be a positive integer (pixels), got {crop!r}")
        self.dataset, self.crop = dataset, crop
        sizes = dataset.sizes.tolist()
        repeats = [max(1, math.ceil(h * w / crop**2)) for h, w in sizes]
        self.index = [i for i, r in enumerate(repeats) for _ in range(r)]
        self.cache: dict[int, tuple[Tensor, dict]] | None = (
            {} if sum(3 * h * w for h, w in sizes) <= cache_bytes else None)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        which = self.index[index]
        if self.cache is None:
            return self.dataset[which]
        if which not in self.cache:
            image, target = self.dataset[which]
            self.cache[which] = (image.mul(255).round_().to(torch.uint8), target)
        image, target = self.cache[which]
        return image, dict(target)


def own_datasets(config) -> tuple[ImageSubset, ImageSubset, tuple[str, ...]]:
    """(train, held-out, class names) for the ``trees`` and ``custom`` datasets of a
    :class:`~ssdlearn.config.TrainConfig`, at the images' own size (no transform)."""
    one_class = None
    if config.dataset == "trees":
        # SOAP_061's Alive / Dead are not used; the preset finds one class, "tree".
        files, one_class = VOCFolder(trees_folder(config.data_root)), "tree"
        train, val = held_out_split(files, 0, held_out=TREES_HELD_OUT)
        train = [i for i in train if files.load_target(i)["image_id"] in TREES_TRAIN]
    else:
        if not config.annotations:
            raise ValueError("--config custom needs --annotations: a folder of VOC XML, a "
                             "COCO .json or a .csv (image_path,xmin,ymin,xmax,ymax,label)")
        files = load_annotations(config.annotations, config.images,
                                 classes=list(config.classes) if config.classes else None)
        train, val = held_out_split(files, config.val_fraction, config.seed)
    train_set, val_set = ImageSubset(files, train, one_class=one_class), ImageSubset(
        files, val, one_class=one_class)
    return train_set, val_set, train_set.classes
