"""Asynchronous saves from Python: ``ParallelSaver.save(target, wait=False)`` -> ``SaveJob``.

Snapshot isolation (arrays changed after the call do not reach the file, for path, fd and
writer targets), borrowed mode (``add`` gives PSV_ERR_BUSY, ``close`` waits), wait timeouts,
cancel (old target byte-identical, no temporary file), errors surfacing at ``wait``, the
context manager, and the memory bound (100 async saves: RSS after the 100th within 64 MiB of
after the 1st). SIGKILL, ENOSPC, EFBIG and fork are in tests/robust/test_async_robust.py.
"""

from __future__ import annotations

import errno
import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import parallel_saver as ps

MiB = 1 << 20


def arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((512, 257)).astype(np.float32),
        "b": np.arange(1000, dtype=np.int64) * (seed + 1),
        "s": np.array(float(seed)),
        "e": np.zeros((0, 3), np.int16),
    }


def temps(d: Path) -> list:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".psv-tmp"))


class Gate:
    """A writer whose first write waits until released (runs on the library's job thread)."""

    def __init__(self, hold: bool = True) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()
        if not hold:
            self.go.set()
        self.out = io.BytesIO()

    def write(self, b) -> int:
        self.entered.set()
        assert self.go.wait(30), "never released"
        return self.out.write(b)


@pytest.mark.parametrize("kind", ["path", "fd", "file", "writer"])
def test_snapshot_isolation(tmp_path, kind):
    data = arrays(1)
    expect = {k: v.copy() for k, v in data.items()}
    s = ps.ParallelSaver(**data)
    want = s.to_bytes()
    target = tmp_path / "ckpt.npz"
    fd = None
    f = None
    if kind == "path":
        job = s.save(target, wait=False)
    elif kind == "fd":
        fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        job = s.save(fd, wait=False)
    elif kind == "file":
        f = open(target, "wb")
        f.write(b"HEAD")
        job = s.save(f, wait=False)
    else:
        w = Gate(hold=False)
        job = s.save(w, wait=False)
    # Change everything at once: the job saves the snapshot.
    for v in data.values():
        if v.size:
            v[...] = 7
    got = job.wait()
    assert job.done()
    done, total = job.progress
    assert done == total > 0
    if kind == "path":
        assert got == str(target)
        assert target.read_bytes() == want
    elif kind == "fd":
        os.close(fd)
        assert got is None and target.read_bytes() == want
    elif kind == "file":
        assert f.tell() == 4 + len(want), "the file object's position follows the archive"
        f.close()
        assert target.read_bytes() == b"HEAD" + want
    else:
        assert w.out.getvalue() == want
        target.write_bytes(want)
    if kind != "file":
        with np.load(target) as z:
            for k, v in expect.items():
                np.testing.assert_array_equal(z[k], v)
    assert temps(tmp_path) == []


@pytest.mark.parametrize("compress", [0, 3])
def test_in_memory_saves_in_the_background(compress):
    """to_bytes(wait=False) and save_into(wait=False): the job's wait() returns what the
    blocking call returns, from the snapshot taken at the call."""
    data = arrays(2)
    s = ps.ParallelSaver(**data)
    want = s.to_bytes(compress=compress)
    job = s.to_bytes(wait=False, compress=compress)
    for v in data.values():
        if v.size:
            v[...] = 0  # after the call: the snapshot is what gets saved
    got = job.wait()
    assert isinstance(got, bytes) and got == want
    assert job.wait() == want  # again: the same result, not a second take
    if compress:
        return
    buf = bytearray(len(want) + 100)
    buf[-100:] = b"\xee" * 100
    s2 = ps.ParallelSaver(**arrays(2))
    job = s2.save_into(buf, wait=False)
    assert job.wait() == len(want)
    assert bytes(buf[: len(want)]) == want and buf[len(want) :] == b"\xee" * 100
    del job
    buf.extend(b"x")  # the export ended with the job: resizable again
    with pytest.raises(ps.PsvError) as ei:
        s2.save_into(bytearray(10), wait=False).wait()
    assert ei.value.status_name == "PSV_ERR_INVALID_ARG"
    with pytest.raises(TypeError):
        s2.save_into(b"read-only", wait=False)


def test_borrowed_mode_busy_timeout_and_close_waits(tmp_path):
    data = arrays(2)
    s = ps.ParallelSaver(**data)
    want = s.to_bytes()
    g = Gate()
    job = s.save(g, wait=False, snapshot=False)
    assert g.entered.wait(30)
    with pytest.raises(ps.PsvError) as info:
        s.add("more", np.ones(3))
    assert info.value.status == ps.PSV_ERR_BUSY and info.value.status_name == "PSV_ERR_BUSY"
    assert "more" not in s.keys
    assert not job.done()
    t0 = time.monotonic()
    with pytest.raises(ps.PsvError) as info:
        job.wait(timeout=0.05)
    assert info.value.status == ps.PSV_ERR_TIMEOUT
    assert 0.04 <= time.monotonic() - t0 < 5
    g.go.set()
    assert job.wait() is None
    assert g.out.getvalue() == want
    s.add("more", np.ones(3))  # free again

    # close() of a saver with a running borrowing job waits for the job.
    g = Gate()
    job = s.save(g, wait=False, snapshot=False)
    assert g.entered.wait(30)
    threading.Timer(0.2, g.go.set).start()
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 >= 0.15
    job.wait()
    assert job.done()


def test_cancel_keeps_the_old_target(tmp_path):
    target = tmp_path / "model.npz"
    with ps.ParallelSaver(old=np.arange(1000)) as s:
        s.save(target)
    before = target.read_bytes()
    big = np.ones(8 * MiB, np.float64)  # 64 MiB: not done before the cancel is seen
    with ps.ParallelSaver(big=big) as s:
        for snapshot in (True, False):
            job = s.save(target, wait=False, snapshot=snapshot)
            job.cancel()
            with pytest.raises(ps.PsvError) as info:
                job.wait()
            assert info.value.status == ps.PSV_ERR_ABORTED, info.value
            assert target.read_bytes() == before
            assert temps(tmp_path) == []
            # The error stays with the job.
            with pytest.raises(ps.PsvError):
                job.wait()


def test_errors_surface_at_wait(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with ps.ParallelSaver(**arrays()) as s:
        job = s.save(tmp_path / "file" / "sub", wait=False)
        with pytest.raises(ps.PsvError) as info:
            job.wait()
        e = info.value
        assert e.status == ps.PSV_ERR_IO and e.os_code == errno.ENOTDIR
        assert str(tmp_path / "file") in e.message
        with pytest.raises(ps.PsvError) as again:
            job.wait(timeout=0)
        assert again.value.message == e.message

        # A read-only directory (root writes anyway: then only the save's success is checked).
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            job = s.save(ro / "x", wait=False)
            if os.geteuid() != 0:
                with pytest.raises(ps.PsvError) as info:
                    job.wait()
                assert info.value.os_code == errno.EACCES
            else:
                job.wait()
        finally:
            ro.chmod(0o755)

        # A writer's own exception comes back from wait.
        class Broken:
            def write(self, b):
                raise OSError(errno.EIO, "broken writer")

        job = s.save(Broken(), wait=False)
        with pytest.raises(OSError, match="broken writer"):
            job.wait()


def test_context_manager_and_arguments(tmp_path):
    with ps.ParallelSaver(**arrays(3)) as s:
        with s.save(tmp_path / "a", wait=False) as job:
            pass
        assert job.done() and (tmp_path / "a.npz").exists()
        with pytest.raises(ValueError, match="progress"):
            s.save(tmp_path / "b", wait=False, progress=lambda d, t: True)
        assert "SaveJob" in repr(job)
        # Several jobs at once, to different targets, finish in any order.
        jobs = [s.save(tmp_path / f"m{i}", wait=False) for i in range(4)]
        for j in reversed(jobs):
            j.wait()
        first = (tmp_path / "m0.npz").read_bytes()
        assert all((tmp_path / f"m{i}.npz").read_bytes() == first for i in range(4))


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_memory_bound_over_100_async_saves(tmp_path):
    d = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path
    target = d / f"psv-async-bound-{os.getpid()}.npz"
    big = np.arange(16 * MiB // 8, dtype=np.float64)
    s = ps.ParallelSaver(big=big, small=np.arange(10))
    try:
        after_first = None
        staged = None
        for i in range(100):
            big[0] = i  # the caller keeps changing its arrays, as a training loop does
            job = s.save(target, wait=False)
            job.wait()
            del job
            if i == 0:
                after_first = rss()
                staged = s.staging_bytes
                assert staged >= big.nbytes
            assert s.staging_bytes == staged, "the staging area is reused, not regrown"
        grown = rss() - after_first
        assert grown < 64 * MiB, f"RSS grew by {grown / MiB:.1f} MiB over 100 async saves"
        with np.load(target) as z:
            assert z["big"][0] == 99 and z["big"][5] == 5
    finally:
        s.close()
        target.unlink(missing_ok=True)
