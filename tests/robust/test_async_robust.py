"""Asynchronous saves under failure (issue 14: errors and nothing lost).

  file too large   RLIMIT_FSIZE = 1 MiB (SIGXFSZ ignored) in a child, 10 MiB async save
                   -> PSV_ERR_IO with EFBIG from job.wait(); old target byte-identical, no temp
  disk full        a 2 MiB tmpfs holding the old target, 10 MiB async save (root only; skipped
                   if mount fails) -> ENOSPC from job.wait(); old target byte-identical, no temp
  SIGKILL          a child starts a 256 MiB async save over the old target and is SIGKILLed as
                   soon as save() has returned: the target is byte-identical, at most one
                   temporary file is left, named .<16 hex digits>.psv-tmp
  fork             os.fork() while a job runs: in the child the job does not run (done() False,
                   wait() raises PSV_ERR_INVALID_ARG at once); the child saves (blocking and
                   asynchronously) on its own; the parent's job completes unaffected
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from robust_helpers import child_env, listing, mount_tmpfs, temp_files, umount

MiB = 1 << 20


def write_old(psv, target: Path) -> bytes:
    with psv.ParallelSaver(old=np.arange(64 * 1024, dtype=np.int32) * 3) as s:
        s.save(target)
    return target.read_bytes()


def run_py(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        timeout=timeout,
        text=True,
    )


def test_efbig_comes_back_from_wait(psv, tmp_path):
    target = tmp_path / "model.npz"
    before = write_old(psv, target)
    names = listing(tmp_path)
    r = run_py(
        f"""
        import resource, signal, numpy as np, parallel_saver as ps
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({MiB}, resource.RLIM_INFINITY))
        s = ps.ParallelSaver(data=np.arange({10 * MiB // 8}, dtype=np.uint64))
        for snapshot in (True, False):
            job = s.save({str(target)!r}, wait=False, snapshot=snapshot)
            try:
                job.wait()
                print("NO ERROR")
            except ps.PsvError as e:
                print("ERR", e.status_name, e.os_code, e.message)
        """
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    for line in lines:
        assert line.startswith(f"ERR PSV_ERR_IO {errno.EFBIG} "), line
        assert str(tmp_path) in line
    assert target.read_bytes() == before
    assert listing(tmp_path) == names and temp_files(tmp_path) == []


@pytest.fixture()
def mounted(tmp_path):
    d = tmp_path / "mnt"
    d.mkdir()
    state = {"mounted": False}
    yield d, state
    if state["mounted"]:
        umount(d)


def test_enospc_comes_back_from_wait(psv, mounted):
    d, state = mounted
    why = mount_tmpfs(d, "2m")
    if why:
        pytest.skip(why)
    state["mounted"] = True
    target = d / "model.npz"
    before = write_old(psv, target)
    names = listing(d)
    with psv.ParallelSaver(data=np.arange(10 * MiB // 8, dtype=np.uint64)) as s:
        for snapshot in (True, False):
            job = s.save(target, wait=False, snapshot=snapshot)
            with pytest.raises(psv.PsvError) as info:
                job.wait()
            e = info.value
            assert e.status == psv.PSV_ERR_IO and e.os_code == errno.ENOSPC, e
            assert str(d) in e.message
            assert target.read_bytes() == before
            assert listing(d) == names and temp_files(d) == []


def test_sigkill_mid_job_leaves_the_old_target(psv, tmp_path):
    target = tmp_path / "model.npz"
    before = write_old(psv, target)
    code = f"""
        import sys, time, numpy as np, parallel_saver as ps
        big = np.ones({256 * MiB // 8}, np.float64)
        s = ps.ParallelSaver(big=big)
        job = s.save({str(target)!r}, wait=False, snapshot=False, threads=1)
        print("started", flush=True)
        time.sleep(60)
        """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "started", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == before, "the old target changed after SIGKILL mid-job"
    left = temp_files(tmp_path)
    assert len(left) <= 1, left
    for name in left:
        assert re.fullmatch(r"\.[0-9a-f]{16}\.psv-tmp", name), name
        (tmp_path / name).unlink()


def test_fork_while_a_job_runs(psv, tmp_path):
    target = tmp_path / "parent.npz"
    big = np.arange(32 * MiB // 8, dtype=np.float64)
    s = psv.ParallelSaver(big=big, tag=np.arange(5))
    job = s.save(target, wait=False, snapshot=False)
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        ok = False
        try:
            signal.alarm(60)
            assert not job.done()
            t0 = time.monotonic()
            try:
                job.wait()
                raise AssertionError("the parent's job waited in the child")
            except psv.PsvError as e:
                assert e.status == psv.PSV_ERR_INVALID_ARG, e
            assert time.monotonic() - t0 < 5
            mine = np.arange(1000, dtype=np.int32)
            with psv.ParallelSaver(mine=mine) as cs:
                cs.save(tmp_path / "child_sync.npz")
                cjob = cs.save(tmp_path / "child_async.npz", wait=False)
                mine[:] = -1
                cjob.wait()
            for name in ("child_sync.npz", "child_async.npz"):
                with np.load(tmp_path / name) as z:
                    assert z["mine"][999] == 999
            ok = True
        except BaseException as exc:  # noqa: BLE001 - reported through the exit status
            sys.stderr.write(f"child failed: {exc!r}\n")
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert job.wait() == str(target)
    s.close()
    with np.load(target) as z:
        assert z["big"][12345] == 12345.0 and list(z["tag"]) == [0, 1, 2, 3, 4]
    assert temp_files(tmp_path) == []
