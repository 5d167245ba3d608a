"""Self-checks of lesson 08: VOC2007's 11-point AP, and COCO's 101-point AP (the exercise)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

from ..metrics import voc_ap
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["voc07_ap_check", "coco_ap_check"]


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


# COCO's 101-point AP, as pycocotools (and ssdlearn.metrics.coco) sample the curve.
_COCO_POINTS = torch.from_numpy(np.linspace(0.0, 1.0, 101))  # as pycocotools makes them


def _coco_ap(recall: Tensor, precision: Tensor, points: Tensor = _COCO_POINTS,
             side: str = "left", envelope: bool = True, unreached: str = "zero") -> Tensor:
    """COCO's 101-point AP of one curve, and (through the options) its typical mistakes.

    The precision is made non-increasing from the right (the best precision at any recall
    >= r); at each recall point r it is read at the first detection whose recall is >= r
    (``searchsorted`` on the left); a point the curve never reaches counts 0.
    """
    n = len(recall)
    if n == 0:
        return torch.tensor(0.0, dtype=torch.float64)
    if envelope:
        precision = precision.flip(0).cummax(0).values.flip(0)
    at = torch.searchsorted(recall, points, side=side)
    sampled = precision[at.clamp(max=n - 1)]
    if unreached == "zero":
        sampled = torch.where(at < n, sampled, 0.0)
    return sampled.mean()


_COCO_MISTAKES = [
    Mistake(partial(_coco_ap, envelope=False),
            "Interpolate first: the precision at recall r is the best precision at any recall "
            ">= r. Make the precision non-increasing from the right (flip, cummax, flip) "
            "before you sample it."),
    Mistake(partial(_coco_ap, side="right"),
            "At a recall point r, read the first detection whose recall is >= r: "
            "searchsorted with side='left'. side='right' skips a curve that reaches r exactly."),
    Mistake(partial(_coco_ap, points=_COCO_POINTS[:-1]),
            "COCO samples 101 points, r = 0, 0.01, ..., 1.00: both ends included."),
    Mistake(partial(_coco_ap, unreached="last"),
            "A recall point the curve never reaches has precision 0; do not carry the last "
            "precision on to recall 1."),
    Mistake(lambda r, p: torch.tensor(voc_ap(r, p, use_07_metric=True)),
            "That is VOC2007's 11-point AP; COCO samples 101 points."),
    Mistake(lambda r, p: torch.tensor(voc_ap(r, p, use_07_metric=False)),
            "That is VOC2010's area under the curve; COCO averages the interpolated "
            "precision at 101 recall points."),
]  # fmt: skip


def _random_curve(num_objects: int, num_detections: int, seed: int) -> tuple[Tensor, Tensor]:
    """A ranked detection list with hits at random ranks: recall j / num_objects."""
    g = torch.Generator().manual_seed(seed)
    hits = torch.zeros(num_detections, dtype=torch.float64)
    hits[torch.randperm(num_detections, generator=g)[: num_objects - 2]] = 1.0
    tp = hits.cumsum(0)
    return tp / num_objects, tp / torch.arange(1, num_detections + 1)


def coco_ap_check(fn: Callable[[Tensor, Tensor], float]) -> CheckResult:
    """Check ``fn(recall[N], precision[N]) -> float``, COCO's 101-point interpolated AP.

    Recalls in the cases are multiples of 1/4, 1/5 or 1/16, where every way of writing the
    101 points (numpy's or torch's linspace, k / 100) gives the same float.
    """
    t = partial(torch.tensor, dtype=torch.float64)
    cases = [
        ("a perfect detector", t([0.25, 0.5, 0.75, 1.0]), t([1.0, 1.0, 1.0, 1.0])),
        ("a false positive ranked first", t([0.0, 0.5, 1.0]), t([0.0, 0.5, 2 / 3])),
        ("recall reaching 0.2, 0.4 and 0.6 exactly, precision going up and down",
         t([0.2, 0.2, 0.4, 0.6, 0.6, 0.8]), t([1.0, 0.5, 2 / 3, 0.75, 0.6, 2 / 3])),
        ("a curve that never reaches recall 1", t([0.25, 0.5, 0.5, 0.75]),
         t([1.0, 1.0, 2 / 3, 0.75])),
        ("no detections at all", t([]), t([])),
        ("a single false positive", t([0.0]), t([0.0])),
        ("40 detections of 16 objects, 14 found", *_random_curve(16, 40, seed=8)),
    ]  # fmt: skip
    return run_check("COCO AP", lambda r, p: torch.tensor(float(fn(r, p))),
                     [Case(d, (r, p), _coco_ap(r, p)) for d, r, p in cases],
                     _COCO_MISTAKES)
