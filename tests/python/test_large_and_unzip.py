"""Files other readers must accept: `unzip -t` (Debian unzip) on what psv writes, and the
> 4 GiB cases in both directions (behind PSV_TEST_LARGE=1, run by `make test-slow`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

from psv_checks import assert_one_aligned_block

LARGE = pytest.mark.skipif(
    not os.environ.get("PSV_TEST_LARGE"), reason="set PSV_TEST_LARGE=1 (writes > 4 GiB)"
)
needs_unzip = pytest.mark.skipif(shutil.which("unzip") is None, reason="Debian unzip is not installed")


def unzip_test(path) -> str:
    """Run `unzip -t` (which inflates/reads every member and checks its CRC); fail unless clean."""
    run = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "No errors detected" in run.stdout, run.stdout
    return run.stdout


@needs_unzip
@pytest.mark.parametrize("compress", [0, 6])
def test_unzip_accepts_psv_files(psv, tmp_path, compress):
    arrays = {
        "weights": np.random.default_rng(1).random((300, 200)),
        "中文/with space": np.arange(10, dtype=np.int16),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), np.float32),
    }
    path = psv.ParallelSaver(**arrays).save(tmp_path / "u", compress=compress)
    out = unzip_test(path)
    assert "weights.npy" in out


@needs_unzip
@pytest.mark.slow
def test_unzip_accepts_65536_members(psv, tmp_path):
    arrays = {f"k{i}": np.array([i], np.int32) for i in range(65536)}
    path = psv.ParallelSaver(**arrays).save(tmp_path / "many")
    unzip_test(path)
    with zipfile.ZipFile(path) as z:
        assert len(z.infolist()) == 65536


@pytest.fixture
def big_dir(tmp_path):
    """A scratch directory emptied after the test (pytest keeps old tmp dirs; 4 GiB files
    must not pile up)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@LARGE
def test_numpy_reads_a_psv_member_over_4gib_and_unzip_agrees(psv, big_dir):
    n = 2**32 + 64
    big = np.zeros(n, np.uint8)
    big[::4096] = 1
    big[-100:] = np.arange(100)
    after = np.arange(1000, dtype="<f8")
    path = psv.ParallelSaver(big=big, after=after).save(big_dir / "huge")
    with np.load(path) as f:
        loaded = f["big"]
        assert loaded.shape == (n,) and np.array_equal(loaded[-100:], big[-100:])
        assert int(loaded.sum(dtype=np.uint64)) == int(big.sum(dtype=np.uint64))
        del loaded
        assert np.array_equal(f["after"], after)
    if shutil.which("unzip"):
        unzip_test(path)


@LARGE
def test_restore_numpy_file_with_member_over_4gib(psv, big_dir):
    """FORMAT.md case 48: np.savez of a 4 GiB + 64 B member then one more."""
    n = 2**32 + 64
    big = np.zeros(n, np.uint8)
    big[::4096] = 3
    path = big_dir / "np_huge.npz"
    np.savez(path, big=big, after=np.arange(5))
    got = psv.restore(path)
    assert got["big"].shape == (n,)
    assert int(got["big"].sum(dtype=np.uint64)) == int(big.sum(dtype=np.uint64))
    assert np.array_equal(got["after"], np.arange(5))
    assert_one_aligned_block(psv, got)
