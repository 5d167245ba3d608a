"""Kept CPU buffers for the IoU planes of matching (lesson 03's hot path in training).

Matching a batch fills three ``[B, G, P]`` float planes (for SSD300 and 32 images of up to
10 objects, about 11 MB each). On the CPU, fresh planes of that size are slow for a reason
unrelated to the arithmetic: glibc hands a freed block of many megabytes back to the
operating system once the free space at the top of its heap passes a threshold it adjusts
as the program runs, and the next call page-faults every page in again (zero-filled by the
kernel). Keeping the planes between calls, per thread, avoids that; with
``benchmarks/targets.py --batch 32`` on 2 shared CPU cores, match_batch + encode took 35-67
ms with kept planes against 52-76 ms with fresh ones. Other devices' caching allocators
already reuse memory, so there the planes are plain new tensors.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["planes"]

_MAX_SCRATCH = 1 << 25  # elements per plane (128 MB in float32); larger calls allocate


class _Scratch(threading.local):
    buffers: dict[torch.dtype, Tensor]

    def __init__(self) -> None:
        self.buffers = {}


_scratch = _Scratch()


def planes(count: int, shape: Sequence[int], dtype: torch.dtype,
           device: torch.device) -> list[Tensor]:
    """``count`` uninitialised tensors of ``shape``: views of one kept buffer on the CPU
    (valid until the next call in the same thread), fresh tensors on other devices."""
    numel = math.prod(shape)
    if device.type != "cpu" or numel > _MAX_SCRATCH:
        return [torch.empty(shape, dtype=dtype, device=device) for _ in range(count)]
    buffer = _scratch.buffers.get(dtype)
    if buffer is None or buffer.numel() < count * numel:
        buffer = _scratch.buffers[dtype] = torch.empty(count * numel, dtype=dtype)
    return [buffer[i * numel : (i + 1) * numel].view(shape) for i in range(count)]
