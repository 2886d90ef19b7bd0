"""pytest setup for the libpsv Python tests.

The tests import the installed package `parallel_saver` (`make test-wheel` installs the wheel
into a fresh venv; see mk/python.mk) and this directory's helpers (pytest puts the directory
of a conftest.py on sys.path). Fails early with a clear message when libpsv cannot be loaded.
"""

from __future__ import annotations

import pytest

import parallel_saver


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes several seconds (65536 members, large arrays)")


@pytest.fixture(scope="session")
def psv():
    """The parallel_saver module with its library loaded."""
    try:
        parallel_saver._lib()
    except OSError as exc:  # pragma: no cover - environment problem
        pytest.fail(str(exc), pytrace=False)
    return parallel_saver
