"""Lesson 04's exercise: the parameters of SSD's predictor heads."""

import pytest
import torch

from ssdlearn import checks
from ssdlearn.anchors import SSD300_COCO, SSD512_VOC
from ssdlearn.checks.lesson04 import _HEAD_MISTAKES, _heads
from ssdlearn.model import ssd300_vgg16, ssd512_vgg16


def count_heads(model):
    return sum(p.numel() for head in (model.loc_heads, model.conf_heads) for p in head.parameters())


def test_reference_counts_the_library_heads():
    # Cross-check against the real modules, not against the formula itself.
    assert _heads(SSD512_VOC, [512, 1024, 512, 256, 256, 256, 256], 21) == count_heads(
        ssd512_vgg16(21))
    assert _heads(SSD300_COCO, [512, 1024, 512, 256, 256, 256], 81) == count_heads(
        ssd300_vgg16(81, prior_config=SSD300_COCO))


def test_a_solution_that_builds_the_heads_passes():
    def my_head_parameters(config, channels, num_classes):
        total = 0
        for c, ratios in zip(channels, config.aspect_ratios):
            k = 2 + 2 * len(ratios)
            for out in (4 * k, num_classes * k):
                total += sum(p.numel() for p in torch.nn.Conv2d(c, out, 3, padding=1).parameters())
        return total

    result = checks.head_parameters_check(my_head_parameters)
    assert result.passed and result.done


def test_unfinished_is_not_done():
    def my_head_parameters(config, channels, num_classes):
        raise NotImplementedError

    result = checks.head_parameters_check(my_head_parameters)
    assert not result.done and repr(result) == "Head parameters: not done yet."


@pytest.mark.parametrize("mistake", _HEAD_MISTAKES, ids=range(len(_HEAD_MISTAKES)))
def test_each_mistake_fails_with_its_hint(mistake):
    result = checks.head_parameters_check(mistake.wrong)
    assert not result.passed and result.done
    assert mistake.hint in repr(result)


def test_hints_never_give_the_expected_number():
    result = checks.head_parameters_check(lambda config, channels, num_classes: 0)
    expected = _heads(SSD512_VOC, [512, 1024, 512, 256, 256, 256, 256], 21)
    assert not result.passed and str(expected) not in repr(result)
