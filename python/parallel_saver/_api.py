"""The Python API of libpsv: :class:`ParallelSaver` (save many arrays into one ``.npz``),
:func:`restore` (any ``.npz`` into one 64-byte-aligned block, as zero-copy views) and
:func:`ls` (list an archive from its headers).

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
import collections
import ctypes
import itertools
import operator
import os
import threading
import weakref
from typing import (
    Any,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np

from ._binding import (
    _LAYOUTS,
    _NATIVE_BY_DTYPE,
    DTYPE_CODES,
    PSV_DTYPE_OTHER,
    PsvError,
    _ArchiveP,
    _BufferP,
    _c_size,
    _feature,
    _functions,
    _lib,
    _optional,
    _PreparedP,
    take_buffer,
)
from ._io import ReadRelay, WriteRelay, classify_source, classify_target, flush_before, sync_after
from ._progress import ProgressArg, _make_progress

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
#: What :func:`restore` and :func:`ls` accept: a path (str or os.PathLike), an int file
#: descriptor, a binary file object (or any object with ``readinto()``/``read()``), or the
#: archive's bytes in memory (bytes, bytearray, memoryview, any C-contiguous buffer).
Source = Any



# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def _compress_arg(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"compress must be an int 0-9, not {type(level).__name__}")
    if not 0 <= level <= 9:
        raise ValueError(f"compress must be a deflate level 0-9 (0 = stored), got {level}")
    return level


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


def _writable(buffer: Any, name: str) -> Tuple[memoryview, Optional[int]]:
    """A flat byte view of a writable, C-contiguous buffer and its address (None when empty).
    The view pins the buffer (a bytearray cannot be resized, shared memory cannot be closed)
    until it is released."""
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"{name} must be a writable buffer (bytearray, numpy array, mmap, "
                        f"shared memory), not {type(buffer).__name__}") from None
    if view.readonly:
        view.release()
        raise TypeError(f"{name} is read-only; it must be writable")
    try:
        flat = view.cast("B")
    except TypeError as exc:
        view.release()
        raise ValueError(f"{name} must be C-contiguous: {exc}") from exc
    view.release()
    if flat.nbytes == 0:
        return flat, None
    return flat, _addressof(_char_from_buffer(flat))


def _add_many_columns(
    add_many: Any,
    handle: Any,
    key_ptrs: np.ndarray,
    data_ptrs: np.ndarray,
    codes: Sequence[int],
    dims: np.ndarray,
    ndims: np.ndarray,
) -> None:
    """One ``psv_saver_add_many`` call from columns: key and data addresses (uint64), dtype
    codes, every shape back to back (int64) and each array's ndim (uint64). The columns are
    only borrowed during the call (keys are copied, data stays borrowed by the saver). Raises
    PsvError naming the failing index."""
    dtypes = np.array(codes, dtype=np.int32)
    add_many(
        handle,
        len(key_ptrs),
        key_ptrs.ctypes.data,
        data_ptrs.ctypes.data,
        dtypes.ctypes.data,
        dims.ctypes.data if dims.size else None,
        ndims.ctypes.data,
    )


def _positive_limit(name: str, value: Optional[int]) -> int:
    """A restore limit for psv_restore_options_set_limits: None -> 0 (the library default)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0 (None keeps the library default), got {value}")
    if value >= 2**64:
        raise ValueError(f"{name} must be < 2**64, got {value}")
    return value


# ---------------------------------------------------------------------------
# Save
# ---------------------------------------------------------------------------
# ctypes array types for shapes, one per ndim (building the type per call costs more than the call).
_SHAPE_TYPES = [ctypes.c_int64 * n for n in range(65)]

_addressof = ctypes.addressof
_char_from_buffer = ctypes.c_char.from_buffer
_dtype_of = operator.attrgetter("dtype")
_shape_of = operator.attrgetter("shape")
_ndim_of = operator.attrgetter("ndim")


def _data_address(arr: np.ndarray) -> int:
    """Address of a C-contiguous array's first byte. Through the buffer protocol when the array
    is writable and non-empty (~0.2 us), else ``__array_interface__`` (~1 us)."""
    try:
        return _addressof(_char_from_buffer(arr))
    except (TypeError, ValueError, BufferError):
        return int(arr.__array_interface__["data"][0])


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
        # The raw library (optional functions are looked up on it) and its checked functions.
        self._lib = _lib()
        self._fns = _functions()
        self._keys: List[str] = []
        self._arrays: List[np.ndarray] = []  # the exact buffers the C saver borrows
        self._handle: Optional[Any] = None
        self._finalizer: Optional[weakref.finalize] = None
        # A psv_saver must be used by one thread at a time (ctypes releases the GIL).
        self._lock = threading.RLock()
        # True while psv_saver_save runs: the progress callback runs on the saving thread, which
        # already holds the RLock, and must not touch this saver (psv.h forbids calling back
        # into libpsv with the same handle).
        self._busy = False
        # Live PreparedSave objects: they borrow the C saver, so add() refuses and close()
        # frees them first.
        self._prepared: "weakref.WeakSet[PreparedSave]" = weakref.WeakSet()

        columns = self._columns(args, kwds)
        prepared: List[Tuple[str, bytes, np.ndarray, bool, Optional[int]]] = []
        if columns is None:
            # Validate and prepare in Python before touching C.
            prepared = [(k, _encode_key(k)) + self._prepare(k, v) for k, v in self._collect(args, kwds)]

        handle = self._fns.psv_saver_new()  # MemoryError on NULL
        self._handle = handle
        self._finalizer = weakref.finalize(self, self._fns.psv_saver_free, handle)
        try:
            if columns is not None and not self._add_columns(*columns):
                # Something the one-call path does not take (a NUL in a key, a dtype that needs
                # a descr, a read-only, empty or non-C-contiguous array): every array as usual.
                prepared = [(k, _encode_key(k)) + self._prepare(k, v) for k, v in zip(*columns)]
                columns = None
            if columns is None:
                self._add_all(prepared)
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
    def _columns(args: Tuple[Any, ...], kwds: Mapping[str, Any]) -> Optional[Tuple[List[str], List[np.ndarray]]]:
        """(keys, arrays) in save order when the input is keywords only or one plain dict, every
        key a str and every value exactly a ``numpy.ndarray``: the common case, which
        :meth:`_add_columns` adds in one C call with no per-array Python objects. None
        otherwise (the general path: :meth:`_collect`, :meth:`_prepare`)."""
        if not args:
            keys, values = list(kwds), list(kwds.values())
        elif len(args) == 1 and not kwds and type(args[0]) is dict:
            keys, values = list(args[0]), list(args[0].values())
        else:
            return None
        if len(keys) < 2 or set(map(type, values)) != {np.ndarray} or set(map(type, keys)) != {str}:
            return None
        return keys, values

    def _add_columns(self, keys: List[str], arrays: List[np.ndarray]) -> bool:
        """Adds every array with one ``psv_saver_add_many`` call, each step done for all arrays
        at once (20000 small arrays: about a third of what preparing them one by one costs).
        Returns False, having added nothing, when an array or key needs the general path."""
        add_many = _optional(self._lib, "psv_saver_add_many")
        n = len(keys)
        joined = "\0".join(keys)
        if add_many is None or joined.count("\0") != n - 1:
            return False
        try:
            blob = np.frombuffer((joined + "\0").encode("utf-8"), dtype=np.uint8)
        except UnicodeEncodeError:
            return False
        codes = list(map(_NATIVE_BY_DTYPE.get, map(_dtype_of, arrays)))
        if None in codes:
            return False
        try:
            # c_char.from_buffer succeeds only for a writable, non-empty, C-contiguous buffer:
            # exactly the arrays that are saved as they are, with no descr.
            data_ptrs = np.fromiter(map(_addressof, map(_char_from_buffer, arrays)), dtype=np.uint64, count=n)
        except (TypeError, ValueError, BufferError):
            return False
        ndims = np.fromiter(map(_ndim_of, arrays), dtype=np.uint64, count=n)
        if ndims.min() == 1 == ndims.max():
            dims = np.fromiter(map(len, arrays), dtype=np.int64, count=n)  # no shape tuples
        else:
            shapes = itertools.chain.from_iterable(map(_shape_of, arrays))
            dims = np.fromiter(shapes, dtype=np.int64, count=int(ndims.sum()))
        # Each key starts after the previous key's NUL.
        key_ptrs = np.empty(n, dtype=np.uint64)
        key_ptrs[0] = 0
        key_ptrs[1:] = np.flatnonzero(blob == 0)[:-1] + 1
        key_ptrs += blob.ctypes.data
        _add_many_columns(add_many, self._handle, key_ptrs, data_ptrs, codes, dims, ndims)
        self._keys = keys
        self._arrays = arrays
        return True

    @staticmethod
    def _prepare(key: str, value: Any) -> Tuple[np.ndarray, bool, Optional[int]]:
        """The array to save, whether it is saved as Fortran order, and its PSV_DTYPE code
        when it is a C-order numeric array in native byte order (None otherwise)."""
        arr = np.asarray(value)
        dt = arr.dtype
        code = _NATIVE_BY_DTYPE.get(dt)
        if code is None:
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
            return arr, False, code
        if arr.flags.f_contiguous:
            return arr, True, None
        return np.ascontiguousarray(arr), False, code

    def _add_all(self, prepared: List[Tuple[str, bytes, np.ndarray, bool, Optional[int]]]) -> None:
        """Adds every prepared array in order: runs of C-order numeric arrays with one
        ``psv_saver_add_many`` call each (a ctypes call per array would cost more than the
        whole save of a small array), anything else one by one."""
        add_many = _optional(self._lib, "psv_saver_add_many")
        if add_many is None:
            for key, bkey, arr, fortran, code in prepared:
                self._add_prepared(key, bkey, arr, fortran, code)
            return
        start = 0
        for i, (key, bkey, arr, fortran, code) in enumerate(prepared):
            if code is None:
                self._add_batch(add_many, prepared[start:i])
                self._add_prepared(key, bkey, arr, fortran, code)
                start = i + 1
        self._add_batch(add_many, prepared[start:])

    def _add_batch(self, add_many: Any, batch: List[Tuple[str, bytes, np.ndarray, bool, Optional[int]]]) -> None:
        """One ``psv_saver_add_many`` call for C-order numeric arrays (codes not None)."""
        if len(batch) < 2:
            for key, bkey, arr, fortran, code in batch:
                self._add_prepared(key, bkey, arr, fortran, code)
            return
        n = len(batch)
        keys, bkeys, arrs, _, codes = zip(*batch)
        # Keys back to back, NUL-terminated, and a pointer to each.
        blob = np.frombuffer(b"\0".join(bkeys) + b"\0", dtype=np.uint8)
        lens = np.fromiter(map(len, bkeys), dtype=np.uint64, count=n)
        key_ptrs = np.empty(n, dtype=np.uint64)
        key_ptrs[0] = 0
        np.cumsum(lens[:-1] + 1, out=key_ptrs[1:])
        key_ptrs += blob.ctypes.data
        try:
            # The buffer protocol gives a writable, non-empty array's address in ~0.2 us.
            addresses = map(_addressof, map(_char_from_buffer, arrs))
            data_ptrs = np.fromiter(addresses, dtype=np.uint64, count=n)
        except (TypeError, ValueError, BufferError):
            # Read-only or empty arrays: ~1 us each.
            data_ptrs = np.fromiter(map(_data_address, arrs), dtype=np.uint64, count=n)
        ndims = np.fromiter((a.ndim for a in arrs), dtype=np.uint64, count=n)
        shapes = np.fromiter(
            itertools.chain.from_iterable(a.shape for a in arrs), dtype=np.int64, count=int(ndims.sum())
        )
        _add_many_columns(add_many, self._handle, key_ptrs, data_ptrs, codes, shapes, ndims)
        self._keys.extend(keys)
        self._arrays.extend(arrs)

    def _add_prepared(self, key: str, bkey: bytes, arr: np.ndarray, fortran: bool, code: Optional[int]) -> None:
        fns = self._fns
        ndim = arr.ndim
        # libpsv copies the shape during the call; the data stays borrowed (kept in _arrays).
        shape = _SHAPE_TYPES[ndim](*arr.shape) if ndim else None
        data = _data_address(arr)
        if code is not None:
            fns.psv_saver_add(self._handle, bkey, data, code, shape, ndim)
        else:
            descr = _descr_of(arr.dtype).encode("utf-8")
            fns.psv_saver_add_descr(self._handle, bkey, data, arr.nbytes, descr, shape, ndim, fortran)
        self._keys.append(key)
        self._arrays.append(arr)

    # -- public API -------------------------------------------------------
    def add(self, key: str, value: Any) -> None:
        """Add one more array under ``key`` (a duplicate key raises PsvError INVALID_ARG)."""
        arr, fortran, code = self._prepare(key, value)
        bkey = _encode_key(key)
        with self._lock:
            self._require_open()
            if len(self._prepared):
                raise RuntimeError("add() while a PreparedSave of this saver is open; close it first")
            self._add_prepared(key, bkey, arr, fortran, code)

    @property
    def keys(self) -> List[str]:
        """Keys in the order they will be written."""
        return list(self._keys)

    def __len__(self) -> int:
        with self._lock:
            self._require_open()
            return int(self._fns.psv_saver_count(self._handle))

    def save(
        self,
        target: Any,
        *,
        threads: Optional[int] = None,
        fsync: bool = False,
        compress: int = 0,
        progress: ProgressArg = None,
        layout: Literal["npz", "dir"] = "npz",
        alignment: int = 64,
        wait: bool = True,
        snapshot: bool = True,
    ) -> Any:
        """Write all arrays as one archive to ``target``.

        Args:
            target: where the archive goes:

                * a path (str, bytes or os.PathLike): written atomically (a temporary file
                  beside it, renamed over it at the end; ``.npz`` appended when missing, as
                  numpy does); an existing file is untouched on any error;
                * an ``int`` file descriptor: written from its current offset with positional
                  writes when it is seekable (the offset is left at the end of the archive),
                  in file order when it is a pipe or socket; the caller keeps the descriptor;
                * a binary file object with a working ``fileno()`` (``open(p, "wb")``, a
                  socket's file): flushed, then its descriptor is written as above, and the
                  object's position moved to the end of the archive;
                * any other object with ``write()`` (``io.BytesIO``, an upload stream): the
                  archive in file order, in pieces of up to 2 MiB; each piece is a memoryview
                  valid only during the ``write`` call.  An exception raised by ``write``
                  stops the save and is re-raised here.

                Every target gets exactly the bytes of the path save.
            threads: worker threads; None or 0 = all cores.
            fsync: fsync the file (and directory) before returning (path and fd targets).
            compress: deflate level for every member, 0 (stored, the default: disk speed and
                64-byte-aligned data) to 9; 6 is what ``numpy.savez_compressed`` uses.  A
                compressed save to a non-seekable target compresses everything first and holds
                the compressed archive in memory until it is written.
            progress: ``callable(done, total)`` called with bytes done/total on this thread
                (at least every 64 MiB or 100 ms and once at the end); returning False
                cancels (PsvError PSV_ERR_ABORTED; the temporary file is removed and an
                existing ``path`` is left untouched).  An exception raised by the callable
                cancels the save and is re-raised here.  ``True`` draws a progress bar on
                stderr when stderr is a terminal (nothing otherwise).  The callable must not
                use this saver.
            layout: ``"npz"`` (default) or ``"dir"`` (``psv_save_options_set_layout`` with
                ``PSV_LAYOUT_DIR``; a path target only).
            alignment: stored arrays of at least this many bytes start at a multiple of it in
                the file (a power of two from 64, the default, to 1 MiB: a file-system stripe
                or page size); the padding is what numpy and every ZIP reader skip.
            wait: False runs the save in the background and returns a
                :class:`~parallel_saver.SaveJob` at once (``job.wait(timeout=None)`` returns
                what this returns and raises the save's PsvError; ``done()``, ``progress``,
                ``cancel()``; a context manager that waits on exit).  No ``progress``
                callback then: poll ``job.progress``.  See ``_job``.
            snapshot: with ``wait=False``: True (default) copies the arrays into the saver's
                staging area before returning, so they may be changed at once; False copies
                nothing: do not touch these arrays until the job is done (``add`` raises
                PSV_ERR_BUSY meanwhile, ``close`` waits for the job).

        Returns:
            For a path: the path written (with ``.npz`` for the npz layout; as given for
            ``"dir"``), as str (bytes for a bytes path).  None for any other target.

        Raises:
            PsvError: on any library error (e.g. PSV_ERR_IO with the OS text, EPIPE included).
            RuntimeError: a library too old for the target or layout; or the saver used from
                its own progress callback.
            TypeError, ValueError: bad argument types or values.

        The arrays are read while this runs: do not modify them from another thread
        meanwhile.  Calls on one saver are serialised by a lock.
        """
        dest = classify_target(target)
        if layout not in _LAYOUTS:
            raise ValueError(f"layout must be 'npz' or 'dir', not {layout!r}")
        if layout != "npz" and dest.kind != "path":
            raise ValueError(f"layout={layout!r} needs a path target, not {type(target).__name__}")
        if not wait:
            from ._job import start_save

            path_result = (_with_npz(target) if layout == "npz" else os.fspath(target)) if dest.kind == "path" else None
            return start_save(
                self,
                dest,
                _encode_path(dest.value) if dest.kind == "path" else None,
                path_result,
                self._run_save,
                snapshot=snapshot,
                threads=threads,
                fsync=fsync,
                compress=compress,
                progress=progress,
                layout=layout,
                alignment=alignment,
            )
        if dest.kind == "path":
            bpath = _encode_path(dest.value)

            def run(handle: Any, opts: Any) -> None:
                self._fns.psv_saver_save(handle, bpath, opts)

            self._run_save(
                run, threads=threads, fsync=fsync, compress=compress, progress=progress, layout=layout, alignment=alignment
            )
            return _with_npz(target) if layout == "npz" else os.fspath(target)
        if dest.kind == "fd":
            save_fd = _feature("psv_saver_save_fd", "saving to a file descriptor")
            flush_before(dest)

            def run(handle: Any, opts: Any) -> None:
                save_fd(handle, dest.value, opts)

            self._run_save(run, threads=threads, fsync=fsync, compress=compress, progress=progress, alignment=alignment)
            sync_after(dest)
            return None
        save_stream = _feature("psv_saver_save_stream", "saving to a writer object")
        writer = WriteRelay(dest.value)

        def run(handle: Any, opts: Any) -> None:
            try:
                save_stream(handle, writer.c_func, None, opts)
            except PsvError:
                writer.reraise()  # the writer's own exception beats PSV_ERR_IO
                raise

        self._run_save(run, threads=threads, fsync=fsync, compress=compress, progress=progress, alignment=alignment)
        return None

    @property
    def staging_bytes(self) -> int:
        """Bytes held by the snapshot staging area of ``save(wait=False)``: one copy per
        running snapshot job plus one idle copy kept for reuse (``psv_saver_staging_bytes``)."""
        with self._lock:
            self._require_open()
            return int(_feature("psv_saver_staging_bytes", "staging_bytes")(self._handle))

    def to_bytes(
        self,
        *,
        threads: Optional[int] = None,
        compress: int = 0,
        alignment: int = 64,
        wait: bool = True,
        snapshot: bool = True,
    ) -> Any:
        """The archive :meth:`save` would write, as bytes (the same bytes as the path save).

        A stored archive (``compress=0``) is written straight into a buffer of its exact size
        (:meth:`nbytes`), then copied once into the returned ``bytes``; use :meth:`save_into`
        to skip that copy.  ``wait=False`` (and ``snapshot``) as for :meth:`save`: returns a
        :class:`~parallel_saver.SaveJob` whose ``wait()`` returns the bytes.
        """
        if not wait:
            from ._io import Target
            from ._job import start_save

            return start_save(
                self, Target("alloc", None), None, None, self._run_save,
                snapshot=snapshot, threads=threads, compress=compress, alignment=alignment,
            )
        if _compress_arg(compress) == 0:
            out = bytearray(self.nbytes(alignment=alignment))
            self.save_into(out, threads=threads, alignment=alignment)
            return bytes(out)
        save_alloc = _feature("psv_saver_save_to_alloc", "to_bytes")
        holder = _BufferP()

        def run(handle: Any, opts: Any) -> None:
            save_alloc(handle, opts, ctypes.byref(holder))

        self._run_save(run, threads=threads, compress=compress, alignment=alignment)
        return take_buffer(holder)

    def nbytes(self, *, alignment: int = 64) -> int:
        """The exact size in bytes of the stored archive (``compress=0``) :meth:`save` writes."""
        size = _feature("psv_saver_size", "nbytes")
        out = ctypes.c_uint64(0)

        def run(handle: Any, opts: Any) -> None:
            size(handle, opts, ctypes.byref(out))

        self._run_save(run, alignment=alignment)
        return int(out.value)

    def save_into(
        self,
        buffer: Any,
        *,
        threads: Optional[int] = None,
        alignment: int = 64,
        wait: bool = True,
        snapshot: bool = True,
    ) -> Any:
        """Write the stored archive into ``buffer`` (any writable, C-contiguous buffer of at
        least :meth:`nbytes` bytes: ``bytearray``, a numpy array, ``mmap``, shared memory);
        returns the archive's size.  Bytes past it are left as they were.  ``wait=False`` (and
        ``snapshot``) as for :meth:`save`: returns a :class:`~parallel_saver.SaveJob` whose
        ``wait()`` returns the size; the buffer stays exported (a ``bytearray`` cannot be
        resized) until the job is done, and must not be read before."""
        if not wait:
            from ._io import Target
            from ._job import start_save

            size = self.nbytes(alignment=alignment)
            pinned = _writable(buffer, "buffer")
            return start_save(
                self, Target("buffer", pinned), None, size, self._run_save,
                snapshot=snapshot, threads=threads, alignment=alignment,
            )
        save_buffer = _feature("psv_saver_save_to_buffer", "save_into")
        view, address = _writable(buffer, "buffer")
        try:

            def run(handle: Any, opts: Any) -> None:
                save_buffer(handle, address, view.nbytes, opts)

            self._run_save(run, threads=threads, alignment=alignment)
        finally:
            view.release()
        return self.nbytes(alignment=alignment)

    def prepare(self, *, threads: Optional[int] = None, compress: int = 0, alignment: int = 64) -> "PreparedSave":
        """Plan the archive and compute every CRC (in parallel), so that any byte range of it
        can be rendered later, from any threads, in any order (:class:`PreparedSave`): e.g. the
        parts of an object-store multipart upload.  The saver's arrays must stay unchanged
        while the result is used; the result keeps this saver alive."""
        prep = _feature("psv_saver_prepare", "prepare")
        holder = _PreparedP()

        def run(handle: Any, opts: Any) -> None:
            prep(handle, opts, ctypes.byref(holder))

        self._run_save(run, threads=threads, compress=compress, alignment=alignment)
        prepared = PreparedSave(holder, self)
        self._prepared.add(prepared)
        return prepared

    def _run_save(
        self,
        run: Any,
        *,
        threads: Optional[int] = None,
        fsync: bool = False,
        compress: int = 0,
        progress: ProgressArg = None,
        layout: str = "npz",
        alignment: int = 64,
    ) -> None:
        """Build save options, call ``run(handle, opts)`` under the lock, free the options and
        raise the progress callback's exception or the library's error."""
        fns = self._fns
        nthreads = _threads_arg(threads)
        level = _compress_arg(compress)
        set_layout = None
        if layout != "npz":
            set_layout = _optional(self._lib, "psv_save_options_set_layout")
            if set_layout is None:
                raise RuntimeError(f"libpsv too old for layout={layout!r}")
        if isinstance(alignment, bool) or not isinstance(alignment, int):
            raise TypeError(f"alignment must be an int, not {type(alignment).__name__}")
        set_alignment = None if alignment == 64 else _feature("psv_save_options_set_alignment", "alignment")
        relay, bar = _make_progress(progress, "save")
        with self._lock:
            self._require_open()
            opts = fns.psv_save_options_new()  # MemoryError on NULL
            self._busy = True
            err: Optional[BaseException] = None
            try:
                # Each checked call raises PsvError on failure.
                fns.psv_save_options_set_threads(opts, nthreads)
                fns.psv_save_options_set_fsync(opts, bool(fsync))
                fns.psv_save_options_set_compression(opts, level)
                if set_layout is not None:
                    set_layout(opts, _LAYOUTS[layout])
                if set_alignment is not None:
                    set_alignment(opts, alignment)  # INVALID_ARG: not a power of two in 64..1 MiB
                if relay is not None:
                    fns.psv_save_options_set_progress(opts, relay.c_func, None)
                try:
                    run(self._handle, opts)
                except PsvError as exc:
                    err = exc  # raised below, unless the progress callback raised first
                except BaseException as exc:  # a writer's own exception
                    err = exc
            finally:
                self._busy = False
                fns.psv_save_options_free(opts)
                if bar is not None:
                    bar.close()
            if relay is not None:
                relay.reraise()  # the callback's own exception beats PSV_ERR_ABORTED
            if err is not None:
                raise err

    def close(self) -> None:
        """Free the C saver and drop the array references (idempotent)."""
        with self._lock:
            if self._busy:
                raise RuntimeError("ParallelSaver closed from its own progress callback")
            for prepared in list(self._prepared):
                prepared.close()  # they borrow the C saver
            if self._finalizer is not None:
                self._finalizer()  # calls psv_saver_free once
            self._handle = None
            self._arrays = []

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._handle is None

    def _require_open(self) -> None:
        if self._busy:
            raise RuntimeError("ParallelSaver used from its own progress callback")
        if self._handle is None:
            raise ValueError("ParallelSaver is closed")

    def __enter__(self) -> "ParallelSaver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._keys)} arrays"
        return f"<ParallelSaver {state}>"


class PreparedSave:
    """A planned archive whose every CRC is known (:meth:`ParallelSaver.prepare`): any byte
    range of it can be rendered, from any threads at once (the GIL is released), in any order;
    the ranges concatenated are exactly the bytes :meth:`ParallelSaver.save` writes.

    This is what object-store multipart uploads need (S3 parts: 5 MiB to 5 GiB each, at most
    10,000, uploaded in any order from anywhere): :meth:`parts` cuts the archive into parts.
    Keeps the saver (and its arrays) alive; the arrays must not change while it is open.
    Closed by :meth:`close`, by leaving a ``with`` block, or when garbage-collected.
    """

    def __init__(self, handle: Any, saver: ParallelSaver) -> None:
        self._saver = saver  # the C prepared save borrows the C saver and its arrays
        self._handle = handle
        self._render = _feature("psv_prepared_render", "PreparedSave.render")
        size = _feature("psv_prepared_size", "PreparedSave")
        self._finalizer = weakref.finalize(self, _feature("psv_prepared_free", "PreparedSave"), handle)
        self.nbytes: int = int(size(handle))

    def __len__(self) -> int:
        return self.nbytes

    def render_into(self, offset: int, buffer: Any) -> None:
        """Write bytes ``offset .. offset + len(buffer)`` of the archive into ``buffer`` (any
        writable, C-contiguous buffer)."""
        self._check_open()
        view, address = _writable(buffer, "buffer")
        try:
            if offset < 0 or offset + view.nbytes > self.nbytes:
                raise ValueError(f"range {offset}..{offset + view.nbytes} runs past the archive's {self.nbytes} bytes")
            if address is not None:
                self._render(self._handle, offset, view.nbytes, address)
        finally:
            view.release()

    def render(self, offset: int, length: int) -> bytes:
        """Bytes ``offset .. offset + length`` of the archive."""
        out = bytearray(length)
        self.render_into(offset, out)
        return bytes(out)

    def parts(self, part_size: int) -> List[Tuple[int, int]]:
        """``(offset, length)`` of consecutive parts of ``part_size`` bytes (the last one
        shorter) covering the archive: e.g. ``part_size=64 << 20`` for S3 multipart parts."""
        if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size <= 0:
            raise ValueError(f"part_size must be a positive int, got {part_size!r}")
        return [(o, min(part_size, self.nbytes - o)) for o in range(0, self.nbytes, part_size)]

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise ValueError("PreparedSave is closed")

    def close(self) -> None:
        """Free the prepared save (idempotent); the saver may change again afterwards. Do not
        call it while another thread renders."""
        self._finalizer()
        self._saver._prepared.discard(self)

    def __enter__(self) -> "PreparedSave":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if not self._finalizer.alive else f"{self.nbytes} bytes"
        return f"<PreparedSave {state}>"


# ---------------------------------------------------------------------------
# Restore
# ---------------------------------------------------------------------------
class RestoredBlock:
    """Owns one ``psv_archive`` (and so its single data block, and its file mapping).

    Exposes the block as ``__array_interface__`` (a writable uint8 vector), which is
    what every restored array ultimately views (in mmap mode, arrays mapped from the file
    view the mapping instead, but still keep this object alive).  ``psv_free`` runs when
    this object is garbage-collected, i.e. when the last array referring to it dies.

    Attributes:
        address, nbytes: the block (not the file mapping).
        mapped: True if the archive was restored with ``mmap=True``.
    """

    def __init__(
        self, handle: Any, lib: ctypes.CDLL, *, mapped: bool = False, keep: Optional[memoryview] = None
    ) -> None:
        self._finalizer = weakref.finalize(self, lib.psv_free, handle)
        self._handle = handle
        # The caller's memory (restore with out=): the block is that memory; this export of it
        # keeps it alive (and unresizable) as long as any array views it.
        self._keep = keep
        n = _c_size(0)
        ptr = lib.psv_archive_block(handle, ctypes.byref(n))
        self.address: int = int(ptr or 0)
        self.nbytes: int = int(n.value)
        self.mapped: bool = bool(mapped)

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
        extra = " +file mapping" if self.mapped else ""
        return f"<RestoredBlock 0x{self.address:x} {self.nbytes} bytes{extra}>"


class RestoredArrays(Dict[str, np.ndarray]):
    """The dict returned by :func:`restore`.

    Attributes:
        skipped: names of archive members that are not arrays (not ``*.npy`` or no
            npy magic), which numpy would return as raw bytes.  Empty when ``keys`` was
            given (only the requested members are looked at).
    """

    skipped: List[str]

    def __init__(self, items: Iterable[Tuple[str, np.ndarray]] = (), skipped: Iterable[str] = ()) -> None:
        super().__init__(items)
        self.skipped = list(skipped)


class _ArrayInfoTuple(NamedTuple):
    dtype: np.dtype
    shape: Tuple[int, ...]
    nbytes: int
    fortran_order: bool


class ArrayInfo(_ArrayInfoTuple):
    """One array of :func:`ls`: a plain tuple ``(dtype, shape, nbytes, fortran_order)``
    (compared and unpacked as such), plus ``.offset``: the array's byte offset in the memory a
    :func:`restore` with ``out=`` fills (of ``Listing.required_bytes``), so a process that maps
    that memory rebuilds the view with ``np.ndarray(shape, dtype, buffer, offset, order)``
    (:func:`views`)."""

    offset: int

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        # Pickled with its offset (a plain NamedTuple pickle would drop the attribute).
        return (_array_info, (tuple(self), getattr(self, "offset", -1)))


def _array_info(fields: Tuple[Any, ...], offset: int) -> ArrayInfo:
    info = ArrayInfo(*fields)
    info.offset = offset
    return info


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


def _is_buffer(source: Any) -> bool:
    return isinstance(source, (bytes, bytearray, memoryview))


def _keys_arg(keys: Optional[Sequence[str]]) -> Optional[List[bytes]]:
    if keys is None:
        return None
    if isinstance(keys, (str, bytes)):
        raise TypeError("keys must be a list of str, not a single string")
    return [_encode_key(k) for k in keys]


def _restore_handle(
    source: Source,
    *,
    out: Any = None,
    threads: Optional[int],
    verify: bool,
    keys: Optional[List[bytes]],
    native_endian: bool,
    mmap: bool,
    metadata_only: bool,
    progress: ProgressArg,
    limits: Tuple[int, int, int],
) -> Tuple[Any, Optional[memoryview]]:
    """Run the restore that fits ``source`` (path, fd, stream or memory) and ``out`` (caller
    memory or the library's block) with these options; return the archive handle (owned by the
    caller) and the pinned view of ``out`` (None without ``out``), or raise."""
    nthreads = _threads_arg(threads)
    src = classify_source(source)
    if mmap and out is not None:
        raise ValueError("mmap=True and out= exclude each other (out= is the memory the arrays land in)")
    pinned: Optional[np.ndarray] = None
    if src.kind == "memory":
        view = memoryview(src.value)
        try:
            view = view.cast("B")
        except TypeError as exc:
            raise ValueError(f"the archive buffer must be C-contiguous: {exc}") from exc
        # Zero-copy: libpsv reads the caller's memory during the call.  The uint8 array holds
        # a buffer export, so a bytearray cannot be resized (or freed) while libpsv reads it.
        pinned = np.frombuffer(view, dtype=np.uint8)
    out_view: Optional[memoryview] = None
    out_address: Optional[int] = None
    if out is not None:
        out_view, out_address = _writable(out, "out")
    reader = ReadRelay(src.value) if src.kind == "stream" else None
    relay, bar = _make_progress(progress, "restore")
    fns = _functions()
    opts = fns.psv_restore_options_new()  # MemoryError on NULL
    handle = _ArchiveP()
    err: Optional[BaseException] = None
    try:
        # Each checked call raises PsvError on failure.
        fns.psv_restore_options_set_threads(opts, nthreads)
        fns.psv_restore_options_set_verify_crc(opts, bool(verify))
        if any(limits):
            fns.psv_restore_options_set_limits(opts, *limits)
        if keys:
            arr = (ctypes.c_char_p * len(keys))(*keys)
            fns.psv_restore_options_set_keys(opts, arr, len(keys))
        if metadata_only:
            fns.psv_restore_options_set_metadata_only(opts, True)
        if native_endian:
            fns.psv_restore_options_set_native_endian(opts, True)
        if mmap and src.kind in ("path", "fd"):
            fns.psv_restore_options_set_mmap(opts, True)
        if relay is not None:
            fns.psv_restore_options_set_progress(opts, relay.c_func, None)
        try:
            _call_restore(src, pinned, reader, opts, out_view, out_address, ctypes.byref(handle))
        except PsvError as exc:
            err = exc  # raised below, unless a callback raised first
            if reader is not None and reader.error is not None:
                err = reader.error  # the reader's own exception beats PSV_ERR_IO
            elif (
                src.kind == "memory"
                and err.status_name == "PSV_ERR_FORMAT"
                and isinstance(source, bytes)
                and 0 < len(source) < 4096
                and b"\0" not in source
            ):
                err.args = (
                    err.args[0] + " (bytes are restored as an in-memory archive; pass a str or "
                    "os.PathLike to name a file)",
                )
        finally:
            del pinned  # libpsv keeps no reference to the source buffer after the call
    finally:
        fns.psv_restore_options_free(opts)
        if bar is not None:
            bar.close()
    if relay is not None:
        try:
            relay.reraise()  # the callback's own exception beats PSV_ERR_ABORTED
        except BaseException:
            if handle:
                fns.psv_free(handle)
            raise
    if err is not None:
        if out_view is not None:
            out_view.release()
        raise err
    if not handle:
        raise RuntimeError("libpsv returned PSV_OK but no archive")
    return handle, out_view


def _call_restore(
    src: Any,
    pinned: Optional[np.ndarray],
    reader: Optional[ReadRelay],
    opts: Any,
    out_view: Optional[memoryview],
    out_address: Optional[int],
    handle_ref: Any,
) -> None:
    """The one C restore call for this source kind, into the library's block or into ``out``."""
    into = out_view is not None
    n_out = out_view.nbytes if out_view is not None else 0
    fns = _functions()
    if src.kind == "memory":
        assert pinned is not None
        data = pinned.ctypes.data if pinned.size else None
        if into:
            fn = _feature("psv_restore_from_memory_into", "restore(bytes, out=...)")
            fn(data, pinned.size, opts, out_address, n_out, handle_ref)
        else:
            fns.psv_restore_from_memory(data, pinned.size, opts, handle_ref)
    elif src.kind == "path":
        bpath = _encode_path(src.value)
        if into:
            _feature("psv_restore_into", "restore(path, out=...)")(bpath, opts, out_address, n_out, handle_ref)
        else:
            fns.psv_restore(bpath, opts, handle_ref)
    elif src.kind == "fd":
        if into:
            _feature("psv_restore_fd_into", "restore(fd, out=...)")(src.value, opts, out_address, n_out, handle_ref)
        else:
            _feature("psv_restore_fd", "restore(fd)")(src.value, opts, handle_ref)
    else:
        assert reader is not None
        if into:
            fn = _feature("psv_restore_stream_into", "restore(stream, out=...)")
            fn(reader.c_func, None, opts, out_address, n_out, handle_ref)
        else:
            _feature("psv_restore_stream", "restore(stream)")(reader.c_func, None, opts, handle_ref)


def restore(
    path: Source,
    *,
    out: Any = None,
    threads: Optional[int] = None,
    verify: bool = True,
    keys: Optional[Sequence[str]] = None,
    native_endian: bool = False,
    mmap: bool = False,
    progress: ProgressArg = None,
    max_total_bytes: Optional[int] = None,
    max_header_len: Optional[int] = None,
    max_members: Optional[int] = None,
) -> RestoredArrays:
    """Read any ``.npz`` into one 64-byte-aligned block; return key -> zero-copy view.

    Args:
        path: the archive:

            * a path (str or os.PathLike), opened as given (only when it does not exist and
              has no ``.npz`` suffix, ``path + ".npz"`` is tried);
            * an ``int`` file descriptor or a seekable binary file object: read with
              positional reads (the whole file is the archive; the descriptor's offset and the
              object's position are left as they were);
            * a non-seekable file object (pipe, socket) or any object with ``readinto()`` or
              ``read()``: read once, front to back, from its current position, in one pass
              (memory: the arrays plus a bounded read-ahead); an exception it raises is
              re-raised here;
            * the archive's bytes (bytes, bytearray, a C-contiguous memoryview or buffer),
              read in place (the result does not refer to them afterwards).
        out: a writable, C-contiguous buffer the arrays land in (``bytearray``, a numpy array,
            ``mmap``, ``multiprocessing.shared_memory.SharedMemory.buf``), 64-byte aligned
            (page-aligned memory such as mmap and shared memory always is) and at least
            ``ls(path).required_bytes`` long; each array lies at ``ls(path)[key].offset`` in it
            (so another process mapping the same memory can rebuild the views).  The arrays
            view ``out`` and keep it exported (a ``bytearray`` cannot be resized, shared memory
            cannot be closed) while they live.  Default: one block owned by the library.
        threads: worker threads; None or 0 = all cores.
        verify: check every member's CRC-32 against the central directory.
        keys: restore only these arrays, in this order (the dict follows it); a key the
            archive lacks raises PsvError PSV_ERR_NOT_FOUND.  An empty list restores nothing
            (the archive is still read and checked up to its headers).
        native_endian: byte-swap arrays stored big-endian (or in any non-native order) to
            native order and give them native dtypes.  Default: exactly as stored, as numpy.
        mmap: map the file (private, copy-on-write) and return the arrays that are 64-byte
            aligned in it (every stored member psv writes) as views into the mapping: pages
            load on first touch, writes stay in this process and never reach the file.
            Other members (numpy's unaligned files, deflated members, members that
            ``native_endian`` must byte-swap) are copied as usual.  Mapped members' CRCs are
            not checked.  Ignored for in-memory and stream sources; excludes ``out``.  Do not
            truncate the file in place during this call or while its arrays are alive
            (SIGBUS); replacing it by rename is safe.  A psv file on tmpfs (``/dev/shm``)
            restored this way shares its pages between every process that maps it.
        progress: ``callable(done, total)`` (bytes) called on this thread; returning False
            cancels (PsvError PSV_ERR_ABORTED); an exception it raises cancels the restore
            and is re-raised here.  ``True`` draws a bar on stderr if it is a terminal.  For a
            stream source ``total`` is 0 until the last call (``(done, done)``).
        max_total_bytes: refuse (PSV_ERR_LIMIT) archives whose arrays need more memory
            (default: physical memory).
        max_header_len: largest ``.npy`` header accepted (default 1 MiB).
        max_members: most central-directory entries accepted (default 16777216).

    Returns:
        A :class:`RestoredArrays` dict in central-directory order (or ``keys`` order), with
        exact dtype, shape and memory order (Fortran when the header says so).  Arrays are
        writable and share one block that is freed with the last of them.
        ``.skipped`` lists the non-array members.

    Raises:
        PsvError: on any library error (IO, FORMAT, CRC, UNSUPPORTED, NOT_FOUND, LIMIT,
            ABORTED, INVALID_ARG for an ``out`` too small or misaligned, ...).
        TypeError, ValueError: bad argument types or values.
    """
    lib = _lib()
    bkeys = _keys_arg(keys)
    limits = (
        _positive_limit("max_total_bytes", max_total_bytes),
        _positive_limit("max_members", max_members),
        _positive_limit("max_header_len", max_header_len),
    )
    # keys=[]: the C API reads an empty key list as "every key"; restore the headers only.
    metadata_only = bkeys is not None and not bkeys
    handle, out_view = _restore_handle(
        path,
        out=out,
        threads=threads,
        verify=verify,
        keys=bkeys,
        native_endian=native_endian,
        mmap=mmap,
        metadata_only=metadata_only,
        progress=progress,
        limits=limits,
    )
    try:
        mapped = bool(mmap) and classify_source(path).kind in ("path", "fd")
        owner = RestoredBlock(handle, lib, mapped=mapped, keep=out_view)
    except BaseException:
        lib.psv_free(handle)
        raise
    if metadata_only:
        return RestoredArrays()
    return _build_arrays(lib, handle, owner)


class Listing(Dict[str, "ArrayInfo"]):
    """The dict returned by :func:`ls`: key -> :class:`ArrayInfo`.

    Attributes:
        required_bytes: the size ``out=`` must have for :func:`restore` of the same source
            (with the same ``keys`` and ``native_endian``); each array lies at its
            ``ArrayInfo.offset`` in it.
    """

    required_bytes: int

    def __init__(self, items: Iterable[Tuple[str, "ArrayInfo"]] = (), required_bytes: int = 0) -> None:
        super().__init__(items)
        self.required_bytes = required_bytes


def ls(
    path: Source,
    *,
    keys: Optional[Sequence[str]] = None,
    native_endian: bool = False,
) -> Listing:
    """List an archive's arrays from its directory and ``.npy`` headers only (no data read;
    a stream source is read through to its end).

    Args:
        path: the archive, any source :func:`restore` takes.
        keys, native_endian: as for :func:`restore`; they decide which arrays a restore with
            ``out=`` places, and where.

    Returns:
        A :class:`Listing`: key -> :class:`ArrayInfo` ``(dtype, shape, nbytes,
        fortran_order)`` (each also has ``.offset``: where :func:`restore` with ``out=``
        puts it) in central-directory order; dtypes are exact (byte order, records,
        datetimes); ``.required_bytes`` is the size ``out=`` needs.

    Raises:
        PsvError: as :func:`restore` (IO, FORMAT, UNSUPPORTED, LIMIT, ...).
    """
    lib = _lib()
    bkeys = _keys_arg(keys)
    handle, _ = _restore_handle(
        path,
        threads=None,
        verify=False,
        keys=bkeys,
        native_endian=native_endian,
        mmap=False,
        metadata_only=True,
        progress=None,
        limits=(0, 0, 0),
    )
    try:
        md = _metadata(lib, handle)
        required = _optional(lib, "psv_archive_required_bytes")
        listing = Listing(required_bytes=int(required(handle)) if required is not None else 0)
        n = len(md.keys)
        offsets_fn = _optional(lib, "psv_archive_offsets")
        if offsets_fn is not None:
            column = np.zeros(n, dtype=np.uint64)
            offsets_fn(handle, column.ctypes.data)
            offsets = column.tolist()
        else:  # an older library: one call per array
            offset = _optional(lib, "psv_archive_offset")
            offsets = [int(offset(handle, i)) if offset is not None else -1 for i in range(n)]
        # Columns as Python lists first: per-array numpy indexing costs ~10x more; each tuple
        # built by tuple.__new__ (the NamedTuple's own __new__ is Python code).
        dims, starts, ndims = md.dims.tolist(), md.starts.tolist(), md.ndims.tolist()
        rows = zip(md.keys, md.dtypes, starts, ndims, md.nbytes.tolist(), md.fortran.tolist(), offsets)
        new = tuple.__new__
        for key, dt, s, nd, nb, fortran, at in rows:
            info = new(ArrayInfo, (dt, tuple(dims[s : s + nd]), nb, fortran))
            info.offset = at
            listing[key] = info
        return listing
    finally:
        lib.psv_free(handle)


def views(buffer: Any, listing: Mapping[str, ArrayInfo]) -> Dict[str, np.ndarray]:
    """Rebuild the arrays a :func:`restore` with ``out=`` placed in memory, from the
    :func:`ls` of the same source, as zero-copy views of ``buffer`` (e.g. the same shared
    memory attached by name in another process): key -> ``np.ndarray`` at ``info.offset``."""
    mem = np.frombuffer(buffer, dtype=np.uint8)
    need = getattr(listing, "required_bytes", 0)
    if mem.size < need:
        raise ValueError(f"buffer has {mem.size} bytes; the listing's arrays need {need}")
    out = {}
    for key, info in listing.items():
        order = "F" if info.fortran_order else "C"
        out[key] = np.ndarray(info.shape, dtype=info.dtype, buffer=mem, offset=info.offset, order=order)
    return out


def _string_list(fn: Any, handle: Any) -> List[str]:
    """A NUL-separated string list from libpsv (keys or descrs), decoded in one go."""
    n = _c_size(0)
    ptr = fn(handle, ctypes.byref(n))
    if not ptr or n.value == 0:
        return []
    text = ctypes.string_at(ptr, n.value).decode("utf-8", "surrogateescape")
    return text.split("\0")[:-1]


#: PSV_DTYPE code -> numpy dtype (native byte order), for psv_archive_describe's codes.
_DTYPE_BY_CODE: Dict[int, np.dtype] = {c: np.dtype(t) for t, c in DTYPE_CODES.items()}


class _Metadata(NamedTuple):
    """Every array's metadata as whole columns (numpy arrays and lists), not per-array objects."""

    keys: List[str]
    distinct: List[np.dtype]  # the distinct dtypes; ``dtype_codes`` index them
    dtype_codes: np.ndarray  # int64, one per array: equal codes <=> equal dtypes
    address: np.ndarray  # uint64
    nbytes: np.ndarray  # uint64
    ndims: np.ndarray  # int64
    fortran: np.ndarray  # bool
    dims: np.ndarray  # int64, every array's dims back to back
    starts: np.ndarray  # int64, where each array's dims begin in ``dims``

    def shape(self, i: int) -> Tuple[int, ...]:
        s = int(self.starts[i])
        return tuple(self.dims[s : s + int(self.ndims[i])].tolist())

    def dtype(self, i: int) -> np.dtype:
        return self.distinct[int(self.dtype_codes[i])]

    @property
    def dtypes(self) -> List[np.dtype]:
        """One dtype per array (shared objects)."""
        return list(map(self.distinct.__getitem__, self.dtype_codes.tolist()))


def _metadata(lib: ctypes.CDLL, handle: Any) -> _Metadata:
    """Every array's metadata in a handful of calls (psv_archive_describe and the string
    lists), cross-checked with numpy: shape x itemsize must equal the library's byte count."""
    n = int(lib.psv_archive_count(handle))
    address = np.zeros(n, dtype=np.uint64)
    nbytes = np.zeros(n, dtype=np.uint64)
    numeric = np.zeros(n, dtype=np.int32)
    ndims = np.zeros(n, dtype=np.uint64)
    fortran = np.zeros(n, dtype=np.bool_)
    total_ndim = int(lib.psv_archive_total_ndim(handle))
    dims = np.zeros(max(total_ndim, 1), dtype=np.int64)
    _functions().psv_archive_describe(  # raises PsvError on failure
        handle,
        address.ctypes.data,
        nbytes.ctypes.data,
        numeric.ctypes.data,
        ndims.ctypes.data,
        fortran.ctypes.data,
        dims.ctypes.data,
    )
    dims = dims[:total_ndim]
    keys = _string_list(lib.psv_archive_key_list, handle)
    if len(keys) != n:
        raise RuntimeError(f"libpsv: {n} arrays but {len(keys)} keys")
    descrs: Optional[List[str]] = None
    if n and not (numeric == PSV_DTYPE_OTHER).any():
        # Every array numeric in native byte order (the common case): the library's codes give
        # the dtypes, with no descr text to fetch, split and parse per array.
        present, inverse = np.unique(numeric, return_inverse=True)
        distinct = [_DTYPE_BY_CODE[c] for c in present.tolist()]
        dtype_codes = inverse.reshape(n).astype(np.int64)
    else:
        descrs = _string_list(lib.psv_archive_descr_list, handle)
        if len(descrs) != n:
            raise RuntimeError(f"libpsv: {n} arrays but {len(descrs)} descrs")
        # Each distinct descr is parsed once; its code indexes the distinct dtypes.
        code_of = {d: k for k, d in enumerate(set(descrs))}
        distinct = [_descr_to_dtype(d) for d in code_of]
        dtype_codes = np.fromiter(map(code_of.__getitem__, descrs), dtype=np.int64, count=n)
    ndims_i = ndims.astype(np.int64)
    starts = np.cumsum(ndims_i) - ndims_i
    if int(ndims_i.sum()) != total_ndim:
        raise RuntimeError("libpsv: the dims do not add up to psv_archive_total_ndim")
    # prod(shape) per array (1 for 0-d), times the itemsize, must be the library's byte count.
    counts = np.ones(n, dtype=np.int64)
    has_dims = ndims_i > 0
    if has_dims.any():
        counts[has_dims] = np.multiply.reduceat(dims, starts[has_dims])
    itemsizes = np.array([dt.itemsize for dt in distinct], dtype=np.int64)[dtype_codes]
    bad = np.flatnonzero(counts * itemsizes != nbytes.astype(np.int64))
    if bad.size:
        i = int(bad[0])
        shape = tuple(dims[starts[i] : starts[i] + ndims_i[i]].tolist())
        descr = descrs[i] if descrs is not None else distinct[int(dtype_codes[i])].str
        raise RuntimeError(
            f"libpsv metadata mismatch for key {keys[i]!r}: descr {descr!r} shape {shape} "
            f"means {int(counts[i] * itemsizes[i])} bytes, library says {int(nbytes[i])}"
        )
    return _Metadata(keys, distinct, dtype_codes, address, nbytes, ndims_i, fortran, dims, starts)


#: Fewest arrays worth one strided view (see _strided_groups).
_MIN_RUN = 4


def _strided_groups(md: _Metadata, offsets: np.ndarray, eligible: np.ndarray) -> List[Tuple[np.ndarray, int]]:
    """Arrays of one dtype and one C-order shape (ndim >= 1) lying at a constant distance from
    each other in the block, as (indices, distance): each group becomes one strided view cut
    into rows, ~10x cheaper per array than one ``np.ndarray`` call each (which is what 20000
    small arrays cost). Every array psv restores lies at a 64-byte-aligned place after the
    previous one, so equal-sized arrays of a type land at equal distances."""
    n = len(md.keys)
    if n < _MIN_RUN or md.ndims.min() != md.ndims.max() or md.ndims[0] == 0:
        return []
    idx = np.flatnonzero(eligible)
    if idx.size < _MIN_RUN:
        return []
    keys = np.column_stack([md.dtype_codes, md.dims.reshape(n, int(md.ndims[0]))])[idx]
    # Group equal keys: a stable lexsort (np.unique(axis=0) costs ~15x more here).
    order = np.lexsort(keys.T[::-1])
    idx, keys = idx[order], keys[order]
    out = []
    starts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    for members in np.split(idx, starts):
        if members.size < _MIN_RUN:
            continue
        step = np.diff(offsets[members])
        # Cut where the distance changes; each piece then has one distance.
        cuts = np.flatnonzero(step[1:] != step[:-1]) + 2
        for piece in np.split(members, cuts):
            if piece.size >= _MIN_RUN:
                out.append((piece, int(offsets[piece[1]] - offsets[piece[0]])))
    return out


def _build_arrays(lib: ctypes.CDLL, handle: Any, owner: RestoredBlock) -> RestoredArrays:
    """One numpy view per array, on one uint8 view of the whole block (whose ``.base`` is
    ``owner``, so the block lives as long as any array) or of the file mapping."""
    md = _metadata(lib, handle)
    n = len(md.keys)
    block = np.asarray(owner)
    base, size = owner.address, owner.nbytes
    # mmap mode: one uint8 view of the whole file mapping, sliced per mapped array.
    map_len = _c_size(0)
    map_base = int(lib.psv_archive_mapping(handle, ctypes.byref(map_len)) or 0) if owner.mapped else 0
    mapping = np.asarray(_Region(owner, map_base, map_len.value)) if map_base else None
    address = md.address.astype(np.int64)
    ends = address + md.nbytes.astype(np.int64)
    in_block = (address != 0) & (address >= base) & (ends <= base + size)
    # Each array's offset in the buffer it views: the block, or (mmap mode) the file mapping.
    in_mapping = np.zeros(n, dtype=np.bool_)
    if mapping is not None:
        in_mapping = ~in_block & (address >= map_base) & (ends <= map_base + map_len.value)
    offsets = np.where(in_mapping, address - map_base, address - base)
    arrays: List[Any] = [None] * n
    done = np.zeros(n, dtype=np.bool_)
    grouped: List[np.ndarray] = []  # each group's members, in the order of `group_rows`
    group_rows: List[Any] = []  # each group's strided view, cut into rows by iteration
    for buffer, inside in ((block, in_block), (mapping, in_mapping)):
        if buffer is None:
            continue
        eligible = inside & ~md.fortran & (md.nbytes > 0)
        for members, step in _strided_groups(md, offsets, eligible):
            first = int(members[0])
            dt, shape = md.dtype(first), md.shape(first)
            inner = [dt.itemsize]
            for d in reversed(shape[1:]):
                inner.insert(0, inner[0] * d)
            rows = np.ndarray(
                (members.size,) + shape,
                dtype=dt,
                buffer=buffer,
                offset=int(offsets[first]),
                strides=(step,) + tuple(inner),
            )
            grouped.append(members)
            group_rows.append(rows)
            done[members] = True
    if grouped and done.all():
        # Every array is a row of some group: all rows in group order, then one C-level gather
        # into archive order (~half the cost of scattering them one setitem at a time).
        every = list(itertools.chain.from_iterable(group_rows))
        where = np.empty(n, dtype=np.int64)
        where[np.concatenate(grouped)] = np.arange(n)
        arrays = list(operator.itemgetter(*where.tolist())(every)) if n > 1 else every
    else:
        for members, rows in zip(grouped, group_rows):
            # Scatter the rows without a Python-level loop body (~40% cheaper per array).
            collections.deque(map(arrays.__setitem__, members.tolist(), rows), maxlen=0)
    rest = np.flatnonzero(~done).tolist()
    if rest:
        address, nbytes, fortran = md.address.tolist(), md.nbytes.tolist(), md.fortran.tolist()
        in_block_l, in_mapping_l, offsets_l = in_block.tolist(), in_mapping.tolist(), offsets.tolist()
        dtypes = md.dtypes
    for i in rest:
        key, dt, shape, nb, ptr = md.keys[i], dtypes[i], md.shape(i), nbytes[i], address[i]
        order = "F" if fortran[i] else "C"
        if not ptr:
            raise RuntimeError(f"libpsv: NULL data pointer for key {key!r}")
        if in_block_l[i]:
            arr = np.ndarray(shape, dtype=dt, buffer=block, offset=offsets_l[i], order=order)
        elif in_mapping_l[i]:
            arr = np.ndarray(shape, dtype=dt, buffer=mapping, offset=offsets_l[i], order=order)
        elif nb == 0:
            # A zero-byte array whose pointer is just past the block: an empty view, still
            # owned by `owner`.
            region = np.asarray(_Region(owner, ptr, nb))
            arr = np.ndarray(shape, dtype=dt, buffer=region, offset=0, order=order)
        else:
            raise RuntimeError(
                f"libpsv: data of key {key!r} (0x{ptr:x}, {nb} bytes) lies outside the "
                f"block 0x{base:x}+{size}"
            )
        arrays[i] = arr
    skipped = [
        _decode(lib.psv_archive_skipped_name(handle, j))
        for j in range(lib.psv_archive_skipped_count(handle))
    ]
    return RestoredArrays(zip(md.keys, arrays), skipped)


class _Region:
    """A writable ``nbytes`` buffer at ``address`` (in the archive's block or file mapping)
    that keeps the archive owner alive."""

    def __init__(self, owner: RestoredBlock, address: int, nbytes: int = 0) -> None:
        self.base = owner
        self.__array_interface__ = {
            "version": 3,
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (address, False),
        }
