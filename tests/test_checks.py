"""The shared argument validators of handgrad._checks: what each accepts, what it returns, what it says."""

import math
import re

import numpy as np
import pytest

from handgrad._checks import (
    check_bool,
    check_choice,
    check_int,
    check_int_pair,
    check_number,
    check_sizes,
    describe_interval,
)


def exactly(message):
    return "^" + re.escape(message) + "$"


class Problem(ValueError):
    """A caller's own error class (the application's ConfigError, for instance)."""


# --------------------------------------------------------------------------------------------------
# describe_interval
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, kwargs, text",
    [
        (("integer",), {}, "an integer"),
        (("number",), {}, "a finite number"),
        (("integer",), dict(low=1), "a positive integer"),
        (("integer",), dict(low=0, low_open=True), "a positive integer"),
        (("integer",), dict(low=0), "a non-negative integer"),
        (("integer",), dict(low=2), "an integer >= 2"),
        (("integer",), dict(high=9), "an integer <= 9"),
        (("integer",), dict(low=0, high=2**32 - 1), "an integer in [0, 4294967295]"),
        (("number",), dict(low=0), "non-negative"),
        (("number",), dict(low=0, low_open=True), "positive"),
        (("number",), dict(low=0.5), "a number >= 0.5"),
        (("number",), dict(low=0.5, low_open=True), "a number > 0.5"),
        (("number",), dict(high=1, high_open=True), "a number < 1"),
        (("number",), dict(low=0, high=1), "in [0, 1]"),
        (("number",), dict(low=0, high=1, low_open=True, high_open=True), "in (0, 1)"),
        (("number",), dict(low=1e-8, high=180), "in [1e-08, 180]"),
    ],
)
def test_describe_interval(args, kwargs, text):
    assert describe_interval(*args, **kwargs) == text


# --------------------------------------------------------------------------------------------------
# check_int
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), np.int32(3)])
def test_check_int_accepts_python_and_numpy_integers_as_int(value):
    out = check_int(value, "n", low=1)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.True_, 3.0, np.float64(3), "3", None, [3]])
def test_check_int_refuses_booleans_floats_and_others(value):
    with pytest.raises(ValueError, match=exactly(f"n must be an integer, got {value!r}")):
        check_int(value, "n")


def test_check_int_bounds_are_closed():
    assert check_int(1, "batch_size", low=1) == 1
    assert check_int(10, "k", low=1, high=10) == 10
    with pytest.raises(ValueError, match=exactly("batch_size must be a positive integer, got 0")):
        check_int(0, "batch_size", low=1)
    with pytest.raises(ValueError, match=exactly("k must be an integer in [1, 10], got 11")):
        check_int(11, "k", low=1, high=10)
    with pytest.raises(ValueError, match=exactly("n must be a non-negative integer, got -1")):
        check_int(-1, "n", low=0)
    message = "seed must be an integer in [0, 4294967295], got 4294967296"
    with pytest.raises(ValueError, match=exactly(message)):
        check_int(2**32, "seed", low=0, high=2**32 - 1)


def test_check_int_optional_accepts_none_and_says_so():
    assert check_int(None, "batch_size", low=1, optional=True) is None
    assert check_int(np.int64(5), "batch_size", low=1, optional=True) == 5
    with pytest.raises(ValueError, match=exactly("batch_size must be a positive integer or None, got 0")):
        check_int(0, "batch_size", low=1, optional=True)
    with pytest.raises(ValueError, match=exactly("batch_size must be a positive integer, got None")):
        check_int(None, "batch_size", low=1)


def test_check_int_raises_the_callers_error():
    with pytest.raises(Problem, match=exactly("epochs must be a positive integer, got 0")):
        check_int(0, "epochs", low=1, error=Problem)
    with pytest.raises(TypeError, match=exactly("n must be an integer, got 'x'")):
        check_int("x", "n", error=TypeError)


# --------------------------------------------------------------------------------------------------
# check_int_pair
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, pair",
    [(3, (3, 3)), (np.int64(2), (2, 2)), ((2, 3), (2, 3)), ([1, np.int32(4)], (1, 4))],
)
def test_check_int_pair_accepts_an_int_or_two_as_a_tuple_of_ints(value, pair):
    out = check_int_pair(value, "kernel_size", low=1)
    assert out == pair and all(type(v) is int for v in out)


@pytest.mark.parametrize("value", [0, (1, 0), (3, 3, 3), (3,), (), 1.5, (2, 2.0), True, (1, True), "2", None])
def test_check_int_pair_refuses(value):
    message = f"stride must be a positive integer or a pair of them, got {value!r}"
    with pytest.raises(ValueError, match=exactly(message)):
        check_int_pair(value, "stride", low=1)


def test_check_int_pair_bounds_are_closed():
    assert check_int_pair(0, "padding", low=0) == (0, 0)
    with pytest.raises(
        ValueError, match=exactly("padding must be a non-negative integer or a pair of them, got (0, -1)")
    ):
        check_int_pair((0, -1), "padding", low=0)
    with pytest.raises(ValueError, match=exactly("k must be an integer in [1, 3] or a pair of them, got 4")):
        check_int_pair(4, "k", low=1, high=3)


# --------------------------------------------------------------------------------------------------
# check_number
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.25, np.float32(0.25), np.float64(0.25), np.float16(0.25)])
def test_check_number_accepts_python_and_numpy_floats_as_float(value):
    out = check_number(value, "lr", low=0, low_open=True)
    assert out == 0.25 and type(out) is float


@pytest.mark.parametrize("value", [2, np.int64(2), np.uint8(2)])
def test_check_number_accepts_integers_as_float(value):
    out = check_number(value, "alpha")
    assert out == 2.0 and type(out) is float


@pytest.mark.parametrize("value", [True, False, np.True_, "0.1", None, [0.1], 1j])
def test_check_number_refuses_booleans_and_non_numbers(value):
    with pytest.raises(ValueError, match=exactly(f"lr must be a positive finite number, got {value!r}")):
        check_number(value, "lr", low=0, low_open=True)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")])
def test_check_number_refuses_nan_and_infinity(value):
    with pytest.raises(ValueError, match=exactly(f"fill must be a finite number, got {value!r}")):
        check_number(value, "fill")
    message = f"weight_decay must be a non-negative finite number, got {value!r}"
    with pytest.raises(ValueError, match=exactly(message)):
        check_number(value, "weight_decay", low=0)
    with pytest.raises(ValueError, match=exactly(f"p must be a number in [0, 1), got {value!r}")):
        check_number(value, "p", low=0, high=1, high_open=True)


def test_check_number_finite_false_admits_infinity_but_never_nan():
    assert check_number(math.inf, "max_norm", low=0, low_open=True, finite=False) == math.inf
    with pytest.raises(ValueError, match=exactly("max_norm must be a positive number, got nan")):
        check_number(math.nan, "max_norm", low=0, low_open=True, finite=False)


def test_check_number_closed_bounds_admit_the_bound_itself():
    assert check_number(0, "weight_decay", low=0) == 0.0
    assert check_number(0.0, "momentum", low=0, high=1) == 0.0
    assert check_number(1.0, "momentum", low=0, high=1) == 1.0
    with pytest.raises(ValueError, match=exactly("weight_decay must be non-negative, got -1e-09")):
        check_number(-1e-9, "weight_decay", low=0)
    with pytest.raises(ValueError, match=exactly("momentum must be in [0, 1], got 1.5")):
        check_number(1.5, "momentum", low=0, high=1)


def test_check_number_open_bounds_refuse_the_bound_itself():
    assert check_number(1e-300, "lr", low=0, low_open=True) == 1e-300
    with pytest.raises(ValueError, match=exactly("lr must be positive, got 0")):
        check_number(0, "lr", low=0, low_open=True)
    with pytest.raises(ValueError, match=exactly("lr must be positive, got -0.1")):
        check_number(-0.1, "lr", low=0, low_open=True)
    assert check_number(0.0, "p", low=0, high=1, high_open=True) == 0.0
    with pytest.raises(ValueError, match=exactly("p must be in [0, 1), got 1.0")):
        check_number(1.0, "p", low=0, high=1, high_open=True)
    with pytest.raises(ValueError, match=exactly("p must be in (0, 1], got 0.0")):
        check_number(0.0, "p", low=0, high=1, low_open=True)
    with pytest.raises(ValueError, match=exactly("x must be a number > 0.5, got 0.5")):
        check_number(0.5, "x", low=0.5, low_open=True)
    with pytest.raises(ValueError, match=exactly("x must be a number < 2, got 2")):
        check_number(2, "x", high=2, high_open=True)


def test_check_number_raises_the_callers_error():
    with pytest.raises(Problem, match=exactly("lr must be positive, got 0")):
        check_number(0, "lr", low=0, low_open=True, error=Problem)


# --------------------------------------------------------------------------------------------------
# check_bool, check_choice, check_sizes
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected", [(True, True), (False, False), (np.True_, True), (np.False_, False)]
)
def test_check_bool_accepts_python_and_numpy_booleans(value, expected):
    out = check_bool(value, "nesterov")
    assert out is expected


@pytest.mark.parametrize("value", [1, 0, "yes", "True", None, np.int64(1), np.array([True])])
def test_check_bool_refuses_everything_else(value):
    with pytest.raises(ValueError, match=exactly(f"nesterov must be true or false, got {value!r}")):
        check_bool(value, "nesterov")


def test_check_choice():
    assert check_choice("max", "mode", ("max", "min")) == "max"
    with pytest.raises(ValueError, match=exactly("mode must be one of max, min; got 'mean'")):
        check_choice("mean", "mode", ("max", "min"))
    with pytest.raises(ValueError, match=exactly("init must be one of a, b; got ['a']")):
        check_choice(["a"], "init", {"a": 1, "b": 2})  # unhashable against a dict: refused, not a TypeError


def test_check_sizes():
    assert check_sizes([512, np.int64(256)], "hidden") == (512, 256)
    assert check_sizes((), "hidden", allow_empty=True) == ()
    for bad in ([], [0], [3, 2.0], [True], "12", 12):
        message = f"hidden must be one or more positive sizes, got {bad!r}"
        with pytest.raises(ValueError, match=exactly(message)):
            check_sizes(bad, "hidden")
    with pytest.raises(ValueError, match=exactly("hidden must be zero or more positive sizes, got [-1]")):
        check_sizes([-1], "hidden", allow_empty=True)
