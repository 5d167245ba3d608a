"""Self-check of lesson 04: the parameters of SSD's predictor heads, for any layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..anchors import SSD300_COCO, SSD512_VOC, PriorConfig
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["head_parameters_check"]


def _heads(config: PriorConfig, channels: Sequence[int], num_classes: int, *,
           kernel: int = 3, bias: bool = True, values: Callable[[int], int] | None = None,
           boxes: Callable[[Sequence[float]], int] | None = None) -> int:
    """Parameters of one loc + one conf convolution per map; keywords build the mistakes."""
    values_per_box = values(num_classes) if values else 4 + num_classes
    total = 0
    for c_in, ratios in zip(channels, config.aspect_ratios):
        # two square boxes (s_k and sqrt(s_k * s_k+1)), then each ratio and its reciprocal
        k = boxes(ratios) if boxes else 2 + 2 * len(ratios)
        outputs = k * values_per_box
        total += kernel * kernel * c_in * outputs + (outputs if bias else 0)
    return total


def _reference(config, channels, num_classes):
    return _heads(config, channels, num_classes)


_HEAD_MISTAKES = [
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, bias=False),
            "Each output channel of a convolution has a bias too: (3*3*C_in + 1) per channel."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, kernel=1),
            "The predictors are 3x3 convolutions: each output channel reads 3*3*C_in inputs."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, boxes=lambda r: 1 + 2 * len(r)),
            "k counts two square boxes (s_k and the extra sqrt(s_k * s_k+1)), then each ratio "
            "and its reciprocal: k = 2 + 2 * len(ratios)."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, boxes=lambda r: 2 + len(r)),
            "Each ratio in config.aspect_ratios brings its reciprocal too (2 and 1/2): "
            "k = 2 + 2 * len(ratios)."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, boxes=lambda r: 1 + len(r)),
            "config.aspect_ratios lists only the ratios > 1: add their reciprocals and the two "
            "square boxes, k = 2 + 2 * len(ratios)."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, values=lambda n: n),
            "There are two heads per map: k * 4 box offsets and k * C class scores."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, values=lambda n: 4),
            "There are two heads per map: k * 4 box offsets and k * C class scores."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, values=lambda n: n + 3),
            "num_classes already counts the background: the conf head has k * num_classes "
            "channels, the loc head k * 4."),
    Mistake(lambda cfg, ch, c: _heads(cfg, ch, c, values=lambda n: 4 * n),
            "A box gets 4 offsets *and* C scores, (4 + C) values, not 4 * C."),
]  # fmt: skip


def head_parameters_check(fn: Callable[[PriorConfig, Sequence[int], int], int]) -> CheckResult:
    """Check ``fn(config, channels, num_classes) -> int``: the weights and biases of every
    map's 3x3 loc and conf predictors (the heads only, not the backbone)."""
    one_map = PriorConfig(image_size=64, feature_maps=[4], min_sizes=[16], max_sizes=[32],
                          aspect_ratios=[(2,)], name="one map")
    squares = PriorConfig(image_size=96, feature_maps=[12, 6], min_sizes=[10, 30],
                          max_sizes=[30, 60], aspect_ratios=[(), (2, 3, 4)], name="squares")
    specs = [
        ("SSD512 on VOC (7 maps, 21 classes)", SSD512_VOC, [512, 1024, 512, 256, 256, 256, 256],
         21),
        ("SSD300 on COCO (81 classes)", SSD300_COCO, [512, 1024, 512, 256, 256, 256], 81),
        ("one map, ratios (2,), 2 classes", one_map, [8], 2),
        ("a map with square boxes only, then ratios (2, 3, 4)", squares, [64, 128], 6),
    ]  # fmt: skip
    cases = [Case(description, (config, channels, classes),
                  torch.tensor(float(_reference(config, channels, classes))))
             for description, config, channels, classes in specs]
    return run_check("Head parameters", fn, cases, _HEAD_MISTAKES, atol=0.5)
