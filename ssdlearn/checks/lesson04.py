"""Self-check of lesson 04: from a predictor's output map to one row per default box."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["flatten_predictions"]


def _flatten_reference(head_output: Tensor, values_per_box: int) -> Tensor:
    batch = head_output.shape[0]
    return head_output.permute(0, 2, 3, 1).reshape(batch, -1, values_per_box)


def _flatten_without_permute(head_output: Tensor, values_per_box: int) -> Tensor:
    return head_output.reshape(head_output.shape[0], -1, values_per_box)


def _flatten_columns_first(head_output: Tensor, values_per_box: int) -> Tensor:
    return head_output.permute(0, 3, 2, 1).reshape(head_output.shape[0], -1, values_per_box)


def _flatten_values_outer(head_output: Tensor, values_per_box: int) -> Tensor:
    b, channels, h, w = head_output.shape
    k = channels // values_per_box
    grouped = head_output.reshape(b, values_per_box, k, h, w)  # channel = value * k + box
    return grouped.permute(0, 3, 4, 2, 1).reshape(b, -1, values_per_box)


_FLATTEN_MISTAKES = [
    Mistake(_flatten_without_permute,
            "A reshape alone mixes channels of different cells. Move the channels last "
            "first (permute), so each cell's k * values numbers are contiguous."),
    Mistake(_flatten_columns_first,
            "Cells must go row by row (y, then x), like the default boxes: "
            "[B, C, H, W] -> [B, H, W, C]."),
    Mistake(_flatten_values_outer,
            "Channels are grouped box by box: channels 0..3 are box 0's values, 4..7 box 1's."),
]  # fmt: skip


def flatten_predictions(fn: Callable[[Tensor, int], Tensor]) -> CheckResult:
    """Check ``fn(head_output[B, k*v, H, W], v) -> Tensor[B, H*W*k, v]`` in default-box order."""
    generator = torch.Generator().manual_seed(0)
    shapes = [("a 2x3 map with 2 boxes per cell, 4 offsets each", (1, 8, 2, 3), 4),
              ("a batch of 2 on a 3x3 map, 6 boxes, 21 class scores", (2, 126, 3, 3), 21),
              ("a 1x1 map with 4 boxes", (3, 16, 1, 1), 4),
              ("a 5x4 map with 3 boxes", (2, 12, 5, 4), 4)]
    cases = []
    for description, shape, values in shapes:
        head_output = torch.randn(shape, generator=generator, dtype=torch.float64)
        cases.append(Case(description, (head_output, values),
                          _flatten_reference(head_output, values)))
    return run_check("Flatten predictions", fn, cases, _FLATTEN_MISTAKES)
