"""Datasets: generated shapes (no download), the real VOC and COCO formats, and your own
data (a folder of VOC XML, a COCO JSON, a CSV; lesson 09).
Shapes from lesson 00 on; VOC and COCO in lessons 07 and 08.

A sample is ``(image, target)``: ``image`` a float ``Tensor[3, H, W]`` in [0, 1], ``target``
a dict with ``boxes: Tensor[G, 4]`` (xyxy, normalized) and ``labels: Tensor[G]`` (1..C-1),
plus per-object flags where the dataset has them (``difficult``, ``iscrowd``).
"""

from .coco import COCODataset
from .collate import collate_detection
from .custom import COCOFile, CSVDetection, DetectionFiles, VOCFolder, load_annotations
from .download import DATASETS, UnsafeArchiveError, download, extract
from .photo import sample_photo
from .shapes import SHAPE_CLASSES, ShapesDataset
from .voc import VOC_CLASSES, VOCDataset, parse_voc_xml

__all__ = [
    "COCODataset",
    "COCOFile",
    "CSVDetection",
    "DetectionFiles",
    "VOCFolder",
    "load_annotations",
    "DATASETS",
    "SHAPE_CLASSES",
    "ShapesDataset",
    "UnsafeArchiveError",
    "VOCDataset",
    "VOC_CLASSES",
    "collate_detection",
    "download",
    "extract",
    "parse_voc_xml",
    "sample_photo",
]
