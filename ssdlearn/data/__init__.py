"""Datasets: generated shapes (no download), and the real VOC and COCO formats."""

from .photo import sample_photo
from .shapes import SHAPE_CLASSES, ShapesDataset

__all__ = ["SHAPE_CLASSES", "ShapesDataset", "sample_photo"]
