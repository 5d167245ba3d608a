"""Self-check of lesson 07: the learning-rate schedule (the reference is the trainer's own,
:func:`ssdlearn.train.warmup_step_lr`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..train import warmup_step_lr
from ._run import Case, CheckResult, Mistake, run_check

__all__ = ["lr_schedule_check"]


def _lr_warmup_from_zero(step: int, lr: float, warmup_steps: int, milestones: Sequence[int],
                         gamma: float) -> float:
    if step < warmup_steps:
        return lr * step / warmup_steps
    return warmup_step_lr(step, lr, warmup_steps, milestones, gamma)


def _lr_decay_after_milestone(step: int, lr: float, warmup_steps: int,
                              milestones: Sequence[int], gamma: float) -> float:
    return warmup_step_lr(step, lr, warmup_steps, [m + 1 for m in milestones], gamma)


_SCHEDULE_MISTAKES = [
    Mistake(_lr_warmup_from_zero,
            "Warmup starts at lr / warmup_steps on step 0, not at 0: a step with learning "
            "rate 0 is wasted."),
    Mistake(_lr_decay_after_milestone,
            "The decay takes effect at the milestone step itself (step >= milestone)."),
]  # fmt: skip


def lr_schedule_check(fn: Callable[[int, float, int, Sequence[int], float], float]
                      ) -> CheckResult:
    """Check ``fn(step, lr, warmup_steps, milestones, gamma) -> float``: linear warmup to
    ``lr``, then multiplied by ``gamma`` at each milestone."""
    # Schedules with a warmup first: a learner's first wrong value is then where the
    # mistake shows, not at a milestone that two different mistakes get wrong alike.
    settings = [("the released VOC07+12 schedule with warmup", 1e-3, 500, (80_000, 100_000), 0.1),
                ("a short run with two decays", 0.02, 10, (30, 45), 0.5),
                ("the paper's VOC2007 schedule", 1e-3, 0, (40_000, 50_000), 0.1),
                ("no warmup", 0.1, 0, (5,), 0.1)]
    cases = []
    for description, lr, warmup, milestones, gamma in settings:
        steps = sorted({0, 1, max(warmup - 1, 0), warmup, *milestones,
                        *(m - 1 for m in milestones), milestones[-1] + 7})
        for step in steps:
            args = (step, lr, warmup, milestones, gamma)
            cases.append(Case(f"{description}, step {step}", args,
                              torch.tensor(warmup_step_lr(*args), dtype=torch.float64)))
    return run_check("Learning rate", lambda *a: torch.tensor(float(fn(*a))), cases,
                     [Mistake(lambda *a, m=m: torch.tensor(float(m.wrong(*a))), m.hint)
                      for m in _SCHEDULE_MISTAKES], atol=1e-12)
