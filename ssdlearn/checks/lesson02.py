"""Self-checks of lesson 02: the (w, h) of one cell's default boxes, and all default boxes of
one feature map as one tensor."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .. import anchors
from ..boxes import cxcywh_to_xyxy
from ._loops import loop_check
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["cell_box_sizes", "map_boxes_check"]


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


# ---- all default boxes of one map, no loop over cells ------------------------------------


def _reference_map_boxes(f: int, s_k: float, s_next: float, ratios: Sequence[float]) -> Tensor:
    config = anchors.PriorConfig(image_size=1, feature_maps=[f], min_sizes=[s_k],
                                 max_sizes=[s_next], aspect_ratios=[tuple(ratios)])
    return anchors.default_boxes(config, dtype=torch.float64)


def _map_with(f, s_k, s_next, ratios, sizes=None, offset=0.5, columns_first=False,
              boxes_first=False) -> Tensor:
    """The map's boxes with one typical slip: other cell sizes, centres not at the middle
    of the cells, cells column by column, or all cells' first box before any second box."""
    sizes = _reference_cell_sizes(s_k, s_next, ratios) if sizes is None else sizes
    centres = (torch.arange(f, dtype=torch.float64) + offset) / f
    slow, fast = torch.meshgrid(centres, centres, indexing="ij")
    xy = torch.stack([slow, fast] if columns_first else [fast, slow], dim=-1).reshape(-1, 2)
    k, cells = len(sizes), f * f
    if boxes_first:
        return torch.cat([xy.repeat(k, 1), sizes.repeat_interleave(cells, dim=0)], dim=1)
    return torch.cat([xy.repeat_interleave(k, dim=0), sizes.repeat(cells, 1)], dim=1)


_MAP_BOX_MISTAKES = [
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, columns_first=True),
            "Cells go row by row: y is the slow index, x the fast one (meshgrid with "
            "indexing='ij' gives (y, x), and the box is (cx, cy, w, h))."),
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, boxes_first=True),
            "All k boxes of one cell come together, then the next cell's: the network's "
            "output for a cell holds its k boxes side by side."),
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, offset=0.0),
            "A cell's centre is its middle: ((j + 0.5) / f, (i + 0.5) / f), not its corner."),
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, offset=1.0),
            "A cell's centre is its middle: ((j + 0.5) / f, (i + 0.5) / f)."),
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, sizes=_cell_sizes_swapped(s, n, r)),
            "For a ratio a > 1 the first box of the pair is wider than tall: "
            "w = s_k * sqrt(a), h = s_k / sqrt(a)."),
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, sizes=_cell_sizes_reciprocals_last(s, n, r)),
            "Within a cell, put each ratio next to its reciprocal: 2, 1/2, then 3, 1/3."),
    Mistake(lambda f, s, n, r: _map_with(f, s, n, r, sizes=_cell_sizes_extra_last(s, n, r)),
            "Within a cell, the extra square box comes second, right after the box of scale s_k."),
    Mistake(lambda f, s, n, r: cxcywh_to_xyxy(_reference_map_boxes(f, s, n, r)),
            "Return (cx, cy, w, h), the format of default boxes, not corners."),
]  # fmt: skip


def map_boxes_check(fn: Callable[[int, float, float, Sequence[float]], Tensor]) -> CheckResult:
    """Check ``fn(f, s_k, s_next, ratios) -> Tensor[f * f * k, 4]`` (cxcywh): every default box
    of an f x f map, centres at the middle of the cells, in the library's Caffe order; then
    that it runs the same Python lines for a 4x4 and an 8x8 map (no loop over cells)."""
    cases = [
        ("the 10x10 map of SSD300 (s_k = 0.37, s_k+1 = 0.54, ratios 2 and 3)",
         (10, 0.37, 0.54, (2, 3))),
        ("a 2x2 map (s_k = 0.3, s_k+1 = 0.5, ratio 2)", (2, 0.3, 0.5, (2,))),
        ("the 38x38 map (s_k = 0.1, s_k+1 = 0.2, ratio 2)", (38, 0.1, 0.2, (2,))),
        ("a 5x5 map with square boxes only (ratios ())", (5, 0.5, 0.7, ())),
        ("the 1x1 map (s_k = 0.88, s_k+1 = 1.05, ratio 2)", (1, 0.88, 1.05, (2,))),
    ]  # fmt: skip
    result = run_check("Map boxes", fn,
                       [Case(d, args, _reference_map_boxes(*args)) for d, args in cases],
                       _MAP_BOX_MISTAKES)
    if not result:
        return result
    return loop_check("Map boxes", fn, (4, 0.2, 0.37, (2, 3)), (8, 0.2, 0.37, (2, 3)), "cells",
                      "build every cell at once: the centres as a grid (torch.arange, "
                      "torch.meshgrid), combined with one cell's sizes by broadcasting "
                      "(expand, repeat_interleave, reshape).", result)
