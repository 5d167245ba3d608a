import pytest
import torch

from ssdlearn import checks
from ssdlearn.boxes import box_iou


def test_reference_solution_passes():
    result = checks.iou(box_iou)
    assert result.passed and result.done
    assert "✓ all 8 cases pass" in repr(result)


def test_unfinished_exercise_is_not_done_yet():
    def my_iou(boxes1, boxes2):
        raise NotImplementedError("your code here")

    result = checks.iou(my_iou)
    assert not result.passed and not result.done
    assert repr(result) == "IoU: not done yet."


def test_crashing_solution_is_reported_with_the_case():
    def my_iou(boxes1, boxes2):
        return boxes1 @ boxes2  # wrong shapes for matmul

    result = checks.iou(my_iou)
    assert not result.passed and result.done
    assert "two overlapping boxes" in repr(result) and "RuntimeError" in repr(result)


def no_clamp(b1, b2):
    tl = torch.maximum(b1[:, None, :2], b2[None, :, :2])
    br = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = br - tl
    inter = wh[..., 0] * wh[..., 1]
    a1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    a2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    return inter / (a1[:, None] + a2[None, :] - inter)


def union_without_subtracting(b1, b2):
    tl = torch.maximum(b1[:, None, :2], b2[None, :, :2])
    br = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = (br - tl).clamp(min=0)
    a1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    a2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    return wh[..., 0] * wh[..., 1] / (a1[:, None] + a2[None, :])


def plus_one(b1, b2):
    tl = torch.maximum(b1[:, None, :2], b2[None, :, :2])
    br = torch.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = (br - tl + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    a1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    a2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    return inter / (a1[:, None] + a2[None, :] - inter)


def columns_per_first_box(b1, b2):
    return box_iou(b2, b1)


def one_number_per_pair_in_a_loop_but_transposed(b1, b2):
    return torch.tensor([[box_iou(x[None], y[None]).item() for x in b1] for y in b2])


@pytest.mark.parametrize(
    ("wrong", "hint_words"),
    [
        (no_clamp, "Clamp them at 0"),
        (union_without_subtracting, "counts the intersection twice"),
        (plus_one, "no '+ 1'"),
        (columns_per_first_box, "shape [N, M]"),
        (one_number_per_pair_in_a_loop_but_transposed, "shape [N, M]"),
        (lambda b1, b2: box_iou(b1, b2) * 0.9, "Work this case out on paper"),
    ],
)
def test_typical_mistakes_get_their_hint(wrong, hint_words):
    result = checks.iou(wrong)
    assert not result.passed and result.done
    assert hint_words in repr(result)


def test_learner_may_compute_in_float32():
    result = checks.iou(lambda b1, b2: box_iou(b1.float(), b2.float()))
    assert result.passed


# ---- lesson 02 ------------------------------------------------------------------------

import math  # noqa: E402

from ssdlearn.anchors import cell_box_sizes as anchor_cell_sizes  # noqa: E402


def reference_cell(s_k, s_next, ratios):
    return torch.tensor(anchor_cell_sizes(s_k, s_next, ratios))


def test_cell_box_sizes_reference_passes():
    assert checks.cell_box_sizes(reference_cell).passed


def forgot_extra_box(s_k, s_next, ratios):
    sizes = reference_cell(s_k, s_next, ratios)
    return torch.cat([sizes[:1], sizes[2:]])


def swapped(s_k, s_next, ratios):
    sizes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
    for a in ratios:
        r = math.sqrt(a)
        sizes += [(s_k / r, s_k * r), (s_k * r, s_k / r)]
    return torch.tensor(sizes)


def average_extra(s_k, s_next, ratios):
    sizes = reference_cell(s_k, s_next, ratios)
    sizes[1] = (s_k + s_next) / 2
    return sizes


@pytest.mark.parametrize(
    ("wrong", "hint_words"),
    [
        (swapped, "w = s_k * sqrt(a)"),
        (average_extra, "geometric mean"),
        (forgot_extra_box, "the result has shape"),
    ],
)
def test_cell_box_sizes_mistakes(wrong, hint_words):
    result = checks.cell_box_sizes(wrong)
    assert not result.passed and hint_words in repr(result)


# ---- lesson 03 ------------------------------------------------------------------------

from ssdlearn.matching import encode, match  # noqa: E402


def test_encode_and_match_references_pass():
    assert checks.encode_check(lambda m, p: encode(m, p)).passed
    assert checks.match_check(lambda *args: match(*args)[0]).passed


def encode_without_variances(matched, priors):
    return encode(matched, priors, variances=(1.0, 1.0))


def encode_corners(matched, priors):
    return (matched - cxcywh_to_xyxy(priors)) / 0.1


def match_by_threshold_only(gt_boxes, gt_labels, priors, threshold):
    iou = box_iou(gt_boxes, cxcywh_to_xyxy(priors))
    if len(gt_boxes) == 0:
        return torch.zeros(len(priors), dtype=torch.long)
    best, index = iou.max(dim=0)
    return torch.where(best >= threshold, gt_labels[index], 0)


def match_strictly_above(gt_boxes, gt_labels, priors, threshold):
    return match(gt_boxes, gt_labels, priors, threshold + 1e-9)[0]


from ssdlearn.boxes import cxcywh_to_xyxy  # noqa: E402


@pytest.mark.parametrize(
    ("check", "wrong", "hint_words"),
    [
        (checks.encode_check, encode_without_variances, "Divide by the variances"),
        (checks.encode_check, encode_corners, "convert the matched corners"),
        (checks.match_check, match_by_threshold_only, "first get the default box it overlaps best"),
        (checks.match_check, match_strictly_above, "(>=)"),
    ],
)
def test_encode_and_match_mistakes(check, wrong, hint_words):
    result = check(wrong)
    assert not result.passed and hint_words in repr(result)


# ---- lesson 08 ------------------------------------------------------------------------

from ssdlearn.metrics import voc_ap  # noqa: E402


def test_voc07_ap_reference_passes():
    assert checks.voc07_ap_check(voc_ap).passed


def ap_first_reached(recall, precision):
    values = []
    for k in range(11):
        reached = (recall >= k / 10).nonzero()
        values.append(float(precision[reached[0, 0]]) if len(reached) else 0.0)
    return sum(values) / 11


@pytest.mark.parametrize(
    ("wrong", "hint_words"),
    [(ap_first_reached, "Interpolate"),
     (lambda r, p: voc_ap(r, p, use_07_metric=False), "VOC2010's area"),
     (lambda r, p: float(p.mean()) if len(p) else 0.0, "Work this case out")],
)
def test_voc07_ap_mistakes(wrong, hint_words):
    result = checks.voc07_ap_check(wrong)
    assert not result.passed and hint_words in repr(result)


# ---- lesson 07 ------------------------------------------------------------------------

import dataclasses  # noqa: E402

from ssdlearn.train import TrainConfig, learning_rate  # noqa: E402


def train_schedule(step, lr, warmup, milestones, gamma):
    config = dataclasses.replace(TrainConfig(), lr=lr, warmup_steps=warmup,
                                 lr_milestones=tuple(milestones), lr_gamma=gamma)
    return learning_rate(step, config)


def test_lr_schedule_check_agrees_with_the_trainer():
    assert checks.lr_schedule_check(train_schedule).passed


@pytest.mark.parametrize(
    ("wrong", "hint_words"),
    [(lambda s, lr, w, m, g: lr * (s / w if s < w else 1) * g ** sum(s >= x for x in m),
      "Warmup starts at lr / warmup_steps"),
     (lambda s, lr, w, m, g: lr * ((s + 1) / w if s < w else 1) * g ** sum(s > x for x in m),
      "at the milestone step itself"),
     (lambda s, lr, w, m, g: lr, "Work this case out")],
)
def test_lr_schedule_mistakes(wrong, hint_words):
    result = checks.lr_schedule_check(wrong)
    assert not result.passed and hint_words in repr(result)
