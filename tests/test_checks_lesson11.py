"""The self-check of lesson 11's exercise: an ablation's effect, read seed by seed."""

import statistics

import pytest

from ssdlearn import checks
from ssdlearn.ablation import paired_effect
from ssdlearn.checks import lesson11


def loop_solution(full, variant):
    """A learner's version with a loop and counters: as valid as any."""
    total, up, down = 0.0, 0, 0
    for f, v in zip(full, variant):
        total += v - f
        up += v > f
        down += v < f
    n = len(full)
    return total / n, n >= 2 and (up == n or down == n)


def sign_solution(full, variant):
    signs = {(v > f) - (v < f) for f, v in zip(full, variant)}
    return statistics.fmean(v - f for f, v in zip(full, variant)), (
        len(full) > 1 and signs in ({1}, {-1}))


@pytest.mark.parametrize("solution", [paired_effect, loop_solution, sign_solution])
def test_correct_solutions_pass(solution):
    result = checks.paired_effect_check(solution)
    assert result.passed and result.done
    assert "✓ all 8 cases pass" in repr(result)


def test_unfinished_exercise_is_not_done_yet():
    def my_paired_effect(full, variant):
        raise NotImplementedError("your code here")

    result = checks.paired_effect_check(my_paired_effect)
    assert not result.passed and not result.done
    assert repr(result) == "Paired effect: not done yet."


def test_crashing_solution_names_the_case():
    def my_paired_effect(full, variant):
        effect = statistics.fmean(v - f for f, v in zip(full, variant))
        second = variant[1] - full[1]  # IndexError with one seed
        return effect, all((v - f) * second > 0 for f, v in zip(full, variant))

    result = checks.paired_effect_check(my_paired_effect)
    assert not result.passed and result.done
    assert "one seed only" in repr(result) and "IndexError" in repr(result)


@pytest.mark.parametrize("mistake", lesson11._MISTAKES)
def test_each_typical_mistake_fails_with_its_hint(mistake):
    result = checks.paired_effect_check(mistake.wrong)
    assert not result.passed and result.done
    assert mistake.hint in repr(result)


def test_a_clear_flag_that_is_always_true_or_false_fails():
    for flag in (True, False):
        result = checks.paired_effect_check(
            lambda f, v, flag=flag: (statistics.fmean(v) - statistics.fmean(f), flag))
        assert not result.passed and "✗" in repr(result)


def test_the_check_never_prints_expected_effects():
    def off(full, variant):
        effect, clear = paired_effect(full, variant)
        return effect + 0.01, clear

    message = repr(checks.paired_effect_check(off))
    assert "✗" in message and "-0.085" not in message and "0.085" not in message
