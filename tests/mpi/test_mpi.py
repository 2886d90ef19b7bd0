"""The collective save under mpirun (issue 15): Python (mpi4py) and C (examples/mpi/psv_mpi.c)
hosts, 1 to 4 ranks. Run by ``make test-mpi`` (which installs Open MPI and mpi4py when missing).

The property: the collective file is byte-identical to a single-process save of the same arrays
in the same global order with the same options, and numpy, zipfile, ``unzip -t`` and our
restore read it. Faults: duplicate keys, a rank with another plan, a changed shape (in
mpi_cases.py), SIGKILL of a rank mid-write (here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import parallel_saver as ps

import mpi_cases  # beside this file: pytest's default (prepend) import mode puts its directory on sys.path

HERE = Path(__file__).resolve().parent

MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="no mpirun (make test-mpi installs Open MPI)")

#: Every mpirun is bounded: a hung job fails the test instead of the CI.
TIMEOUT_S = 90
ENV = dict(
    os.environ,
    OMPI_ALLOW_RUN_AS_ROOT="1",
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    OMPI_MCA_btl_vader_single_copy_mechanism="none",
    # Each rank uses 2 threads: 4 ranks oversubscribe 2 cores already.
    OMP_NUM_THREADS="1",
)


def mpirun(np_: int, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-s", "KILL", str(TIMEOUT_S), MPIRUN, "--oversubscribe", "-np", str(np_), *argv]
    start = time.monotonic()
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    # (A job whose rank died of SIGKILL also ends with 137: the time tells a timeout apart.)
    assert time.monotonic() - start < TIMEOUT_S - 1, f"mpirun timed out after {TIMEOUT_S} s: {cmd}\n{p.stdout}\n{p.stderr}"
    if check:
        assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def single_save(arrays: dict, path: Path, alignment: int) -> bytes:
    """The reference: one process saves the same arrays, in the same order, same options."""
    saver = ps.ParallelSaver(**arrays)
    lib = ps._lib()
    opts = lib.psv_save_options_new()
    try:
        set_align = lib.psv_save_options_set_alignment
        set_align.argtypes = [type(opts), __import__("ctypes").c_size_t]
        assert set_align(opts, alignment) == 0
        assert lib.psv_saver_save(saver._handle, str(path).encode(), opts) == 0
    finally:
        lib.psv_save_options_free(opts)
        saver.close()
    return (path.parent / (path.name + ".npz")).read_bytes()


def readers_agree(path: str, arrays: dict) -> None:
    """numpy, zipfile, unzip -t and our restore read the file, with the right contents."""
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
    if shutil.which("unzip"):
        u = subprocess.run(["unzip", "-tq", path], capture_output=True, text=True)
        assert u.returncode == 0, u.stdout + u.stderr
    with np.load(path) as d:
        assert list(d.files) == list(arrays)
        for k, v in arrays.items():
            got = d[k]
            assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k
    got = ps.restore(path)
    assert list(got) == list(arrays)
    for k, v in arrays.items():
        assert np.array_equal(got[k], v), k


def data_offsets(path: str) -> dict:
    """key -> file offset of its array data, from the local and .npy headers."""
    import struct

    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            f.seek(info.header_offset)
            local = f.read(30)
            n, e = struct.unpack("<HH", local[26:30])
            payload = info.header_offset + 30 + n + e
            f.seek(payload)
            magic = f.read(12)
            if magic[6] == 1:
                hlen = 10 + struct.unpack("<H", magic[8:10])[0]
            else:
                hlen = 12 + struct.unpack("<I", magic[8:12])[0]
            out[info.filename[: -len(".npy")]] = payload + hlen
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One mpirun per rank count (4 first: the 2-rank job restores its checkpoint)."""
    out = tmp_path_factory.mktemp("mpi")
    results = {}
    for n in (4, 1, 2, 3):
        mpirun(n, sys.executable, str(HERE / "mpi_cases.py"), str(out))
        results[n] = json.loads((out / f"result-{n}.json").read_text())
    return out, results


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_python_collective_file_is_the_single_save(runs, nranks):
    out, results = runs
    res = results[nranks]
    assert res["ok"], "\n".join(res["errors"])
    cases = ["mixed", "aligned"] + (["zip64"] if nranks == 4 else [])
    for case in cases:
        arrays = {}
        for r in range(nranks):
            arrays.update(mpi_cases.arrays_for(case, nranks, r))
        want = single_save(arrays, out / f"single-{case}-{nranks}", mpi_cases.ALIGNMENT[case])
        got = Path(res["files"][case]).read_bytes()
        assert got == want, f"{case}, {nranks} ranks: not byte-identical"
        if case == "zip64":
            assert len(arrays) > 65535
            with zipfile.ZipFile(res["files"][case]) as z:
                assert len(z.infolist()) == len(arrays)
            assert np.load(res["files"][case])[f"z3_{len(arrays) // 4 - 1}"].shape == (1,)
        else:
            readers_agree(res["files"][case], arrays)
    if nranks < 4:
        assert "restored_from_4" in res["files"]


def c_arrays(nranks: int, narrays: int, kib: int, empty_rank: int = -1) -> dict:
    """The arrays examples/mpi/psv_mpi.c saves (see its header comment)."""
    out = {}
    for r in range(nranks):
        if r == empty_rank:
            continue
        for i in range(narrays):
            n = kib * 256 + 13 * i + 7 * r
            j = np.arange(n, dtype=np.uint32)
            out[f"rank{r}/a{i}"] = j * np.uint32(31) + np.uint32(i * 1000003 + r * 7)
    return out


def example() -> str:
    exe = os.environ.get("PSV_MPI_EXAMPLE")
    if not exe:
        pytest.skip("PSV_MPI_EXAMPLE is not set (make test-mpi builds examples/mpi/psv_mpi.c)")
    return exe


def test_c_example_under_mpirun_is_the_single_save(tmp_path):
    exe = example()
    p = mpirun(4, exe, str(tmp_path / "c"), "--arrays", "3", "--kib", "1100", "--align", "4096",
               "--empty-rank", "1", "--threads", "1")
    stats = json.loads(p.stdout.strip().splitlines()[-1])
    assert stats["ranks"] == 4 and len(stats["write_s"]) == 4
    arrays = c_arrays(4, 3, 1100, empty_rank=1)
    want = single_save(arrays, tmp_path / "single", 4096)
    assert Path(stats["path"]).read_bytes() == want
    assert stats["bytes"] == len(want)
    readers_agree(stats["path"], arrays)
    # Arrays of at least 4096 bytes have their data 4096-aligned in the file, others 64.
    for key, offset in data_offsets(stats["path"]).items():
        assert offset % (4096 if arrays[key].nbytes >= 4096 else 64) == 0, (key, offset)
    assert not list(tmp_path.glob(".*.psv-tmp"))


def test_sigkill_of_a_rank_mid_write_leaves_the_old_target(tmp_path):
    exe = example()
    target = tmp_path / "ckpt.npz"
    target.write_bytes(b"the previous checkpoint")
    args = [str(tmp_path / "ckpt"), "--arrays", "2", "--kib", "40000", "--threads", "1"]
    p = mpirun(4, exe, *args, "--kill-rank", "2", check=False)
    assert p.returncode != 0
    assert target.read_bytes() == b"the previous checkpoint"
    m = re.search(r"^temp: (.+)$", p.stdout, re.M)
    assert m, p.stdout + p.stderr
    temp = Path(m.group(1))
    # Whatever remains is the temporary file under its documented name, nothing else.
    assert re.fullmatch(r"\.[0-9a-f]{16}\.psv-tmp", temp.name)
    left = sorted(f.name for f in tmp_path.iterdir())
    assert set(left) <= {"ckpt.npz", temp.name}, left
    # The next collective save of the same plan replaces the leftover and succeeds.
    p = mpirun(4, exe, *args)
    assert not temp.exists()
    stats = json.loads(p.stdout.strip().splitlines()[-1])
    with np.load(stats["path"]) as d:
        assert len(d.files) == 8
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ckpt.npz"]
