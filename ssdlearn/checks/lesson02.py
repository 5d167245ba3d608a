"""Self-check of lesson 02: the (w, h) of one cell's default boxes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .. import anchors
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["cell_box_sizes"]


def _reference_cell_sizes(s_k: float, s_next: float, ratios: Sequence[float]) -> Tensor:
    return torch.tensor(anchors.cell_box_sizes(s_k, s_next, ratios), dtype=torch.float64)


def _cell_sizes_case(description: str, s_k: float, s_next: float, ratios: tuple) -> Case:
    return Case(description, (s_k, s_next, ratios), _reference_cell_sizes(s_k, s_next, ratios))


def _cell_sizes_swapped(s_k, s_next, ratios):
    return _reference_cell_sizes(s_k, s_next, ratios)[:, [1, 0]]


def _cell_sizes_without_sqrt(s_k, s_next, ratios):
    sizes = [(s_k, s_k), (math.sqrt(s_k * s_next),) * 2]
    for a in ratios:
        sizes += [(s_k * a, s_k / a), (s_k / a, s_k * a)]
    return torch.tensor(sizes, dtype=torch.float64)


def _cell_sizes_arithmetic_extra(s_k, s_next, ratios):
    sizes = _reference_cell_sizes(s_k, s_next, ratios)
    sizes[1] = (s_k + s_next) / 2
    return sizes


def _cell_sizes_reciprocals_last(s_k, s_next, ratios):
    sizes = _reference_cell_sizes(s_k, s_next, ratios)
    pairs = range(len(ratios))
    order = [0, 1] + [2 + 2 * i for i in pairs] + [3 + 2 * i for i in pairs]
    return sizes[order]


def _cell_sizes_extra_last(s_k, s_next, ratios):
    sizes = _reference_cell_sizes(s_k, s_next, ratios)
    return torch.cat([sizes[:1], sizes[2:], sizes[1:2]])


_CELL_SIZE_MISTAKES = [
    Mistake(_cell_sizes_swapped,
            "For a ratio a > 1 the first box of the pair is wider than tall: "
            "w = s_k * sqrt(a), h = s_k / sqrt(a)."),
    Mistake(_cell_sizes_without_sqrt,
            "w / h must equal a while the area stays s_k²: that needs the square root of a."),
    Mistake(_cell_sizes_arithmetic_extra,
            "The extra square box uses the geometric mean of s_k and s_k+1, not the average."),
    Mistake(_cell_sizes_reciprocals_last,
            "Put each ratio next to its reciprocal: 2, 1/2, then 3, 1/3."),
    Mistake(_cell_sizes_extra_last,
            "The extra square box comes second, right after the box of scale s_k."),
]  # fmt: skip


def cell_box_sizes(fn: Callable[[float, float, Sequence[float]], Tensor]) -> CheckResult:
    """Check ``fn(s_k, s_next, ratios) -> Tensor[k, 2]``: (w, h) of one cell's boxes, in order."""
    cases = [
        _cell_sizes_case("conv7 of SSD300 (s_k = 0.2, s_k+1 = 0.37, ratios 2 and 3)",
                         0.2, 0.37, (2, 3)),
        _cell_sizes_case("conv4_3 (s_k = 0.1, s_k+1 = 0.2, ratio 2)", 0.1, 0.2, (2,)),
        _cell_sizes_case("a map with square boxes only (ratios ())", 0.5, 0.7, ()),
        _cell_sizes_case("the last map (s_k = 0.88, s_k+1 = 1.05, ratio 2)", 0.88, 1.05, (2,)),
    ]  # fmt: skip
    return run_check("Cell box sizes", fn, cases, _CELL_SIZE_MISTAKES)
