"""Self-checks for the exercises, one module per lesson.

    from ssdlearn import checks
    checks.iou(my_iou)          # IoU: ✓ all 8 cases pass.

Every check is written the same way (:mod:`ssdlearn.checks._run`): a list of :class:`Case`,
a list of :class:`Mistake` (a typical wrong version and the hint it earns), and a call to
:func:`run_check`. A lesson's checks live in ``lessonNN.py``; add a new one there.
"""

from ._run import Case, CheckResult, Mistake, run_check
from .lesson01 import iou
from .lesson02 import cell_box_sizes
from .lesson03 import encode_check, match_check
from .lesson04 import flatten_predictions
from .lesson05 import hard_negatives_check
from .lesson06 import crop_boxes_check
from .lesson07 import lr_schedule_check
from .lesson08 import voc07_ap_check

__all__ = [
    "Case", "Mistake", "CheckResult", "run_check",
    "iou", "cell_box_sizes", "encode_check", "match_check", "flatten_predictions",
    "hard_negatives_check", "crop_boxes_check", "lr_schedule_check", "voc07_ap_check",
]
