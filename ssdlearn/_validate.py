"""Argument checks shared by the library's modules (lessons 03, 05 and 08 call them).

Each raises a ``TypeError`` or ``ValueError`` that names the argument and says what was
expected. Checks here look at types and shapes only, never at values on the device (that
would need a device sync); value checks stay with the module that needs them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_labels", "check_fraction"]


def check_labels(labels: Tensor, name: str, shape: Sequence[int], meaning: str) -> None:
    """``labels`` must be an int64 tensor of exactly ``shape``; ``meaning`` says what the
    shape is, e.g. ``"[B, P]"`` or ``"one label per ground-truth box"``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype != torch.long:
        raise TypeError(f"{name} must be an int64 (long) tensor, got dtype {labels.dtype}")
    if list(labels.shape) != list(shape):
        raise ValueError(
            f"{name} must have shape {list(shape)} ({meaning}), got {list(labels.shape)}"
        )


def check_fraction(value: float, name: str, *, low_open: bool = False) -> float:
    """A number in [0, 1], or in (0, 1] with ``low_open``; booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not ((0.0 < value) if low_open else (0.0 <= value)) or not value <= 1.0:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return float(value)
