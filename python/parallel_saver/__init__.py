"""libpsv for Python, with the API of the ``parallel-saver`` tool it replaces.

``ParallelSaver(*args, **kwds).save(path)`` writes every array into one ``.npz``
(numpy's own format, loadable by ``numpy.load``) in parallel, and
``restore(path)`` reads any ``.npz`` into one 64-byte-aligned block and returns a
dict of zero-copy, writable views into it.

Options: ``save(..., compress=1..9)`` deflates members (as ``numpy.savez_compressed``);
``restore(..., keys=[...])`` restores a subset in the given order; ``restore(bytes)``
restores an archive held in memory; ``restore(..., mmap=True)`` maps the file instead of
reading it; ``restore(..., native_endian=True)`` byte-swaps big-endian arrays; both take
``progress=callable(done, total)`` (return False to cancel) or ``progress=True`` for a bar
on stderr.  :func:`ls` lists an archive from its headers only.

Command line (also installed as the ``psv-py`` script)::

    python -m parallel_saver ls FILE        # key, dtype, shape, bytes per array
    python -m parallel_saver verify FILE    # full restore with CRC checks; exit 1 if corrupt
    python -m parallel_saver cp SRC DST     # rewrite any .npz as an aligned psv file

The shared library is the one bundled in this package (the wheel carries it); the
``PSV_LIBRARY`` environment variable names another one, and without either the system's
libpsv is used (``ctypes.util.find_library("psv")``).  See :func:`library_path`.

The package is split by job: ``_binding`` (library lookup, prototypes, status codes, errors),
``_api`` (saving and restoring), ``_progress`` (progress callbacks and the stderr bar) and
``_cli`` (the command line), ``_collective`` (:func:`collective_save`: the ranks of an MPI
communicator write one ``.npz`` together).  Lifetimes of handles and arrays are described in ``_api``.
"""

from __future__ import annotations

from ._api import (
    ArrayInfo,
    Listing,
    ParallelSaver,
    PreparedSave,
    RestoredArrays,
    RestoredBlock,
    block_of,
    ls,
    restore,
    views,
)

# The package's namespace (hence no "unused import" here). The private names are for low-level
# use of the raw library, as tests/python does: _lib() is the ctypes.CDLL with prototypes and no
# errcheck.
from ._binding import (  # noqa: F401
    DTYPE_CODES,
    PSV_ABI_VERSION,
    PSV_DTYPE_INVALID,
    PSV_DTYPE_OTHER,
    PSV_LAYOUT_DIR,
    PSV_LAYOUT_NPZ,
    PSV_OK,
    STATUS_NAMES,
    PsvError,
    _ArchiveP,
    _last_error_message,
    _lib,
    _NATIVE_CODES,
    abi_version,
    library_path,
    version,
)
from ._binding import __getattr__ as _status_getattr
from ._cli import main
from ._collective import collective_save
from ._job import SaveJob

__all__ = [
    "ParallelSaver",
    "restore",
    "ls",
    "ArrayInfo",
    "Listing",
    "PreparedSave",
    "SaveJob",
    "views",
    "main",
    "collective_save",
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


def __getattr__(name: str) -> int:
    """``PSV_ERR_*`` status codes (``parallel_saver.PSV_ERR_IO``), taken from the library's
    status table; the first use loads the library."""
    try:
        return _status_getattr(name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
