"""Chapter 8, schedules.py: the learning-rate schedules (eq. 25) against closed forms and their laws."""

import functools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad.ch08_optimization import (
    constant_schedule,
    cosine_schedule,
    exponential_schedule,
    make_schedule,
    step_schedule,
    with_warmup,
)


def test_cosine_closed_form_values():
    kw = dict(total_steps=110, lr_max=0.2, lr_min=0.02, warmup_steps=10)
    assert cosine_schedule(0, **kw) == 0.0
    assert cosine_schedule(5, **kw) == pytest.approx(0.1)  # halfway through warmup
    assert cosine_schedule(10, **kw) == pytest.approx(0.2)  # warmup end: η_max
    assert cosine_schedule(60, **kw) == pytest.approx(0.11)  # midpoint: (η_max + η_min)/2
    assert cosine_schedule(35, **kw) == pytest.approx(0.02 + 0.09 * (1 + math.cos(math.pi / 4)))
    assert cosine_schedule(110, **kw) == pytest.approx(0.02)  # the end
    assert cosine_schedule(500, **kw) == 0.02  # clamped after it


def test_cosine_without_warmup_starts_at_lr_max():
    assert cosine_schedule(0, 100, 0.1) == pytest.approx(0.1)
    assert cosine_schedule(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_schedule(100, 100, 0.1) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=100, deadline=None)
@given(
    total=st.integers(2, 500),
    warmup_frac=st.floats(0, 0.9),
    lr_max=st.floats(1e-4, 10),
    min_frac=st.floats(0, 1),
    data=st.data(),
)
def test_cosine_decreases_after_warmup_and_stays_in_range(total, warmup_frac, lr_max, min_frac, data):
    warmup = int(warmup_frac * (total - 1))
    lr_min = min_frac * lr_max
    t1 = data.draw(st.integers(warmup, total + 10))
    t2 = data.draw(st.integers(t1, total + 20))
    a = cosine_schedule(t1, total, lr_max, lr_min, warmup)
    b = cosine_schedule(t2, total, lr_max, lr_min, warmup)
    assert b <= a + 1e-12 * lr_max
    assert lr_min - 1e-12 <= b <= lr_max + 1e-12
    if warmup:
        t0 = data.draw(st.integers(0, warmup - 1))
        assert (
            cosine_schedule(t0, total, lr_max, lr_min, warmup)
            <= cosine_schedule(t0 + 1, total, lr_max, lr_min, warmup) + 1e-12
        )


def test_callable_forms():
    const = constant_schedule(0.05)
    assert const(0) == const(1000) == 0.05
    cos = make_schedule(cosine_schedule, total_steps=10, lr_max=1.0)
    assert cos(5) == pytest.approx(0.5)
    assert make_schedule(step_schedule, lr=1.0, step_size=2)(4) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="lr_max must be positive, got -1.0"):
        make_schedule(cosine_schedule, total_steps=10, lr_max=-1.0)  # validated when made


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cosine_schedule(-1, 10, 0.1), "t must be non-negative, got -1"),
        (lambda: cosine_schedule(0, 0, 0.1), "total_steps must be a positive integer, got 0"),
        (lambda: cosine_schedule(0, 10.0, 0.1), "total_steps must be a positive integer, got 10.0"),
        (
            lambda: cosine_schedule(0, 10, 0.1, warmup_steps=-1),
            "warmup_steps must be a non-negative integer, got -1",
        ),
        (lambda: cosine_schedule(0, 10, 0.1, warmup_steps=10), "warmup_steps must be smaller"),
        (lambda: cosine_schedule(0, 10, 0.1, lr_min=0.2), r"lr_min must be in \[0, lr_max"),
        (lambda: cosine_schedule(0, 10, 0.0), "lr_max must be positive, got 0.0"),
        (lambda: cosine_schedule(0, 10, 0.1, lr_min="0"), "lr_min must be a finite number, got '0'"),
        (lambda: constant_schedule(0), "lr must be positive, got 0"),
        (lambda: constant_schedule(True), "lr must be a positive finite number, got True"),
        (lambda: step_schedule(0, 0.1, 0), "step_size must be a positive integer, got 0"),
        (lambda: step_schedule(0, 0.1, 2, gamma=-1), "gamma must be positive, got -1"),
        (
            lambda: exponential_schedule(0, 0.1, float("nan")),
            "gamma must be a positive finite number, got nan",
        ),
        (
            lambda: exponential_schedule(float("inf"), 0.1, 0.9),
            "t must be a non-negative finite number, got inf",
        ),
    ],
)
def test_schedule_arguments_are_validated(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_with_warmup_climbs_linearly_then_hands_over_with_the_count_restarted():
    after = lambda t: 1000.0 + t  # noqa: E731  (any schedule; this one shows which t it was given)
    warm = with_warmup(after, warmup_steps=4, lr=0.2)
    assert [warm(t) for t in range(4)] == [0.0, 0.2 * 1 / 4, 0.2 * 2 / 4, 0.2 * 3 / 4]
    assert [warm(t) for t in (4, 5, 9)] == [1000.0, 1001.0, 1005.0]  # schedule(t − T_w)
    assert with_warmup(after, 0, 0.2) is after
    with pytest.raises(ValueError, match="warmup_steps must be a non-negative integer"):
        with_warmup(after, -1, 0.2)
    with pytest.raises(ValueError, match="lr must be positive"):
        with_warmup(after, 3, 0.0)


@pytest.mark.parametrize("total, warmup, lr_min", [(10, 3, 0.0), (37, 5, 0.01), (8, 7, 0.0), (5, 0, 0.0)])
def test_cosine_with_its_own_warmup_is_with_warmup_of_cosine(total, warmup, lr_min):
    """Bit for bit: the wrapper reproduces the warmup cosine_schedule has built in, at every step."""
    cos = functools.partial(cosine_schedule, total_steps=total - warmup, lr_max=0.3, lr_min=lr_min)
    warm = with_warmup(cos, warmup, 0.3)
    for t in range(total + 3):
        assert warm(t) == cosine_schedule(t, total, 0.3, lr_min, warmup), t
