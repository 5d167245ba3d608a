"""Your own data in the three formats people have: a folder of VOC XML, a COCO JSON, a CSV.

Lesson 09 (your own data) uses it. Every format is read into the same checked form, so a
mistake in the annotations is found when the dataset is built, not hours into training,
with an error naming the file and the row (CSV) or object (XML, JSON):

- a missing or unreadable image, or one whose size differs from what the annotation says;
- ``xmin >= xmax`` or ``ymin >= ymax``, or a coordinate that is not a finite number;
- a box more than one pixel outside the image (within one pixel it is clamped: tools
  differ on whether pixels count from 0 or 1);
- a class not among ``classes`` when they are given;
- an empty file, or no images at all.

With ``errors="skip"`` the bad objects (and the images that cannot be read) are left out
instead; ``skipped`` lists each with its reason, and a warning gives the count. Nothing is
dropped silently.

Formats (coordinates in pixels):

- VOC: one XML per image, ``<filename>``, ``<size>``, ``<object><name>`` and ``<bndbox>``
  with 1-based inclusive pixels, read as ``ssdlearn.data.voc`` reads them.
- COCO: one JSON with ``images`` (``id``, ``file_name``, ``width``, ``height``),
  ``annotations`` (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``) and
  ``categories`` (``id``, ``name``).
- CSV: a header ``image_path,xmin,ymin,xmax,ymax,label`` and one row per box, pixel edges;
  an image with no objects is a row with empty coordinates and label. Image paths are
  relative to the CSV's folder (or to ``images``).

Samples are as in :class:`ssdlearn.data.VOCDataset`: ``(image, target)`` with ``boxes``
(xyxy, normalized), ``labels`` (1..C-1; 0 is the background), ``image_id`` (the image's
path relative to the image folder) and ``size`` (height, width).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .files import AnnotatedImages

__all__ = [
    "DetectionFiles",
    "VOCFolder",
    "COCOFile",
    "CSVDetection",
    "load_annotations",
]

CSV_COLUMNS = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")
_TOLERANCE = 1.0  # pixels a box may stick out of the image before it is an error


@dataclass
class _Image:
    """One image as an annotation file describes it, before checking."""

    path: Path
    size: tuple[int, int] | None  # (height, width) declared by the annotation, if any
    where: str  # the annotation file (and entry) that names the image
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # per object: "file, row 3"


def _check_errors(errors: str) -> str:
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    return errors


def _given_classes(classes: Sequence[str] | None) -> tuple[str, ...] | None:
    """Object class names as given (a leading "background" is dropped)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        raise TypeError(f"classes must be a sequence of names, got the string {classes!r}")
    names = [str(c) for c in classes]
    if names and names[0] == "background":
        names = names[1:]
    if not names:
        raise ValueError("classes must name at least one object class")
    if len(set(names)) != len(names):
        raise ValueError(f"classes repeat a name: {names}")
    return tuple(names)


class DetectionFiles(AnnotatedImages):
    """Images and boxes read from annotation files, checked; the base of the three readers.

    Attributes:
        classes: ``("background", *names)``: the given names, else those found in the data
            in sorted order.
        skipped: one ``(where, reason)`` per object or image left out (``errors="skip"``).
        annotation_file: the file or folder read.
    """

    def __init__(self, images: list[_Image], annotation_file: Path, image_root: Path,
                 classes: Sequence[str] | None, transform: Callable | None,
                 errors: str) -> None:
        self.annotation_file, self.image_root = annotation_file, image_root
        self.transform, self.errors = transform, _check_errors(errors)
        self.skipped: list[tuple[str, str]] = []
        if not images:
            raise ValueError(f"{annotation_file}: no images found (an empty file or folder?)")
        given = _given_classes(classes)
        names = given or tuple(sorted({n for image in images for n in image.names}))
        self.classes: tuple[str, ...] = ("background", *names)
        label_of = {name: k for k, name in enumerate(self.classes) if k > 0}
        kept = [checked for image in images
                if (checked := self._check_image(image, label_of)) is not None]
        if not kept:
            raise ValueError(f"{annotation_file}: every image was skipped: {self.skipped[:3]}")
        self.paths = [image.path for image in kept]
        self.sizes = torch.tensor([image.size for image in kept], dtype=torch.int64)  # [N, 2]
        counts = [len(image.boxes) for image in kept]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        boxes = [box for image in kept for box in image.boxes]
        self._boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)  # pixels, clamped
        self._labels = np.array([label_of[n] for image in kept for n in image.names],
                                dtype=np.int64)
        if self.skipped:
            warnings.warn(f"{annotation_file}: skipped {len(self.skipped)} object(s) or "
                          f"image(s), see .skipped; the first: {self.skipped[0]}", stacklevel=3)

    def _fail(self, where: str, reason: str, error: type[Exception] = ValueError) -> None:
        if self.errors == "raise":
            raise error(f"{where}: {reason}")
        self.skipped.append((where, reason))

    def _check_image(self, image: _Image, label_of: dict[str, int]) -> _Image | None:
        """The image with its valid objects (clamped); None when the image is unusable."""
        try:
            with Image.open(image.path) as opened:  # reads the header only
                width, height = opened.size
        except FileNotFoundError:
            self._fail(image.where, f"image {image.path} not found", FileNotFoundError)
            return None
        except (UnidentifiedImageError, OSError) as err:
            self._fail(image.where, f"image {image.path} cannot be read ({err})")
            return None
        if image.size is not None and tuple(image.size) != (height, width):
            self._fail(image.where, f"image {image.path} is {width}x{height} (width x height) "
                       f"but the annotation says {image.size[1]}x{image.size[0]}")
            return None
        boxes, names, sources = [], [], []
        for box, name, where in zip(image.boxes, image.names, image.sources):
            reason = _box_problem(box, width, height) or (
                None if name in label_of else
                f"unknown class {name!r}; expected one of {', '.join(label_of)}")
            if reason:
                self._fail(where, reason)
                continue
            x1, y1, x2, y2 = box
            boxes.append((max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height)))
            names.append(name)
            sources.append(where)
        return _Image(image.path, (height, width), image.where, boxes, names, sources)

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.annotation_file}: {len(self)} images, "
                f"{len(self._labels)} objects, classes {self.classes[1:]}, "
                f"{len(self.skipped)} skipped)")

    def image_path(self, index: int) -> Path:
        return self.paths[index]

    def annotation_path(self, index: int) -> Path:
        return self.annotation_file

    def load_target(self, index: int) -> dict:
        """The target of image ``index`` without reading the image or applying the transform."""
        start, end = self._offsets[index], self._offsets[index + 1]
        height, width = self.sizes[index].tolist()
        scale = np.array([width, height, width, height], dtype=np.float32)
        path = self.paths[index]
        image_id = (path.relative_to(self.image_root).as_posix()
                    if path.is_relative_to(self.image_root) else str(path))
        return {
            "boxes": torch.from_numpy(self._boxes[start:end] / scale),
            "labels": torch.from_numpy(self._labels[start:end].copy()),
            "image_id": image_id,
            "size": self.sizes[index].clone(),
        }

    def pixel_boxes(self, index: int) -> torch.Tensor:
        """Tensor[G, 4] (xyxy, pixels) of image ``index``, e.g. for ``ssdlearn.fit``."""
        start, end = self._offsets[index], self._offsets[index + 1]
        return torch.from_numpy(self._boxes[start:end].copy())


def _box_problem(box: Sequence[float], width: int, height: int) -> str | None:
    """Why a pixel box (xyxy) is unusable, or None."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return f"coordinates must be finite numbers, got {tuple(box)}"
    if x1 >= x2 or y1 >= y2:
        return f"needs xmin < xmax and ymin < ymax, got ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    t = _TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return (f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the {width}x{height} "
                f"(width x height) image")
    return None


def _nonempty_file(path: Path, kind: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {path} not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty")
    return path


# ---------------------------------------------------------------------------------------
# The three formats
# ---------------------------------------------------------------------------------------


def _voc_number(element: ET.Element | None, tag: str, where: str) -> float:
    text = None if element is None else element.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: <{tag}> must be a number, got {text!r}") from None


def _read_voc(xml: Path, image_root: Path) -> _Image:
    _nonempty_file(xml, "annotation")
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{xml} is not a valid VOC annotation (malformed XML: {err})") from err
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise ValueError(f"{xml}: the annotation has no <filename>")
    size = root.find("size")
    declared = None
    if size is not None:
        declared = (int(_voc_number(size, "height", f"{xml}")),
                    int(_voc_number(size, "width", f"{xml}")))
    image = _Image(image_root / filename, declared, str(xml))
    for k, obj in enumerate(root.findall("object")):
        where = f"{xml}, object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise ValueError(f"{where}: no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{where} ({name!r}): no <bndbox>")
        x1, y1, x2, y2 = (_voc_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        image.boxes.append((x1 - 1, y1 - 1, x2, y2))  # 1-based inclusive -> pixel edges
        image.names.append(name)
        # The file's own numbers, as checks report the converted pixel edges.
        image.sources.append(f"{where} (<bndbox> {x1:g} {y1:g} {x2:g} {y2:g})")
    return image


class VOCFolder(DetectionFiles):
    """A folder of VOC XML files, one per image.

    Args:
        annotations: the folder of ``*.xml`` files (or one XML file).
        images: the folder ``<filename>`` is relative to; by default the annotations' folder.
        classes: object class names in label order (1, 2, ...); by default every name in
            the files, sorted. With ``classes`` an object of another class is an error.
        transform: optional ``transform(image, target) -> (image, target)``.
        errors: "raise" (default) or "skip" (see the module docstring).
    """

    def __init__(self, annotations: str | Path, images: str | Path | None = None,
                 classes: Sequence[str] | None = None, transform: Callable | None = None,
                 errors: str = "raise") -> None:
        annotations = Path(annotations)
        if annotations.is_dir():
            files = sorted(annotations.glob("*.xml"))
            if not files:
                raise ValueError(f"{annotations}: no .xml annotation files in this folder")
            folder = annotations
        else:
            files, folder = [_nonempty_file(annotations, "annotation")], annotations.parent
        image_root = Path(images) if images is not None else folder
        parsed = [_read_voc(xml, image_root) for xml in files]
        super().__init__(parsed, annotations, image_root, classes, transform, errors)


class COCOFile(DetectionFiles):
    """One COCO-style JSON (``images``, ``annotations``, ``categories``).

    Args:
        annotation_file: the JSON file.
        images: the folder ``file_name`` is relative to; by default the JSON's folder.
        classes: names in label order; by default the categories' names by increasing id.
        transform, errors: as :class:`VOCFolder`.

    Attributes (besides the base class's): ``label_to_category_id``.
    """

    def __init__(self, annotation_file: str | Path, images: str | Path | None = None,
                 classes: Sequence[str] | None = None, transform: Callable | None = None,
                 errors: str = "raise") -> None:
        path = _nonempty_file(Path(annotation_file), "annotation file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(data, dict) or not all(
                isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
            raise ValueError(f"{path}: expected a JSON object with the lists 'images', "
                             "'annotations' and 'categories'")
        image_root = Path(images) if images is not None else path.parent
        try:
            category = {c["id"]: str(c["name"]) for c in data["categories"]}
        except (KeyError, TypeError):
            raise ValueError(f"{path}: every category needs an 'id' and a 'name'") from None
        by_id: dict = {}
        for i, entry in enumerate(data["images"]):
            try:
                size = (int(entry["height"]), int(entry["width"]))
                by_id[entry["id"]] = _Image(image_root / entry["file_name"], size,
                                            f"{path}, images[{i}]")
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}, images[{i}]: needs 'id', 'file_name', 'width' and "
                                 "'height'") from None
        for i, ann in enumerate(data["annotations"]):
            where = f"{path}, annotations[{i}]"
            try:
                image, name = by_id[ann["image_id"]], category[ann["category_id"]]
                x, y, w, h = (float(v) for v in ann["bbox"])
            except KeyError as err:
                raise ValueError(f"{where}: {err} is missing or refers to no image/category "
                                 "in the file") from None
            except (TypeError, ValueError):
                raise ValueError(f"{where}: bbox must be 4 numbers [x, y, width, height]") from None
            image.boxes.append((x, y, x + w, y + h))
            image.names.append(name)
            image.sources.append(where)
        if classes is None:  # by increasing category id, as COCODataset orders them
            classes = [category[k] for k in sorted(category)]
        super().__init__(list(by_id.values()), path, image_root, classes, transform, errors)
        ids = {name: k for k, name in category.items()}
        self.label_to_category_id = {label: ids.get(name)
                                     for label, name in enumerate(self.classes) if label}


class CSVDetection(DetectionFiles):
    """A CSV with one row per box: ``image_path,xmin,ymin,xmax,ymax,label`` (pixel edges).

    Args:
        csv_file: the CSV, with that header. Rows are numbered as in a text editor (the
            header is row 1). A row with empty coordinates (and label) is an image with no
            objects.
        images: the folder image paths are relative to; by default the CSV's folder.
        classes, transform, errors: as :class:`VOCFolder`.

    Images come in the order they first appear.
    """

    def __init__(self, csv_file: str | Path, images: str | Path | None = None,
                 classes: Sequence[str] | None = None, transform: Callable | None = None,
                 errors: str = "raise") -> None:
        path = _nonempty_file(Path(csv_file), "CSV file")
        image_root = Path(images) if images is not None else path.parent
        with open(path, newline="", encoding="utf-8-sig") as file:
            rows = list(csv.reader(file))
        header = [c.strip() for c in rows[0]] if rows else []
        if tuple(header[:6]) != CSV_COLUMNS:
            raise ValueError(f"{path}, row 1: the header must start with "
                             f"{','.join(CSV_COLUMNS)}, got {','.join(header)!r}")
        by_path: dict[str, _Image] = {}
        for number, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            where = f"{path}, row {number}"
            cells = [c.strip() for c in row] + [""] * (6 - len(row))
            name = cells[0]
            if not name:
                raise ValueError(f"{where}: image_path is empty")
            if name not in by_path:
                by_path[name] = _Image(image_root / name, None, where)
            if not any(cells[1:6]):
                continue  # an image without objects
            try:
                box = tuple(float(v) for v in cells[1:5])
            except ValueError:
                raise ValueError(f"{where}: xmin, ymin, xmax, ymax must be numbers, got "
                                 f"{cells[1:5]}") from None
            if not cells[5]:
                raise ValueError(f"{where}: the label is empty")
            by_path[name].boxes.append(box)
            by_path[name].names.append(cells[5])
            by_path[name].sources.append(where)
        super().__init__(list(by_path.values()), path, image_root, classes, transform, errors)


def load_annotations(path: str | Path, images: str | Path | None = None,
                     classes: Sequence[str] | None = None, transform: Callable | None = None,
                     errors: str = "raise") -> DetectionFiles:
    """The reader for ``path``: a folder or ``.xml`` -> :class:`VOCFolder`, ``.json`` ->
    :class:`COCOFile`, ``.csv`` -> :class:`CSVDetection`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == ".xml":
        reader = VOCFolder
    elif suffix == ".json":
        reader = COCOFile
    elif suffix == ".csv":
        reader = CSVDetection
    else:
        raise ValueError(f"{path}: expected a folder of VOC XML, a .json (COCO) or a .csv")
    return reader(path, images, classes=classes, transform=transform, errors=errors)
