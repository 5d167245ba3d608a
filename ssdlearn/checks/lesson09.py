"""Self-check of lesson 09: where the tiles along one side of a large image start (the
reference is the detector's own, :func:`ssdlearn.tiling.tile_starts`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..tiling import tile_starts
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["tile_starts_check"]


def _stride(tile: int, overlap: float) -> int:
    return max(1, int(round(tile * (1 - overlap))))


def _not_flush(length: int, tile: int, overlap: float) -> Tensor:
    return torch.arange(0, max(length - tile, 0) + 1, _stride(tile, overlap))


def _past_the_edge(length: int, tile: int, overlap: float) -> Tensor:
    stride = _stride(tile, overlap)
    return torch.arange(0, max(length - tile, 0) + stride, stride)


def _edge_listed_twice(length: int, tile: int, overlap: float) -> Tensor:
    regular = torch.arange(0, max(length - tile, 0) + 1, _stride(tile, overlap))
    return torch.cat([regular, torch.tensor([max(length - tile, 0)])])


def _overlap_as_stride(length: int, tile: int, overlap: float) -> Tensor:
    if length <= tile:
        return torch.zeros(1, dtype=torch.long)
    stride = max(1, int(round(tile * overlap)))
    count = math.ceil((length - tile) / stride) + 1
    return torch.minimum(torch.arange(count) * stride, torch.tensor(length - tile))


def _negative_start(length: int, tile: int, overlap: float) -> Tensor:
    stride = _stride(tile, overlap)
    count = max(math.ceil((length - tile) / stride), 0) + 1
    return torch.minimum(torch.arange(count) * stride, torch.tensor(length - tile))


def _truncated_stride(length: int, tile: int, overlap: float) -> Tensor:
    if length <= tile:
        return torch.zeros(1, dtype=torch.long)
    stride = max(1, int(tile * (1 - overlap)))
    count = math.ceil((length - tile) / stride) + 1
    return torch.minimum(torch.arange(count) * stride, torch.tensor(length - tile))


# Order matters where two wrong versions agree on a case: the first match gives the hint.
_TILE_MISTAKES = [
    Mistake(_negative_start,
            "An image side no longer than a tile gets one tile, starting at 0 (the tile is "
            "cut to the image): a start below 0 is outside the image."),
    Mistake(_edge_listed_twice,
            "When the regular tiles already end at the edge (an exact fit), the edge tile is "
            "that same tile: list each start once."),
    Mistake(_not_flush,
            "The last tile must end at the image's edge: when the regular steps stop short, "
            "add one more tile starting at length - tile, or the border is never seen."),
    Mistake(_past_the_edge,
            "No tile may start after length - tile, or it would stick out of the image: "
            "move the last one back so that it ends at the edge."),
    Mistake(_overlap_as_stride,
            "Consecutive tiles start tile * (1 - overlap) pixels apart: the overlap is the "
            "part two tiles share, not the step between them."),
    Mistake(_truncated_stride,
            "Round the step tile * (1 - overlap) to the nearest pixel (round, not int)."),
]  # fmt: skip

# (description, length, tile, overlap)
_CASES = [
    ("the held-out image's width: 1249 px, tiles of 256, overlap 0.25", 1249, 256, 0.25),
    ("overlap 0, an exact fit: 1000 px in tiles of 250", 1000, 250, 0.0),
    ("overlap 0, not an exact fit: 1000 px in tiles of 300", 1000, 300, 0.0),
    ("an exact fit with overlap: 448 px, tiles of 256, overlap 0.25", 448, 256, 0.25),
    ("a side exactly one tile long", 256, 256, 0.25),
    ("a side shorter than one tile: 200 px, tiles of 256", 200, 256, 0.25),
    ("a large overlap: 1000 px, tiles of 400, overlap 0.75", 1000, 400, 0.75),
    ("a step that is not a whole number: 300 px, tiles of 100, overlap 1/3", 300, 100, 1 / 3),
    ("a tall image: 2472 px, tiles of 400, overlap 0.1", 2472, 400, 0.1),
]


def tile_starts_check(fn: Callable[[int, int, float], Sequence[int] | Tensor]) -> CheckResult:
    """Check ``fn(length, tile, overlap) -> starts``: the first pixel of each tile along a
    side of ``length`` pixels, increasing, consecutive tiles ``round(tile * (1 - overlap))``
    apart, the last one flush with the far edge, ``[0]`` when the side fits in one tile."""
    cases = [Case(description, (length, tile, overlap), tile_starts(length, tile, overlap))
             for description, length, tile, overlap in _CASES]
    return run_check("Tile starts", lambda *a: torch.as_tensor(fn(*a)).reshape(-1), cases,
                     _TILE_MISTAKES, atol=0)
