"""Collective save: every process of an MPI communicator writes its own arrays into ONE
``.npz`` that plain ``numpy.load`` reads.

libpsv itself never talks to other processes: this module moves its small blobs (manifests,
plan ids, CRC reports, statuses) with the communicator's collectives. ``comm`` is an mpi4py
communicator (``mpi4py.MPI.COMM_WORLD``); mpi4py is never imported by this module: only the
methods ``Get_rank``, ``Get_size``, ``allgather`` and ``gather(obj, root=0)`` of the object
passed in are used, so anything offering them (e.g. a thin wrapper over ``torch.distributed``'s
``all_gather_object``) works too. Every step ends with an allgather of every rank's status,
which is also the barrier the flow needs (rank 0 creates the file before anyone writes).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

from ._api import ParallelSaver, _encode_path, _threads_arg, _with_npz
from ._binding import _STATUS, PsvError, _BufferP, _checked, take_buffer, _functions as _main_functions, _lib, _SaveOptionsP, _SaverP

PathLike = Union[str, bytes, "os.PathLike[str]"]

#: Length of a plan id in bytes (PSV_PLAN_ID_LEN).
PLAN_ID_LEN = 16
#: psv_status codes used here (psv.h; append-only).
_PSV_ERR_INVALID_ARG = 2


class _Collective(ctypes.Structure):
    """Opaque ``psv_collective``."""


_CollectiveP = ctypes.POINTER(_Collective)
_c_size = ctypes.c_size_t
_VoidPP = ctypes.POINTER(ctypes.c_void_p)
_SizeP = ctypes.POINTER(_c_size)

_PROTOTYPES = {
    "psv_saver_manifest": (_STATUS, [_SaverP, ctypes.POINTER(_BufferP)]),
    "psv_collective_new": (
        _STATUS,
        [ctypes.c_char_p, _VoidPP, _SizeP, _c_size, _c_size, _SaveOptionsP, ctypes.POINTER(_CollectiveP)],
    ),
    "psv_collective_plan_id": (_STATUS, [_CollectiveP, ctypes.c_char_p]),
    "psv_collective_temp_path": (ctypes.c_char_p, [_CollectiveP]),
    "psv_collective_create": (_STATUS, [_CollectiveP]),
    "psv_collective_write": (_STATUS, [_CollectiveP, _SaverP, ctypes.POINTER(_BufferP)]),
    "psv_collective_commit": (_STATUS, [_CollectiveP, _VoidPP, _SizeP, _c_size]),
    "psv_collective_abort": (_STATUS, [_CollectiveP]),
    "psv_collective_free": (None, [_CollectiveP]),
    "psv_save_options_set_alignment": (_STATUS, [_SaveOptionsP, _c_size]),
}

_fns: Optional[Any] = None


class _Fns:
    """The collective functions, checked (PsvError for a status other than PSV_OK)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        for name, (restype, argtypes) in _PROTOTYPES.items():
            if not hasattr(lib, name):
                raise OSError(f"{name} is missing from the loaded libpsv: it predates collective saves")
            setattr(self, name, _checked(getattr(lib, name), name, restype, argtypes))


def _functions() -> Any:
    global _fns
    if _fns is None:
        _fns = _Fns(_lib())
    return _fns


def _blob_array(blobs: Sequence[bytes]) -> Tuple[Any, Any, List[Any]]:
    """(void* array, size_t array, keep-alive list) for ``blobs``."""
    keep = [ctypes.create_string_buffer(b, len(b)) for b in blobs]
    ptrs = (ctypes.c_void_p * len(blobs))(*[ctypes.addressof(k) for k in keep])
    lens = (_c_size * len(blobs))(*[len(b) for b in blobs])
    return ptrs, lens, keep


def _items(arrays: Union[Mapping[str, Any], Sequence[Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    if isinstance(arrays, Mapping):
        return list(arrays.items())
    return list(arrays)


def _describe(error: Optional[BaseException]) -> Optional[Tuple[int, str, str]]:
    if error is None:
        return None
    if isinstance(error, PsvError):
        return (error.status, error.status_name, error.message)
    return (0, type(error).__name__, str(error))


def _agree(comm: Any, step: str, error: Optional[BaseException]) -> None:
    """Every rank learns whether every rank succeeded at ``step``: if any failed, every rank
    raises the same PsvError (the first failed rank's status, every failed rank's message)."""
    failures = comm.allgather(_describe(error))
    failed = [(r, f) for r, f in enumerate(failures) if f is not None]
    if not failed:
        return
    status, name, _ = failed[0][1]
    detail = "; ".join(f"rank {r}: {n}: {m}" for r, (_, n, m) in failed)
    ranks = [r for r, _ in failed]
    raise PsvError(status, name, f"collective save failed {step} on rank(s) {ranks}: {detail}") from error


def collective_save(
    comm: Any,
    arrays: Union[Mapping[str, Any], Sequence[Tuple[str, Any]]],
    path: PathLike,
    *,
    threads: Optional[int] = None,
    fsync: bool = False,
    alignment: int = 64,
) -> str:
    """Saves every rank's ``arrays`` (a dict, or (key, array) pairs; any rank may have none)
    into ONE ``.npz`` at ``path`` (".npz" appended if missing) and returns that path on every
    rank. Call it on every rank of ``comm`` with the same ``path`` and options.

    The file holds rank 0's arrays, then rank 1's, ... each rank's in its own order; it is
    byte-identical to ``ParallelSaver`` saving all of them in that order with the same options,
    and ``numpy.load`` reads it. Each rank writes only its own arrays, in parallel on
    ``threads`` threads; rank 0 creates the file and, once every rank has written, writes the
    central directory and renames it over ``path`` atomically. Keys must be unique across
    ranks. ``alignment`` (a power of two, 64 to 1 MiB) makes every array of at least that many
    bytes start at a multiple of it in the file (e.g. the file system's stripe size).

    Any rank's failure raises :class:`PsvError` on every rank (naming the ranks that failed)
    and leaves an existing file at ``path`` untouched: rank 0 removes the temporary file. If a
    process is killed instead, the job dies with it; its temporary file
    (``.<16 hex digits>.psv-tmp`` beside ``path``) is removed by the next collective save of
    the same arrays to the same path.
    """
    fns = _functions()
    main = _main_functions()
    rank, size = comm.Get_rank(), comm.Get_size()
    target = os.fsdecode(_with_npz(path))
    saver: Optional[ParallelSaver] = None
    opts = None
    handle = _CollectiveP()
    error: Optional[BaseException] = None
    manifest = b""
    try:
        saver = ParallelSaver(**dict(_checked_items(arrays)))
        buf = _BufferP()
        fns.psv_saver_manifest(saver._handle, ctypes.byref(buf))
        manifest = take_buffer(buf)
    except Exception as e:  # every rank learns of it below
        error = e
    manifests = comm.allgather(manifest)
    try:
        _agree(comm, "adding the arrays", error)
        plan_id = b""
        try:
            opts = main.psv_save_options_new()
            main.psv_save_options_set_threads(opts, _threads_arg(threads))
            main.psv_save_options_set_fsync(opts, bool(fsync))
            fns.psv_save_options_set_alignment(opts, int(alignment))
            ptrs, lens, keep = _blob_array(manifests)
            fns.psv_collective_new(_encode_path(target), ptrs, lens, size, rank, opts, ctypes.byref(handle))
            del keep
            id_buf = ctypes.create_string_buffer(PLAN_ID_LEN)
            fns.psv_collective_plan_id(handle, id_buf)
            plan_id = id_buf.raw
        except Exception as e:
            error = e
        _agree(comm, "planning", error)
        ids = comm.allgather(plan_id)
        differ = [r for r, i in enumerate(ids) if i != ids[0]]
        if differ:
            raise PsvError(
                _PSV_ERR_INVALID_ARG,
                "PSV_ERR_INVALID_ARG",
                f"collective save: the plan id of rank(s) {differ} differs from rank 0's "
                "(the manifests were gathered in another order?)",
            )
        if rank == 0:
            try:
                fns.psv_collective_create(handle)
            except Exception as e:
                error = e
        _agree(comm, "creating the file", error)
        report = b""
        try:
            buf = _BufferP()
            fns.psv_collective_write(handle, saver._handle, ctypes.byref(buf))
            report = take_buffer(buf)
        except Exception as e:
            error = e
        reports = comm.gather(report, root=0)
        _agree(comm, "writing", error)
        if rank == 0:
            try:
                ptrs, lens, keep = _blob_array(reports)
                fns.psv_collective_commit(handle, ptrs, lens, size)
                del keep
            except Exception as e:
                error = e
        _agree(comm, "committing", error)
        return target
    except BaseException:
        if rank == 0 and handle:
            try:
                fns.psv_collective_abort(handle)
            except PsvError:
                pass
        raise
    finally:
        if handle:
            fns.psv_collective_free(handle)
        if opts:
            main.psv_save_options_free(opts)
        if saver is not None:
            saver.close()


def _checked_items(arrays: Union[Mapping[str, Any], Sequence[Tuple[str, Any]]]) -> List[Tuple[str, Any]]:
    """The (key, array) pairs, with duplicate keys refused (a dict would merge them)."""
    items = _items(arrays)
    seen = set()
    for k, _ in items:
        if k in seen:
            raise PsvError(_PSV_ERR_INVALID_ARG, "PSV_ERR_INVALID_ARG", f"duplicate key {k!r}")
        seen.add(k)
    return items
