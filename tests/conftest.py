"""Shared test configuration.

Under CI (``CI`` set) a skipped test fails the run: every test is meant to run there, so a skip means a
missing install step or a missing dataset setting, not an optional extra.
"""

import os

import numpy as np
import pytest


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not os.environ.get("CI") or reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and exitstatus == 0:
        reporter.write_line(f"CI: {len(skipped)} test(s) were skipped; every test must run in CI", red=True)
        session.exitstatus = 1


@pytest.fixture(autouse=True, scope="session")
def isolated_user_cache(tmp_path_factory):
    """Point the dataset cache (``$XDG_CACHE_HOME/handgrad``) at a temporary folder for the whole run, so
    no test reads from or writes into the user's real cache; subprocesses inherit the setting."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def real_data_dir():
    """The folder named by HANDGRAD_DATA, or skip (which fails under CI)."""
    path = os.environ.get("HANDGRAD_DATA")
    if not path or not os.path.isdir(path):
        pytest.skip("HANDGRAD_DATA does not name a folder holding the real datasets")
    return path
