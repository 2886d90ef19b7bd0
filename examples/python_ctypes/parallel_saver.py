"""ctypes binding of libpsv with the API of the ``parallel-saver`` Python tool.

``ParallelSaver(*args, **kwds).save(path)`` writes every array into one ``.npz``
(numpy's own format, loadable by ``numpy.load``) in parallel, and
``restore(path)`` reads any ``.npz`` into one 64-byte-aligned block and returns a
dict of zero-copy, writable views into it.

The shared library is found through the ``PSV_LIBRARY`` environment variable,
else at ``<repo root>/target/release/libpsv.so`` (the repo root is two levels
above this file).

Lifetimes
---------
* A :class:`ParallelSaver` owns one C ``psv_saver``.  The library *borrows* the
  array memory until the saver is freed, so the saver keeps a reference to every
  array it was given.  The handle is freed by :meth:`ParallelSaver.close`, by
  leaving a ``with`` block, or when the object is garbage-collected.
* :func:`restore` returns arrays whose ``.base`` chain ends in a
  :class:`RestoredBlock`.  That object owns the C ``psv_archive``; ``psv_free``
  runs when the last array that refers to the block is garbage-collected.
"""

from __future__ import annotations

import ast
import ctypes
import math
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = [
    "ParallelSaver",
    "restore",
    "PsvError",
    "RestoredArrays",
    "RestoredBlock",
    "block_of",
    "library_path",
    "version",
    "abi_version",
    "STATUS_NAMES",
    "DTYPE_CODES",
]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

# ---------------------------------------------------------------------------
# Status and dtype codes (psv.h)
# ---------------------------------------------------------------------------
PSV_OK = 0
PSV_ERR_NULL_ARG = 1
PSV_ERR_INVALID_ARG = 2
PSV_ERR_BAD_DTYPE = 3
PSV_ERR_OVERFLOW = 4
PSV_ERR_IO = 5
PSV_ERR_FORMAT = 6
PSV_ERR_UNSUPPORTED = 7
PSV_ERR_LIMIT = 8
PSV_ERR_NOT_FOUND = 9
PSV_ERR_NOMEM = 10
PSV_ERR_ABORTED = 11
PSV_ERR_PANIC = 12
PSV_ERR_CRC = 13

#: status code -> name, as the header spells it (psv_status_str gives the same text).
STATUS_NAMES: Dict[int, str] = {
    PSV_OK: "PSV_OK",
    PSV_ERR_NULL_ARG: "PSV_ERR_NULL_ARG",
    PSV_ERR_INVALID_ARG: "PSV_ERR_INVALID_ARG",
    PSV_ERR_BAD_DTYPE: "PSV_ERR_BAD_DTYPE",
    PSV_ERR_OVERFLOW: "PSV_ERR_OVERFLOW",
    PSV_ERR_IO: "PSV_ERR_IO",
    PSV_ERR_FORMAT: "PSV_ERR_FORMAT",
    PSV_ERR_UNSUPPORTED: "PSV_ERR_UNSUPPORTED",
    PSV_ERR_LIMIT: "PSV_ERR_LIMIT",
    PSV_ERR_NOT_FOUND: "PSV_ERR_NOT_FOUND",
    PSV_ERR_NOMEM: "PSV_ERR_NOMEM",
    PSV_ERR_ABORTED: "PSV_ERR_ABORTED",
    PSV_ERR_PANIC: "PSV_ERR_PANIC",
    PSV_ERR_CRC: "PSV_ERR_CRC",
}

#: psv.h PSV_ABI_VERSION this binding matches (checked when the library is loaded).
PSV_ABI_VERSION = 100

PSV_DTYPE_INVALID = -1
PSV_DTYPE_OTHER = 15

#: numpy type -> PSV_DTYPE code (native byte order only; see _NATIVE_CODES).
DTYPE_CODES: Dict[type, int] = {
    np.bool_: 1,
    np.int8: 2,
    np.int16: 3,
    np.int32: 4,
    np.int64: 5,
    np.uint8: 6,
    np.uint16: 7,
    np.uint32: 8,
    np.uint64: 9,
    np.float16: 10,
    np.float32: 11,
    np.float64: 12,
    np.complex64: 13,
    np.complex128: 14,
}

# dtype.str of the native-byte-order numeric types -> code ('<f8' -> 12 on x86-64).
# A '>f8' array on a little-endian machine is not in here and goes through add_descr.
_NATIVE_CODES: Dict[str, int] = {np.dtype(t).str: c for t, c in DTYPE_CODES.items()}


# ---------------------------------------------------------------------------
# Library loading
# ---------------------------------------------------------------------------
class _Saver(ctypes.Structure):
    """Opaque ``psv_saver``."""


class _Archive(ctypes.Structure):
    """Opaque ``psv_archive``."""


class _SaveOptions(ctypes.Structure):
    """Opaque ``psv_save_options``."""


class _RestoreOptions(ctypes.Structure):
    """Opaque ``psv_restore_options``."""


_SaverP = ctypes.POINTER(_Saver)
_ArchiveP = ctypes.POINTER(_Archive)
_SaveOptionsP = ctypes.POINTER(_SaveOptions)
_RestoreOptionsP = ctypes.POINTER(_RestoreOptions)

_c_status = ctypes.c_int32
_c_dtype = ctypes.c_int32
_c_size = ctypes.c_size_t
_c_i64p = ctypes.POINTER(ctypes.c_int64)

# name -> (restype, argtypes). Every exported function of psv.h.
_PROTOTYPES: Dict[str, Tuple[Any, List[Any]]] = {
    # save
    "psv_saver_new": (_SaverP, []),
    "psv_saver_add": (
        _c_status,
        [_SaverP, ctypes.c_char_p, ctypes.c_void_p, _c_dtype, _c_i64p, _c_size],
    ),
    "psv_saver_add_descr": (
        _c_status,
        [
            _SaverP,
            ctypes.c_char_p,
            ctypes.c_void_p,
            _c_size,
            ctypes.c_char_p,
            _c_i64p,
            _c_size,
            ctypes.c_bool,
        ],
    ),
    "psv_saver_count": (_c_size, [_SaverP]),
    "psv_saver_save": (_c_status, [_SaverP, ctypes.c_char_p, _SaveOptionsP]),
    "psv_saver_free": (None, [_SaverP]),
    "psv_save_options_new": (_SaveOptionsP, []),
    "psv_save_options_set_threads": (_c_status, [_SaveOptionsP, _c_size]),
    "psv_save_options_set_fsync": (_c_status, [_SaveOptionsP, ctypes.c_bool]),
    "psv_save_options_free": (None, [_SaveOptionsP]),
    # restore
    "psv_restore_options_new": (_RestoreOptionsP, []),
    "psv_restore_options_set_threads": (_c_status, [_RestoreOptionsP, _c_size]),
    "psv_restore_options_set_verify_crc": (_c_status, [_RestoreOptionsP, ctypes.c_bool]),
    "psv_restore_options_set_limits": (
        _c_status,
        [_RestoreOptionsP, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64],
    ),
    "psv_restore_options_free": (None, [_RestoreOptionsP]),
    "psv_restore": (
        _c_status,
        [ctypes.c_char_p, _RestoreOptionsP, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_archive_count": (_c_size, [_ArchiveP]),
    "psv_archive_find": (
        _c_status,
        [_ArchiveP, ctypes.c_char_p, ctypes.POINTER(_c_size)],
    ),
    "psv_archive_key": (ctypes.c_char_p, [_ArchiveP, _c_size]),
    "psv_archive_data": (ctypes.c_void_p, [_ArchiveP, _c_size]),
    "psv_archive_nbytes": (_c_size, [_ArchiveP, _c_size]),
    "psv_archive_dtype": (_c_dtype, [_ArchiveP, _c_size]),
    "psv_archive_descr": (ctypes.c_char_p, [_ArchiveP, _c_size]),
    "psv_archive_itemsize": (_c_size, [_ArchiveP, _c_size]),
    "psv_archive_ndim": (_c_size, [_ArchiveP, _c_size]),
    "psv_archive_shape": (_c_i64p, [_ArchiveP, _c_size]),
    "psv_archive_fortran_order": (ctypes.c_bool, [_ArchiveP, _c_size]),
    "psv_archive_block": (ctypes.c_void_p, [_ArchiveP, ctypes.POINTER(_c_size)]),
    "psv_archive_skipped_count": (_c_size, [_ArchiveP]),
    "psv_archive_skipped_name": (ctypes.c_char_p, [_ArchiveP, _c_size]),
    "psv_free": (None, [_ArchiveP]),
    # errors / version
    "psv_status_str": (ctypes.c_char_p, [_c_status]),
    "psv_last_error_message": (_c_size, [ctypes.c_char_p, _c_size]),
    "psv_version": (ctypes.c_char_p, []),
    "psv_abi_version": (ctypes.c_uint32, []),
}

_lib_lock = threading.Lock()
_lib_handle: Optional[ctypes.CDLL] = None


def library_path() -> Path:
    """Where libpsv is loaded from: ``$PSV_LIBRARY`` or ``<repo>/target/release/libpsv.so``."""
    env = os.environ.get("PSV_LIBRARY")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "target" / "release" / "libpsv.so"


def _lib() -> ctypes.CDLL:
    """Load libpsv once (lazily, so importing this module never fails) and declare prototypes."""
    global _lib_handle
    if _lib_handle is not None:
        return _lib_handle
    with _lib_lock:
        if _lib_handle is None:
            path = library_path()
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                raise OSError(
                    f"cannot load libpsv from {str(path)!r} (set PSV_LIBRARY or run "
                    f"`cargo build --release`): {exc}"
                ) from exc
            for name, (restype, argtypes) in _PROTOTYPES.items():
                fn = getattr(lib, name)
                fn.restype = restype
                fn.argtypes = argtypes
            abi = lib.psv_abi_version()
            if abi != PSV_ABI_VERSION:
                raise OSError(
                    f"{str(path)!r} has ABI version {abi}, this binding was written for "
                    f"{PSV_ABI_VERSION} (psv.h PSV_ABI_VERSION)"
                )
            _lib_handle = lib
    return _lib_handle


def version() -> str:
    """The library version string, e.g. ``"0.1.0"``."""
    return _lib().psv_version().decode("ascii")


def abi_version() -> int:
    """``psv_abi_version()``."""
    return int(_lib().psv_abi_version())


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------
class PsvError(Exception):
    """A libpsv call failed.

    Attributes:
        status: the ``psv_status`` code (int).
        status_name: its name from ``psv_status_str`` (e.g. ``"PSV_ERR_IO"``).
        message: the thread's ``psv_last_error_message`` right after the failing call.
        function: the C function that failed.
    """

    def __init__(self, status: int, status_name: str, message: str, function: str = "") -> None:
        self.status = int(status)
        self.status_name = status_name
        self.message = message
        self.function = function
        where = f" in {function}" if function else ""
        super().__init__(f"{status_name}{where}: {message}")


def _last_error_message(lib: ctypes.CDLL) -> str:
    n = lib.psv_last_error_message(None, 0)
    if n == 0:
        return ""
    buf = ctypes.create_string_buffer(n + 1)
    lib.psv_last_error_message(buf, n + 1)
    return buf.value.decode("utf-8", "replace")


def _error(lib: ctypes.CDLL, status: int, function: str) -> PsvError:
    """Build the exception; must run right after the failing call, on the same thread."""
    message = _last_error_message(lib)
    name_b = lib.psv_status_str(status)
    name = name_b.decode("ascii", "replace") if name_b else STATUS_NAMES.get(status, "?")
    return PsvError(status, name, message, function)


def _check(lib: ctypes.CDLL, status: int, function: str) -> None:
    if status != PSV_OK:
        raise _error(lib, status, function)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _threads_arg(threads: Optional[int]) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise TypeError(f"threads must be an int or None, not {type(threads).__name__}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = all cores), got {threads}")
    return threads


def _encode_path(path: PathLike) -> bytes:
    b = os.fsencode(os.fspath(path))
    if b"\0" in b:
        raise ValueError(f"path contains a NUL byte: {path!r}")
    return b


def _with_npz(path: PathLike) -> Union[str, bytes]:
    """numpy's rule: ``.npz`` is appended when the path does not end in it."""
    p = os.fspath(path)
    if isinstance(p, bytes):
        return p if p.endswith(b".npz") else p + b".npz"
    return p if p.endswith(".npz") else p + ".npz"


def _encode_key(key: Any) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"array keys must be str, not {type(key).__name__}: {key!r}")
    if "\0" in key:
        raise ValueError(f"array key contains a NUL character: {key!r}")
    return key.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates


def _descr_of(dt: np.dtype) -> str:
    """numpy's ``dtype_to_descr`` rendered as the header text renders it."""
    if dt.names is not None:
        return repr(dt.descr)
    return dt.str


def _descr_to_dtype(descr: str) -> np.dtype:
    """Exact numpy dtype from a header descr string."""
    s = descr.strip()
    if s.startswith(("[", "(")):
        return np.lib.format.descr_to_dtype(ast.literal_eval(s))
    return np.dtype(s)


def _is_array_list(obj: Any) -> bool:
    return isinstance(obj, (list, tuple)) and all(isinstance(x, np.ndarray) for x in obj)


# ---------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------
class ParallelSaver:
    """Collects arrays and writes them as one ``.npz`` with libpsv.

    ``ParallelSaver(a, b, labels=c)`` follows ``numpy.savez``: keyword arrays keep
    their names, positional ones become ``arr_0, arr_1, ...``; members are written
    keyword names first (in the given order), then ``arr_i``.  A keyword named like a
    positional one (``arr_0``) raises ValueError, as in numpy.

    For the seed tool's API, a single positional ``dict`` is taken as key -> array
    and a single positional list/tuple whose items are all ``numpy.ndarray`` as the
    list of arrays (``arr_0, ...``; an empty list/tuple therefore saves no arrays).
    Any other input goes through ``np.asarray`` (``ParallelSaver([1, 2, 3])`` saves one
    array ``arr_0``, as ``numpy.savez`` does).

    Arrays are added to the C saver at construction time (errors surface there);
    the library borrows their memory, so this object keeps references to them
    until :meth:`close`.  Non-contiguous arrays are copied to C order;
    F-contiguous (and not C-contiguous) arrays are saved as-is with
    ``fortran_order=True``, as numpy does.  Object arrays (and numpy's non-legacy
    dtypes such as StringDType, which numpy would pickle) raise TypeError.
    """

    def __init__(self, *args: Any, **kwds: Any) -> None:
        self._lib = _lib()
        self._keys: List[str] = []
        self._arrays: List[np.ndarray] = []  # the exact buffers the C saver borrows
        self._shapes: List[Any] = []
        self._handle: Optional[Any] = None
        self._finalizer: Optional[weakref.finalize] = None
        # A psv_saver must be used by one thread at a time (ctypes releases the GIL).
        self._lock = threading.RLock()

        items = self._collect(args, kwds)
        # Validate and prepare in Python before touching C.
        prepared = [(k, _encode_key(k)) + self._prepare(k, v) for k, v in items]

        handle = self._lib.psv_saver_new()
        if not handle:
            raise MemoryError("psv_saver_new returned NULL")
        self._handle = handle
        self._finalizer = weakref.finalize(self, self._lib.psv_saver_free, handle)
        try:
            for key, bkey, arr, fortran in prepared:
                self._add_prepared(key, bkey, arr, fortran)
        except BaseException:
            self.close()
            raise

    # -- input handling -------------------------------------------------
    @staticmethod
    def _collect(args: Tuple[Any, ...], kwds: Mapping[str, Any]) -> List[Tuple[str, Any]]:
        if len(args) == 1 and isinstance(args[0], Mapping):
            # Seed API: a dict of key -> array (then any keywords; duplicates reach C).
            return list(args[0].items()) + list(kwds.items())
        if len(args) == 1 and _is_array_list(args[0]):
            args = tuple(args[0])
        items: List[Tuple[str, Any]] = list(kwds.items())
        for i, val in enumerate(args):
            key = f"arr_{i}"
            if key in kwds:
                raise ValueError(f"Cannot use un-named variables and keyword {key}")
            items.append((key, val))
        return items

    @staticmethod
    def _prepare(key: str, value: Any) -> Tuple[np.ndarray, bool]:
        arr = np.asarray(value)
        dt = arr.dtype
        if dt.hasobject:
            raise TypeError(
                f"array {key!r}: object dtype {dt!r} cannot be saved without pickle; "
                "libpsv does not write pickled arrays"
            )
        if not getattr(type(dt), "_legacy", True):
            raise TypeError(
                f"array {key!r}: dtype {dt!r} is not a legacy numpy dtype "
                "(numpy would pickle it); libpsv does not write pickled arrays"
            )
        if arr.flags.c_contiguous:
            return arr, False
        if arr.flags.f_contiguous:
            return arr, True
        return np.ascontiguousarray(arr), False

    def _add_prepared(self, key: str, bkey: bytes, arr: np.ndarray, fortran: bool) -> None:
        lib = self._lib
        ndim = arr.ndim
        shape = (ctypes.c_int64 * ndim)(*arr.shape) if ndim else None
        data = ctypes.c_void_p(arr.ctypes.data)
        code = _NATIVE_CODES.get(arr.dtype.str) if arr.dtype.names is None else None
        if code is not None and not fortran:
            st = lib.psv_saver_add(self._handle, bkey, data, code, shape, ndim)
            if st != PSV_OK:
                raise _error(lib, st, "psv_saver_add")
        else:
            descr = _descr_of(arr.dtype).encode("utf-8")
            st = lib.psv_saver_add_descr(
                self._handle, bkey, data, arr.nbytes, descr, shape, ndim, fortran
            )
            if st != PSV_OK:
                raise _error(lib, st, "psv_saver_add_descr")
        self._keys.append(key)
        self._arrays.append(arr)
        self._shapes.append(shape)

    # -- public API -------------------------------------------------------
    def add(self, key: str, value: Any) -> None:
        """Add one more array under ``key`` (a duplicate key raises PsvError INVALID_ARG)."""
        arr, fortran = self._prepare(key, value)
        bkey = _encode_key(key)
        with self._lock:
            self._require_open()
            self._add_prepared(key, bkey, arr, fortran)

    @property
    def keys(self) -> List[str]:
        """Keys in the order they will be written."""
        return list(self._keys)

    def __len__(self) -> int:
        with self._lock:
            self._require_open()
            return int(self._lib.psv_saver_count(self._handle))

    def save(self, path: PathLike, *, threads: Optional[int] = None, fsync: bool = False) -> Union[str, bytes]:
        """Write all arrays to ``path`` (``.npz`` appended when missing), atomically.

        Args:
            path: target file.
            threads: worker threads; None or 0 = all cores.
            fsync: fsync the file (and directory) before returning.

        Returns:
            The path written (with ``.npz``), as str (bytes for a bytes path).

        Raises:
            PsvError: on any library error (e.g. PSV_ERR_IO with the OS text).

        The arrays are read while this runs: do not modify them from another thread
        meanwhile.  Calls on one saver are serialised by a lock.
        """
        lib = self._lib
        nthreads = _threads_arg(threads)
        bpath = _encode_path(path)
        with self._lock:
            self._require_open()
            opts = lib.psv_save_options_new()
            if not opts:
                raise MemoryError("psv_save_options_new returned NULL")
            try:
                _check(lib, lib.psv_save_options_set_threads(opts, nthreads), "psv_save_options_set_threads")
                _check(lib, lib.psv_save_options_set_fsync(opts, bool(fsync)), "psv_save_options_set_fsync")
                st = lib.psv_saver_save(self._handle, bpath, opts)
                if st != PSV_OK:
                    raise _error(lib, st, "psv_saver_save")
            finally:
                lib.psv_save_options_free(opts)
        return _with_npz(path)

    def close(self) -> None:
        """Free the C saver and drop the array references (idempotent)."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()  # calls psv_saver_free once
            self._handle = None
            self._arrays = []
            self._shapes = []

    @property
    def closed(self) -> bool:
        return self._handle is None

    def _require_open(self) -> None:
        if self._handle is None:
            raise ValueError("ParallelSaver is closed")

    def __enter__(self) -> "ParallelSaver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._keys)} arrays"
        return f"<ParallelSaver {state}>"


# ---------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------
class RestoredBlock:
    """Owns one ``psv_archive`` (and so its single data block).

    Exposes the block as ``__array_interface__`` (a writable uint8 vector), which is
    what every restored array ultimately views.  ``psv_free`` runs when this object
    is garbage-collected, i.e. when the last array referring to it dies.
    """

    def __init__(self, handle: Any, lib: ctypes.CDLL) -> None:
        self._finalizer = weakref.finalize(self, lib.psv_free, handle)
        self._handle = handle
        n = _c_size(0)
        ptr = lib.psv_archive_block(handle, ctypes.byref(n))
        self.address: int = int(ptr or 0)
        self.nbytes: int = int(n.value)

    @property
    def __array_interface__(self) -> Dict[str, Any]:  # noqa: D105
        return {
            "version": 3,
            "shape": (self.nbytes,),
            "typestr": "|u1",
            "data": (self.address, False),
        }

    @property
    def alive(self) -> bool:
        """False once psv_free has run."""
        return self._finalizer.alive

    def __repr__(self) -> str:
        return f"<RestoredBlock 0x{self.address:x} {self.nbytes} bytes>"


class RestoredArrays(Dict[str, np.ndarray]):
    """The dict returned by :func:`restore`.

    Attributes:
        skipped: names of archive members that are not arrays (not ``*.npy`` or no
            npy magic), which numpy would return as raw bytes.
    """

    skipped: List[str]

    def __init__(self, items: Iterable[Tuple[str, np.ndarray]] = (), skipped: Iterable[str] = ()) -> None:
        super().__init__(items)
        self.skipped = list(skipped)


def block_of(arr: np.ndarray) -> Optional[RestoredBlock]:
    """The :class:`RestoredBlock` an array returned by :func:`restore` views, or None."""
    obj: Any = arr
    while obj is not None:
        if isinstance(obj, RestoredBlock):
            return obj
        obj = getattr(obj, "base", None)
    return None


def _decode(b: Optional[bytes]) -> str:
    if b is None:
        raise RuntimeError("libpsv returned NULL for a valid index")
    return b.decode("utf-8", "surrogateescape")


def restore(path: PathLike, *, threads: Optional[int] = None, verify: bool = True) -> RestoredArrays:
    """Read any ``.npz`` into one 64-byte-aligned block; return key -> zero-copy view.

    Args:
        path: the archive (``.npz`` appended when missing, like numpy).
        threads: worker threads; None or 0 = all cores.
        verify: check every member's CRC-32 against the central directory.

    Returns:
        A :class:`RestoredArrays` dict in central-directory order, with exact dtype,
        shape and memory order (Fortran when the header says so).  Arrays are
        writable and share one block that is freed with the last of them.
        ``.skipped`` lists the non-array members.

    Raises:
        PsvError: on any library error (IO, FORMAT, CRC, UNSUPPORTED, ...).
    """
    lib = _lib()
    nthreads = _threads_arg(threads)
    bpath = _encode_path(path)
    opts = lib.psv_restore_options_new()
    if not opts:
        raise MemoryError("psv_restore_options_new returned NULL")
    handle = _ArchiveP()
    try:
        _check(lib, lib.psv_restore_options_set_threads(opts, nthreads), "psv_restore_options_set_threads")
        _check(lib, lib.psv_restore_options_set_verify_crc(opts, bool(verify)), "psv_restore_options_set_verify_crc")
        st = lib.psv_restore(bpath, opts, ctypes.byref(handle))
        if st != PSV_OK:
            raise _error(lib, st, "psv_restore")
    finally:
        lib.psv_restore_options_free(opts)
    if not handle:
        raise RuntimeError("psv_restore returned PSV_OK but no archive")
    try:
        owner = RestoredBlock(handle, lib)
    except BaseException:
        lib.psv_free(handle)
        raise
    return _build_arrays(lib, handle, owner)


def _build_arrays(lib: ctypes.CDLL, handle: Any, owner: RestoredBlock) -> RestoredArrays:
    # One uint8 view of the whole block (its .base is `owner`); every array views it.
    block = np.asarray(owner)
    dtype_cache: Dict[str, np.dtype] = {}
    items: List[Tuple[str, np.ndarray]] = []
    for i in range(lib.psv_archive_count(handle)):
        key = _decode(lib.psv_archive_key(handle, i))
        descr = _decode(lib.psv_archive_descr(handle, i))
        dt = dtype_cache.get(descr)
        if dt is None:
            dt = dtype_cache[descr] = _descr_to_dtype(descr)
        ndim = lib.psv_archive_ndim(handle, i)
        shape_p = lib.psv_archive_shape(handle, i)
        if ndim and not shape_p:
            raise RuntimeError(f"libpsv: NULL shape for key {key!r} with ndim {ndim}")
        shape = tuple(int(shape_p[j]) for j in range(ndim))
        nbytes = int(lib.psv_archive_nbytes(handle, i))
        expected = math.prod(shape) * dt.itemsize
        if expected != nbytes:
            raise RuntimeError(
                f"libpsv metadata mismatch for key {key!r}: descr {descr!r} shape {shape} "
                f"means {expected} bytes, library says {nbytes}"
            )
        ptr = lib.psv_archive_data(handle, i)
        if ptr is None:
            raise RuntimeError(f"libpsv: NULL data pointer for key {key!r}")
        order = "F" if lib.psv_archive_fortran_order(handle, i) else "C"
        offset = ptr - owner.address
        if 0 <= offset and offset + nbytes <= owner.nbytes:
            arr = np.ndarray(shape, dtype=dt, buffer=block, offset=offset, order=order)
        elif nbytes == 0:
            # A zero-byte array whose pointer is outside the block: view an empty
            # region at that pointer, still owned by `owner`.
            region = np.asarray(_EmptyRegion(owner, ptr))
            arr = np.ndarray(shape, dtype=dt, buffer=region, offset=0, order=order)
        else:
            raise RuntimeError(
                f"libpsv: data of key {key!r} (0x{ptr:x}, {nbytes} bytes) lies outside the "
                f"block 0x{owner.address:x}+{owner.nbytes}"
            )
        items.append((key, arr))
    skipped = [
        _decode(lib.psv_archive_skipped_name(handle, j))
        for j in range(lib.psv_archive_skipped_count(handle))
    ]
    return RestoredArrays(items, skipped)


class _EmptyRegion:
    """A zero-length buffer at ``address`` that keeps the block owner alive."""

    def __init__(self, owner: RestoredBlock, address: int) -> None:
        self.base = owner
        self.__array_interface__ = {
            "version": 3,
            "shape": (0,),
            "typestr": "|u1",
            "data": (address, False),
        }
