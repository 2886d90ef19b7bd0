#!/usr/bin/env python3
"""benches/compare.py: the benchmark behind `make bench` (issue 5).

Saves and restores four workloads with libpsv (through the installed ctypes package
parallel_saver, python/parallel_saver/), numpy and safetensors (torch-free:
``safetensors.numpy``), and (issue 18, --no-peers skips them) pickle protocol 5, h5py, zarr v3,
a directory of .npy files (psv layout="dir" vs np.save per file) and durable saves (psv
fsync=True, np.savez + fsync, and the durable write limit); see peer_cases. It measures this
machine's limits in the same run:

  W1  8 float32 arrays of 64 MiB            (also np.savez_compressed / psv deflate-6)
  W2  1 float64 array of 1 GiB
  W3  20000 arrays of 1 KiB, int32/float32   (also np.savez_compressed / psv deflate-6)
  W4  4 x 128 MiB float32 + 2000 x 16 KiB float32

Limits (same run, Python, no psv), measured for each workload at its size and interleaved
with its save / restore rounds: page-cache write (1 thread os.write of the whole buffer,
plain and after fallocate; 2 threads os.pwrite of halves; 1 thread os.pwrite in 1 MiB pieces;
the write limit is the best of them), page-cache read into a freshly allocated anonymous mapping
advised MADV_HUGEPAGE (2 threads os.preadv of halves), memcpy (np.copyto) into a fresh
huge-page buffer and into a pre-faulted one; with --cold the read limit is the cold one.

Method: each case runs once as a warm-up (and its result is checked against the source
arrays), then --runs more times; the cases of one workload and phase (systems and limits)
run round-robin (each round starting one case later), so machine noise spreads over all of
them alike. Before every run, untimed:
delete that case's previous output, os.sync() (a directory output: wait until 6 s after
its removal, see INODE_SETTLE_S), (--cold: drop the page cache), then allocate,
touch and free as much memory as the run will use (its payload plus a quarter, at least 32 MiB), on every CPU, so the run neither pays the hypervisor for
re-backing freed memory nor waits on the previous run's dirty pages. Timed: everything from the arrays (or the file) to the result
(saver construction included; freeing the result excluded). Every restore reads every byte:
copy mode reads into psv's block, mmap mode is followed by a uint64 sum over each array (the
lazy mmap row, for the issue's mmap target, is labelled as such and kept out of ratios/chart).

GB/s = payload bytes (sum of array nbytes) / seconds / 1e9, for every system. Ratios are
speed ratios (>1: psv faster). Peak RSS of save / copy-mode restore: each op runs in a fresh
child process (under a reaper process that reads getrusage(RUSAGE_CHILDREN).ru_maxrss).

Asynchronous saves (issue 14, --no-async skips them): a training-loop simulation, K steps of a
numpy matmul sized to ~0.5 s with a 512 MiB checkpoint after every step, saved blocking, then
with save(wait=False) with a snapshot and without (borrowed): caller-blocked time per
checkpoint and total loop time; the snapshot's blocked time against a 2-thread copy of the
same bytes into a warmed buffer; a background save with an idle caller against the blocking
save.

Outputs: markdown tables on stdout, bench/results.json, bench/chart.png.
The same measurement without Python, through the C ABI: `cargo run --release --example bench`
(examples/rust/bench.rs; `make bench-rust`).

  python benches/compare.py [--quick] [--cold] [--runs N] [--workloads W1,W3] [--out DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import gc
import hashlib
import json
import mmap
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]


def wrapper_dir() -> Path:
    """The installed parallel_saver package that the psv runs go through."""
    import parallel_saver

    return Path(parallel_saver.__file__).resolve().parent


def wrapper_sha256() -> str:
    """One hash over the package's Python files (name and content, in name order)."""
    h = hashlib.sha256()
    for f in sorted(wrapper_dir().glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()

MiB = 1 << 20
GiB = 1 << 30
SEED = 20240605
# os.write/pwrite/preadv move at most this much per call on Linux.
IO_CHUNK = 0x7FFFF000

# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------
# name -> (description, full spec, quick spec); a spec is a list of (count, dtype, nbytes each).
WORKLOADS: Dict[str, Tuple[str, List[Tuple[int, str, int]], List[Tuple[int, str, int]]]] = {
    "W1": ("8 x 64 MiB float32", [(8, "f4", 64 * MiB)], [(8, "f4", MiB // 4)]),
    "W2": ("1 x 1 GiB float64", [(1, "f8", GiB)], [(1, "f8", 4 * MiB)]),
    "W3": ("20000 x 1 KiB int32/float32", [(20000, "i4/f4", 1024)], [(1000, "i4/f4", 1024)]),
    "W4": (
        "4 x 128 MiB + 2000 x 16 KiB float32",
        [(4, "f4", 128 * MiB), (2000, "f4", 16 * 1024)],
        [(4, "f4", MiB), (100, "f4", 16 * 1024)],
    ),
}
# Workloads that also run np.savez_compressed, psv deflate-6 and restores of deflated files.
COMPRESSED = {"W1", "W3"}


def make_arrays(spec: List[Tuple[int, str, int]]) -> Dict[str, Any]:
    """Deterministic arrays for a workload spec (uniform floats / small ints: realistic
    compressibility, ~0.9 for floats, ~0.5 for the ints)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    arrays: Dict[str, Any] = {}
    idx = 0
    for count, dtypes, nbytes in spec:
        kinds = dtypes.split("/")
        width = len(str(count - 1))
        for i in range(count):
            dt = np.dtype(kinds[i % len(kinds)])
            n = nbytes // dt.itemsize
            if dt.kind == "i":
                a = rng.integers(-1000, 1000, n, dtype=dt)
            else:
                a = rng.random(n, dtype=dt)
            arrays[f"g{idx}_{i:0{width}d}"] = a
        idx += 1
    return arrays


# ---------------------------------------------------------------------------
# Memory and page-cache hygiene
# ---------------------------------------------------------------------------
def fresh_huge(nbytes: int) -> mmap.mmap:
    """A fresh anonymous mapping advised MADV_HUGEPAGE (nothing touched yet)."""
    m = mmap.mmap(-1, max(nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return m


def _in_threads(args: Iterable[int], fn: Callable[[int], None]) -> None:
    """Runs fn(a) for each a, each on its own thread; waits for all, then re-raises the first
    error."""
    errs: List[BaseException] = []

    def wrap(a: int) -> None:
        try:
            fn(a)
        except BaseException as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=wrap, args=(a,)) for a in args]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]


def _touch_and_free_here(nbytes: int) -> None:
    import numpy as np

    m = fresh_huge(nbytes)
    a = np.frombuffer(m, dtype=np.uint8)
    a[::4096] = 1
    del a
    m.close()


def with_headroom(nbytes: int) -> int:
    """What to pre-touch for a run whose payload is ``nbytes``: a quarter more, at least
    32 MiB more. A run uses more than its payload (psv's W3 block holds 20000 headers and
    paddings, 1.18x the arrays; pickle's read buffer holds the pickle too; interpreter and
    library allocations), and memory beyond what was touched costs ~20x on first touch."""
    return nbytes + max(nbytes // 4, 32 << 20) if nbytes > 0 else 0


def touch_and_free(nbytes: int) -> None:
    """Allocate, touch every page of, and free ``nbytes``, once on every CPU this process may
    run on: freed memory is handed back to the hypervisor within seconds on these VMs, and the
    next first touch would cost ~20x.

    Why on every CPU: freed 2 MiB pages wait in the freeing CPU's own free list, and a write
    issued on the other CPU got older pages the host had taken back. Measured here (1 GiB
    write after fallocate, 10 runs each, memory touched on CPU 0 only): a writer on CPU 0 ran
    at 6.0-7.3 GB/s, one on CPU 1 at 0.5-7.3 (median 4.9). Touching on CPU 0 only favoured
    whichever system writes from the calling thread (the one-thread limits did; psv writes
    from a worker)."""
    if nbytes <= 0:
        return
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        _touch_and_free_here(nbytes)
        return

    def on(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # 0: this thread only (Linux)
        _touch_and_free_here(nbytes)

    _in_threads(cpus, on)


class Cache:
    """Page-cache control for --cold: drop_caches when permitted, else fadvise(DONTNEED)."""

    def __init__(self, cold: bool) -> None:
        self.cold = cold
        self.method = "none"
        if cold:
            try:
                os.sync()
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                self.method = "drop_caches"
            except OSError:
                self.method = "fadvise"

    def drop(self, files: List[Path]) -> None:
        if not self.cold:
            return
        if self.method == "drop_caches":
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            return
        for p in files:  # unprivileged: evict these files' clean pages
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


#: Seconds to wait after removing a directory of files before a run that creates files (see
#: run_round_robin): ext4's recently-deleted-inode window is 5 s once the inode table is clean.
INODE_SETTLE_S = 6.0


def rm(paths: List[Path]) -> None:
    """Remove these files, or directories (zarr stores, directories of .npy files)."""
    import shutil

    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(p)


# ---------------------------------------------------------------------------
# Cases and the round-robin timer
# ---------------------------------------------------------------------------
class Case:
    """One timed thing: ``run()`` returns whatever must stay alive until the clock stops."""

    def __init__(
        self,
        name: str,
        op: str,
        system: str,
        run: Callable[[], Any],
        *,
        nbytes: int,
        count: int = 0,
        mem: int = 0,
        outputs: Optional[List[Path]] = None,
        inputs: Optional[List[Path]] = None,
        check: Optional[Callable[[Any], None]] = None,
        kind: str = "",
        lazy: bool = False,
    ) -> None:
        self.name, self.op, self.system, self.run = name, op, system, run
        self.nbytes, self.count, self.mem = nbytes, count, mem
        self.outputs = outputs or []
        self.inputs = inputs or []
        self.check = check
        self.kind = kind  # psv | numpy | safetensors | limit ; for ratios
        self.lazy = lazy
        self.times: List[float] = []

    def summary(self) -> Dict[str, Any]:
        t = sorted(self.times)
        med = statistics.median(t)
        gbs = lambda s: self.nbytes / s / 1e9  # noqa: E731
        d: Dict[str, Any] = {
            "name": self.name,
            "op": self.op,
            "system": self.system,
            "kind": self.kind,
            "lazy": self.lazy,
            "bytes": self.nbytes,
            "arrays": self.count,
            "runs": len(t),
            "median_s": med,
            "min_s": t[0],
            "max_s": t[-1],
            "gbps": gbs(med),
            "gbps_min": gbs(t[-1]),
            "gbps_max": gbs(t[0]),
            "times_s": self.times,
        }
        if self.count:
            d["us_per_array"] = med / self.count * 1e6
        return d


def run_round_robin(cases: List[Case], runs: int, warmup: int, cache: Cache, log: Callable[[str], None]) -> None:
    for r in range(warmup + runs):
        # Each round starts one case later, so no system always runs first (right after the
        # previous round's last case, e.g. a long np.savez_compressed).
        k = r % len(cases) if cases else 0
        for c in cases[k:] + cases[:k]:
            many_inodes = any(p.is_dir() for p in c.outputs)
            rm(c.outputs)
            removed_at = time.monotonic()
            gc.collect()
            os.sync()
            if many_inodes:
                # ext4 without a journal (this machine's) makes each new inode skip every inode
                # freed in the last 5 s: files created right after deleting thousands cost
                # O(N^2). Removing a directory of .npy files (psv's layout="dir", np.save per
                # file) therefore waits those seconds out before either system runs.
                time.sleep(max(0.0, INODE_SETTLE_S - (time.monotonic() - removed_at)))
            cache.drop(c.inputs)
            touch_and_free(with_headroom(c.mem))
            t0 = time.perf_counter()
            res = c.run()
            dt = time.perf_counter() - t0
            if r == 0 and c.check is not None:
                c.check(res)
            del res
            if r >= warmup:
                c.times.append(dt)
        log(f"  round {r + 1}/{warmup + runs} done" + (" (warm-up)" if r < warmup else ""))


# ---------------------------------------------------------------------------
# Reading every byte
# ---------------------------------------------------------------------------
def read_all(arrays: Dict[str, Any]) -> int:
    """Read every byte of every array (uint64 sums; tails as uint8). Returns a checksum so
    nothing is optimised away."""
    import numpy as np

    s = 0
    for a in arrays.values():
        if a.nbytes == 0:
            continue
        u = a.ravel(order="K").view(np.uint8)
        n8 = u.size & ~7
        if n8:
            s += int(u[:n8].view(np.uint64).sum())
        if n8 != u.size:
            s += int(u[n8:].sum())
    return s


def checker(arrays: Dict[str, Any], what: str) -> Callable[[Any], None]:
    import numpy as np

    def check(got: Any) -> None:
        if isinstance(got, tuple):
            got = got[0]
        if list(got.keys()) != list(arrays.keys()) and sorted(got.keys()) != sorted(arrays.keys()):
            raise SystemExit(f"{what}: keys differ from the source arrays")
        for k, a in arrays.items():
            b = got[k]
            if b.dtype != a.dtype or b.shape != a.shape or not np.array_equal(a, b):
                raise SystemExit(f"{what}: array {k!r} differs from the source")

    return check


# ---------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------
def _write_all(fd: int, mv: memoryview, off: Optional[int] = None) -> None:
    pos = 0
    n = len(mv)
    while pos < n:
        chunk = mv[pos : pos + IO_CHUNK]
        k = os.write(fd, chunk) if off is None else os.pwrite(fd, chunk, off + pos)
        pos += k


def _read_all(fd: int, mv: memoryview, off: int) -> None:
    pos = 0
    n = len(mv)
    while pos < n:
        k = os.preadv(fd, [mv[pos : pos + IO_CHUNK]], off + pos)
        if k <= 0:
            raise OSError(f"short read at {off + pos}")
        pos += k


class _Fresh:
    """A fresh huge-page buffer with a uint8 view; close() unmaps it (after the clock)."""

    def __init__(self, nbytes: int) -> None:
        import numpy as np

        self.m = fresh_huge(nbytes)
        self.a = np.frombuffer(self.m, dtype=np.uint8)

    def __del__(self) -> None:
        self.a = None
        try:
            self.m.close()
        except BufferError:
            pass


def limit_cases(wl: str, size: int, count: int, d: Path) -> Tuple[List[Case], List[Case], List[Path], Any]:
    """This machine's limits at this workload's size: (write limits, run in the save phase;
    read and memcpy limits, run in the restore phase; files; buffers to keep alive). They run
    round-robin with the systems, so a limit and the rows compared with it share the same
    moments of machine load. ``count`` (the workload's array count) gives their us/array: the
    floor per array at that size."""
    import numpy as np

    src = np.arange(size // 8 + 1, dtype=np.uint64).view(np.uint8)[:size]
    mv = memoryview(src)
    wpath = d / f"{wl}_limit_write.bin"
    rpath = d / f"{wl}_limit_read.bin"
    half = size // 2

    def part(view: memoryview, k: int) -> memoryview:
        return view[:half] if k == 0 else view[half:]

    def write1() -> None:
        fd = os.open(wpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, mv)
        finally:
            os.close(fd)

    def write1m() -> None:
        fd = os.open(wpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for off in range(0, size, MiB):
                _write_all(fd, mv[off : off + MiB], off)
        finally:
            os.close(fd)

    def write1_falloc() -> None:
        fd = os.open(wpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, size)
            _write_all(fd, mv)
        finally:
            os.close(fd)

    def write2() -> None:
        fd = os.open(wpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            _in_threads(range(2), lambda k: _write_all(fd, part(mv, k), k * half))
        finally:
            os.close(fd)

    def read2() -> Any:
        buf = _Fresh(size)
        bmv = memoryview(buf.m)[:size]
        fd = os.open(rpath, os.O_RDONLY)
        try:
            _in_threads(range(2), lambda k: _read_all(fd, part(bmv, k), k * half))
        finally:
            os.close(fd)
            bmv.release()
        return buf

    def memcpy_fresh() -> Any:
        buf = _Fresh(size)
        np.copyto(buf.a[:size], src)
        return buf

    warm = _Fresh(size)
    warm.a[:] = 0

    def memcpy_warm() -> None:
        np.copyto(warm.a[:size], src)

    def check_read(buf: Any) -> None:
        if not np.array_equal(buf.a[:size], src):
            raise SystemExit("read limit: the buffer read back differs from the file")

    # The read limit's input, written once (untimed).
    fd = os.open(rpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, mv)
    finally:
        os.close(fd)

    saves = [
        Case("limit_write_1t", "save", "limit: page-cache write, 1 thread os.write", write1, nbytes=size, mem=size, outputs=[wpath], count=count, kind="limit"),
        # Reserving the blocks first (fallocate) skips ext4's delayed-allocation bookkeeping
        # per block: ~1.4x a plain write here. psv does it, so the limit does too.
        Case("limit_write_falloc", "save", "limit: page-cache write, fallocate + 1 thread os.write", write1_falloc, nbytes=size, mem=size, outputs=[wpath], count=count, kind="limit"),
        Case("limit_write_2t", "save", "limit: page-cache write, 2 threads os.pwrite", write2, nbytes=size, mem=size, outputs=[wpath], count=count, kind="limit"),
        # Kept from an earlier hygiene (memory touched on one CPU only), under which 1 MiB
        # writes were sometimes the fast pattern. Part of the limit too.
        Case("limit_write_1m", "save", "limit: page-cache write, 1 thread os.pwrite in 1 MiB pieces", write1m, nbytes=size, mem=size, outputs=[wpath], count=count, kind="limit"),
    ]
    restores = [
        Case("limit_read_2t", "restore", "limit: page-cache read, 2 threads os.preadv, fresh huge-page buffer", read2, nbytes=size, mem=size, inputs=[rpath], check=check_read, count=count, kind="limit"),
        Case("limit_memcpy_fresh", "restore", "limit: memcpy (np.copyto) into a fresh huge-page buffer", memcpy_fresh, nbytes=size, mem=size, count=count, kind="limit"),
        Case("limit_memcpy_warm", "restore", "limit: memcpy (np.copyto) into a pre-faulted buffer", memcpy_warm, nbytes=size, count=count, kind="limit"),
    ]
    return saves, restores, [wpath, rpath], (src, warm)


# ---------------------------------------------------------------------------
# Destinations and sources (issue 13): fd, pipe, memory, caller buffer, stream
# ---------------------------------------------------------------------------
#: (row, reference row, target ratio, what the ratio means)
DEST_RATIOS = [
    ("dest_save_fd", "dest_save_path", 0.95, "save to a caller's fd (regular file) / path save"),
    ("dest_save_pipe", "dest_write_pipe", 0.9, "save into a pipe drained by `cat` / plain os.write loop of the same bytes into the same kind of pipe"),
    ("dest_save_memory", "dest_memcpy_2t", 0.8, "save_into a pre-touched buffer / 2-thread memcpy of the same bytes into a pre-touched buffer"),
    ("dest_restore_into", "dest_restore_own", 1.0, "restore into a caller's pre-touched buffer (out=) / restore into psv's own block"),
    ("dest_restore_pipe", "dest_read_pipe", 0.9, "stream restore from a pipe fed by `cat FILE` / plain read loop of the same pipe into a fresh buffer"),
]


def _pipe(size: int = MiB) -> Tuple[int, int]:
    """A pipe with a ``size`` buffer (both the psv rows and their references use the same)."""
    r, w = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
        except OSError:
            pass
    return r, w


def destination_cases(arrays: Dict[str, Any], d: Path, threads: Optional[int]) -> Tuple[List[Case], Any]:
    """Rows for every save destination and restore source against the plain OS or memory
    operation that moves the same bytes the same way (DEST_RATIOS pairs them). Returns the
    cases and the buffers they keep alive."""
    import numpy as np
    import parallel_saver as ps

    saver = ps.ParallelSaver(**arrays)
    path = d / "dest_psv.npz"
    fdpath = d / "dest_fd.npz"
    saver.save(path, threads=threads)
    archive = np.frombuffer(path.read_bytes(), dtype=np.uint8)  # the bytes every save writes
    size = archive.size
    amv = memoryview(archive)
    half = size // 2
    # Pre-touched buffers, kept across rounds: written in full once here.
    warm_save = _Fresh(size)
    warm_save.a[:] = 0
    warm_copy = _Fresh(size)
    warm_copy.a[:] = 0
    need = ps.ls(path).required_bytes
    warm_out = _Fresh(need)
    warm_out.a[:] = 0
    nbytes = sum(a.nbytes for a in arrays.values())
    count = len(arrays)
    chk = lambda what: checker(arrays, what)  # noqa: E731

    def save_path() -> None:
        saver.save(path, threads=threads)

    def save_fd() -> None:
        fd = os.open(fdpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            saver.save(fd, threads=threads)
        finally:
            os.close(fd)

    def drained(feed: Callable[[int], None]) -> None:
        r, w = _pipe()
        reader = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL)
        os.close(r)
        try:
            feed(w)
        finally:
            os.close(w)
            if reader.wait() != 0:
                raise SystemExit("cat (the pipe's reader) failed")

    def save_pipe() -> None:
        drained(lambda w: saver.save(w, threads=threads))

    def write_pipe() -> None:
        drained(lambda w: _write_all(w, amv))

    def save_memory() -> None:
        saver.save_into(warm_save.a, threads=threads)

    def memcpy_2t() -> None:
        _in_threads(range(2), lambda k: np.copyto(warm_copy.a[k * half : size if k else half], archive[k * half : size if k else half]))

    def restore_own() -> Any:
        return ps.restore(path, threads=threads)

    def restore_into() -> Any:
        return ps.restore(path, threads=threads, out=warm_out.a)

    def fed(consume: Callable[[int], Any]) -> Any:
        r, w = _pipe()
        writer = subprocess.Popen(["cat", str(path)], stdout=w)
        os.close(w)
        try:
            return consume(r)
        finally:
            os.close(r)
            if writer.wait() != 0:
                raise SystemExit("cat (the pipe's writer) failed")

    def restore_pipe() -> Any:
        return fed(lambda r: ps.restore(r, threads=threads))

    def read_pipe() -> Any:
        def consume(r: int) -> Any:
            buf = _Fresh(size)
            mv = memoryview(buf.m)
            pos = 0
            while pos < size:
                k = os.readv(r, [mv[pos : pos + IO_CHUNK]])
                if k <= 0:
                    break
                pos += k
            mv.release()
            if pos != size:
                raise SystemExit(f"read loop: {pos} of {size} bytes")
            return buf

        return fed(consume)

    def check_bytes(buf: Any) -> None:
        if not np.array_equal(buf.a[:size], archive):
            raise SystemExit("dest: the bytes read differ from the file")

    def check_file(p: Path) -> Callable[[Any], None]:
        def check(_: Any) -> None:
            if p.read_bytes() != archive.tobytes():
                raise SystemExit(f"dest: {p.name} differs from the path save")

        return check

    def check_memory(_: Any) -> None:
        if not np.array_equal(warm_save.a[:size], archive):
            raise SystemExit("dest: save_into wrote other bytes than the path save")

    cases = [
        Case("dest_save_path", "save", "psv save(path)", save_path, nbytes=size, count=count, mem=size, outputs=[path], check=check_file(path), kind="psv"),
        Case("dest_save_fd", "save", "psv save(fd), regular file", save_fd, nbytes=size, count=count, mem=size, outputs=[fdpath], check=check_file(fdpath), kind="psv"),
        Case("dest_save_pipe", "save", "psv save(fd), pipe drained by cat", save_pipe, nbytes=size, count=count, kind="psv"),
        Case("dest_write_pipe", "save", "limit: os.write loop into a pipe drained by cat", write_pipe, nbytes=size, count=count, kind="limit"),
        Case("dest_save_memory", "save", "psv save_into(pre-touched buffer)", save_memory, nbytes=size, count=count, check=check_memory, kind="psv"),
        Case("dest_memcpy_2t", "save", "limit: 2-thread memcpy into a pre-touched buffer", memcpy_2t, nbytes=size, count=count, kind="limit"),
        Case("dest_restore_own", "restore", "psv restore(path), own block", restore_own, nbytes=nbytes, count=count, mem=nbytes, check=chk("dest restore"), kind="psv"),
        Case("dest_restore_into", "restore", "psv restore(path, out=pre-touched buffer)", restore_into, nbytes=nbytes, count=count, check=chk("dest restore into"), kind="psv"),
        Case("dest_restore_pipe", "restore", "psv restore(pipe fd) fed by cat", restore_pipe, nbytes=nbytes, count=count, mem=nbytes, check=chk("dest stream restore"), kind="psv"),
        Case("dest_read_pipe", "restore", "limit: read loop of a pipe fed by cat, fresh buffer", read_pipe, nbytes=size, count=count, mem=size, check=check_bytes, kind="limit"),
    ]
    return cases, (saver, archive, warm_save, warm_copy, warm_out, [path, fdpath])


def destination_ratios(cases: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The DEST_RATIOS pairs as speed ratios (bytes/s of the row over its reference's)."""
    by = {c["name"]: c for c in cases}
    out = []
    for row, ref, target, what in DEST_RATIOS:
        if row in by and ref in by:
            ratio = by[row]["gbps"] / by[ref]["gbps"]
            out.append({"row": row, "reference": ref, "ratio": ratio, "target": target, "met": ratio >= target, "what": what})
    return out


# ---------------------------------------------------------------------------
# Peers (issue 18): pickle protocol 5, h5py, zarr v3, a directory of .npy files, durable saves
# ---------------------------------------------------------------------------
#: zarr v3 costs ~4 ms per array to save (~2 ms to restore): a workload with more arrays than
#: this saves and restores only its first ZARR_SUBSET arrays (all of one size: GB/s and us/array
#: stay comparable), and its rows say so.
ZARR_MAX_ARRAYS = 2500
ZARR_SUBSET = 500
#: The same at --quick sizes (bench-smoke stays within seconds).
ZARR_MAX_ARRAYS_QUICK = 60
ZARR_SUBSET_QUICK = 50

#: (row, reference row, op, target ratio, what the ratio means); the target of
#: psv / pickle5 is higher where PEER_TARGETS says so.
PEER_RATIOS = [
    ("psv", "pickle5", "save", 1.0, "psv / pickle protocol 5 (out-of-band buffers, one file)"),
    ("psv", "h5py", "save", 1.0, "psv / h5py (contiguous datasets, no filter)"),
    ("psv", "zarr", "save", 1.0, "psv / zarr v3 (one chunk per array, no compressor)"),
    ("psv_dir", "psv", "save", 0.9, "psv directory layout / psv .npz, same arrays"),
    ("psv_dir", "numpy_dir", "save", 1.5, "psv directory layout / np.save per file"),
    ("psv_durable", "limit_durable", "save", 0.95, "psv fsync=True / durable write limit (fallocate + write + fsync of one file)"),
    ("psv_durable", "numpy_durable", "save", 1.0, "psv fsync=True / np.savez + fsync of the file and its directory"),
    ("psv", "pickle5", "restore", 1.0, "psv / pickle protocol 5 (one read, zero-copy loads)"),
    ("psv", "h5py", "restore", 1.0, "psv / h5py (every dataset read)"),
    ("psv", "zarr", "restore", 1.0, "psv / zarr v3 (every array read)"),
    ("psv_dir", "numpy_dir", "restore", 1.0, "psv restore of its directory / np.load per file"),
]
#: (workload, row, reference, op) -> target, where the issue asks for more than PEER_RATIOS.
PEER_TARGETS = {("W3", "psv", "pickle5", "save"): 2.0, ("W3", "psv", "pickle5", "restore"): 2.0}


def _h5py() -> Any:
    try:
        import h5py

        return h5py
    except ImportError:
        return None


def _zarr() -> Any:
    """zarr, when version 3 or later is installed (format 3 needs it)."""
    try:
        import zarr
    except ImportError:
        return None
    return zarr if int(zarr.__version__.split(".")[0]) >= 3 else None


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pickle5_save(arrays: Dict[str, Any], path: Path) -> None:
    """The dict pickled with protocol 5, its array buffers out of band, into one file: a header
    (pickle length, buffer count, each buffer's length), the pickle, then every buffer as is."""
    import pickle

    import numpy as np

    bufs: List[Any] = []
    meta = pickle.dumps(arrays, protocol=5, buffer_callback=bufs.append)
    raw = [b.raw() for b in bufs]
    head = np.array([len(meta), len(raw)] + [r.nbytes for r in raw], dtype="<u8")
    with open(path, "wb") as f:
        f.write(head.tobytes())
        f.write(meta)
        for r in raw:
            f.write(r)


def pickle5_load(path: Path) -> Dict[str, Any]:
    """pickle5_save's file: one read into one fresh buffer, then pickle.loads with views of
    that buffer as the out-of-band buffers (the arrays view it: no copy after the read)."""
    import pickle

    import numpy as np

    with open(path, "rb", buffering=0) as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        mv = memoryview(buf)
        pos = 0
        while pos < len(buf):
            k = f.readinto(mv[pos:])
            if not k:
                raise SystemExit(f"{path.name}: short read")
            pos += k
    m, n = np.frombuffer(buf, dtype="<u8", count=2).tolist()
    lens = np.frombuffer(buf, dtype="<u8", count=n, offset=16)
    start = 16 + 8 * n + m
    ends = (np.cumsum(lens) + start).tolist()
    begins = [start] + ends[:-1]
    return pickle.loads(mv[16 + 8 * n : start], buffers=[mv[b:e] for b, e in zip(begins, ends)])


def h5py_save(h5py: Any, arrays: Dict[str, Any], path: Path) -> None:
    with h5py.File(path, "w") as f:
        for k, a in arrays.items():
            f.create_dataset(k, data=a)  # contiguous, no filter: h5py's default


def h5py_load(h5py: Any, path: Path) -> Dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def zarr_save(zarr: Any, arrays: Dict[str, Any], path: Path) -> None:
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    for k, a in arrays.items():
        g.create_array(k, data=a, chunks=a.shape, compressors=None, filters=None)


def zarr_load(zarr: Any, path: Path) -> Dict[str, Any]:
    g = zarr.open_group(str(path), mode="r")
    return {k: g[k][...] for k in g.array_keys()}


def npy_dir_save(arrays: Dict[str, Any], path: Path) -> None:
    """A directory of <key>.npy files, one np.save each."""
    import numpy as np

    os.mkdir(path)
    base = str(path)
    for k, a in arrays.items():
        np.save(os.path.join(base, k + ".npy"), a)


def npy_dir_load(path: Path) -> Dict[str, Any]:
    """Every <key>.npy of a directory, one np.load each."""
    import numpy as np

    base = str(path)
    return {n[:-4]: np.load(os.path.join(base, n)) for n in sorted(os.listdir(base)) if n.endswith(".npy")}


def peer_cases(wl: str, arrays: Dict[str, Any], d: Path, threads: Optional[int], quick: bool) -> Tuple[List[Case], Callable[[], List[Case]], List[Path]]:
    """The peers' rows of one workload, as workload_cases returns them: (save cases, a function
    building the restore cases once the saves wrote their files, every path written). Saves:
    pickle5, h5py, zarr v3 (a subset where it has too many arrays), psv's directory layout and
    np.save per file, and the durable rows (psv fsync=True, np.savez + fsync, and the durable
    write limit: fallocate + write + fsync of one file of the payload's size)."""
    import numpy as np
    import parallel_saver as ps

    h5py, zarr = _h5py(), _zarr()
    nbytes = sum(a.nbytes for a in arrays.values())
    count = len(arrays)
    f = {
        "pk": d / f"{wl}_pickle5.bin",
        "h5": d / f"{wl}_h5py.h5",
        "zarr": d / f"{wl}_zarr",
        "psv_dir": d / f"{wl}_psv_dir",
        "np_dir": d / f"{wl}_np_dir",
        "psv_durable": d / f"{wl}_psv_durable.npz",
        "np_durable": d / f"{wl}_np_durable.npz",
        "lim_durable": d / f"{wl}_limit_durable.bin",
    }
    zmax, zsub = (ZARR_MAX_ARRAYS_QUICK, ZARR_SUBSET_QUICK) if quick else (ZARR_MAX_ARRAYS, ZARR_SUBSET)
    zarrays = arrays if count <= zmax else dict(list(arrays.items())[:zsub])
    zbytes = sum(a.nbytes for a in zarrays.values())
    zlabel = "zarr v3, 1 chunk/array, no compressor"
    if len(zarrays) < count:
        zlabel += f" (first {len(zarrays)} of {count} arrays: ~4 ms/array)"

    def psv_saver(path: Path, **kw: Any) -> Callable[[], Any]:
        def run() -> Any:
            s = ps.ParallelSaver(**arrays)
            s.save(path, threads=threads, **kw)
            return s  # closed (psv_saver_free) after the clock

        return run

    def np_durable() -> None:
        np.savez(f["np_durable"], **arrays)
        _fsync_path(f["np_durable"])
        _fsync_path(d, directory=True)

    src = np.arange(nbytes // 8 + 1, dtype=np.uint64).view(np.uint8)[:nbytes]

    def limit_durable() -> None:
        fd = os.open(f["lim_durable"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, nbytes)
            _write_all(fd, memoryview(src))
            os.fsync(fd)
        finally:
            os.close(fd)

    saves = [
        Case("pickle5", "save", "pickle protocol 5, out-of-band buffers, one file", lambda: pickle5_save(arrays, f["pk"]), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["pk"]], kind="pickle5"),
    ]
    if h5py is not None:
        saves.append(Case("h5py", "save", "h5py, contiguous, no filter", lambda: h5py_save(h5py, arrays, f["h5"]), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["h5"]], kind="h5py"))
    if zarr is not None:
        saves.append(Case("zarr", "save", zlabel, lambda: zarr_save(zarr, zarrays, f["zarr"]), nbytes=zbytes, count=len(zarrays), mem=zbytes, outputs=[f["zarr"]], kind="zarr"))
    saves += [
        Case("psv_dir", "save", 'psv layout="dir" (a directory of .npy files)', psv_saver(f["psv_dir"], layout="dir"), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["psv_dir"]], kind="psv"),
        Case("numpy_dir", "save", "np.save per file (a directory of .npy files)", lambda: npy_dir_save(arrays, f["np_dir"]), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["np_dir"]], kind="numpy"),
        Case("psv_durable", "save", "psv fsync=True (durable)", psv_saver(f["psv_durable"], fsync=True), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["psv_durable"]], kind="psv"),
        Case("numpy_durable", "save", "np.savez + fsync of the file and its directory (durable)", np_durable, nbytes=nbytes, count=count, mem=nbytes, outputs=[f["np_durable"]], kind="numpy"),
        Case("limit_durable", "save", "limit: durable write, fallocate + 1 thread os.write + fsync", limit_durable, nbytes=nbytes, count=count, mem=nbytes, outputs=[f["lim_durable"]], kind="limit"),
    ]

    def restores() -> List[Case]:
        chk = lambda what, want=arrays: checker(want, what)  # noqa: E731
        # Untimed cross-checks: each directory's files are what np.load reads.
        checker(arrays, "np.load of psv's directory files")(npy_dir_load(f["psv_dir"]))
        rs = [
            Case("pickle5", "restore", "pickle protocol 5, one read + zero-copy loads", lambda: pickle5_load(f["pk"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["pk"]], check=chk("pickle5 load"), kind="pickle5"),
        ]
        if h5py is not None:
            rs.append(Case("h5py", "restore", "h5py, every dataset read", lambda: h5py_load(h5py, f["h5"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["h5"]], check=chk("h5py read"), kind="h5py"))
        if zarr is not None:
            rs.append(Case("zarr", "restore", zlabel + ", every array read", lambda: zarr_load(zarr, f["zarr"]), nbytes=zbytes, count=len(zarrays), mem=zbytes, check=chk("zarr read", zarrays), kind="zarr"))
        rs += [
            Case("psv_dir", "restore", "psv copy, CRC checked, of its directory", lambda: ps.restore(f["psv_dir"], threads=threads, verify=True), nbytes=nbytes, count=count, mem=nbytes, check=chk("psv restore of its directory"), kind="psv"),
            Case("numpy_dir", "restore", "np.load per file", lambda: npy_dir_load(f["np_dir"]), nbytes=nbytes, count=count, mem=nbytes, check=chk("np.load per file"), kind="numpy"),
        ]
        return rs

    return saves, restores, list(f.values())


def add_peer_ratios(results: Dict[str, Any]) -> None:
    """After add_ratios: each workload's PEER_RATIOS as speed ratios (``peer_ratios``), each psv
    row's ratio to every peer of its op (``vs_peers``), and the directory and durable rows'
    own references in the table's columns (np.save per file; np.savez + fsync and the durable
    write limit) instead of the plain .npz ones."""
    for wl, w in results["workloads"].items():
        by = {(r["op"], r["name"]): r for r in w["cases"]}
        for r in w["cases"]:
            if r["kind"] != "psv" or r["lazy"]:
                continue
            peers = {p["system"]: r["gbps"] / p["gbps"] for p in w["cases"]
                     if p["op"] == r["op"] and p["kind"] in ("pickle5", "h5py", "zarr")}
            if peers and r["name"] == "psv":
                r["vs_peers"] = peers
        for name, ref, limit in (("psv_dir", "numpy_dir", None), ("psv_durable", "numpy_durable", "limit_durable")):
            for op in ("save", "restore"):
                r = by.get((op, name))
                if r is None:
                    continue
                r["vs_numpy"] = r["gbps"] / by[(op, ref)]["gbps"] if (op, ref) in by else None
                r["vs_safetensors"] = None
                if limit is not None:
                    r["vs_limit"] = r["gbps"] / by[(op, limit)]["gbps"] if (op, limit) in by else None
        out = []
        for row, ref, op, target, what in PEER_RATIOS:
            a, b = by.get((op, row)), by.get((op, ref))
            if a is None or b is None:
                continue
            target = PEER_TARGETS.get((wl, row, ref, op), target)
            ratio = a["gbps"] / b["gbps"]
            out.append({"row": row, "reference": ref, "op": op, "ratio": ratio, "target": target,
                        "met": ratio >= target, "what": what, "reference_system": b["system"]})
        w["peer_ratios"] = out


def peer_markdown(results: Dict[str, Any]) -> str:
    """The peer ratios of every workload as one table (empty when there are none)."""
    rows = [(wl, q) for wl, w in results["workloads"].items() for q in w.get("peer_ratios", [])]
    if not rows:
        return ""
    L = ["", "psv against the other tools a user would pick, and its directory and durable rows "
         "(speed ratios from the rows above, same rounds; zarr rows on a subset compare GB/s of "
         "equal-sized arrays):", "",
         "| workload | op | ratio | value | target |", "|---|---|---|---:|---:|"]
    for wl, q in rows:
        L.append(f"| {wl} | {q['op']} | {q['what']} | {q['ratio']:.2f} | >= {q['target']:.2f}{'' if q['met'] else ' (not met)'} |")
    return "\n".join(L)


# ---------------------------------------------------------------------------
# Asynchronous saves: a training-loop simulation (issue 14)
# ---------------------------------------------------------------------------
def _calibrated_matmul(target_s: float, log: Callable[[str], None]) -> Tuple[Callable[[], None], float]:
    """A numpy float64 matmul sized so that one call takes about ``target_s`` seconds on this
    machine (numpy's BLAS threads included); returns it and its measured time."""
    import numpy as np

    n = 256
    for _ in range(8):
        a = np.random.default_rng(0).random((n, n))
        ts = []
        for _ in range(2):
            t0 = time.perf_counter()
            a @ a
            ts.append(time.perf_counter() - t0)
        t = max(min(ts), 1e-4)
        if abs(t - target_s) < 0.1 * target_s:
            break
        n = int(max(64, min(8192, n * (target_s / t) ** (1 / 3))))
    a = np.random.default_rng(0).random((n, n))
    out = np.empty_like(a)

    def step() -> None:
        np.matmul(a, a, out=out)

    t0 = time.perf_counter()
    step()
    t = time.perf_counter() - t0
    log(f"async: compute step = {n}x{n} float64 matmul, {t:.3f} s")
    return step, t


def async_rows(out: Path, quick: bool, steps: int, threads: Optional[int], log: Callable[[str], None]) -> Dict[str, Any]:
    """K steps of fixed compute with a checkpoint after every step, saved synchronously, then
    asynchronously with a snapshot and without (borrowed); caller-blocked time per checkpoint
    and total loop time. Plus: the snapshot's blocked time against a 2-thread copy of the same
    bytes into a warmed buffer, and a background save with an idle caller against the blocking
    save. Each checkpoint first waits for the previous job (its wait counts as blocked time)."""
    import numpy as np
    import parallel_saver as ps

    ckpt_bytes = (16 if quick else 512) * MiB
    compute_s = 0.05 if quick else 0.5
    per = ckpt_bytes // 4
    arrays = {f"layer{i}": np.random.default_rng(i).random(per // 4, dtype=np.float32) for i in range(4)}
    nbytes = sum(a.nbytes for a in arrays.values())
    step, step_s = _calibrated_matmul(compute_s, log)
    path = out / "async_ckpt.npz"
    saver = ps.ParallelSaver(**arrays)
    saver.save(path, threads=threads)  # warm the pool and the target
    # The first snapshot maps and faults in the staging area (huge pages: on a fragmented
    # machine the kernel compacts memory first, which can take seconds); every later snapshot
    # of this saver reuses it. Paid once per saver, so reported apart from the loops.
    t0 = time.perf_counter()
    saver.save(path, threads=threads, wait=False, snapshot=True).wait()
    first_snapshot_s = time.perf_counter() - t0
    os.sync()

    def update(k: int) -> None:  # the "optimizer step": the checkpointed arrays change
        for a in arrays.values():
            a[0] = k

    def loop(mode: str) -> Dict[str, Any]:
        blocked: List[float] = []
        job = None
        t_loop = time.perf_counter()
        for k in range(steps):
            step()
            t0 = time.perf_counter()
            if job is not None:
                job.wait()  # the arrays (borrowed) and the staging area are free again
            update(k)
            if mode == "sync":
                saver.save(path, threads=threads)
            else:
                job = saver.save(path, threads=threads, wait=False, snapshot=(mode == "snapshot"))
            blocked.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if job is not None:
            job.wait()
        tail = time.perf_counter() - t0
        total = time.perf_counter() - t_loop
        with np.load(path) as z:
            if z["layer0"][0] != steps - 1:
                raise SystemExit(f"async {mode}: the last checkpoint does not hold the last step")
        return {"mode": mode, "steps": steps, "blocked_s": blocked, "blocked_median_s": statistics.median(blocked),
                "final_wait_s": tail, "total_s": total}

    loops = []
    for mode in ("sync", "snapshot", "borrowed"):
        os.sync()
        loops.append(loop(mode))
        log(f"async: {mode} loop {loops[-1]['total_s']:.2f} s, blocked/checkpoint {loops[-1]['blocked_median_s'] * 1e3:.1f} ms")

    # Blocked time of a snapshot alone (the copy into the warm staging area) vs. a 2-thread
    # copy of the same bytes into a warmed buffer; and a background save with an idle caller
    # vs. the blocking save. Medians of `runs`.
    runs = 2 if quick else 5
    warm = [np.empty_like(a) for a in arrays.values()]
    for w in warm:
        w[...] = 0
    srcs = list(arrays.values())

    def copy2() -> None:
        def half(t: int) -> None:
            for src, dst in zip(srcs, warm):
                m = src.size // 2
                sl = slice(0, m) if t == 0 else slice(m, None)
                np.copyto(dst[sl], src[sl])

        _in_threads(range(2), half)

    snap_call, copy_ref, sync_save, bg_save = [], [], [], []
    for _ in range(runs):
        os.sync()
        t0 = time.perf_counter()
        job = saver.save(path, threads=threads, wait=False, snapshot=True)
        snap_call.append(time.perf_counter() - t0)
        job.wait()
        t0 = time.perf_counter()
        copy2()
        copy_ref.append(time.perf_counter() - t0)
        os.sync()
        t0 = time.perf_counter()
        saver.save(path, threads=threads)
        sync_save.append(time.perf_counter() - t0)
        os.sync()
        t0 = time.perf_counter()
        job = saver.save(path, threads=threads, wait=False, snapshot=False)
        job.wait()
        bg_save.append(time.perf_counter() - t0)
    med = statistics.median
    by = {r["mode"]: r for r in loops}
    sync_save_s = med(sync_save)
    gain_per_step = (by["sync"]["total_s"] - by["snapshot"]["total_s"]) / steps
    gain_borrowed = (by["sync"]["total_s"] - by["borrowed"]["total_s"]) / steps
    targets = [
        {"what": "snapshot blocked time / 2-thread copy of the same bytes into a warmed buffer",
         "value": med(snap_call) / med(copy_ref), "target": "<= 1.2", "met": med(snap_call) <= 1.2 * med(copy_ref)},
        {"what": "borrowed (no snapshot) save(wait=False) call, ms",
         "value": by["borrowed"]["blocked_s"][0] * 1e3, "target": "<= 1", "met": by["borrowed"]["blocked_s"][0] <= 1e-3},
        {"what": "background save with an idle caller, speed / blocking save",
         "value": sync_save_s / med(bg_save), "target": ">= 0.9", "met": sync_save_s / med(bg_save) >= 0.9},
        {"what": "loop time saved per step (sync - async snapshot) / blocking save time",
         "value": gain_per_step / sync_save_s, "target": ">= 0.5", "met": gain_per_step >= 0.5 * sync_save_s},
        {"what": "loop time saved per step (sync - async borrowed) / blocking save time",
         "value": gain_borrowed / sync_save_s, "target": ">= 0.5", "met": gain_borrowed >= 0.5 * sync_save_s},
    ]
    staging = saver.staging_bytes
    saver.close()
    rm([path])
    return {
        "checkpoint_bytes": nbytes, "steps": steps, "compute_s": step_s, "loops": loops,
        "first_snapshot_save_s": first_snapshot_s,
        "snapshot_call_s": med(snap_call), "copy_2t_warm_s": med(copy_ref),
        "sync_save_s": sync_save_s, "background_save_s": med(bg_save), "staging_bytes": staging,
        "targets": targets,
    }


def async_markdown(a: Dict[str, Any]) -> List[str]:
    L = ["", f"Asynchronous saves: training-loop simulation, {a['steps']} steps of {a['compute_s']:.2f} s numpy matmul, "
         f"a {a['checkpoint_bytes'] / MiB:.0f} MiB checkpoint (4 float32 arrays) to a path after every step; "
         "each checkpoint first waits for the previous job (counted as blocked).", "",
         "| loop | blocked per checkpoint ms (median) | blocked ms (min-max) | final wait ms | total loop s |",
         "|---|---:|---:|---:|---:|"]
    for r in a["loops"]:
        b = r["blocked_s"]
        L.append(f"| {r['mode']} | {r['blocked_median_s'] * 1e3:.1f} | {min(b) * 1e3:.1f}-{max(b) * 1e3:.1f} | "
                 f"{r['final_wait_s'] * 1e3:.1f} | {r['total_s']:.2f} |")
    L += ["", f"Before the loops, the saver's first snapshot save (staging area mapped and faulted in, once per saver): "
          f"{a['first_snapshot_save_s'] * 1e3:.0f} ms.",
          f"Snapshot call (copy into the warm staging area, {a['staging_bytes'] / MiB:.0f} MiB held): "
          f"{a['snapshot_call_s'] * 1e3:.1f} ms; 2-thread copy into a warmed buffer: {a['copy_2t_warm_s'] * 1e3:.1f} ms; "
          f"blocking save: {a['sync_save_s'] * 1e3:.1f} ms; background save, idle caller: {a['background_save_s'] * 1e3:.1f} ms.",
          "", "| target | value | wanted |", "|---|---:|---:|"]
    for t in a["targets"]:
        L.append(f"| {t['what']} | {t['value']:.2f} | {t['target']}{'' if t['met'] else ' (not met)'} |")
    return L


# ---------------------------------------------------------------------------
# Workload cases
# ---------------------------------------------------------------------------
def workload_cases(wl: str, arrays: Dict[str, Any], d: Path, threads: Optional[int]) -> Tuple[List[Case], Callable[[], List[Case]], List[Path]]:
    """(save cases, a function building the restore cases once the saves wrote their files,
    every file this workload writes)."""
    import numpy as np
    import parallel_saver as ps

    st = _safetensors()
    nbytes = sum(a.nbytes for a in arrays.values())
    count = len(arrays)
    compressed = wl in COMPRESSED
    f = {
        "psv": d / f"{wl}_psv.npz",
        "np": d / f"{wl}_np.npz",
        "st": d / f"{wl}_st.safetensors",
        "psv_z": d / f"{wl}_psv_z6.npz",
        "np_z": d / f"{wl}_np_z.npz",
    }

    def psv_save(path: Path, level: int) -> Callable[[], None]:
        def run() -> None:
            s = ps.ParallelSaver(**arrays)
            s.save(path, threads=threads, compress=level)
            return s  # closed (psv_saver_free) after the clock

        return run

    saves = [
        Case("psv", "save", "psv", psv_save(f["psv"], 0), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["psv"]], kind="psv"),
        Case("numpy", "save", "np.savez", lambda: np.savez(f["np"], **arrays), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["np"]], kind="numpy"),
    ]
    if st is not None:
        saves.append(Case("safetensors", "save", "safetensors save_file", lambda: st.save_file(arrays, str(f["st"])), nbytes=nbytes, count=count, mem=2 * nbytes, outputs=[f["st"]], kind="safetensors"))
    if compressed:
        saves.append(Case("psv_z6", "save", "psv deflate-6", psv_save(f["psv_z"], 6), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["psv_z"]], kind="psv"))
        saves.append(Case("numpy_z", "save", "np.savez_compressed", lambda: np.savez_compressed(f["np_z"], **arrays), nbytes=nbytes, count=count, mem=nbytes, outputs=[f["np_z"]], kind="numpy"))

    def np_load(path: Path) -> Callable[[], Any]:
        def run() -> Any:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}

        return run

    def psv_restore(path: Path, **kw: Any) -> Callable[[], Any]:
        return lambda: ps.restore(path, threads=threads, verify=True, **kw)

    def psv_mmap_read(path: Path) -> Callable[[], Any]:
        def run() -> Any:
            got = ps.restore(path, threads=threads, mmap=True)
            return got, read_all(got)

        return run

    def restores() -> List[Case]:
        chk = lambda what: checker(arrays, what)  # noqa: E731
        rs = [
            Case("psv", "restore", "psv copy, CRC checked", psv_restore(f["psv"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["psv"]], check=chk("psv restore"), kind="psv"),
            Case("psv_mmap", "restore", "psv mmap, every byte read", psv_mmap_read(f["psv"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["psv"]], check=chk("psv mmap restore"), kind="psv"),
            Case("psv_mmap_lazy", "restore", "psv mmap, lazy (maps only; not a load)", psv_restore(f["psv"], mmap=True), nbytes=nbytes, count=count, inputs=[f["psv"]], kind="psv", lazy=True),
            Case("numpy", "restore", "np.load, all keys", np_load(f["np"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["np"]], check=chk("np.load"), kind="numpy"),
        ]
        if st is not None:
            rs.append(Case("safetensors", "restore", "safetensors load_file", lambda: st.load_file(str(f["st"])), nbytes=nbytes, count=count, mem=2 * nbytes, inputs=[f["st"]], check=chk("safetensors load_file"), kind="safetensors"))
        if compressed:
            rs += [
                Case("psv_of_np_z", "restore", "psv copy, CRC, of np.savez_compressed file", psv_restore(f["np_z"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["np_z"]], check=chk("psv restore of np.savez_compressed"), kind="psv"),
                Case("psv_of_psv_z", "restore", "psv copy, CRC, of psv deflate-6 file", psv_restore(f["psv_z"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["psv_z"]], check=chk("psv restore of psv deflate-6"), kind="psv"),
                Case("numpy_z", "restore", "np.load of np.savez_compressed file, all keys", np_load(f["np_z"]), nbytes=nbytes, count=count, mem=nbytes, inputs=[f["np_z"]], check=chk("np.load compressed"), kind="numpy"),
            ]
        return rs

    return saves, restores, list(f.values())


def _safetensors() -> Any:
    try:
        import safetensors.numpy as st  # torch-free API

        return st
    except ImportError:
        return None


# ---------------------------------------------------------------------------
# W3 breakdown: library vs. Python wrapper
# ---------------------------------------------------------------------------
def w3_breakdown(arrays: Dict[str, Any], d: Path, runs: int, threads: Optional[int], log: Callable[[str], None]) -> Dict[str, Any]:
    """Time the raw ctypes calls (psv_saver_add loop, psv_saver_save, psv_restore) against the
    wrapper's whole ParallelSaver(...).save() and restore(), on the same arrays."""
    import numpy as np
    import parallel_saver as ps

    lib = ps._lib()  # the wrapper's handle, with every prototype declared
    codes = ps._NATIVE_CODES
    path = d / "W3_breakdown.npz"
    bpath = os.fsencode(str(path))
    nthreads = threads or 0
    keys = [k.encode() for k in arrays]
    vals = list(arrays.values())
    shapes = [(ctypes.c_int64 * a.ndim)(*a.shape) for a in vals]

    def raw_saver() -> int:
        s = lib.psv_saver_new()
        for k, a, sh in zip(keys, vals, shapes):
            st = lib.psv_saver_add(s, k, a.ctypes.data, codes[a.dtype.str], sh, a.ndim)
            if st:
                raise SystemExit(f"psv_saver_add: status {st}")
        return s

    sopts = lib.psv_save_options_new()
    lib.psv_save_options_set_threads(sopts, nthreads)
    ropts = {}
    for mm in (False, True):
        o = lib.psv_restore_options_new()
        lib.psv_restore_options_set_verify_crc(o, True)
        lib.psv_restore_options_set_mmap(o, mm)
        lib.psv_restore_options_set_threads(o, nthreads)
        ropts[mm] = o

    t: Dict[str, List[float]] = {k: [] for k in (
        "save_raw_add_loop", "save_raw_psv_saver_save", "save_wrapper_construct", "save_wrapper_whole",
        "restore_raw_psv_restore", "restore_wrapper_whole", "restore_raw_psv_restore_mmap",
        "restore_wrapper_whole_mmap", "read_all_loop_in_memory")}
    nb = sum(a.nbytes for a in vals)

    def hyg() -> None:
        gc.collect()
        os.sync()
        touch_and_free(nb)

    for r in range(runs + 1):
        keep = r > 0
        # save: raw add loop, then raw psv_saver_save on that saver
        rm([path]); hyg()
        t0 = time.perf_counter(); s = raw_saver(); t1 = time.perf_counter()
        rm([path]); hyg()
        t2 = time.perf_counter(); st = lib.psv_saver_save(s, bpath, sopts); t3 = time.perf_counter()
        lib.psv_saver_free(s)
        if st:
            raise SystemExit(f"psv_saver_save: status {st}")
        # save: the wrapper's constructor alone, then the whole thing
        hyg()
        t4 = time.perf_counter(); w = ps.ParallelSaver(**arrays); t5 = time.perf_counter()
        w.close(); del w
        rm([path]); hyg()
        t6 = time.perf_counter(); w = ps.ParallelSaver(**arrays); w.save(path, threads=threads); t7 = time.perf_counter()
        w.close(); del w
        if keep:
            t["save_raw_add_loop"].append(t1 - t0)
            t["save_raw_psv_saver_save"].append(t3 - t2)
            t["save_wrapper_construct"].append(t5 - t4)
            t["save_wrapper_whole"].append(t7 - t6)
        # restore, copy mode and mmap mode: raw call vs. restore()
        for mm, raw_key, whole_key in ((False, "restore_raw_psv_restore", "restore_wrapper_whole"),
                                       (True, "restore_raw_psv_restore_mmap", "restore_wrapper_whole_mmap")):
            hyg()
            h = ps._ArchiveP()
            t0 = time.perf_counter(); st = lib.psv_restore(bpath, ropts[mm], ctypes.byref(h)); t1 = time.perf_counter()
            if st:
                raise SystemExit(f"psv_restore: status {st}")
            lib.psv_free(h)
            hyg()
            t2 = time.perf_counter(); got = ps.restore(path, threads=threads, verify=True, mmap=mm); t3 = time.perf_counter()
            if keep:
                t[raw_key].append(t1 - t0)
                t[whole_key].append(t3 - t2)
            if not mm:
                t4 = time.perf_counter(); read_all(got); t5 = time.perf_counter()
                if keep:
                    t["read_all_loop_in_memory"].append(t5 - t4)
            del got
    lib.psv_save_options_free(sopts)
    for o in ropts.values():
        lib.psv_restore_options_free(o)
    rm([path])
    n = len(vals)
    out: Dict[str, Any] = {"arrays": n, "runs": runs}
    for k, v in t.items():
        med = statistics.median(v)
        out[k] = {"median_s": med, "us_per_array": med / n * 1e6, "min_s": min(v), "max_s": max(v)}
    log("  W3 breakdown done")
    return out


# ---------------------------------------------------------------------------
# Peak RSS (child processes)
# ---------------------------------------------------------------------------
def _vm(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_child(spec: Dict[str, Any]) -> None:
    """In a fresh process: build the arrays (save) or nothing (restore), run one op, print
    JSON with the VmHWM before the op and getrusage(RUSAGE_SELF) after it."""
    import numpy as np
    import parallel_saver as ps

    ps.version()  # load the library before the baseline
    st = _safetensors()
    base = _vm("VmRSS")
    path = Path(spec["path"])
    res: Dict[str, Any] = {"baseline_rss": base}
    if spec["op"] == "save":
        arrays = make_arrays(spec["spec"])
        res["arrays_bytes"] = sum(a.nbytes for a in arrays.values())
        rm([path])
        os.sync()
        res["hwm_before"] = _vm("VmHWM")
        if spec["system"] == "psv":
            with ps.ParallelSaver(**arrays) as s:
                s.save(path, threads=spec["threads"])
        elif spec["system"] == "numpy":
            np.savez(path, **arrays)
        else:
            st.save_file(arrays, str(path))
        rm([path])
    else:
        res["hwm_before"] = _vm("VmHWM")
        if spec["system"] == "psv":
            got = ps.restore(path, threads=spec["threads"], verify=True)
            blk = ps.block_of(next(iter(got.values()))) if got else None
            res["block_bytes"] = blk.nbytes if blk is not None else 0
        elif spec["system"] == "numpy":
            with np.load(path) as z:
                got = {k: z[k] for k in z.files}
        else:
            got = st.load_file(str(path))
        res["arrays_bytes"] = sum(a.nbytes for a in got.values())
        res["block_bytes"] = res.get("block_bytes", res["arrays_bytes"])
        del got
    res["self_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(res))


def rss_reaper(arg: str) -> None:
    """Run one rss child and add getrusage(RUSAGE_CHILDREN).ru_maxrss (that child alone)."""
    p = subprocess.run([sys.executable, __file__, "--rss-child", arg], stdout=subprocess.PIPE, check=True)
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    res["children_maxrss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(res))


def measure_rss(wl: str, spec: Any, files: Dict[str, Path], d: Path, systems: List[str], threads: Optional[int]) -> List[Dict[str, Any]]:
    out = []
    for op in ("save", "restore"):
        for system in systems:
            path = d / f"{wl}_rss_save.{'safetensors' if system == 'safetensors' else 'npz'}" if op == "save" else files[system]
            arg = json.dumps({"op": op, "system": system, "spec": spec, "path": str(path), "threads": threads})
            p = subprocess.run([sys.executable, __file__, "--rss-reaper", arg], stdout=subprocess.PIPE, check=True)
            r = json.loads(p.stdout.decode().strip().splitlines()[-1])
            peak = r["children_maxrss"]
            ref = r["arrays_bytes"] if op == "save" else r["block_bytes"]
            r.update({"workload": wl, "op": op, "system": system, "peak_rss": peak, "ref_bytes": ref, "peak_minus_ref": peak - ref})
            out.append(r)
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def fmt_gbps(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}"


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            info["mem_total_gib"] = round(int(fh.readline().split()[1]) / (1 << 20), 1)
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            info["thp"] = fh.read().strip()
    except OSError:
        pass
    return info


def versions() -> Dict[str, str]:
    import numpy as np
    import parallel_saver as ps

    v = {"numpy": np.__version__, "psv": ps.version()}
    try:
        import safetensors

        v["safetensors"] = safetensors.__version__
    except ImportError:
        v["safetensors"] = "not installed"
    try:
        import matplotlib

        v["matplotlib"] = matplotlib.__version__
    except ImportError:
        v["matplotlib"] = "not installed"
    return v


def add_ratios(results: Dict[str, Any]) -> None:
    """psv rows get speed ratios against this workload's limit (measured in the same rounds),
    numpy and safetensors (same workload and op)."""
    for wl, w in results["workloads"].items():
        by = {(r["op"], r["name"]): r for r in w["cases"]}
        write = [by[("save", k)]["gbps"] for k in ("limit_write_1t", "limit_write_falloc", "limit_write_2t", "limit_write_1m") if ("save", k) in by]
        read = by.get(("restore", "limit_read_2t"))
        w["write_limit_gbps"] = max(write) if write else None
        w["read_limit_gbps"] = read["gbps"] if read else None
        for r in w["cases"]:
            if r["kind"] != "psv":
                continue
            op, name = r["op"], r["name"]
            comp = name in ("psv_z6", "psv_of_np_z", "psv_of_psv_z")
            np_ref = by.get((op, "numpy_z" if comp else "numpy"))
            st_ref = None if comp else by.get((op, "safetensors"))
            r["vs_numpy"] = r["gbps"] / np_ref["gbps"] if np_ref else None
            r["vs_safetensors"] = r["gbps"] / st_ref["gbps"] if st_ref else None
            lim = w["write_limit_gbps"] if op == "save" else w["read_limit_gbps"]
            if not comp and not r["lazy"] and lim:
                r["vs_limit"] = r["gbps"] / lim


def markdown(results: Dict[str, Any]) -> str:
    L: List[str] = []
    m, v = results["machine"], results["versions"]
    L.append(
        f"Machine: {m.get('nproc')} cores ({m.get('cpu', '?')}), {m.get('mem_total_gib', '?')} GiB, "
        f"Linux {m.get('kernel')}; page cache {'COLD (' + results['cache_method'] + ' before every run)' if results['cold'] else 'warm'}; "
        f"load average {results['loadavg_start']} at start, {results['loadavg_end']} at end."
    )
    L.append(
        f"psv {v['psv']} (wrapper sha256 {results['wrapper_sha256'][:12]}), numpy {v['numpy']}, safetensors {v['safetensors']}, "
        f"Python {m.get('python')}; median of {results['runs']} runs after {results['warmup']} warm-up (min-max shown), "
        f"systems and limits interleaved round-robin; GB/s = array bytes / s / 1e9.{' QUICK (smoke) sizes.' if results['quick'] else ''}"
    )
    L.append("")
    L.append(" ".join(f"{wl}: {w['description']}." for wl, w in results["workloads"].items()))
    L.append("psv / limit: save vs. the best of the three page-cache write limits, restore vs. the "
             f"{'cold ' if results['cold'] else ''}page-cache read limit, both measured at the workload's size in the same rounds. "
             "psv / numpy and psv / safetensors are speed ratios (>1: psv faster); deflated rows compare with numpy's deflated rows.")
    L.append("")
    L.append("| workload | op | system | GB/s | min-max | ms | us/array | psv / limit | psv / numpy | psv / safetensors |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for wl, w in results["workloads"].items():
        for r in w["cases"]:
            sysname = f"**{r['system']}**" if r["kind"] == "psv" else f"*{r['system']}*" if r["kind"] == "limit" else r["system"]
            gb = fmt_gbps(r["gbps"]) + ("†" if r["lazy"] else "")
            per = f"{r['us_per_array']:.2f}" if r.get("us_per_array") else ""
            L.append(
                f"| {wl} | {r['op']} | {sysname} | {gb} | "
                f"{fmt_gbps(r['gbps_min'])}-{fmt_gbps(r['gbps_max'])} | {r['median_s'] * 1e3:.1f} | "
                f"{per} | {'%.2f' % r['vs_limit'] if r.get('vs_limit') else ''} | "
                f"{'%.2fx' % r['vs_numpy'] if r.get('vs_numpy') else ''} | {'%.2fx' % r['vs_safetensors'] if r.get('vs_safetensors') else ''} |"
            )
    L.append("")
    L.append("† lazy: maps the file and reads nothing (not a load); shown for the issue's mmap target only.")
    L.append(peer_markdown(results))
    if results.get("w3_breakdown"):
        b = results["w3_breakdown"]
        L.append("")
        L.append(f"W3 breakdown ({b['arrays']} x 1 KiB, psv through the Python wrapper vs. the raw ctypes calls; page cache warm; median of {b['runs']}):")
        L.append("")
        L.append("| step | ms | us/array |")
        L.append("|---|---:|---:|")
        for k, label in (
            ("save_raw_add_loop", "save: raw psv_saver_new + psv_saver_add loop (ctypes)"),
            ("save_raw_psv_saver_save", "save: raw psv_saver_save alone"),
            ("save_wrapper_construct", "save: ParallelSaver(**arrays) alone"),
            ("save_wrapper_whole", "save: ParallelSaver(**arrays).save(path) (whole)"),
            ("restore_raw_psv_restore", "restore: raw psv_restore alone (copy, CRC)"),
            ("restore_wrapper_whole", "restore: restore(path) whole (psv_restore + views)"),
            ("restore_raw_psv_restore_mmap", "restore: raw psv_restore alone (mmap)"),
            ("restore_wrapper_whole_mmap", "restore: restore(path, mmap=True) whole"),
            ("read_all_loop_in_memory", "read every byte of the restored arrays (the mmap rows' touch loop)"),
        ):
            x = b[k]
            L.append(f"| {label} | {x['median_s'] * 1e3:.2f} | {x['us_per_array']:.2f} |")
    if results.get("destinations"):
        dd = results["destinations"]
        L.append("")
        L.append(f"Destinations and sources ({dd['arrays']} arrays, {dd['bytes'] / MiB:.0f} MiB; same rounds, same hygiene): "
                 "each psv row against the plain operation that moves the same bytes the same way.")
        L.append("")
        L.append("| row | GB/s | min-max | ms |")
        L.append("|---|---:|---:|---:|")
        for r in dd["cases"]:
            sysname = f"**{r['system']}**" if r["kind"] == "psv" else f"*{r['system']}*"
            L.append(f"| {sysname} | {fmt_gbps(r['gbps'])} | {fmt_gbps(r['gbps_min'])}-{fmt_gbps(r['gbps_max'])} | {r['median_s'] * 1e3:.1f} |")
        L.append("")
        L.append("| ratio | value | target |")
        L.append("|---|---:|---:|")
        for q in dd["ratios"]:
            L.append(f"| {q['what']} | {q['ratio']:.2f} | >= {q['target']:.2f}{'' if q['met'] else ' (not met)'} |")
    if results.get("async"):
        L += async_markdown(results["async"])
    if results.get("collective"):
        import collective_bench

        L.append("")
        L += collective_bench.markdown(results["collective"])
    if results.get("rss"):
        L.append("")
        L.append("Peak RSS (fresh child per op; getrusage(RUSAGE_CHILDREN).ru_maxrss). "
                 "save: minus the arrays; restore: minus the restored block (psv) / the arrays (others). "
                 "The child's interpreter + numpy + libpsv baseline is included in the peak.")
        L.append("")
        L.append("| workload | op | system | peak RSS MiB | reference MiB | peak - reference MiB | interpreter baseline MiB | peak - reference - baseline MiB |")
        L.append("|---|---|---|---:|---:|---:|---:|---:|")
        for r in results["rss"]:
            L.append(
                f"| {r['workload']} | {r['op']} | {r['system']} | {r['peak_rss'] / MiB:.1f} | {r['ref_bytes'] / MiB:.1f} | "
                f"{r['peak_minus_ref'] / MiB:.1f} | {r['baseline_rss'] / MiB:.1f} | {(r['peak_minus_ref'] - r['baseline_rss']) / MiB:.1f} |"
            )
    return "\n".join(L)


def chart(results: Dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import numpy as np

    wls = list(results["workloads"])
    big = [w for w in wls if w != "W3"]
    fig, axes = plt.subplots(2, 2, figsize=(17, 12.5))
    # One colour per case: psv in blues, numpy in oranges, safetensors green; deflate hatched.
    colors = {
        "psv": "#08519c", "psv_mmap": "#4292c6", "psv_z6": "#6baed6", "psv_of_np_z": "#6baed6",
        "psv_of_psv_z": "#9ecae1", "numpy": "#e6550d", "numpy_z": "#fdae6b", "safetensors": "#31a354",
        "pickle5": "#756bb1", "h5py": "#bcbddc", "zarr": "#dadaeb", "psv_dir": "#2171b5", "numpy_dir": "#a63603",
        "psv_durable": "#084594", "numpy_durable": "#7f2704",
    }

    limit_style = {
        "limit_write_1t": ("red", ":"), "limit_write_falloc": ("red", "-"), "limit_write_2t": ("red", "--"), "limit_write_1m": ("red", "-."), "limit_read_2t": ("red", "--"),
        "limit_memcpy_fresh": ("purple", ":"), "limit_memcpy_warm": ("grey", "-."),
        "limit_durable": ("black", ":"),
    }

    def value(r: Dict[str, Any], metric: str) -> Tuple[float, float, float]:
        if metric == "gbps":
            return r["gbps"], r["gbps_min"], r["gbps_max"]
        n = r["arrays"] or 1
        return r["median_s"] / n * 1e6, r["min_s"] / n * 1e6, r["max_s"] / n * 1e6

    def bars(ax: Any, op: str, wlist: List[str], metric: str) -> None:
        names: List[str] = []
        labels: Dict[str, str] = {}
        for wl in wlist:
            for r in results["workloads"][wl]["cases"]:
                if r["op"] == op and not r["lazy"] and r["kind"] != "limit" and r["name"] not in names:
                    names.append(r["name"])
                    labels[r["name"]] = r["system"]
        width = 0.84 / max(len(names), 1)
        x = np.arange(len(wlist))
        for j, name in enumerate(names):
            vals, lo, hi = [], [], []
            for wl in wlist:
                r = next((c for c in results["workloads"][wl]["cases"] if c["op"] == op and c["name"] == name), None)
                if r is None:
                    vals.append(np.nan); lo.append(0); hi.append(0)
                    continue
                v, a, b = value(r, metric)
                vals.append(v); lo.append(abs(v - a)); hi.append(abs(b - v))
            sysname = labels[name]
            hatch = "//" if ("deflate" in sysname or "compressed" in sysname) else "xx" if "durable" in sysname else None
            ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2,
                   label=sysname, color=colors.get(name, "grey"), hatch=hatch, edgecolor="black", linewidth=0.4)
        # This workload's limits (measured in the same rounds): a line across its group.
        seen = set()
        for i, wl in enumerate(wlist):
            for r in results["workloads"][wl]["cases"]:
                if r["op"] != op or r["kind"] != "limit" or r["name"] not in limit_style:
                    continue
                color, style = limit_style[r["name"]]
                ax.hlines(value(r, metric)[0], i - 0.45, i + 0.45, colors=color, linestyles=style, linewidth=1.3,
                          label=None if r["name"] in seen else r["system"])
                seen.add(r["name"])
        ax.set_xticks(x)
        ax.set_xticklabels([f"{wl}\n{results['workloads'][wl]['description']}" for wl in wlist], fontsize=8)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
        ax.grid(axis="y", alpha=0.3)

    if big:
        bars(axes[0][0], "save", big, "gbps")
        axes[0][0].set_title("save (GB/s, higher is better)")
        axes[0][0].set_ylabel("GB/s")
        bars(axes[0][1], "restore", big, "gbps")
        axes[0][1].set_title("restore (GB/s, higher is better; every byte read)")
        axes[0][1].set_ylabel("GB/s")
    else:
        axes[0][0].axis("off"); axes[0][1].axis("off")
    if "W3" in wls:
        bars(axes[1][0], "save", ["W3"], "us")
        axes[1][0].set_title("W3 save (us per array, lower is better; log scale)")
        axes[1][0].set_ylabel("us / array")
        bars(axes[1][1], "restore", ["W3"], "us")
        axes[1][1].set_title("W3 restore (us per array, lower is better; log scale)")
        axes[1][1].set_ylabel("us / array")
        # The peers span 1 us (psv) to ~10 ms (zarr) per array.
        axes[1][0].set_yscale("log")
        axes[1][1].set_yscale("log")
    else:
        axes[1][0].axis("off"); axes[1][1].axis("off")
    m = results["machine"]
    fig.suptitle(
        f"libpsv vs numpy, safetensors, pickle5, h5py, zarr: {m.get('nproc')} cores, page cache {'cold' if results['cold'] else 'warm'}, "
        f"median of {results['runs']} (bars: min-max), load avg {results['loadavg_start']}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: small sizes, 2 runs, RSS of psv on the first workload only (seconds)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every run (drop_caches if permitted, else fadvise DONTNEED)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per case after the warm-up (default 5; --quick 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--workloads", default="W1,W2,W3,W4")
    ap.add_argument("--threads", type=int, default=None, help="psv threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out", help="scratch dir for work files")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results.json")
    ap.add_argument("--chart", type=Path, default=REPO / "bench" / "chart.png")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    ap.add_argument("--no-peers", action="store_true", help="skip pickle5, h5py, zarr, the directory rows and the durable rows")
    ap.add_argument("--no-destinations", action="store_true", help="skip the destination/source rows (fd, pipe, memory, out=)")
    ap.add_argument("--no-async", action="store_true", help="skip the asynchronous-save (training loop) rows")
    ap.add_argument("--async-steps", type=int, default=None, help="training-loop steps (default 6; --quick 3)")
    ap.add_argument("--rss-systems", default=None, help="systems for peak RSS (default psv,numpy,safetensors; --quick psv)")
    ap.add_argument("--no-collective", action="store_true", help="skip the collective-save row (4 MPI ranks, one file)")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--rss-reaper", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        rss_child(json.loads(args.rss_child))
        return 0
    if args.rss_reaper:
        rss_reaper(args.rss_reaper)
        return 0

    import numpy as np

    runs = args.runs if args.runs is not None else (2 if args.quick else 5)
    if runs < 1:
        ap.error("--runs must be >= 1")
    wls = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for w in wls:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r} (W1-W4)")
    rss_systems = (args.rss_systems or ("psv" if args.quick else "psv,numpy,safetensors")).split(",")
    if _safetensors() is None:
        print("warning: safetensors not installed; its rows are skipped", file=sys.stderr)
        rss_systems = [s for s in rss_systems if s != "safetensors"]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_log = time.time()
    log = lambda s: print(f"[{time.time() - t_log:6.1f} s] {s}", file=sys.stderr, flush=True)  # noqa: E731
    cache = Cache(args.cold)
    if args.cold:
        log(f"--cold: page cache dropped with {cache.method} before every run")
    specs = {w: WORKLOADS[w][2 if args.quick else 1] for w in wls}
    t_start = time.time()
    results: Dict[str, Any] = {
        "machine": machine_info(),
        "versions": versions(),
        "quick": args.quick,
        "cold": args.cold,
        "cache_method": cache.method,
        "runs": runs,
        "warmup": args.warmup,
        "threads": args.threads,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "wrapper": str(wrapper_dir()),
        "wrapper_sha256": wrapper_sha256(),
        "rust_bench": "cargo run --release --example bench (examples/rust/bench.rs): the same through the C ABI, no Python",
        "workloads": {},
        "rss": [],
    }

    for wl in wls:
        desc = WORKLOADS[wl][0] if not args.quick else f"quick: {'+'.join(f'{c}x{n // 1024}KiB' for c, _, n in specs[wl])}"
        log(f"{wl}: {desc}: generating arrays")
        arrays = make_arrays(specs[wl])
        nbytes = sum(a.nbytes for a in arrays.values())
        saves, make_restores, files = workload_cases(wl, arrays, out, args.threads)
        make_peer_restores: Callable[[], List[Case]] = lambda: []  # noqa: E731
        if not args.no_peers:
            peer_saves, make_peer_restores, peer_files = peer_cases(wl, arrays, out, args.threads, args.quick)
            saves += peer_saves
            files += peer_files
        lim_saves, lim_restores, lim_files, lim_keep = limit_cases(wl, nbytes, len(arrays), out)
        if args.cold:
            lim_restores[0].system = "limit: COLD page-cache read (cache dropped), 2 threads os.preadv, fresh huge-page buffer"
        saves += lim_saves
        files += lim_files
        log(f"{wl}: save ({', '.join(c.name for c in saves)})")
        run_round_robin(saves, runs, args.warmup, cache, log)
        # Cross-check (untimed): numpy reads psv's file; psv reads numpy's.
        import parallel_saver as ps

        with np.load(out / f"{wl}_psv.npz") as z:
            checker(arrays, "np.load of psv's file")({k: z[k] for k in z.files})
        checker(arrays, "psv restore of np.savez's file")(ps.restore(out / f"{wl}_np.npz"))
        gc.collect()
        restores = make_restores() + make_peer_restores() + lim_restores
        log(f"{wl}: restore ({', '.join(c.name for c in restores)})")
        run_round_robin(restores, runs, args.warmup, cache, log)
        results["workloads"][wl] = {
            "description": desc,
            "arrays": len(arrays),
            "bytes": sum(a.nbytes for a in arrays.values()),
            "file_bytes": {p.name: p.stat().st_size for p in files if p.is_file() and "limit" not in p.name},
            "cases": [c.summary() for c in saves + restores],
        }
        if wl == "W3":
            results["w3_breakdown"] = w3_breakdown(arrays, out, runs, args.threads, log)
        if not args.no_rss and (not args.quick or wl == wls[0]):  # --quick: the first workload only
            log(f"{wl}: peak RSS ({', '.join(rss_systems)})")
            fmap = {"psv": out / f"{wl}_psv.npz", "numpy": out / f"{wl}_np.npz", "safetensors": out / f"{wl}_st.safetensors"}
            results["rss"] += measure_rss(wl, specs[wl], fmap, out, rss_systems, args.threads)
        del saves, restores, arrays, lim_saves, lim_restores, lim_keep
        rm(files)
        gc.collect()

    if not args.no_destinations:
        spec = WORKLOADS["W1"][2 if args.quick else 1]
        log(f"destinations: {WORKLOADS['W1'][0] if not args.quick else 'quick W1'} arrays")
        arrays = make_arrays(spec)
        dcases, dkeep = destination_cases(arrays, out, args.threads)
        run_round_robin(dcases, runs, args.warmup, cache, log)
        summaries = [c.summary() for c in dcases]
        results["destinations"] = {
            "arrays": len(arrays),
            "bytes": sum(a.nbytes for a in arrays.values()),
            "cases": summaries,
            "ratios": destination_ratios(summaries),
        }
        rm(dkeep[-1])
        del dcases, dkeep, arrays
        gc.collect()
    if not args.no_collective:
        import collective_bench

        log("collective: 4 MPI ranks writing one file vs one process (benches/collective_bench.py)")
        results["collective"] = collective_bench.collective_row(out, args.quick, runs, log, touch_and_free)

    if not args.no_async:
        steps = args.async_steps if args.async_steps is not None else (3 if args.quick else 6)
        results["async"] = async_rows(out, args.quick, max(2, steps), args.threads, log)
        gc.collect()

    results["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["elapsed_s"] = time.time() - t_start
    add_ratios(results)
    add_peer_ratios(results)
    md = markdown(results)
    results["markdown"] = md
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "w") as fh:
        json.dump(results, fh, indent=1)
    drew = chart(results, args.chart)
    print(md)
    print()
    print(f"wrote {args.results}" + (f" and {args.chart}" if drew else " (no chart: matplotlib not installed)")
          + f" in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
