"""Memory exhaustion comes back as PSV_ERR_NOMEM: no abort, no crash, and the library keeps
working afterwards. Each case runs in a child process (robust_child.py) under RLIMIT_AS.

  restore   an archive whose one array needs 1 GiB (a sparse file: no disk, no RAM to build),
            under RLIMIT_AS = the child's VmSize + 200 MiB, read into the block or (mmap
            option) mapped                                                  -> PSV_ERR_NOMEM;
            a 4 MiB archive restored right after, under the same limit, is exact.
  save      a first save (whose worker pool does not exist yet) under RLIMIT_AS = VmSize
            + 1 MiB: the pool's thread stacks (2 MiB each) cannot be mapped -> PSV_ERR_NOMEM;
            with the limit lifted, the same saver saves fine.
  no room   the pool already exists and RLIMIT_AS = VmSize + 0: restoring even 4 MiB
            (and 1 GiB) comes back as PSV_ERR_NOMEM.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from robust_helpers import run_child, temp_files
from robust_child import crc_of, payload, raw_restore

PSV_ERR_NOMEM = 10
GiB = 1 << 30


def write_sparse_npz(path: Path, nbytes: int) -> None:
    """A valid stored .npz with one '<f8' array 'big' of nbytes zeros, written as a sparse file.

    The CRC-32 is computed for real, so numpy (and libpsv with CRC checks) accept the file."""
    n = nbytes // 8
    hdr = b"{'descr': '<f8', 'fortran_order': False, 'shape': (%d,), }" % n
    pad = 64 - (10 + len(hdr) + 1) % 64
    hdr = hdr + b" " * pad + b"\n"
    npy_head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr
    size = len(npy_head) + nbytes
    assert size < 0xFFFFFFFF, "needs zip64"
    crc = zlib.crc32(npy_head)
    zeros = bytes(64 << 20)
    left = nbytes
    while left:
        k = min(left, len(zeros))
        crc = zlib.crc32(zeros[:k] if k < len(zeros) else zeros, crc)
        left -= k
    name = b"big.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, size, size,
                        len(name), 0) + name
    central_off = len(local) + size
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, size,
                          size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), central_off, 0)
    with open(path, "wb") as f:
        f.write(local)
        f.write(npy_head)
        f.seek(central_off)  # the zeros are a hole
        f.write(central)
        f.write(end)


@pytest.fixture(scope="module")
def big_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nomem") / "big.npz"
    write_sparse_npz(path, GiB)
    return path


def test_sparse_archive_is_valid(psv, big_npz):
    """The 1 GiB archive is a valid .npz: the NOMEM below is about memory, not the format."""
    with zipfile.ZipFile(big_npz) as z:
        info = z.getinfo("big.npy")
        assert info.file_size > GiB
        with z.open("big.npy") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            assert (shape, fortran, dtype) == ((GiB // 8,), False, np.dtype("<f8"))
    # libpsv agrees, listing it without allocating (metadata-only restore).
    lib, arch = raw_restore(str(big_npz), metadata_only=True)
    try:
        assert lib.psv_archive_count(arch) == 1
        assert lib.psv_archive_nbytes(arch, 0) == GiB
        assert lib.psv_archive_key(arch, 0) == b"big"
    finally:
        lib.psv_free(arch)


@pytest.mark.parametrize("mode", ["read", "mmap"])
def test_restore_1gib_under_rlimit_as_is_nomem(psv, big_npz, tmp_path, mode):
    small = tmp_path / "small.npz"
    arrays = payload(4)
    with psv.ParallelSaver(arrays) as s:
        s.save(small)
    extra = ["--mmap"] if mode == "mmap" else []
    r = run_child(["restore", str(big_npz), "--as-headroom", str(200 << 20), "--then", str(small),
                   *extra])
    r.expect_clean_exit()  # no abort, no crash
    rec = r.record("restore")
    assert rec["status"] == PSV_ERR_NOMEM, f"expected PSV_ERR_NOMEM, got {rec}"
    assert rec["message"], "NOMEM without a message"
    then = r.record("restore-then")
    assert then["status"] == 0, f"the library did not recover after NOMEM: {then}"
    assert then["value"] == {k: crc_of(v) for k, v in arrays.items()}


def test_restore_with_little_headroom_is_nomem(psv, big_npz, tmp_path):
    """The pool already exists and RLIMIT_AS leaves only 2 MiB beyond the current VmSize: even a
    4 MiB restore must come back as NOMEM, with no abort. (At zero headroom glibc itself aborts
    when a thread first needs its dynamic thread-local block, outside anything libpsv can
    handle; seen in CI, so the test leaves room for such small allocations.)"""
    small = tmp_path / "small.npz"
    with psv.ParallelSaver(payload(4)) as s:
        s.save(small)
    for path in (small, big_npz):
        r = run_child(["restore", str(path), "--warm", str(small), "--as-headroom", str(2 << 20)])
        r.expect_clean_exit()
        assert r.record("warm")["status"] == 0, r.describe()
        rec = r.record("restore")
        assert rec["status"] == PSV_ERR_NOMEM, f"{path.name}: expected PSV_ERR_NOMEM, got {rec}"
        assert "allocate" in rec["message"], rec


def test_save_pool_creation_failure_is_nomem(tmp_path):
    target = tmp_path / "model.npz"
    retry = tmp_path / "retry.npz"
    r = run_child(["save", str(target), "--mb", "1", "--threads", "3",
                   "--as-headroom", str(1 << 20), "--retry-target", str(retry)])
    r.expect_clean_exit()  # no abort, no crash
    rec = r.record("save")
    assert rec["status"] == PSV_ERR_NOMEM, f"expected PSV_ERR_NOMEM, got {rec}"
    assert "thread" in rec["message"], rec
    assert not target.exists(), "a failed save created its target"
    again = r.record("save-retry")
    assert again["status"] == 0, f"the library did not recover after NOMEM: {again}"
    got = np.load(retry)
    want = payload(1)
    assert set(got.files) == set(want)
    for k, v in want.items():
        assert np.array_equal(got[k], v), k
    assert temp_files(tmp_path) == []
