"""Lesson 02's new exercise: all default boxes of one feature map, with no loop over cells."""

import math

import pytest
import torch

from ssdlearn import checks
from ssdlearn.anchors import SSD300_VOC, default_boxes
from ssdlearn.checks.lesson02 import _MAP_BOX_MISTAKES, _reference_map_boxes


def by_loops(f, s_k, s_next, ratios):
    """Cell by cell, from the paper's formulas: the independent version the check must match."""
    sizes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
    for a in ratios:
        r = math.sqrt(a)
        sizes += [(s_k * r, s_k / r), (s_k / r, s_k * r)]
    return torch.tensor([((j + 0.5) / f, (i + 0.5) / f, w, h)
                         for i in range(f) for j in range(f) for w, h in sizes],
                        dtype=torch.float64)


@pytest.mark.parametrize("args", [(10, 0.37, 0.54, (2, 3)), (1, 0.88, 1.05, (2,)),
                                  (4, 0.5, 0.7, ()), (3, 0.2, 0.4, (2, 3, 4))])
def test_reference_agrees_with_loops(args):
    assert torch.allclose(_reference_map_boxes(*args), by_loops(*args))


def test_reference_is_a_slice_of_ssd300_when_steps_match():
    # The 1x1 and 3x3 maps of SSD300 have step = 300 / f exactly (300 and 100 pixels).
    ssd = default_boxes(SSD300_VOC, dtype=torch.float64)
    assert torch.allclose(_reference_map_boxes(1, 264 / 300, 315 / 300, (2,)), ssd[-4:])
    assert torch.allclose(_reference_map_boxes(3, 213 / 300, 264 / 300, (2,)), ssd[-40:-4])


def test_reference_solution_passes():
    result = checks.map_boxes_check(_reference_map_boxes)
    assert result and "✓" in result.message


@pytest.mark.parametrize("mistake", _MAP_BOX_MISTAKES, ids=lambda m: m.hint[:40])
def test_each_mistake_fails_with_its_hint(mistake):
    result = checks.map_boxes_check(mistake.wrong)
    assert not result and result.done
    assert mistake.hint in result.message


def test_a_loop_over_cells_is_caught():
    result = checks.map_boxes_check(by_loops)
    assert not result and result.done and "loop" in result.message and "cells" in result.message


def test_a_loop_over_ratios_is_fine():
    def loop_over_ratios(f, s_k, s_next, ratios):
        sizes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
        for a in ratios:
            sizes += [(s_k * math.sqrt(a), s_k / math.sqrt(a)),
                      (s_k / math.sqrt(a), s_k * math.sqrt(a))]
        wh = torch.tensor(sizes, dtype=torch.float64)
        centres = (torch.arange(f, dtype=torch.float64) + 0.5) / f
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        xy = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, len(wh), 2)
        return torch.cat([xy, wh.expand(f * f, -1, -1)], dim=-1).reshape(-1, 4)

    assert checks.map_boxes_check(loop_over_ratios)


def test_stub_is_not_done():
    def stub(f, s_k, s_next, ratios):
        raise NotImplementedError("your code here")

    result = checks.map_boxes_check(stub)
    assert not result and not result.done and "not done" in result.message
