"""Self-check of lesson 10 (diagnosing a detector): the error kind of every detection of one
image, Hoiem et al.'s rule as :func:`ssdlearn.diagnose.detection_kinds` applies it.

The learner writes ``my_error_kinds(boxes, scores, labels, gt_boxes, gt_labels, similar)``
and returns one kind name per detection, in input order. The reference is
``detection_kinds`` on a one-image list; the typical mistakes below are the same rule with
one step done wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..boxes import box_iou
from ..diagnose import KINDS, detection_kinds
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["error_kinds_check"]

SHAPE_GROUPS = ((1, 2, 3), (4, 5))  # circle, square, triangle | the two bars, as in lesson 10


def _kinds(boxes: Tensor, scores: Tensor, labels: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
           similar: Sequence[Sequence[int]], *, claims: bool = True, order: str = "score",
           strict: bool = False, best_same_only: bool = False, tie_last: bool = False,
           best_object_decides: bool = False, use_groups: str = "both",
           loc_any_class: bool = False) -> list[str]:  # fmt: skip
    """The rule for one image, with switches that reproduce typical mistakes.

    Defaults give the right answer: ``claims`` (an object is found once), ``order``
    ("score": best first, equal scores in input order; "input"; "reversed_ties"),
    ``strict`` (> instead of >= at 0.5 and 0.1), ``best_same_only`` (only the best
    same-class object may be claimed), ``tie_last`` (equal IoU: the last object),
    ``best_object_decides`` (the best-overlapping object of any class picks the kind),
    ``use_groups`` ("both", "never", "object": only the object's class is looked up) and
    ``loc_any_class`` (0.1 <= IoU < 0.5 with any class is a localization error).
    """
    n, g = len(scores), len(gt_labels)
    iou = (box_iou(boxes.double(), gt_boxes.double()) if n and g
           else torch.zeros(n, g, dtype=torch.float64))  # fmt: skip
    hit = (lambda v: v > 0.5) if strict else (lambda v: v >= 0.5)
    near = (lambda v: v > 0.1) if strict else (lambda v: v >= 0.1)
    if order == "input":
        ranked = list(range(n))
    elif order == "reversed_ties":
        ranked = scores.argsort(stable=True).flip(0).tolist()
    else:
        ranked = scores.argsort(descending=True, stable=True).tolist()

    def grouped(a: int, b: int) -> bool:
        if use_groups == "never":
            return False
        if use_groups == "object":
            return any(b in group for group in similar)
        return any(a in group and b in group for group in similar)

    claimed = torch.zeros(g, dtype=torch.bool)
    kinds = [""] * n
    for d in ranked:
        label, overlap = int(labels[d]), iou[d]
        same = gt_labels == label
        if best_object_decides and g and near(overlap.max()):
            best = int(overlap.argmax())
            if int(gt_labels[best]) != label:
                kinds[d] = "similar" if grouped(label, int(gt_labels[best])) else "other"
                continue
        candidates = same & hit(overlap)
        if best_same_only and candidates.any():
            best = int(torch.where(same, overlap, -1.0).argmax())
            candidates = torch.zeros(g, dtype=torch.bool)
            candidates[best] = True
        free = candidates & ~claimed if claims else candidates
        if free.any():
            scored = torch.where(free, overlap, -1.0)
            pick = (g - 1 - int(scored.flip(0).argmax())) if tie_last else int(scored.argmax())
            claimed[pick] = True
            kinds[d] = "correct"
        elif candidates.any():
            kinds[d] = "duplicate"
        elif (same & near(overlap)).any() or (loc_any_class and near(overlap).any()):
            kinds[d] = "localization"
        elif any(near(overlap[k]) and grouped(label, int(gt_labels[k])) for k in range(g)):
            kinds[d] = "similar"
        elif near(overlap).any():
            kinds[d] = "other"
        else:
            kinds[d] = "background"
    return kinds


def _reference(boxes: Tensor, scores: Tensor, labels: Tensor, gt_boxes: Tensor,
               gt_labels: Tensor, similar: Sequence[Sequence[int]]) -> list[str]:  # fmt: skip
    prediction = {"boxes": boxes, "scores": scores, "labels": labels}
    return detection_kinds([prediction], [{"boxes": gt_boxes, "labels": gt_labels}],
                           [list(group) for group in similar])[0]  # fmt: skip


def _codes(kinds: object) -> Tensor:
    """Kind names -> their index in KINDS; -1 for anything that is not a kind name."""
    if isinstance(kinds, (str, bytes)) or not isinstance(kinds, Sequence):
        return torch.full((1,), -1.0)
    return torch.tensor([float(KINDS.index(k)) if isinstance(k, str) and k in KINDS else -1.0
                         for k in kinds], dtype=torch.float64)  # fmt: skip


_MISTAKES = [
    ({"claims": False},
     "An object is found once: a second detection of it (a lower score) is a duplicate. Keep "
     "a flag per object, set when a detection claims it."),
    ({"order": "input"},
     "Take the detections best score first, not in list order: the better-scoring detection "
     "claims the object, wherever it is in the list."),
    ({"order": "reversed_ties"},
     "Equal scores keep the input order: sort with argsort(descending=True, stable=True)."),
    ({"strict": True},
     "The thresholds include their bound: IoU >= 0.5 is a hit and IoU >= 0.1 an overlap."),
    ({"best_same_only": True},
     "A detection that overlaps two objects of its class by 0.5 or more claims the free one; "
     "it is a duplicate only when every such object is already claimed."),
    ({"tie_last": True},
     "On equal IoU the detection claims the first such object in the list (argmax does)."),
    ({"best_object_decides": True},
     "Check the kinds in order: an overlap of 0.1 or more with an object of its own class "
     "makes a localization error, even if an object of another class overlaps more."),
    ({"use_groups": "never"},
     "An overlapped object of another class that shares a `similar` group with the "
     "detection's class makes the detection 'similar', not 'other'."),
    ({"use_groups": "object"},
     "'similar' needs both classes in one group: the detection's class and the object's."),
    ({"loc_any_class": True},
     "A localization error is the right class in the wrong place: only objects of the "
     "detection's own class count for it."),
]  # fmt: skip


def _cases() -> list[tuple[str, tuple]]:
    """(description, (boxes, scores, labels, gt_boxes, gt_labels, similar)), in check order."""

    def image(dets: list, objects: list, similar=SHAPE_GROUPS) -> tuple:
        boxes = torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4)
        scores = torch.tensor([d[1] for d in dets], dtype=torch.float32)
        labels = torch.tensor([d[2] for d in dets], dtype=torch.long)
        gt_boxes = torch.tensor([o[0] for o in objects], dtype=torch.float32).reshape(-1, 4)
        gt_labels = torch.tensor([o[1] for o in objects], dtype=torch.long)
        return boxes, scores, labels, gt_boxes, gt_labels, similar

    circle = ([10, 10, 50, 50], 1)
    return [
        ("one detection on its object", image([([12, 10, 52, 50], 0.9, 1)], [circle])),
        ("a detection far from every object",
         image([([12, 10, 52, 50], 0.9, 1), ([60, 60, 90, 90], 0.7, 2)], [circle])),
        ("an image with no objects",
         image([([12, 10, 52, 50], 0.9, 1), ([60, 60, 90, 90], 0.7, 2)], [])),
        ("no detections", image([], [circle])),
        ("no detections and no objects", image([], [])),
        ("two detections of one object",
         image([([10, 10, 50, 50], 0.9, 1), ([14, 10, 54, 50], 0.8, 1)], [circle])),
        ("the better detection later in the list",
         image([([14, 10, 54, 50], 0.6, 1), ([10, 10, 50, 50], 0.9, 1)], [circle])),
        ("two detections with equal scores",
         image([([10, 10, 50, 50], 0.8, 1), ([14, 10, 54, 50], 0.8, 1)], [circle])),
        ("a detection with IoU exactly 0.5", image([([0, 0, 10, 20], 0.9, 1)],
                                                   [([0, 0, 10, 10], 1)])),
        ("a detection with IoU exactly 0.1", image([([0, 0, 10, 100], 0.9, 1)],
                                                   [([0, 0, 10, 10], 1)])),
        ("two objects of its class, the closer one already claimed",
         image([([10, 10, 50, 50], 0.9, 1), ([11, 10, 51, 50], 0.8, 1)],
               [circle, ([14, 10, 54, 50], 1)])),
        ("a detection with equal IoU with two objects of its class",
         image([([10, 10, 20, 20], 0.9, 1), ([10, 5, 20, 17], 0.8, 1)],
               [([10, 10, 20, 22], 1), ([10, 8, 20, 20], 1)])),
        ("the right class, badly placed", image([([30, 10, 70, 50], 0.9, 1)], [circle])),
        ("its own class nearby, another class right under it",
         image([([10, 10, 50, 50], 0.9, 1)], [([10, 10, 50, 50], 2), ([30, 10, 70, 50], 1)])),
        ("a class from its similar group",
         image([([12, 10, 52, 50], 0.9, 1)], [([10, 10, 50, 50], 2)])),
        ("a class from another group",
         image([([12, 10, 52, 50], 0.9, 1)], [([10, 10, 50, 50], 4)])),
        ("another class, badly placed",
         image([([30, 10, 70, 50], 0.9, 1)], [([10, 10, 50, 50], 4)])),
        ("a class that would be similar, but no groups given",
         image([([12, 10, 52, 50], 0.9, 1)], [([10, 10, 50, 50], 2)], similar=())),
        ("a zero-width detection inside an object",
         image([([30, 10, 30, 50], 0.9, 1)], [circle])),
        ("a busy image with every kind",
         image([([60, 60, 90, 92], 0.95, 4), ([10, 10, 50, 50], 0.9, 1),
                ([12, 12, 52, 52], 0.9, 1), ([30, 10, 70, 50], 0.6, 1),
                ([62, 60, 92, 92], 0.5, 5), ([61, 61, 91, 91], 0.5, 2),
                ([0, 80, 8, 96], 0.3, 3), ([60, 60, 90, 90], 0.3, 4)],
               [circle, ([60, 60, 90, 90], 4), ([100, 0, 120, 20], 3)])),
    ]  # fmt: skip


def error_kinds_check(fn: Callable[..., Sequence[str]]) -> CheckResult:
    """Check ``fn(boxes[N, 4], scores[N], labels[N], gt_boxes[G, 4], gt_labels[G], similar)
    -> list of N kind names`` (one image; boxes xyxy in pixels; ``similar`` a sequence of
    groups of labels)."""
    answers: dict[str, Tensor] = {}

    def learner(*args) -> Tensor:
        answers["last"] = _codes(fn(*args))
        return answers["last"]

    def unknown_name(*args) -> Tensor:  # matches only when the learner's answer had one
        last = answers.get("last")
        return last if last is not None and bool((last < 0).any()) else torch.full((1,), -2.0)

    mistakes = [Mistake(unknown_name, "Return a list with one kind per detection, each one of "
                        f"{', '.join(repr(k) for k in KINDS)}.")]  # fmt: skip
    mistakes += [Mistake(lambda *a, f=flags: _codes(_kinds(*a, **f)), hint)
                 for flags, hint in _MISTAKES]  # fmt: skip
    cases = [Case(text, args, _codes(_reference(*args))) for text, args in _cases()]
    return run_check("Error kinds", learner, cases, mistakes)
