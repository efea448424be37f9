"""The library's ``>>>`` examples run as tests: every module of ``handgrad`` that has some, one test each.

The examples are part of the page a student reads beside the book, so a wrong one is a bug. They run
offline (the only data they read is the bundled ``mnist-sample``), with the module's own globals, as
``python -m doctest`` would run them.
"""

import doctest
import importlib
import pkgutil

import pytest

import handgrad

SKIP = {"handgrad.__main__"}  # importing it runs the command line


def _module_names():
    names = ["handgrad"] + [m.name for m in pkgutil.walk_packages(handgrad.__path__, "handgrad.")]
    return sorted(n for n in names if n not in SKIP)


def _examples(module):
    """The module's doctests that hold at least one example (its docstring, classes, functions, methods)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module) if t.examples and t.name.startswith(module.__name__)]


MODULES_WITH_EXAMPLES = [n for n in _module_names() if _examples(importlib.import_module(n))]


def test_examples_are_found_where_the_library_has_them():
    # the modules known to carry examples; a finder that found nothing would make the tests below vacuous
    expected = {
        "handgrad._checks",
        "handgrad.ch06_feedforward.layers",
        "handgrad.ch08_optimization.sgd",
        "handgrad.ch09_convolution.convolution",
        "handgrad.datasets",
        "handgrad.datasets.idx",
    }
    assert expected <= set(MODULES_WITH_EXAMPLES)


@pytest.mark.parametrize("name", MODULES_WITH_EXAMPLES)
def test_module_examples_pass(name):
    module = importlib.import_module(name)
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in _examples(module):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, f"{name}: no examples were run"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed:\n" + "".join(
        report
    )
