"""Restore an .npz once into POSIX shared memory; other processes use the arrays zero-copy.

The tool libpsv replaces copied every array through shared memory by hand. Here process A
restores straight into a ``multiprocessing.shared_memory.SharedMemory`` (``restore(path,
out=shm.buf)``: the arrays land there, nothing is copied afterwards), and process B attaches by
name and rebuilds the same arrays as views from ``ls(path)``'s offsets.

Run: ``python examples/python_shm/shared_restore.py [FILE.npz]`` (without FILE it writes a sample
archive first). Prints one line per array and exits non-zero if B sees other values than A.

Another way to share: an mmap restore (``restore(path, mmap=True)``) of a psv file kept on tmpfs
(``/dev/shm/x.npz``) maps the file's pages into each process; every process that restores it that
way shares the same physical pages (copy-on-write: a process that writes gets its own copy).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
import tempfile
from multiprocessing import shared_memory

import numpy as np

import parallel_saver as psv


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to an existing segment. Python 3.13+: untracked, so only its creator unlinks it.
    Before 3.13 attaching registers it with the resource tracker: a child started by
    multiprocessing shares its parent's tracker (no harm), but an unrelated process should call
    ``resource_tracker.unregister(shm._name, "shared_memory")`` after attaching, or its tracker
    unlinks the segment when it exits."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    return shared_memory.SharedMemory(name=name)


def digest(arrays: dict) -> dict:
    """key -> sha256 of the array's bytes, dtype and shape."""
    return {
        k: hashlib.sha256(np.ascontiguousarray(a).tobytes() + str((a.dtype.str, a.shape)).encode()).hexdigest()
        for k, a in arrays.items()
    }


def process_b(name: str, path: str, queue: "mp.Queue") -> None:
    """Attach by name, rebuild the views from ls()'s offsets (no data is read from the file)."""
    shm = _attach(name)
    try:
        queue.put(_check_views(shm, path))
    finally:
        shm.close()  # every view is gone by now (they lived in _check_views)


def _check_views(shm: shared_memory.SharedMemory, path: str) -> dict:
    arrays = psv.views(shm.buf, psv.ls(path))
    segment = np.frombuffer(shm.buf, np.uint8)
    # Zero-copy: every view lies inside the shared segment.
    assert all(a.size == 0 or np.shares_memory(a, segment) for a in arrays.values())
    return digest(arrays)


def main(argv: list) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        if len(argv) > 1:
            path = argv[1]
        else:
            rng = np.random.default_rng(7)
            path = psv.ParallelSaver(
                weights=rng.standard_normal((256, 512), dtype=np.float32),
                labels=np.arange(1000, dtype=np.int64),
                fortran=np.asfortranarray(rng.integers(0, 9, (33, 17), dtype=np.int16)),
                big_endian=np.arange(12, dtype=">u4"),
                empty=np.zeros((0, 3)),
            ).save(os.path.join(tmp, "sample.npz"))
        listing = psv.ls(path)
        shm = shared_memory.SharedMemory(create=True, size=max(listing.required_bytes, 1))
        try:
            arrays = psv.restore(path, out=shm.buf)  # process A: the arrays live in shm
            mine = digest(arrays)
            ctx = mp.get_context("spawn")
            queue = ctx.Queue()
            child = ctx.Process(target=process_b, args=(shm.name, path, queue))
            child.start()
            theirs = queue.get(timeout=60)
            child.join(60)
            for key, info in listing.items():
                print(f"{key:12s} {str(info.dtype):8s} {str(info.shape):12s} offset {info.offset}")
            del arrays  # releases the export of shm.buf, so the segment can be closed
        finally:
            shm.close()
            shm.unlink()
        if child.exitcode != 0 or theirs != mine:
            print(f"process B saw different arrays (exit {child.exitcode})", file=sys.stderr)
            return 1
        print(f"process B rebuilt {len(theirs)} arrays zero-copy from shared memory: identical")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
