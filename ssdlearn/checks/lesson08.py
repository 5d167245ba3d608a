"""Self-check of lesson 08: VOC2007's 11-point average precision."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from ..metrics import voc_ap
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["voc07_ap_check"]


def _ap_without_interpolation(recall: Tensor, precision: Tensor) -> float:
    points = torch.arange(11, dtype=torch.float64) / 10
    values = []
    for r in points:  # the precision at the first detection reaching recall r
        reached = (recall >= r).nonzero()
        values.append(float(precision[reached[0, 0]]) if len(reached) else 0.0)
    return sum(values) / 11


def _ap_ten_points(recall: Tensor, precision: Tensor) -> float:
    points = torch.arange(1, 11, dtype=torch.float64) / 10
    best = [float(torch.where(recall >= r, precision, 0.0).max()) for r in points]
    return sum(best) / 10


_AP_MISTAKES = [
    Mistake(_ap_without_interpolation,
            "Interpolate: at each recall level r, take the best precision at any recall >= r, "
            "not the precision where the curve first reaches r."),
    Mistake(_ap_ten_points, "VOC2007 uses 11 points, r = 0, 0.1, ..., 1.0 (0 included)."),
    Mistake(lambda r, p: voc_ap(r, p, use_07_metric=False),
            "That is VOC2010's area under the curve; VOC2007 averages 11 points."),
]  # fmt: skip


def voc07_ap_check(fn: Callable[[Tensor, Tensor], float]) -> CheckResult:
    """Check ``fn(recall[N], precision[N]) -> float``, VOC2007's 11-point AP."""
    t = partial(torch.tensor, dtype=torch.float64)
    cases = [
        ("a perfect detector", t([0.25, 0.5, 0.75, 1.0]), t([1.0, 1.0, 1.0, 1.0])),
        ("a false positive ranked first", t([0.0, 0.5, 1.0]), t([0.0, 0.5, 2 / 3])),
        ("a curve that never reaches recall 1", t([0.25, 0.45, 0.45, 0.65]),
         t([1.0, 1.0, 2 / 3, 0.8])),
        ("a zig-zag curve", t([0.1, 0.1, 0.3, 0.3, 0.5, 0.7, 0.7, 0.9]),
         t([1.0, 0.5, 0.67, 0.5, 0.56, 0.64, 0.58, 0.6])),
        ("no detections at all", t([]), t([])),
    ]
    return run_check("VOC07 AP", lambda r, p: torch.tensor(float(fn(r, p))),
                     [Case(d, (r, p), torch.tensor(voc_ap(r, p))) for d, r, p in cases],
                     [Mistake(lambda r, p, m=m: torch.tensor(float(m.wrong(r, p))), m.hint)
                      for m in _AP_MISTAKES])
