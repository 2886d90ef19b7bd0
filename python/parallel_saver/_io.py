"""Where a save's bytes go and where a restore's bytes come from, for the Python API.

A save target is a path, an ``int`` file descriptor, a binary file object with a working
``fileno()`` (its descriptor is written directly), or any object with ``write()`` (``io.BytesIO``,
a socket file, an upload stream: written through ``psv_saver_save_stream`` in file order).

A restore source is a path, an ``int`` file descriptor, a binary file object (seekable ones by
descriptor; others, and objects with only ``readinto()``/``read()``, through ``psv_restore_stream``
in one pass), or a bytes-like object holding the whole archive.

The relays below turn Python ``write``/``readinto`` methods into the C callbacks; an exception
raised by the Python side is kept and re-raised by the caller after the C call returns (the C
call itself fails with PSV_ERR_IO).
"""

from __future__ import annotations

import ctypes
import io
import os
from typing import Any, NamedTuple, Optional, Union

from ._binding import _ReadFn, _WriteFn

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


class Target(NamedTuple):
    """A classified save target: ``kind`` is ``"path"``, ``"fd"`` or ``"writer"`` (and, for
    the in-memory saves of ``to_bytes``/``save_into`` with ``wait=False``, ``"alloc"`` or
    ``"buffer"``)."""

    kind: str
    #: the path (``"path"``), the descriptor (``"fd"``), the object with ``write``
    #: (``"writer"``), (pinned view, address) of the caller's memory (``"buffer"``), or None
    #: (``"alloc"``: the library allocates)
    value: Any
    #: the file object whose descriptor is written (``"fd"`` from a file object), else None
    file: Any = None


class SourceKind(NamedTuple):
    """A classified restore source: ``kind`` is ``"path"``, ``"fd"``, ``"memory"`` or
    ``"stream"``."""

    kind: str
    value: Any


def _is_pathlike(obj: Any) -> bool:
    return isinstance(obj, (str, bytes, os.PathLike))


def _fileno(obj: Any) -> Optional[int]:
    """``obj.fileno()`` when it has a working one (``io.BytesIO`` raises), else None."""
    fileno = getattr(obj, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _refuse_text(obj: Any, what: str) -> None:
    if isinstance(obj, io.TextIOBase):
        raise TypeError(f"{what} is a text stream; open it in binary mode ('wb' / 'rb')")


def classify_target(target: Any) -> Target:
    """What kind of save destination ``target`` is (TypeError for anything else)."""
    if _is_pathlike(target):
        return Target("path", target)
    if isinstance(target, bool):
        raise TypeError("a save target must be a path, an int fd or a binary file object, not bool")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"a file descriptor must be >= 0, got {target}")
        return Target("fd", target)
    _refuse_text(target, "the save target")
    fd = _fileno(target)
    if fd is not None:
        return Target("fd", fd, target)
    if callable(getattr(target, "write", None)):
        return Target("writer", target)
    raise TypeError(
        "a save target must be a path, an int fd, a file object or an object with write(), "
        f"not {type(target).__name__}"
    )


def classify_source(source: Any) -> SourceKind:
    """What kind of restore source ``source`` is (TypeError for anything else)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return SourceKind("memory", source)
    if _is_pathlike(source):
        return SourceKind("path", source)
    if isinstance(source, bool):
        raise TypeError("a restore source must be a path, an int fd, a file object or bytes, not bool")
    if isinstance(source, int):
        if source < 0:
            raise ValueError(f"a file descriptor must be >= 0, got {source}")
        return SourceKind("fd", source)
    _refuse_text(source, "the restore source")
    fd = _fileno(source)
    if fd is not None and _seekable(source):
        # Positional reads of the whole file: the object's own position and buffer do not
        # matter (and are left as they were).
        return SourceKind("fd", fd)
    if callable(getattr(source, "readinto", None)) or callable(getattr(source, "read", None)):
        # Pipes, sockets and in-memory streams: one pass from the current position, through
        # the object itself (its buffered bytes included).
        return SourceKind("stream", source)
    try:
        memoryview(source)
    except TypeError:
        pass
    else:
        return SourceKind("memory", source)
    raise TypeError(
        "a restore source must be a path, an int fd, a file object, an object with read() or "
        f"a bytes-like object, not {type(source).__name__}"
    )


def _seekable(obj: Any) -> bool:
    try:
        return bool(obj.seekable())
    except (OSError, ValueError, AttributeError):
        return False


def flush_before(target: Target) -> Optional[int]:
    """Flush a file object's buffer before its descriptor is written; returns the descriptor's
    offset (None when it cannot seek: a pipe or socket)."""
    if target.file is not None:
        flush = getattr(target.file, "flush", None)
        if callable(flush):
            flush()
    try:
        return os.lseek(target.value, 0, os.SEEK_CUR)
    except OSError:
        return None


def sync_after(target: Target) -> None:
    """Move a seekable file object's own position to where the save left its descriptor (the
    end of the archive), so that its next write follows the archive."""
    f = target.file
    if f is None or not _seekable(f):
        return
    f.seek(os.lseek(target.value, 0, os.SEEK_CUR))


class _Relay:
    """Keeps the first exception raised by the Python side of a C callback."""

    def __init__(self) -> None:
        self.error: Optional[BaseException] = None

    def reraise(self) -> None:
        """Raise the kept exception (if any), once."""
        err, self.error = self.error, None
        if err is not None:
            raise err


class WriteRelay(_Relay):
    """A ``psv_write_fn`` calling ``writer.write(memoryview)`` until every byte is taken.

    The memoryview handed to ``write`` points into library memory and is valid only during
    that call (as with ``io.RawIOBase.write``); a writer that keeps data must copy it
    (``io.BytesIO`` and files do).  ``write`` returning None counts as "all written" (buffered
    writers' convention); returning fewer bytes makes the relay pass the rest again.
    """

    def __init__(self, writer: Any) -> None:
        super().__init__()
        self._write = writer.write
        self.written = 0
        self.c_func = _WriteFn(self._call)

    def _call(self, _userdata: Any, buf: int, length: int) -> int:
        if self.error is not None:
            return 1
        try:
            view = memoryview((ctypes.c_char * length).from_address(buf)).cast("B")
            try:
                done = 0
                while done < length:
                    part = view[done:] if done else view
                    try:
                        n = self._write(part)
                    finally:
                        if part is not view:
                            part.release()
                    if n is None:
                        n = length - done
                    if not isinstance(n, int) or n < 0 or n > length - done:
                        raise OSError(f"{self._write!r} returned {n!r} for a {length - done}-byte write")
                    if n == 0:
                        raise OSError(f"{self._write!r} wrote nothing (0 bytes)")
                    done += n
            finally:
                view.release()
            self.written += length
            return 0
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after the C call
            self.error = exc
            return 1


class ReadRelay(_Relay):
    """A ``psv_read_fn`` calling ``reader.readinto(memoryview)`` (or ``reader.read(n)`` and a
    copy when there is no ``readinto``): bytes read, 0 at the end, -1 after an exception."""

    def __init__(self, reader: Any) -> None:
        super().__init__()
        readinto = getattr(reader, "readinto", None)
        self._readinto = readinto if callable(readinto) else None
        self._read = getattr(reader, "read", None)
        self.c_func = _ReadFn(self._call)

    def _call(self, _userdata: Any, buf: int, length: int) -> int:
        if self.error is not None:
            return -1
        try:
            if length == 0:
                return 0
            view = memoryview((ctypes.c_char * length).from_address(buf)).cast("B")
            try:
                if self._readinto is not None:
                    n = self._readinto(view)
                    if n is None:
                        raise OSError("readinto() returned None (a non-blocking stream with no data)")
                else:
                    data = self._read(length)
                    if data is None:
                        raise OSError("read() returned None (a non-blocking stream with no data)")
                    n = len(data)
                    if n > length:
                        raise OSError(f"read({length}) returned {n} bytes")
                    view[:n] = data
            finally:
                view.release()
            if not isinstance(n, int) or not 0 <= n <= length:
                raise OSError(f"readinto() returned {n!r} for a {length}-byte buffer")
            return n
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller after the C call
            self.error = exc
            return -1
