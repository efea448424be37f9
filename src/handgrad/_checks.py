"""The argument validators every part of handgrad shares: the chapters, the datasets, the application's
configuration and the command line.

Each check returns the value converted to a plain Python type (``int``, ``float``, ``bool``, ``tuple``)
or raises ``error`` (``ValueError`` unless the caller names its own subclass, such as the application's
``ConfigError``) with a message that names the argument, what it must be, and what came::

    >>> check_int(0, "batch_size", low=1)
    Traceback (most recent call last):
    ...
    ValueError: batch_size must be a positive integer, got 0
    >>> check_number(0.5, "p", low=0, high=1, high_open=True)
    0.5

Booleans are never numbers here (``True`` is not a batch size), NumPy scalars are, and non-finite
numbers are refused unless ``finite=False``.
"""

from __future__ import annotations

import math
import numbers

__all__ = [
    "check_int",
    "check_int_pair",
    "check_number",
    "check_bool",
    "check_choice",
    "check_sizes",
    "describe_interval",
]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bound(x) -> str:
    """A bound as a message writes it: an integer exactly (2**32 - 1 is 4294967295), a float by :g."""
    return str(int(x)) if isinstance(x, numbers.Integral) else f"{x:g}"


def describe_interval(kind, low=None, high=None, low_open=False, high_open=False) -> str:
    """How a message says what a value must be: 'a positive integer', 'in [0, 1)', 'positive', ...

    ``kind`` is "integer" or "number"::

        >>> describe_interval("integer", low=1)
        'a positive integer'
        >>> describe_interval("integer", low=0, high=2**32 - 1)
        'an integer in [0, 4294967295]'
        >>> describe_interval("number", low=0, low_open=True)
        'positive'
        >>> describe_interval("number", low=0, high=1, high_open=True)
        'in [0, 1)'
    """
    article = "an" if kind[0] in "aeiou" else "a"
    if low is None and high is None:
        return f"{article} finite {kind}" if kind == "number" else f"{article} {kind}"
    if high is None:
        if low == 0 and kind == "number":
            return "positive" if low_open else "non-negative"
        if low == 0 and kind == "integer" and not low_open:
            return "a non-negative integer"
        if low in (0, 1) and kind == "integer" and (low_open or low == 1):
            return "a positive integer"
        return f"{article} {kind} {'>' if low_open else '>='} {_bound(low)}"
    if low is None:
        return f"{article} {kind} {'<' if high_open else '<='} {_bound(high)}"
    where = f"{'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    return f"{article} {kind} in {where}" if kind == "integer" else f"in {where}"


def _check_bounds(value, name, kind, low, high, low_open, high_open, error):
    below = low is not None and (value < low or (low_open and value == low))
    above = high is not None and (value > high or (high_open and value == high))
    if below or above:
        expected = describe_interval(kind, low, high, low_open, high_open)
        raise error(f"{name} must be {expected}, got {value!r}")


def check_int(value, name, *, low=None, high=None, optional=False, error=ValueError):
    """``value`` as an ``int`` in [low, high] (either bound may be None); ``error`` otherwise.

    With ``optional=True``, None is accepted (and returned) too::

        >>> check_int(3, "n", low=1)
        3
        >>> check_int(None, "batch_size", low=1, optional=True) is None
        True
        >>> check_int(2.0, "batch_size", low=1, optional=True)
        Traceback (most recent call last):
        ...
        ValueError: batch_size must be a positive integer or None, got 2.0
    """
    if optional and value is None:
        return None
    expected = describe_interval("integer", low, high) + (" or None" if optional else "")
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise error(f"{name} must be {expected}, got {value!r}")
    return int(value)


def check_int_pair(value, name, *, low=None, high=None, error=ValueError) -> tuple:
    """An integer or a pair of integers, each in [low, high], as a tuple ``(h, w)`` (kernel sizes, strides)::

    >>> check_int_pair(3, "kernel_size", low=1)
    (3, 3)
    >>> check_int_pair([2, 1], "stride", low=1)
    (2, 1)
    >>> check_int_pair((3, 3, 3), "kernel_size", low=1)
    Traceback (most recent call last):
    ...
    ValueError: kernel_size must be a positive integer or a pair of them, got (3, 3, 3)
    """
    pair = (value, value) if _is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else ()
    ok = len(pair) == 2 and all(_is_int(v) for v in pair)
    if not ok or any((low is not None and v < low) or (high is not None and v > high) for v in pair):
        expected = describe_interval("integer", low, high)
        raise error(f"{name} must be {expected} or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_number(
    value, name, *, low=None, high=None, low_open=False, high_open=False, finite=True, error=ValueError
) -> float:
    """``value`` as a ``float`` within the bounds (``*_open``: the bound itself is excluded)."""
    if not _is_real(value) or (finite and not math.isfinite(value)) or math.isnan(value):
        expected = describe_interval("number", low, high, low_open, high_open)
        if expected in ("positive", "non-negative"):
            expected = f"a {expected} {'finite ' if finite else ''}number"
        elif expected.startswith("in "):
            expected = f"a number {expected}"
        raise error(f"{name} must be {expected}, got {value!r}")
    _check_bounds(value, name, "number", low, high, low_open, high_open, error)
    return float(value)


def check_bool(value, name, *, error=ValueError) -> bool:
    """``value`` as a ``bool`` if it is one (NumPy's included); ``error`` otherwise (1 and "yes" are not)::

    >>> check_bool(True, "nesterov")
    True
    >>> check_bool(1, "nesterov")
    Traceback (most recent call last):
    ...
    ValueError: nesterov must be true or false, got 1
    """
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    if not isinstance(value, bool) and not numpy_bool:
        raise error(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_choice(value, name, choices, *, error=ValueError):
    """``value`` if it is one of ``choices``; ``error`` naming them otherwise."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a dict or set
        ok = False
    if not ok:
        raise error(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_sizes(value, name, *, allow_empty=False, error=ValueError) -> tuple:
    """A list or tuple of positive integers (layer widths, channel counts, a shape) as a tuple."""
    ok = isinstance(value, (list, tuple)) and all(_is_int(v) and v > 0 for v in value)
    if not ok or (not allow_empty and not value):
        amount = "zero or more" if allow_empty else "one or more"
        raise error(f"{name} must be {amount} positive sizes, got {value!r}")
    return tuple(int(v) for v in value)
