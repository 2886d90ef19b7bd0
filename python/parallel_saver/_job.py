"""Asynchronous saves: ``ParallelSaver.save(target, wait=False)`` returns a :class:`SaveJob`.

The save runs on libpsv's threads (``psv_saver_save_async`` and its fd / write-callback
siblings).  With ``snapshot=True`` (the default) the arrays are copied, in parallel, into the
saver's staging area before ``save`` returns, so the caller may change them at once; the
staging area is reused by the next save of the same size (``ParallelSaver.staging_bytes``).
With ``snapshot=False`` nothing is copied and the arrays must not be touched until the job is
done; meanwhile ``ParallelSaver.add`` raises ``PsvError`` ``PSV_ERR_BUSY`` and ``close()`` waits
for the job.

Waiting releases the GIL (ctypes does for every call), in slices of 100 ms so that Ctrl-C
still works.  No Python code runs on a library thread, except a writer object's ``write``
for a writer target (ctypes takes the GIL for it).

Fork: a child forked while a job runs does not have the job: ``wait`` raises ``PsvError``
(``PSV_ERR_INVALID_ARG``) at once and ``done()`` is False; the child may save and restore on
its own (multiprocessing workers included).  The parent's job goes on.
"""

from __future__ import annotations

import ctypes
import time
import weakref
from typing import Any, Callable, Optional, Tuple

from ._binding import PsvError, _feature, _JobP, _lib

#: psv_job_wait slices (ms): a wait returns to Python this often (KeyboardInterrupt).
_SLICE_MS = 100


def _job_error(handle: Any, status: int) -> PsvError:
    """The job's own error (its message and errno belong to the job, not to a thread)."""
    lib = _lib()
    message_fn = _feature("psv_job_error_message", "asynchronous saves")
    n = message_fn(handle, None, 0)
    buf = ctypes.create_string_buffer(n + 1)
    message_fn(handle, buf, n + 1)
    os_code = int(_feature("psv_job_error_os_code", "asynchronous saves")(handle))
    name = lib.psv_status_str(status).decode("ascii", "replace")
    return PsvError(status, name, buf.value.decode("utf-8", "replace"), "psv_job_wait", os_code)


def _finish(handle: Any) -> None:
    """Finalizer: wait for the job (a dropped job still completes its save), then free it."""
    _feature("psv_job_wait", "asynchronous saves")(handle, -1)
    _feature("psv_job_free", "asynchronous saves")(handle)


class SaveJob:
    """A save running in the background (``ParallelSaver.save(target, wait=False)``).

    ``wait(timeout=None)`` returns what the blocking call would have returned (``save``: the
    path written, or None; ``to_bytes``: the bytes; ``save_into``: the size) and raises the
    save's :class:`PsvError`; ``done()``, ``progress`` and ``cancel()``
    never block.  As a context manager it waits on exit (and raises the save's error unless
    another exception is already propagating).  A job that is garbage-collected, or still
    running when the interpreter exits, is waited for (not cancelled): the save completes.
    """

    def __init__(
        self,
        handle: Any,
        keep: Tuple[Any, ...],
        result: Any,
        after: Optional[Callable[[], None]] = None,
        reraise: Optional[Callable[[], None]] = None,
        produce: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self._handle = handle
        self._produce = produce  # turns the finished job into wait()'s result (to_bytes)
        self._keep = keep  # the saver (its arrays), writer relays, file objects: alive until done
        self._result = result
        self._after = after
        self._reraise = reraise
        self._status: Optional[int] = None
        self._error: Optional[PsvError] = None
        self._finalizer = weakref.finalize(self, _finish, handle)

    def _poll(self, timeout_ms: int) -> Optional[int]:
        """psv_job_wait for at most timeout_ms (GIL released); the status, or None on timeout."""
        from ._binding import PSV_ERR_TIMEOUT  # read from the library's status table

        st = int(_feature("psv_job_wait", "asynchronous saves")(self._handle, timeout_ms))
        return None if st == PSV_ERR_TIMEOUT else st

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Wait for the save (at most ``timeout`` seconds; None: no limit) and return what
        ``save`` returns (the path written for a path target, else None).

        Raises:
            PsvError: the save's error (``PSV_ERR_IO`` with the OS errno in ``os_code`` for
                ENOSPC, EFBIG, EACCES...; ``PSV_ERR_ABORTED`` after :meth:`cancel`), again on
                every later call; ``PSV_ERR_TIMEOUT`` when the timeout ends first (the job
                keeps running: wait again).
            Exception: a writer target's own exception from ``write``.
        """
        if self._status is None:
            deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
            while True:
                if deadline is None:
                    slice_ms = _SLICE_MS
                else:
                    left = deadline - time.monotonic()
                    slice_ms = max(0, min(_SLICE_MS, int(left * 1000)))
                st = self._poll(slice_ms)
                if st is not None:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    from ._binding import PSV_ERR_TIMEOUT

                    raise PsvError(
                        PSV_ERR_TIMEOUT,
                        "PSV_ERR_TIMEOUT",
                        f"the save is still running after {timeout} s",
                        "psv_job_wait",
                    )
            self._status = st
            if st != 0:
                self._error = _job_error(self._handle, st)
            else:
                if self._after is not None:
                    self._after()
                if self._produce is not None:
                    self._result = self._produce(self._handle)
            self._keep = ()
        if self._status != 0:
            if self._reraise is not None:
                self._reraise()  # the writer's own exception beats PSV_ERR_IO
            assert self._error is not None
            raise self._error
        return self._result

    def done(self) -> bool:
        """True once the save has finished (successfully or not): :meth:`wait` won't block."""
        return self._status is not None or bool(
            _feature("psv_job_done", "asynchronous saves")(self._handle)
        )

    @property
    def progress(self) -> Tuple[int, int]:
        """``(done, total)`` bytes so far (updated every 100 ms / 64 MiB; (0, 0) at first)."""
        done = ctypes.c_uint64(0)
        total = ctypes.c_uint64(0)
        _feature("psv_job_progress", "asynchronous saves")(
            self._handle, ctypes.byref(done), ctypes.byref(total)
        )
        return int(done.value), int(total.value)

    def cancel(self) -> None:
        """Ask the save to stop (returns at once): :meth:`wait` then raises ``PSV_ERR_ABORTED``,
        the temporary file is removed and an existing target is untouched, unless the save had
        already committed."""
        _feature("psv_job_cancel", "asynchronous saves")(self._handle)

    def __enter__(self) -> "SaveJob":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.wait()
        else:
            try:
                self.wait()
            except Exception:  # noqa: BLE001 - the exception already propagating wins
                pass

    def __repr__(self) -> str:
        state = "running" if not self.done() else ("ok" if self._status in (None, 0) else "failed")
        return f"<SaveJob {state} {self.progress}>"


def start_save(
    saver: Any,
    dest: Any,
    bpath: Optional[bytes],
    result: Any,
    run_save: Callable[..., None],
    *,
    snapshot: bool,
    **options: Any,
) -> SaveJob:
    """Start the asynchronous save of ``saver`` to the classified target ``dest`` (``bpath``:
    its encoded path, for a path) through the saver's ``_run_save(run, **options)`` and return
    its job (``result`` is what ``wait`` returns)."""
    from ._io import WriteRelay, flush_before, sync_after

    if options.get("progress") not in (None, False):
        raise ValueError("save(wait=False) takes no progress callback: poll job.progress")
    options.pop("progress", None)
    set_snapshot = _feature("psv_save_options_set_snapshot", "save(wait=False)")
    out = _JobP()
    keep: Tuple[Any, ...] = (saver, dest)
    after: Optional[Callable[[], None]] = None
    reraise: Optional[Callable[[], None]] = None
    produce: Optional[Callable[[Any], Any]] = None
    if dest.kind == "path":
        start = _feature("psv_saver_save_async", "save(wait=False)")

        def call(handle: Any, opts: Any) -> None:
            start(handle, bpath, opts, ctypes.byref(out))

    elif dest.kind == "fd":
        start = _feature("psv_saver_save_fd_async", "save(wait=False) to a file descriptor")
        flush_before(dest)

        def call(handle: Any, opts: Any) -> None:
            start(handle, dest.value, opts, ctypes.byref(out))

        def after() -> None:
            sync_after(dest)

    elif dest.kind == "buffer":
        start = _feature("psv_saver_save_to_buffer_async", "save_into(wait=False)")
        view, address = dest.value  # the pinned export stays in `keep` until the job is done

        def call(handle: Any, opts: Any) -> None:
            start(handle, address, view.nbytes, opts, ctypes.byref(out))

    elif dest.kind == "alloc":
        start = _feature("psv_saver_save_to_alloc_async", "to_bytes(wait=False)")
        produce = _take_bytes

        def call(handle: Any, opts: Any) -> None:
            start(handle, opts, ctypes.byref(out))

    else:
        start = _feature("psv_saver_save_stream_async", "save(wait=False) to a writer")
        writer = WriteRelay(dest.value)
        keep = keep + (writer,)
        reraise = writer.reraise

        def call(handle: Any, opts: Any) -> None:
            start(handle, writer.c_func, None, opts, ctypes.byref(out))

    def run(handle: Any, opts: Any) -> None:
        set_snapshot(opts, bool(snapshot))
        call(handle, opts)

    run_save(run, **options)
    return SaveJob(out, keep, result, after, reraise, produce)


def _take_bytes(handle: Any) -> bytes:
    """The archive of a finished ``to_bytes(wait=False)`` job, copied into ``bytes`` (the
    library's buffer is freed at once)."""
    from ._binding import _BufferP, take_buffer

    holder = _BufferP()
    _feature("psv_job_take_buffer", "to_bytes(wait=False)")(handle, ctypes.byref(holder))
    return take_buffer(holder)
