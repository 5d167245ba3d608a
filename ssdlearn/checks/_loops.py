"""Catching a Python loop where an exercise asks for tensor code (lessons 01, 02 and 03).

Tensor code runs the same Python lines whatever the size of its tensors; a ``for`` or
``while`` loop, or a comprehension, over boxes or cells runs its body once per item. So a
check calls the learner's function on a small and a larger input and counts the Python
lines executed (``sys.settrace``): if the count grows with the input, there is a loop over
it. Deterministic, unlike a timing, and blind to loops that stay inside C (``torch``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ._run import CheckResult

__all__ = ["lines_run", "loop_check"]


def lines_run(fn: Callable, *args) -> int:
    """Number of Python line events while ``fn(*args)`` runs, its callees included."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        return local

    previous = sys.gettrace()  # a debugger or coverage tool may be tracing; put it back
    sys.settrace(calls)
    try:
        fn(*args)
    finally:
        sys.settrace(previous)
    return count


def loop_check(exercise: str, fn: Callable, small: tuple, large: tuple, what: str,
               hint: str, passed: CheckResult) -> CheckResult:
    """``passed`` if ``fn`` runs as many lines on ``large`` as on ``small``, else a failure
    that says a loop over ``what`` was found. Call it only after every case has passed."""
    try:
        few, many = lines_run(fn, *small), lines_run(fn, *large)
    except Exception as exc:  # the cases passed, so this is unexpected; report it
        return CheckResult(exercise, False, True,
                           f"{exercise}: ✗ your function raised {type(exc).__name__}: {exc} "
                           "on the larger input of the loop test")  # fmt: skip
    if many > few:
        return CheckResult(
            exercise, False, True,
            f"{exercise}: ✗ the values are right, but your function runs more Python lines "
            f"when there are more {what} ({few} against {many}): a Python loop "
            f"(for, while or a comprehension) over the {what}.\nHint: {hint}",
        )
    return passed
