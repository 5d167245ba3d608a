"""How every self-check works: cases, typical mistakes, and :func:`run_check`.
Every lesson's exercise.

A check runs the learner's function on a list of cases, edge cases included, and answers
with a :class:`CheckResult`: a pass, "not done yet" while the function still raises
``NotImplementedError``, or the first failing case with a hint. Hints come from typical
mistakes: when the learner's output on the failing case equals what a known wrong version
computes, the check names that mistake. It never prints the expected numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Case", "Mistake", "CheckResult", "run_check"]


@dataclass(frozen=True)
class Case:
    """One input for the learner's function, and the reference answer."""

    description: str
    args: tuple
    expected: Tensor


@dataclass(frozen=True)
class Mistake:
    """A typical wrong version of the function, and the hint to give when it is matched."""

    wrong: Callable
    hint: str


@dataclass(frozen=True)
class CheckResult:
    """What a check found. ``bool(result)`` is True when every case passed."""

    exercise: str
    passed: bool
    done: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def _as_tensor(value) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _agrees(got: Tensor, expected: Tensor, atol: float) -> bool:
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=atol))


def run_check(exercise: str, fn: Callable, cases: Sequence[Case],
              mistakes: Sequence[Mistake] = (), atol: float = 1e-5) -> CheckResult:
    """Run ``fn`` on every case; stop at the first that fails and explain it."""
    for case in cases:
        try:
            got = _as_tensor(fn(*case.args))
        except NotImplementedError:
            return CheckResult(exercise, False, False, f"{exercise}: not done yet.")
        except Exception as exc:  # the learner's code may raise anything; report it
            return CheckResult(
                exercise, False, True,
                f"{exercise}: ✗ on {case.description}, your function raised "
                f"{type(exc).__name__}: {exc}",
            )  # fmt: skip
        expected = case.expected.to(torch.float64)
        if _agrees(got, expected, atol):
            continue
        if got.shape != expected.shape:
            problem = f"the result has shape {list(got.shape)}, expected {list(expected.shape)}"
        else:
            problem = "the values are wrong"
        hint = next(
            (m.hint for m in mistakes if _agrees(got, _as_tensor(m.wrong(*case.args)), atol)),
            "Work this case out on paper and compare it with what your function returns.",
        )
        message = f"{exercise}: ✗ on {case.description}: {problem}.\nHint: {hint}"
        return CheckResult(exercise, False, True, message)
    return CheckResult(exercise, True, True, f"{exercise}: ✓ all {len(cases)} cases pass.")
