"""Self-checks for the exercises, one module per lesson.

    from ssdlearn import checks
    checks.iou(my_iou)          # IoU: ✓ all 8 cases pass.

Every check is written the same way (:mod:`ssdlearn.checks._run`): a list of :class:`Case`,
a list of :class:`Mistake` (a typical wrong version and the hint it earns), and a call to
:func:`run_check`. A lesson's checks live in ``lessonNN.py``; add a new one there.
"""

from ._run import Case, CheckResult, Mistake, run_check
from .lesson01 import giou_check, iou
from .lesson02 import cell_box_sizes, map_boxes_check
from .lesson03 import bipartite_check, encode_check, match_check
from .lesson04 import head_parameters_check
from .lesson05 import focal_loss_check
from .lesson06 import accept_patches_check
from .lesson07 import lr_schedule_check
from .lesson08 import coco_ap_check, voc07_ap_check
from .lesson09 import tile_starts_check
from .lesson10 import error_kinds_check
from .lesson11 import paired_effect_check

__all__ = [
    "Case", "Mistake", "CheckResult", "run_check",
    "iou", "giou_check", "cell_box_sizes", "map_boxes_check", "encode_check", "match_check",
    "bipartite_check", "head_parameters_check",
    "focal_loss_check", "accept_patches_check", "lr_schedule_check", "voc07_ap_check",
    "coco_ap_check",
    "tile_starts_check", "error_kinds_check", "paired_effect_check",
]
