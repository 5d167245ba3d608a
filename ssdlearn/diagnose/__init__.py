"""Diagnosing a detector: why it fails (lesson 10, the SSD paper's Fig. 3 and 4).

The paper reads its detector with Hoiem et al.'s tool ("Diagnosing error in object
detectors", ECCV 2012). This package computes the same things for any model and dataset:

- :func:`detection_kinds`: each detection's kind, correct | duplicate | localization |
  similar | other | background (``kinds``);
- :func:`kind_shares`: each kind's share among the top-ranked detections as their number
  grows, and the recall (Fig. 3, top row);
- :func:`ap_by_characteristic`: AP and recall by object size and by aspect ratio, in bins of
  percentiles within each class (Fig. 4; ``characteristics``);
- tables and figures of both (``report``), and ``python -m ssdlearn diagnose``
  (``command``).

Inputs are those of :mod:`ssdlearn.metrics`: one dict per image, boxes xyxy in pixels.
"""

from .characteristics import (
    ASPECT_BINS,
    BIN_PERCENTILES,
    SIZE_BINS,
    ap_by_characteristic,
    characteristic_bins,
)
from .command import collect_detections, diagnose_main
from .kinds import FIG3_MULTIPLES, IGNORED, KINDS, detection_kinds, kind_shares
from .report import (
    format_by_characteristic,
    format_kind_shares,
    plot_by_characteristic,
    plot_kind_shares,
)

__all__ = [
    "ASPECT_BINS",
    "BIN_PERCENTILES",
    "FIG3_MULTIPLES",
    "IGNORED",
    "KINDS",
    "SIZE_BINS",
    "ap_by_characteristic",
    "characteristic_bins",
    "collect_detections",
    "detection_kinds",
    "diagnose_main",
    "format_by_characteristic",
    "format_kind_shares",
    "kind_shares",
    "plot_by_characteristic",
    "plot_kind_shares",
]
