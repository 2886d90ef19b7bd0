"""fork() after libpsv has started its worker pool: children (several at once, started with the
multiprocessing 'fork' method) save and restore with exact results and never deadlock.

The parent first saves and restores (starting the private pools, default size and 3 threads),
then forks. Children save and restore their own files (both pool sizes), restore the parent's
file, and one child forks a grandchild that does the same. Meanwhile the parent keeps saving
and restoring on its own pools. Every wait has a timeout: a hang fails as a deadlock.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

import parallel_saver as ps

TIMEOUT = 60.0  # seconds: any wait longer than this is a deadlock


def arrays_for(i: int) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    return {
        "big": np.arange(600_000, dtype=np.float64) * (i + 1) + 0.25,  # 4.8 MB: chunked writes
        "ints": rng.integers(-30000, 30000, size=(50, 40), dtype=np.int16),  # packed
        "fort": np.asfortranarray(rng.random((120, 90), dtype=np.float32)),
        "scalar": np.array(i, dtype=np.int64),
        "empty": np.empty((0, 4), dtype=np.complex128),
        "text": np.array([f"child-{i}", "x"], dtype="<U8"),
    }


def assert_exact(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray], what: str) -> None:
    assert list(got) == list(want), f"{what}: keys {list(got)} != {list(want)}"
    for k, w in want.items():
        g = got[k]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what}/{k}: {g.dtype}{g.shape}"
        assert g.flags.f_contiguous == w.flags.f_contiguous or g.ndim < 2, f"{what}/{k}: order"
        assert np.array_equal(g, w), f"{what}/{k}: values differ"


def save_restore_check(directory: str, i: int, rounds: int = 3) -> None:
    want = arrays_for(i)
    target = Path(directory) / f"f{i}.npz"
    for r in range(rounds):
        threads = None if r % 2 == 0 else 3
        with ps.ParallelSaver(want) as s:
            s.save(target, threads=threads)
        assert_exact(ps.restore(target, threads=threads), want, f"pid {os.getpid()} round {r}")
    with np.load(target) as z:
        assert_exact({k: z[k] for k in z.files}, want, f"numpy.load pid {os.getpid()}")


def child_job(directory: str, i: int, nested: bool) -> int:
    save_restore_check(directory, i)
    assert_exact(ps.restore(Path(directory) / "parent.npz"), arrays_for(0), "parent's file")
    if nested:
        # A second generation: fork again after this child has used (its own) pools.
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                save_restore_check(directory, 100 + i)
                code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + TIMEOUT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise AssertionError("grandchild deadlocked")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status) == 0, f"grandchild failed: {status}"
    return i


def process_main(directory: str, i: int, nested: bool) -> None:
    child_job(directory, i, nested)


@pytest.fixture()
def warmed(psv, tmp_path) -> str:
    """The parent has used libpsv (both pool sizes) before any fork."""
    d = str(tmp_path)
    want = arrays_for(0)
    for threads in (None, 3):
        with psv.ParallelSaver(want) as s:
            s.save(tmp_path / "parent.npz", threads=threads)
        assert_exact(psv.restore(tmp_path / "parent.npz", threads=threads), want, "parent")
    return d


def test_fork_processes_concurrently(warmed):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=process_main, args=(warmed, i, i == 1)) for i in range(1, 5)]
    for p in procs:
        p.start()
    # The parent keeps using its pools while the children run.
    save_restore_check(warmed, 50, rounds=4)
    deadline = time.monotonic() + TIMEOUT
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"forked children deadlocked (no exit within {TIMEOUT}s): {hung}"
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    for i in (1, 2, 3, 4, 101):
        assert_exact(ps.restore(Path(warmed) / f"f{i}.npz"), arrays_for(i), f"file of child {i}")
    assert not [n for n in os.listdir(warmed) if n.endswith(".psv-tmp")]


def test_fork_pool_map(warmed):
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        res = pool.starmap_async(child_job, [(warmed, i, False) for i in range(10, 16)])
        try:
            got = res.get(timeout=TIMEOUT)
        except mp.TimeoutError:
            pool.terminate()
            pytest.fail(f"multiprocessing.Pool workers deadlocked (no result within {TIMEOUT}s)")
    assert got == list(range(10, 16))
    for i in range(10, 16):
        assert_exact(ps.restore(Path(warmed) / f"f{i}.npz"), arrays_for(i), f"file of task {i}")
