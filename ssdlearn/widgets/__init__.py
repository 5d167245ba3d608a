"""Interactive explorers for the lessons (ipywidgets), one module per lesson.

Each explorer is made by a factory function (``iou_explorer(...)``) and is an
:class:`Explorer`: controls, a readout, and a picture rendered to PNG, so it redraws the same
way in JupyterLab, Notebook, VS Code and in tests (see :mod:`ssdlearn.widgets._explorer`).

    lesson 01  iou_explorer           two boxes and their IoU
    lesson 02  default_box_explorer   one cell's default boxes over eq. 4's scales
    lesson 02  overlap_explorer       the default boxes that overlap an object, map by map
               (formerly match_explorer, still accepted)
    lesson 03  matching_explorer      the default boxes the matching rule gives each object
    lesson 05  mining_explorer        the negatives hard negative mining keeps
    lesson 06  augmentation_explorer  a sample before and after augmentation
    lesson 08  nms_explorer           detections before and after NMS
"""

from ._explorer import Explorer, figure_to_png
from .lesson01 import IoUExplorer, iou_explorer
from .lesson02 import (
    SSD300_LAYERS,
    DefaultBoxExplorer,
    MatchExplorer,
    OverlapExplorer,
    default_box_explorer,
    match_explorer,
    overlap_explorer,
    ssd300_like_config,
)
from .lesson03 import MatchingExplorer, matching_explorer
from .lesson05 import MiningExplorer, mining_explorer
from .lesson06 import AugmentationExplorer, augmentation_explorer
from .lesson08 import NMSExplorer, nms_explorer

__all__ = [
    "Explorer",
    "figure_to_png",
    "IoUExplorer",
    "iou_explorer",
    "DefaultBoxExplorer",
    "default_box_explorer",
    "ssd300_like_config",
    "SSD300_LAYERS",
    "OverlapExplorer",
    "overlap_explorer",
    "MatchingExplorer",
    "matching_explorer",
    "MiningExplorer",
    "mining_explorer",
    "AugmentationExplorer",
    "augmentation_explorer",
    "NMSExplorer",
    "nms_explorer",
    # former names, kept while lesson 02 uses them
    "MatchExplorer",
    "match_explorer",
]
