"""pytest setup for the robustness tests (tests/robust): SIGKILL during saves, OS failure paths,
memory exhaustion and fork.

Makes `examples/python_ctypes/parallel_saver.py` and this directory's modules
(`robust_helpers.py`, `robust_child.py`) importable, and fails early when libpsv.so cannot be
loaded (set PSV_LIBRARY or run `cargo build --release`).
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


@pytest.fixture(scope="session")
def psv():
    """The parallel_saver module with its library loaded."""
    try:
        parallel_saver._lib()
    except OSError as exc:  # pragma: no cover - environment problem
        pytest.fail(str(exc), pytrace=False)
    return parallel_saver
