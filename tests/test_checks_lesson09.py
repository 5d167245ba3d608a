"""The self-check of lesson 09's exercise: tile starts along one side of an image."""

import math

import pytest
import torch

from ssdlearn import checks
from ssdlearn.checks import lesson09
from ssdlearn.tiling import tile_starts


def loop_solution(length, tile, overlap):
    """A learner's version, written with a loop: as valid as a batched one."""
    if length <= tile:
        return [0]
    stride = max(1, round(tile * (1 - overlap)))
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def arange_solution(length, tile, overlap):
    stride = max(1, round(tile * (1 - overlap)))
    count = max(math.ceil((length - tile) / stride), 0) + 1
    return (torch.arange(count) * stride).clamp(max=max(length - tile, 0))


@pytest.mark.parametrize("solution", [tile_starts, loop_solution, arange_solution])
def test_correct_solutions_pass(solution):
    result = checks.tile_starts_check(solution)
    assert result.passed and result.done
    assert "✓ all 9 cases pass" in repr(result)


def test_unfinished_exercise_is_not_done_yet():
    def my_tile_starts(length, tile, overlap):
        raise NotImplementedError("your code here")

    result = checks.tile_starts_check(my_tile_starts)
    assert not result.passed and not result.done
    assert repr(result) == "Tile starts: not done yet."


def test_crashing_solution_names_the_case():
    def my_tile_starts(length, tile, overlap):
        return list(range(0, length - tile, 0))  # step 0: ValueError

    result = checks.tile_starts_check(my_tile_starts)
    assert not result.passed and result.done
    assert "1249 px" in repr(result) and "ValueError" in repr(result)


@pytest.mark.parametrize("mistake", lesson09._TILE_MISTAKES)
def test_each_typical_mistake_fails_with_its_hint(mistake):
    result = checks.tile_starts_check(mistake.wrong)
    assert not result.passed and result.done
    assert mistake.hint in repr(result)


@pytest.mark.parametrize(("wrong", "words"), [
    (lambda n, t, o: [0] if n <= t else list(range(0, n - t + 1, round(t * (1 - o)))),
     "must end at the image's edge"),
    (lambda n, t, o: list(range(0, n, round(t * (1 - o)))), "No tile may start after"),
    (lambda n, t, o: [0, max(n - t, 0)], "Work this case out on paper"),
])
def test_hand_written_mistakes_get_a_useful_hint(wrong, words):
    result = checks.tile_starts_check(wrong)
    assert not result.passed and words in repr(result)


def test_the_check_never_prints_expected_starts():
    def off_by_one(length, tile, overlap):
        return tile_starts(length, tile, overlap) + 1

    message = repr(checks.tile_starts_check(off_by_one))
    expected = tile_starts(1249, 256, 0.25).tolist()
    assert "✗" in message
    assert str(expected) not in message and str(expected[-1]) not in message


def test_every_mistake_is_wrong_somewhere_and_each_case_is_reachable():
    """Each wrong version differs from the reference on at least one case (so it can fail)."""
    for mistake in lesson09._TILE_MISTAKES:
        differs = [not torch.equal(torch.as_tensor(mistake.wrong(n, t, o)).reshape(-1),
                                   tile_starts(n, t, o))
                   for _, n, t, o in lesson09._CASES]
        assert any(differs), mistake.hint
