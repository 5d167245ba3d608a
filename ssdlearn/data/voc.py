"""PASCAL VOC: the dataset of the SSD paper's main results, read from its own on-disk format.
Lessons 07 and 08.

The VOCdevkit layout, as the official tars unpack it::

    VOCdevkit/VOC2007/Annotations/000005.xml           one XML file per image
    VOCdevkit/VOC2007/ImageSets/Main/trainval.txt      image ids, one a line
    VOCdevkit/VOC2007/JPEGImages/000005.jpg

Coordinates. A VOC ``bndbox`` gives 1-based pixel indices, inclusive at both ends: an object
from ``xmin = 1`` to ``xmax = W`` covers the whole width. In the course's continuous
coordinates pixel ``k`` (1-based) spans ``[k - 1, k]``, so the box is
``(xmin - 1, ymin - 1, xmax, ymax)``, as Detectron2 converts it. Its width
``xmax - xmin + 1`` is then exactly the VOC devkit's "+1" width, so areas agree with the
official evaluation. Boxes are clamped to the image and normalized by its width and height.

PASCAL VOC 2007 and 2012 have the same classes, so the paper's "07+12" training set is
``ConcatDataset([VOCDataset(root, "2007"), VOCDataset(root, "2012")])``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import torch

from ..boxes import to_normalized
from .files import AnnotatedImages

__all__ = ["VOC_CLASSES", "VOCDataset", "parse_voc_xml"]

# Index 0 is the background; the 20 classes in the devkit's (alphabetical) order.
VOC_CLASSES = (
    "background",
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _text(element: ET.Element, tag: str, path: Path, default: str | None = None) -> str:
    """The stripped text of ``element``'s child ``tag``; a clear error when it is missing."""
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise ValueError(f"{path}: <{element.tag}> has no <{tag}> value")
    return child.text.strip()


def _number(element: ET.Element, tag: str, path: Path) -> float:
    value = _text(element, tag, path)
    try:
        return float(value)  # a few VOC2012 files write "273.5" rather than integers
    except ValueError:
        raise ValueError(f"{path}: <{tag}> must be a number, got {value!r}") from None


def parse_voc_xml(path: str | Path, classes: tuple[str, ...] = VOC_CLASSES) -> dict:
    """Read one VOC annotation file, in pixels.

    Args:
        path: an ``Annotations/*.xml`` file.
        classes: class names, index 0 the background; ``<name>`` must be one of them.
    Returns:
        dict with ``boxes: Tensor[G, 4]`` (xyxy, pixels, ``(xmin - 1, ymin - 1, xmax, ymax)``
        clamped to the image), ``labels: LongTensor[G]`` (1..C-1), ``difficult`` and
        ``truncated``: ``BoolTensor[G]`` (absent tags mean 0), and ``size``: ``(height,
        width)`` as ints from ``<size>``. A file with no ``<object>`` gives G = 0.
    Raises:
        ValueError naming the file: not XML, no valid ``<size>``, an unknown class name, a
        missing or non-numeric coordinate, or ``xmax < xmin``.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path} is not a valid VOC annotation (malformed XML: {err})") from err
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: the annotation has no <size>")
    width, height = _number(size, "width", path), _number(size, "height", path)
    if width <= 0 or height <= 0:
        raise ValueError(f"{path}: <size> must be positive, got width {width}, height {height}")
    label_of = {name: label for label, name in enumerate(classes) if label > 0}

    boxes, labels, difficult, truncated = [], [], [], []
    for obj in root.findall("object"):  # direct children: a person's <part>s are not objects
        name = _text(obj, "name", path).lower()
        if name not in label_of:
            raise ValueError(
                f"{path}: unknown class {name!r}; expected one of {', '.join(classes[1:])}"
            )
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise ValueError(
                f"{path}: object {name!r} has xmax < xmin or ymax < ymin: "
                f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
            )
        boxes.append((x1 - 1, y1 - 1, x2, y2))  # 1-based inclusive pixels -> continuous
        labels.append(label_of[name])
        difficult.append(_text(obj, "difficult", path, default="0") != "0")
        truncated.append(_text(obj, "truncated", path, default="0") != "0")

    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    limits = torch.tensor([width, height, width, height], dtype=torch.float32)
    boxes_t = boxes_t.clamp(min=0).minimum(limits)
    return {
        "boxes": boxes_t,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult, dtype=torch.bool),
        "truncated": torch.tensor(truncated, dtype=torch.bool),
        "size": (int(height), int(width)),
    }


def _find_year_dir(root: Path, year: str) -> Path:
    """``root/VOCdevkit/VOC{year}``, ``root/VOC{year}``, or ``root`` itself, the first that
    has an ``Annotations`` folder."""
    name = f"VOC{year}"
    candidates = [root / "VOCdevkit" / name, root / name]
    if not (root.name.startswith("VOC") and root.name[3:].isdigit() and root.name != name):
        candidates.append(root)  # root is the year folder itself (or a VOC-format copy)
    for candidate in candidates:
        if (candidate / "Annotations").is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no PASCAL VOC {year} found under root={str(root)!r}: looked for an Annotations "
        f"folder in {tried}. Download it with `python -m ssdlearn data voc{year} --root ...`"
    )


class VOCDataset(AnnotatedImages):
    """PASCAL VOC detection, one sample per image of an image set.

    Args:
        root: the folder that holds ``VOCdevkit`` (where the tars were extracted); the
            ``VOCdevkit`` folder or the ``VOC{year}`` folder itself are accepted too.
        year: "2007" or "2012" (any ``VOC{year}`` folder present works).
        image_set: a file of ``ImageSets/Main``: "train", "val", "trainval" or "test".
        keep_difficult: keep the objects marked difficult. Keep them for evaluation (VOC
            mAP ignores them rather than counting them as misses); the paper's Caffe
            training (``ssd_pascal.py``) keeps them as well.
        transform: optional ``transform(image, target) -> (image, target)``.

    A sample is ``(image, target)``: ``image`` a float ``Tensor[3, H, W]`` in [0, 1] (RGB),
    ``target`` a dict with ``boxes: Tensor[G, 4]`` (xyxy, normalized; see the module
    docstring for the pixel convention), ``labels: LongTensor[G]`` (1..20, see
    ``VOC_CLASSES``), ``difficult`` and ``truncated``: ``BoolTensor[G]``, ``image_id``: the
    file stem (str, e.g. "000005") and ``size``: ``LongTensor[2]``, the original
    ``(height, width)``; ``boxes * size.flip(0).repeat(2)`` gives pixels back.
    """

    classes = VOC_CLASSES

    def __init__(self, root: str | Path, year: str | int = "2007", image_set: str = "trainval",
                 keep_difficult: bool = True, transform: Callable | None = None) -> None:
        year = str(year)
        if not (len(year) == 4 and year.isdigit()):
            raise ValueError(f"year must be four digits such as '2007' or '2012', got {year!r}")
        self.year, self.image_set = year, image_set
        self.keep_difficult = keep_difficult
        self.transform = transform
        self.root = _find_year_dir(Path(root), year)
        set_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not set_file.is_file():
            available = sorted(p.stem for p in set_file.parent.glob("*.txt") if "_" not in p.stem)
            raise FileNotFoundError(
                f"image set file {set_file} not found; image sets here: "
                f"{', '.join(available) or 'none'}"
            )
        # Per-class set files have "id label" lines; the first token is the id either way.
        lines = set_file.read_text().split("\n")
        self.ids: list[str] = [line.split()[0] for line in lines if line.strip()]

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"VOCDataset(VOC{self.year} {self.image_set}: {len(self)} images, {self.root})"

    def annotation_path(self, index: int) -> Path:
        return self.root / "Annotations" / f"{self.ids[index]}.xml"

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def load_target(self, index: int) -> dict:
        """The target of image ``index`` without reading the image or applying the transform
        (fast, for evaluation); normalized by the size the XML gives."""
        annotation = parse_voc_xml(self.annotation_path(index), self.classes)
        height, width = annotation.pop("size")
        if not self.keep_difficult:
            keep = ~annotation["difficult"]
            annotation = {key: value[keep] for key, value in annotation.items()}
        annotation["boxes"] = to_normalized(annotation["boxes"], (height, width))
        annotation["image_id"] = self.ids[index]
        annotation["size"] = torch.tensor([height, width], dtype=torch.int64)
        return annotation
