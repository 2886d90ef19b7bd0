"""pytest setup for the libpsv Python tests.

Makes `examples/python_ctypes/parallel_saver.py` and `tests/python/make_fixtures.py`
importable, and fails early with a clear message when libpsv.so cannot be loaded
(set PSV_LIBRARY or run `cargo build --release`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (REPO / "examples" / "python_ctypes", HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import parallel_saver  # noqa: E402


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
