"""Self-check of lesson 11: what an ablation changes, read seed by seed (the reference is
:func:`ssdlearn.ablation.paired_effect`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

from ..ablation import paired_effect
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["paired_effect_check"]


def _as_pair(result) -> torch.Tensor:
    effect, clear = result
    return torch.tensor([float(effect), float(bool(clear))], dtype=torch.float64)


def _full_minus_variant(full, variant):
    effect, clear = paired_effect(full, variant)
    return -effect, clear


def _ranges_apart(full, variant):
    """Unpaired: clear only when the two ranges of scores do not overlap."""
    effect = statistics.fmean(variant) - statistics.fmean(full)
    return effect, max(variant) < min(full) or min(variant) > max(full)


def _one_seed_is_enough(full, variant):
    differences = [v - f for f, v in zip(full, variant)]
    return statistics.fmean(differences), (all(d > 0 for d in differences)
                                           or all(d < 0 for d in differences))


def _zero_counts(full, variant):
    differences = [v - f for f, v in zip(full, variant)]
    clear = len(differences) >= 2 and (all(d >= 0 for d in differences)
                                       or all(d <= 0 for d in differences))
    return statistics.fmean(differences), clear


def _mean_is_enough(full, variant):
    effect = statistics.fmean(variant) - statistics.fmean(full)
    return effect, len(full) >= 2 and effect != 0


# Order matters where two wrong versions agree on a case: the first match gives the hint.
_MISTAKES = [
    Mistake(_full_minus_variant,
            "The effect is what the variant changes: variant - full, negative when taking "
            "the idea out costs accuracy."),
    Mistake(_one_seed_is_enough,
            "One seed cannot tell an effect from the luck of one run: with a single pair, "
            "the effect is never clear."),
    Mistake(_zero_counts,
            "A seed where the variant scores exactly what the full model scores shows no "
            "effect in either direction: a zero difference makes the effect unclear."),
    Mistake(_ranges_apart,
            "Compare each seed with its own full run (same initial weights, same batches): "
            "the seeds' scores can spread widely while every difference has the same sign."),
    Mistake(_mean_is_enough,
            "A mean difference alone says nothing about noise: the effect is clear only "
            "when every seed's difference has the same sign."),
]  # fmt: skip

# (description, full's scores per seed, the variant's, same seeds in the same order)
_CASES = [
    ("two seeds, both worse without the idea", [0.70, 0.72], [0.60, 0.65]),
    ("two seeds that disagree in sign", [0.70, 0.72], [0.71, 0.69]),
    ("seeds that spread more than the effect, every one better",
     [0.50, 0.60, 0.70], [0.55, 0.65, 0.75]),
    ("one seed only", [0.70], [0.60]),
    ("a seed with no difference at all", [0.70, 0.72], [0.70, 0.80]),
    ("three seeds, every one better", [0.5, 0.6, 0.7], [0.8, 0.9, 0.71]),
    ("identical scores", [0.4, 0.4], [0.4, 0.4]),
    ("four seeds, one of them against the others", [0.3, 0.3, 0.3, 0.3],
     [0.2, 0.25, 0.31, 0.1]),
]


def paired_effect_check(fn: Callable[[Sequence[float], Sequence[float]], tuple]) -> CheckResult:
    """Check ``fn(full, variant) -> (effect, clear)``: ``effect`` the mean over seeds of
    ``variant[s] - full[s]``, ``clear`` True when there are at least two seeds and every
    difference has the same sign (none zero)."""
    cases = [Case(description, (full, variant), _as_pair(paired_effect(full, variant)))
             for description, full, variant in _CASES]
    return run_check("Paired effect", lambda *a: _as_pair(fn(*a)), cases, _MISTAKES,
                     atol=1e-6)
