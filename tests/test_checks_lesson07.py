"""Lesson 07's exercise: the learning-rate schedule, checked against the trainer's own."""

import pytest

from ssdlearn.checks.lesson07 import _SCHEDULE_MISTAKES, lr_schedule_check
from ssdlearn.train import warmup_step_lr


def written_from_the_definition(step, lr, warmup_steps, milestones, gamma):
    """Linear warmup from lr / warmup_steps, then one factor gamma per milestone reached."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    rate = lr
    for milestone in milestones:
        if step >= milestone:
            rate *= gamma
    return rate


def test_the_trainer_and_the_definition_pass():
    assert lr_schedule_check(warmup_step_lr).passed
    assert lr_schedule_check(written_from_the_definition).passed


@pytest.mark.parametrize("mistake", _SCHEDULE_MISTAKES, ids=lambda m: m.hint[:30])
def test_each_mistake_is_caught_with_its_hint(mistake):
    result = lr_schedule_check(mistake.wrong)
    assert not result.passed and result.done and mistake.hint in repr(result)


def test_a_constant_rate_fails_without_printing_the_answer():
    result = lr_schedule_check(lambda step, lr, *_: lr)
    assert not result.passed and "0.0001" not in repr(result) and "1e-0" not in repr(result)


def test_a_stub_is_not_done():
    def stub(*args):
        raise NotImplementedError("your code here")

    result = lr_schedule_check(stub)
    assert not result.passed and not result.done
