"""Progress reporting for saves and restores: the relay from libpsv's ``psv_progress_cb`` to a
Python ``progress(done, total)`` callable, and the progress bar drawn on stderr for
``progress=True``."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO, Tuple, Union

from ._binding import _ProgressCB

#: A progress callback: ``(done_bytes, total_bytes) -> bool | None``; False cancels.
ProgressCallback = Callable[[int, int], Optional[bool]]
#: What ``progress=`` accepts: None or False (no reporting), True (a bar on stderr when it is
#: a terminal) or a :data:`ProgressCallback`.
ProgressArg = Union[None, bool, ProgressCallback]


class _ProgressRelay:
    """Adapts a Python ``progress(done, total)`` callable to a ``psv_progress_cb``.

    libpsv calls it on the thread that made the save/restore call (ctypes takes the GIL for
    it).  Nothing may unwind through the C frames, so any exception raised by the callable is
    stored, the operation is cancelled (non-zero return), and :meth:`reraise` raises it once
    the C call has returned.  The CFUNCTYPE object lives as long as this relay: keep the relay
    referenced until the C call returns.
    """

    def __init__(self, fn: ProgressCallback) -> None:
        self.fn = fn
        self.error: Optional[BaseException] = None
        self.c_func = _ProgressCB(self._call)

    def _call(self, _userdata: Optional[int], done: int, total: int) -> int:
        if self.error is not None:
            return 1
        try:
            result = self.fn(int(done), int(total))
        except BaseException as exc:  # noqa: BLE001 - includes KeyboardInterrupt: cancel, re-raise later
            self.error = exc
            return 1
        return 1 if (result is not None and not result) else 0

    def reraise(self) -> None:
        """Raise the exception the callable raised, if any (once)."""
        exc, self.error = self.error, None
        if exc is not None:
            raise exc


class _StderrBar:
    """A minimal progress bar drawn on ``sys.stderr`` with carriage returns."""

    WIDTH = 30

    def __init__(self, label: str, stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.drawn = False
        self._last = 0.0
        self._start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.drawn and (done < total or total == 0) and now - self._last < 0.1:
            return
        self._last = now
        mib = 1024.0 * 1024.0
        elapsed = max(now - self._start, 1e-9)
        if total <= 0:
            # A stream restore: the total is unknown until the end.
            line = f"\r{self.label} {done / mib:,.1f} MiB {done / mib / elapsed:,.0f} MiB/s"
        else:
            frac = min(max(done / total, 0.0), 1.0)
            filled = int(round(frac * self.WIDTH))
            line = (
                f"\r{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {frac * 100:5.1f}% "
                f"{done / mib:,.1f}/{total / mib:,.1f} MiB {done / mib / elapsed:,.0f} MiB/s"
            )
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stderr: drawing is best effort
            return
        self.drawn = True

    def close(self) -> None:
        """End the bar's line (if anything was drawn)."""
        if self.drawn:
            try:
                self.stream.write("\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self.drawn = False


def _stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _make_progress(progress: ProgressArg, label: str) -> Tuple[Optional[_ProgressRelay], Optional[_StderrBar]]:
    """(relay to install, bar to close afterwards) for a ``progress=`` argument."""
    if progress is None or progress is False:
        return None, None
    if progress is True:
        if not _stderr_is_tty():
            return None, None
        bar = _StderrBar(label)
        return _ProgressRelay(bar), bar
    if not callable(progress):
        raise TypeError(
            f"progress must be None, True or a callable(done, total), not {type(progress).__name__}"
        )
    return _ProgressRelay(progress), None
