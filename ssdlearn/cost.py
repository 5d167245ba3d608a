"""The size and cost of a network: parameters and FLOPs per forward pass. Lesson 04.

``count_parameters`` and ``count_flops`` are also importable from :mod:`ssdlearn.model`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_parameters", "count_flops"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, batch_size: int = 1) -> int:
    """Floating-point operations of one forward pass of an SSD at its input size.

    Counted by ``torch.utils.flop_counter`` (matrix multiplies and convolutions; a
    multiply-add is 2 FLOPs). Papers often quote multiply-adds (MACs): FLOPs / 2.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    images = torch.zeros(batch_size, 3, *model.image_size, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()  # batch norm in training mode refuses a batch of one on a 1x1 map
    try:
        with counter, torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
    return counter.get_total_flops()
