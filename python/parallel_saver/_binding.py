"""The ctypes binding of libpsv: finding and loading the library, every function's prototype,
status codes and :class:`PsvError`.

Two views of the library exist. :func:`_lib` is the raw ``ctypes.CDLL`` with prototypes
declared: its functions return what C returns (status codes, NULL as None), for low-level
use and tests. :func:`_functions` holds separate function objects with ``errcheck`` set:
a ``psv_status`` result other than ``PSV_OK`` raises :class:`PsvError` (built right after the
call, on the same thread, from the thread's last-error message) and a constructor's NULL
raises MemoryError. The API in :mod:`parallel_saver._api` uses the checked view.

Library lookup order (see :func:`library_path`):

1. ``$PSV_LIBRARY``, when set: the only place tried (an explicit choice is never silently
   replaced by another library);
2. the library bundled in this package (``parallel_saver/libpsv.so``, put there by the wheel);
3. the system's, as ``ctypes.util.find_library("psv")`` finds it (e.g. after
   ``make install PREFIX=/usr/local``).

When none loads, OSError names every place tried and why each failed.
"""

from __future__ import annotations

import collections.abc
import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

# ---------------------------------------------------------------------------
# Status and dtype codes (psv.h)
# ---------------------------------------------------------------------------
#: Success: 0 by definition (psv.h).  The error codes and every status name are not written
#: here but read from the library's one status table through ``psv_status_str`` when it is
#: loaded: :data:`STATUS_NAMES` maps code -> name, and ``PSV_ERR_IO`` & co. are module
#: attributes resolved on first use (see :func:`__getattr__`).
PSV_OK = 0

#: psv_status_str's answer for a code the library does not have.
_UNKNOWN_STATUS = "PSV_ERR_UNKNOWN"
#: Codes asked of psv_status_str at load time: they are small, append-only integers.
_STATUS_SCAN = 256


class _StatusNames(collections.abc.Mapping):
    """status code -> name as the header spells it (``"PSV_ERR_IO"``), read from the library's
    ``psv_status_str`` when the library is loaded (first use of this mapping loads it)."""

    def _table(self) -> Dict[int, str]:
        _lib()
        return _status_by_code

    def __getitem__(self, code: int) -> str:
        return self._table()[code]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return f"STATUS_NAMES({self._table()!r})"


#: status code -> name, from the library (psv_status_str); read-only.
STATUS_NAMES: Mapping[int, str] = _StatusNames()
_status_by_code: Dict[int, str] = {}
_status_by_name: Dict[str, int] = {}


def _read_statuses(lib: ctypes.CDLL) -> None:
    """Fill the status tables from the library's psv_status_str (under the load lock)."""
    by_code = {}
    for code in range(_STATUS_SCAN):
        name = lib.psv_status_str(code).decode("ascii")
        if name != _UNKNOWN_STATUS:
            by_code[code] = name
    if by_code.get(PSV_OK) != "PSV_OK":
        raise OSError(f"libpsv's psv_status_str({PSV_OK}) is {by_code.get(PSV_OK)!r}, not 'PSV_OK'")
    _status_by_code.clear()
    _status_by_code.update(by_code)
    _status_by_name.clear()
    _status_by_name.update({name: code for code, name in by_code.items()})


def __getattr__(name: str) -> int:
    """``PSV_ERR_*`` status codes (``parallel_saver.PSV_ERR_IO``), taken from the library's
    status table; the first use loads the library."""
    if name.startswith("PSV_ERR_"):
        _lib()
        if name in _status_by_name:
            return _status_by_name[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: psv.h PSV_ABI_VERSION this binding matches (checked when the library is loaded).
PSV_ABI_VERSION = 100

PSV_DTYPE_INVALID = -1
PSV_DTYPE_OTHER = 15

#: psv_save_options_set_layout values (newer libraries only; see ParallelSaver.save).
PSV_LAYOUT_NPZ = 0
PSV_LAYOUT_DIR = 1
_LAYOUTS: Dict[str, int] = {"npz": PSV_LAYOUT_NPZ, "dir": PSV_LAYOUT_DIR}

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
#: The same keyed by dtype (a dict lookup by dtype costs a third of one by ``dtype.str``).
_NATIVE_BY_DTYPE: Dict[np.dtype, int] = {np.dtype(t): c for t, c in DTYPE_CODES.items()}


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


class _Buffer(ctypes.Structure):
    """Opaque ``psv_buffer`` (an archive in library memory)."""


class _Prepared(ctypes.Structure):
    """Opaque ``psv_prepared`` (a planned save whose byte ranges can be rendered)."""


class _Job(ctypes.Structure):
    """Opaque ``psv_job`` (an asynchronous save)."""


_SaverP = ctypes.POINTER(_Saver)
_BufferP = ctypes.POINTER(_Buffer)
_PreparedP = ctypes.POINTER(_Prepared)
_JobP = ctypes.POINTER(_Job)
_ArchiveP = ctypes.POINTER(_Archive)
_SaveOptionsP = ctypes.POINTER(_SaveOptions)
_RestoreOptionsP = ctypes.POINTER(_RestoreOptions)

_c_status = ctypes.c_int32
#: Marks a ``psv_status`` result in the prototype tables (declared as ``_c_status``).
_STATUS = object()
_c_dtype = ctypes.c_int32
_c_size = ctypes.c_size_t
_c_i64p = ctypes.POINTER(ctypes.c_int64)

#: psv_progress_cb: int (*)(void *userdata, uint64_t done, uint64_t total)
_ProgressCB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
#: psv_write_fn: int (*)(void *userdata, const void *buf, size_t len)
_WriteFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
#: psv_read_fn: int64_t (*)(void *userdata, void *buf, size_t len)
_ReadFn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

# name -> (restype, argtypes). Every exported function of psv.h. _STATUS marks a psv_status
# result: a checked function (see _Functions) raises PsvError for it.
_PROTOTYPES: Dict[str, Tuple[Any, List[Any]]] = {
    # save
    "psv_saver_new": (_SaverP, []),
    "psv_saver_add": (
        _STATUS,
        [_SaverP, ctypes.c_char_p, ctypes.c_void_p, _c_dtype, _c_i64p, _c_size],
    ),
    "psv_saver_add_descr": (
        _STATUS,
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
    "psv_saver_save": (_STATUS, [_SaverP, ctypes.c_char_p, _SaveOptionsP]),
    "psv_saver_free": (None, [_SaverP]),
    "psv_save_options_new": (_SaveOptionsP, []),
    "psv_save_options_set_threads": (_STATUS, [_SaveOptionsP, _c_size]),
    "psv_save_options_set_fsync": (_STATUS, [_SaveOptionsP, ctypes.c_bool]),
    "psv_save_options_set_compression": (_STATUS, [_SaveOptionsP, ctypes.c_int]),
    "psv_save_options_set_progress": (_STATUS, [_SaveOptionsP, _ProgressCB, ctypes.c_void_p]),
    "psv_save_options_free": (None, [_SaveOptionsP]),
    # restore
    "psv_restore_options_new": (_RestoreOptionsP, []),
    "psv_restore_options_set_threads": (_STATUS, [_RestoreOptionsP, _c_size]),
    "psv_restore_options_set_verify_crc": (_STATUS, [_RestoreOptionsP, ctypes.c_bool]),
    "psv_restore_options_set_limits": (
        _STATUS,
        [_RestoreOptionsP, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64],
    ),
    "psv_restore_options_set_progress": (
        _STATUS,
        [_RestoreOptionsP, _ProgressCB, ctypes.c_void_p],
    ),
    "psv_restore_options_set_keys": (
        _STATUS,
        [_RestoreOptionsP, ctypes.POINTER(ctypes.c_char_p), _c_size],
    ),
    "psv_restore_options_set_metadata_only": (_STATUS, [_RestoreOptionsP, ctypes.c_bool]),
    "psv_restore_options_set_native_endian": (_STATUS, [_RestoreOptionsP, ctypes.c_bool]),
    "psv_restore_options_set_mmap": (_STATUS, [_RestoreOptionsP, ctypes.c_bool]),
    "psv_restore_options_free": (None, [_RestoreOptionsP]),
    "psv_restore": (
        _STATUS,
        [ctypes.c_char_p, _RestoreOptionsP, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_restore_from_memory": (
        _STATUS,
        [ctypes.c_void_p, _c_size, _RestoreOptionsP, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_archive_count": (_c_size, [_ArchiveP]),
    "psv_archive_find": (
        _STATUS,
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
    # bulk accessors: one call for every array (a ctypes call costs ~0.5 us; 20000 arrays
    # with eight accessor calls each would cost more than the restore itself)
    "psv_archive_describe": (
        _STATUS,
        [_ArchiveP] + [ctypes.c_void_p] * 6,
    ),
    "psv_archive_total_ndim": (_c_size, [_ArchiveP]),
    "psv_archive_mapping": (ctypes.c_void_p, [_ArchiveP, ctypes.POINTER(_c_size)]),
    "psv_archive_key_list": (ctypes.c_void_p, [_ArchiveP, ctypes.POINTER(_c_size)]),
    "psv_archive_descr_list": (ctypes.c_void_p, [_ArchiveP, ctypes.POINTER(_c_size)]),
    "psv_free": (None, [_ArchiveP]),
    # errors / version
    "psv_status_str": (ctypes.c_char_p, [_c_status]),
    "psv_last_error_message": (_c_size, [ctypes.c_char_p, _c_size]),
    "psv_version": (ctypes.c_char_p, []),
    "psv_abi_version": (ctypes.c_uint32, []),
}

# Functions newer than the ABI this binding requires: looked up when first used, so an older
# library still loads (the caller gets a clear error only when it asks for the feature).
_OPTIONAL_PROTOTYPES: Dict[str, Tuple[Any, List[Any]]] = {
    "psv_save_options_set_layout": (_STATUS, [_SaveOptionsP, ctypes.c_int32]),
    # keys, data, dtypes, shapes, ndims: addresses of arrays built with numpy
    "psv_saver_add_many": (_STATUS, [_SaverP, _c_size] + [ctypes.c_void_p] * 5),
    # the errno behind the calling thread's last error (0 when it did not come from the OS)
    "psv_last_error_os_code": (ctypes.c_int32, []),
    # destinations: fds, write callbacks, memory, prepared byte ranges
    "psv_saver_save_fd": (_STATUS, [_SaverP, ctypes.c_int, _SaveOptionsP]),
    "psv_saver_save_stream": (_STATUS, [_SaverP, _WriteFn, ctypes.c_void_p, _SaveOptionsP]),
    "psv_saver_size": (_STATUS, [_SaverP, _SaveOptionsP, ctypes.POINTER(ctypes.c_uint64)]),
    "psv_saver_save_to_buffer": (_STATUS, [_SaverP, ctypes.c_void_p, _c_size, _SaveOptionsP]),
    "psv_saver_save_to_alloc": (_STATUS, [_SaverP, _SaveOptionsP, ctypes.POINTER(_BufferP)]),
    "psv_buffer_data": (ctypes.c_void_p, [_BufferP]),
    "psv_buffer_len": (_c_size, [_BufferP]),
    "psv_buffer_free": (None, [_BufferP]),
    "psv_saver_prepare": (_STATUS, [_SaverP, _SaveOptionsP, ctypes.POINTER(_PreparedP)]),
    "psv_prepared_size": (ctypes.c_uint64, [_PreparedP]),
    "psv_prepared_render": (_STATUS, [_PreparedP, ctypes.c_uint64, _c_size, ctypes.c_void_p]),
    "psv_prepared_free": (None, [_PreparedP]),
    # asynchronous saves (psv_job)
    "psv_save_options_set_snapshot": (_STATUS, [_SaveOptionsP, ctypes.c_bool]),
    "psv_saver_save_async": (_STATUS, [_SaverP, ctypes.c_char_p, _SaveOptionsP, ctypes.POINTER(_JobP)]),
    "psv_saver_save_fd_async": (_STATUS, [_SaverP, ctypes.c_int, _SaveOptionsP, ctypes.POINTER(_JobP)]),
    "psv_saver_save_stream_async": (
        _STATUS,
        [_SaverP, _WriteFn, ctypes.c_void_p, _SaveOptionsP, ctypes.POINTER(_JobP)],
    ),
    "psv_saver_save_to_buffer_async": (
        _STATUS,
        [_SaverP, ctypes.c_void_p, _c_size, _SaveOptionsP, ctypes.POINTER(_JobP)],
    ),
    "psv_saver_save_to_alloc_async": (_STATUS, [_SaverP, _SaveOptionsP, ctypes.POINTER(_JobP)]),
    "psv_job_take_buffer": (_STATUS, [_JobP, ctypes.POINTER(_BufferP)]),
    "psv_saver_staging_bytes": (_c_size, [_SaverP]),
    # raw status (not checked): PSV_ERR_TIMEOUT and the save's own error are results here
    "psv_job_wait": (_c_status, [_JobP, ctypes.c_int64]),
    "psv_job_done": (ctypes.c_bool, [_JobP]),
    "psv_job_progress": (_STATUS, [_JobP, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64)]),
    "psv_job_cancel": (_STATUS, [_JobP]),
    "psv_job_error_message": (_c_size, [_JobP, ctypes.c_char_p, _c_size]),
    "psv_job_error_os_code": (ctypes.c_int32, [_JobP]),
    "psv_job_free": (None, [_JobP]),
    # sources: fds, read callbacks; caller memory
    "psv_restore_fd": (_STATUS, [ctypes.c_int, _RestoreOptionsP, ctypes.POINTER(_ArchiveP)]),
    "psv_restore_stream": (_STATUS, [_ReadFn, ctypes.c_void_p, _RestoreOptionsP, ctypes.POINTER(_ArchiveP)]),
    "psv_restore_into": (
        _STATUS,
        [ctypes.c_char_p, _RestoreOptionsP, ctypes.c_void_p, _c_size, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_restore_fd_into": (
        _STATUS,
        [ctypes.c_int, _RestoreOptionsP, ctypes.c_void_p, _c_size, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_restore_from_memory_into": (
        _STATUS,
        [ctypes.c_void_p, _c_size, _RestoreOptionsP, ctypes.c_void_p, _c_size, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_restore_stream_into": (
        _STATUS,
        [_ReadFn, ctypes.c_void_p, _RestoreOptionsP, ctypes.c_void_p, _c_size, ctypes.POINTER(_ArchiveP)],
    ),
    "psv_archive_offset": (_c_size, [_ArchiveP, _c_size]),
    "psv_archive_offsets": (_STATUS, [_ArchiveP, ctypes.c_void_p]),
    "psv_save_options_set_alignment": (_STATUS, [_SaveOptionsP, _c_size]),
    "psv_archive_required_bytes": (_c_size, [_ArchiveP]),
}

_lib_lock = threading.Lock()
_lib_handle: Optional[ctypes.CDLL] = None
_lib_file: Optional[str] = None
_functions_handle: Optional["_Functions"] = None

#: The library's file name in this package (the wheel puts it there) and on this platform.
BUNDLED_NAME = {"darwin": "libpsv.dylib", "win32": "psv.dll"}.get(sys.platform, "libpsv.so")


def _candidates() -> Iterator[Tuple[str, Optional[str]]]:
    """(where, path or name) for every place the library is looked for, in order, each
    computed only when reached; a None path means that place has nothing to offer."""
    env = os.environ.get("PSV_LIBRARY")
    if env:
        yield "$PSV_LIBRARY", env
        return
    bundled = Path(__file__).resolve().parent / BUNDLED_NAME
    yield "bundled with the package", str(bundled) if bundled.exists() else None
    yield "system (ctypes.util.find_library('psv'))", ctypes.util.find_library("psv")


def _loaded_file(lib: ctypes.CDLL, fallback: str) -> str:
    """The file the dynamic loader mapped for ``lib`` (dladdr of one of its functions), so that
    a library found by name reports its real path; ``fallback`` where dladdr is unavailable."""

    class _DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError, TypeError):
        return fallback
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    address = ctypes.cast(lib.psv_version, ctypes.c_void_p).value
    if dladdr(address, ctypes.byref(info)) and info.dli_fname:
        return os.path.abspath(os.fsdecode(info.dli_fname))
    return fallback


def _load() -> Tuple[ctypes.CDLL, str]:
    """Load libpsv from the first place that has it (see the module docstring), or raise
    OSError naming every place tried."""
    tried = []
    for where, path in _candidates():
        if path is None:
            tried.append(f"{where}: not found")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as exc:
            tried.append(f"{where}: {path}: {exc}")
    if os.environ.get("PSV_LIBRARY"):
        tried.append("(the bundled and system libraries are not tried when PSV_LIBRARY is set)")
    raise OSError(
        "cannot load libpsv; tried, in order:\n  "
        + "\n  ".join(tried)
        + "\n(reinstall the package with `pip install`, install libpsv with `make install`, or "
        "set PSV_LIBRARY to the path of libpsv.so)"
    )


def _declare(fn: Any, restype: Any, argtypes: List[Any]) -> Any:
    """Set ``fn``'s prototype (``_STATUS`` stands for ``_c_status``); returns ``fn``."""
    fn.restype = _c_status if restype is _STATUS else restype
    fn.argtypes = argtypes
    return fn


def _lib() -> ctypes.CDLL:
    """Load libpsv once (lazily, so importing this module never fails) and declare prototypes.

    The functions of the returned CDLL are raw: status codes come back as ints, NULL as None
    (see :func:`_functions` for the checked ones)."""
    global _lib_handle, _lib_file, _functions_handle
    if _lib_handle is not None:
        return _lib_handle
    with _lib_lock:
        if _lib_handle is None:
            lib, path = _load()
            for name, (restype, argtypes) in _PROTOTYPES.items():
                _declare(getattr(lib, name), restype, argtypes)
            abi = lib.psv_abi_version()
            if abi != PSV_ABI_VERSION:
                raise OSError(
                    f"{path!r} has ABI version {abi}, this binding was written for "
                    f"{PSV_ABI_VERSION} (psv.h PSV_ABI_VERSION)"
                )
            _read_statuses(lib)
            _functions_handle = _Functions(lib)
            _lib_file = _loaded_file(lib, path)
            _lib_handle = lib
    return _lib_handle


def library_path() -> Path:
    """The file libpsv was loaded from (loading it first if needed): ``$PSV_LIBRARY``, the
    library bundled in this package, or the system's, in that order of preference.

    Raises:
        OSError: no library could be loaded (the message names every place tried).
    """
    _lib()
    assert _lib_file is not None
    return Path(_lib_file)


def _checked(fn: Any, name: str, restype: Any, argtypes: List[Any]) -> Any:
    """A new function object for the same C function as ``fn`` (ctypes shares ``lib.name``
    between every user of the CDLL, so its prototype must stay raw) with the prototype and an
    ``errcheck``: PsvError for a ``psv_status`` other than PSV_OK, MemoryError for a NULL
    from a ``*_new`` constructor."""
    address = ctypes.cast(fn, ctypes.c_void_p).value
    if not address:
        raise OSError(f"libpsv: {name} has no address")
    real_restype = _c_status if restype is _STATUS else restype
    checked: Any = ctypes.CFUNCTYPE(real_restype, *argtypes)(address)
    if restype is _STATUS:

        def errcheck(result: int, _func: Any, _args: Tuple[Any, ...]) -> int:
            if result != PSV_OK:
                raise _error(_lib(), result, name)
            return result

        checked.errcheck = errcheck
    elif name.endswith("_new"):

        def errcheck_new(result: Any, _func: Any, _args: Tuple[Any, ...]) -> Any:
            if not result:
                raise MemoryError(f"{name} returned NULL")
            return result

        checked.errcheck = errcheck_new
    checked.__name__ = name
    return checked


class _Functions:
    """Every function of :data:`_PROTOTYPES`, checked (see :func:`_checked`), as attributes:
    ``_functions().psv_saver_save(...)`` returns PSV_OK or raises PsvError."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        for name, (restype, argtypes) in _PROTOTYPES.items():
            setattr(self, name, _checked(getattr(lib, name), name, restype, argtypes))

    def __getattr__(self, name: str) -> Callable[..., Any]:  # for type checkers: set in __init__
        raise AttributeError(name)


def _functions() -> _Functions:
    """The checked functions of the loaded library (loading it first if needed)."""
    _lib()
    assert _functions_handle is not None
    return _functions_handle


def _optional(lib: Any, name: str) -> Optional[Any]:
    """The optional function ``name`` of ``lib``, checked like :func:`_functions`' (its own
    function object), or None when the loaded library does not export it."""
    if not hasattr(lib, name):
        return None
    restype, argtypes = _OPTIONAL_PROTOTYPES[name]
    return _checked(getattr(lib, name), name, restype, argtypes)


_features: Dict[str, Any] = {}


def _feature(name: str, what: str) -> Any:
    """The optional function ``name`` of the loaded library, checked and cached; RuntimeError
    naming ``what`` (the feature asked for) when the library is too old to export it."""
    fn = _features.get(name)
    if fn is None:
        fn = _optional(_lib(), name)
        if fn is None:
            raise RuntimeError(f"{what} needs a newer libpsv ({_lib_file} lacks {name})")
        _features[name] = fn
    return fn


def take_buffer(buf: Any) -> bytes:
    """The bytes of a ``psv_buffer`` (``_BufferP``), copied; the buffer is freed in every case."""
    what = "an in-memory result"
    try:
        n = _feature("psv_buffer_len", what)(buf)
        return ctypes.string_at(_feature("psv_buffer_data", what)(buf), n) if n else b""
    finally:
        _feature("psv_buffer_free", what)(buf)


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
        os_code: the thread's ``psv_last_error_os_code`` right after the failing call: the OS
            error number (e.g. ``errno.ENOENT``) when the operating system reported the error,
            else 0.
    """

    def __init__(
        self, status: int, status_name: str, message: str, function: str = "", os_code: int = 0
    ) -> None:
        self.status = int(status)
        self.status_name = status_name
        self.message = message
        self.function = function
        self.os_code = int(os_code)
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
    os_code_fn = _optional(lib, "psv_last_error_os_code")
    os_code = int(os_code_fn()) if os_code_fn is not None else 0
    name = lib.psv_status_str(status).decode("ascii", "replace")
    return PsvError(status, name, message, function, os_code)
