"""pytest setup for the robustness tests (tests/robust): SIGKILL during saves, OS failure paths,
memory exhaustion and fork.

Imports the installed package `parallel_saver` (mk/python.mk installs the wheel into .venv);
this directory's modules (`robust_helpers.py`, `robust_child.py`) are importable because pytest
puts the directory of a conftest.py on sys.path. Fails early when libpsv cannot be loaded (set
PSV_LIBRARY or reinstall the package).
"""

from __future__ import annotations

import pytest

import parallel_saver


@pytest.fixture(scope="session")
def psv():
    """The parallel_saver module with its library loaded."""
    try:
        parallel_saver._lib()
    except OSError as exc:  # pragma: no cover - environment problem
        pytest.fail(str(exc), pytrace=False)
    return parallel_saver
