"""Save to anything, restore from anything into anyone's memory (issue 13), from Python:
fds, file objects, writer/reader objects, pipes, bytes, caller buffers, shared memory, prepared
byte ranges. Every save target must give exactly the bytes of the path save; every restore
must give numpy's values."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import make_fixtures as mf
from psv_checks import assert_restored_like_zip, data_ptr, expect_status

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _arrays():
    rng = np.random.default_rng(11)
    return {
        "big": rng.standard_normal((700, 1500)),  # 8.4 MB: several 2 MiB write pieces
        "ints": np.arange(1000, dtype=np.int32),
        "f_order": np.asfortranarray(rng.integers(0, 100, (31, 7), dtype=np.int16)),
        "be": np.arange(5, dtype=">f4"),
        "empty": np.zeros((0, 4)),
        "scalar": np.array(3.5),
    }


@pytest.fixture
def saved(psv, tmp_path):
    """(saver, arrays, path bytes of the stored save)."""
    arrays = _arrays()
    saver = psv.ParallelSaver(arrays)
    path = Path(saver.save(tmp_path / "ref.npz"))
    return saver, arrays, path.read_bytes()


def _assert_values(got, arrays):
    assert list(got) == list(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape, k
        assert np.array_equal(got[k], a), k


def _pipe_reader(fd):
    """Drain a pipe on a thread; returns (thread, chunks)."""
    chunks = []

    def run():
        with os.fdopen(fd, "rb") as f:
            while True:
                b = f.read(1 << 16)
                if not b:
                    return
                chunks.append(b)

    t = threading.Thread(target=run)
    t.start()
    return t, chunks


# --- save targets ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [0, 4])
def test_every_target_gives_the_path_bytes(psv, tmp_path, compress):
    arrays = _arrays()
    saver = psv.ParallelSaver(arrays)
    ref = Path(saver.save(tmp_path / "ref.npz", compress=compress)).read_bytes()

    bio = io.BytesIO()
    assert saver.save(bio, compress=compress) is None
    assert bio.getvalue() == ref

    # A file object: flushed first, written from its position, left at the archive's end.
    with open(tmp_path / "framed.bin", "wb") as f:
        f.write(b"HEAD")
        saver.save(f, compress=compress)
        assert f.tell() == 4 + len(ref)
        f.write(b"TAIL")
    assert (tmp_path / "framed.bin").read_bytes() == b"HEAD" + ref + b"TAIL"

    fd = os.open(tmp_path / "fd.npz", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        saver.save(fd, compress=compress)
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(ref)
    finally:
        os.close(fd)
    assert (tmp_path / "fd.npz").read_bytes() == ref

    # A pipe (not seekable): in file order.
    r, w = os.pipe()
    t, chunks = _pipe_reader(r)
    try:
        saver.save(w, compress=compress)
    finally:
        os.close(w)
        t.join()
    assert b"".join(chunks) == ref

    assert saver.to_bytes(compress=compress) == ref
    with np.load(io.BytesIO(ref)) as z:
        for k, a in arrays.items():
            assert np.array_equal(z[k], a), k


def test_writer_gets_pieces_and_partial_writes_are_resent(psv, saved):
    saver, _, ref = saved

    class Trickle:
        """Takes at most 1000 bytes per call, as a raw stream may."""

        def __init__(self):
            self.parts = []

        def write(self, b):
            n = min(len(b), 1000)
            self.parts.append(bytes(b[:n]))
            return n

    w = Trickle()
    saver.save(w)
    assert b"".join(w.parts) == ref


def test_writer_exception_comes_back_and_stops_the_save(psv, saved):
    saver, _, _ = saved
    calls = []

    class Broken:
        def write(self, b):
            calls.append(len(b))
            if len(calls) == 2:
                raise ConnectionResetError("peer went away")
            return len(b)

    with pytest.raises(ConnectionResetError, match="peer went away"):
        saver.save(Broken())
    assert len(calls) == 2  # nothing more was written after the error

    class Liar:
        def write(self, b):
            return len(b) + 1

    with pytest.raises(OSError, match="returned"):
        saver.save(Liar())


def test_closed_pipe_is_an_io_error(psv, saved):
    saver, _, _ = saved
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(psv.PsvError) as ei:
            saver.save(w)  # EPIPE (Python ignores SIGPIPE)
        expect_status(ei, ["PSV_ERR_IO"])
    finally:
        os.close(w)


def test_non_blocking_pipes_wait_instead_of_failing(psv, saved):
    """Event loops hand out O_NONBLOCK descriptors: a save into one and a restore from one
    wait for a slow peer (as a blocking fd would) instead of failing with EAGAIN."""
    saver, arrays, ref = saved
    r, w = os.pipe()
    os.set_blocking(w, False)
    chunks = []

    def slow_reader():
        time.sleep(0.2)  # the pipe (64 KiB) is full long before this
        with os.fdopen(r, "rb") as f:
            while b := f.read(1 << 16):
                chunks.append(b)

    t = threading.Thread(target=slow_reader)
    t.start()
    try:
        saver.save(w)
    finally:
        os.close(w)
        t.join()
    assert b"".join(chunks) == ref

    r, w = os.pipe()
    os.set_blocking(r, False)

    def slow_writer():
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(ref), 1 << 20):
                time.sleep(0.05)  # the restore finds the pipe empty, again and again
                f.write(ref[i : i + (1 << 20)])

    t = threading.Thread(target=slow_writer)
    t.start()
    try:
        got = psv.restore(r)
    finally:
        t.join()
        os.close(r)
    _assert_values(got, arrays)


def test_bad_targets(psv, saved, tmp_path):
    saver, _, _ = saved
    with pytest.raises(TypeError, match="binary"):
        with open(tmp_path / "t.txt", "w") as f:
            saver.save(f)
    with pytest.raises(TypeError):
        saver.save(3.5)
    with pytest.raises(ValueError):
        saver.save(-1)
    with pytest.raises(ValueError, match="path"):
        saver.save(io.BytesIO(), layout="dir")
    with pytest.raises(psv.PsvError) as ei:
        saver.save(987654)  # not an open descriptor
    expect_status(ei, ["PSV_ERR_IO", "PSV_ERR_INVALID_ARG"])


def test_save_into_caller_memory(psv, saved):
    saver, _, ref = saved
    assert saver.nbytes() == len(ref)
    buf = bytearray(len(ref) + 10)
    assert saver.save_into(buf) == len(ref)
    assert bytes(buf[: len(ref)]) == ref and buf[len(ref) :] == bytearray(10)
    arr = np.zeros(len(ref), np.uint8)
    saver.save_into(arr)
    assert arr.tobytes() == ref
    with pytest.raises(psv.PsvError) as ei:
        saver.save_into(bytearray(len(ref) - 1))
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    assert str(len(ref)) in ei.value.message
    with pytest.raises(TypeError, match="read-only"):
        saver.save_into(bytes(len(ref)))


def test_prepared_parts_in_any_order_from_threads(psv, saved):
    saver, _, ref = saved
    with saver.prepare() as prepared:
        assert len(prepared) == len(ref)
        parts = prepared.parts(1 << 20)
        assert sum(n for _, n in parts) == len(ref)
        shuffled = list(parts)
        random.Random(5).shuffle(shuffled)
        with ThreadPoolExecutor(4) as pool:
            rendered = dict(zip(shuffled, pool.map(lambda p: prepared.render(*p), shuffled)))
        assert b"".join(rendered[p] for p in parts) == ref
        assert prepared.render(len(ref) - 3, 3) == ref[-3:]
        with pytest.raises(ValueError, match="past"):
            prepared.render(len(ref) - 3, 4)
        with pytest.raises(RuntimeError, match="PreparedSave"):
            saver.add("more", np.ones(3))  # the prepared save borrows the saver
    with pytest.raises(ValueError, match="closed"):
        prepared.render(0, 1)
    saver.add("more", np.ones(3))  # fine once it is closed


def test_closing_the_saver_closes_its_prepared_saves(psv):
    saver = psv.ParallelSaver(a=np.arange(10))
    prepared = saver.prepare(compress=6)
    first = prepared.render(0, 4)
    assert first == b"PK\x03\x04"
    saver.close()
    with pytest.raises(ValueError, match="closed"):
        prepared.render(0, 4)


def test_multipart_example(psv):
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_multipart" / "multipart_parts.py")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical to save(path): True; np.load: True" in r.stdout


# --- restore sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["psv", "savez", "savez_compressed"])
def test_every_source_gives_numpys_values(psv, tmp_path, writer):
    if writer == "psv":
        path = Path(psv.ParallelSaver(**mf.sample_arrays()).save(tmp_path / "cat.npz"))
    else:
        path = mf.fx_all_dtypes(tmp_path, writer == "savez_compressed")
    data = path.read_bytes()
    assert_restored_like_zip(psv.restore(path), path)
    assert_restored_like_zip(psv.restore(bytearray(data)), path, numpy_too=False)

    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        assert_restored_like_zip(psv.restore(fd), path, numpy_too=False)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7  # positional reads: the offset stays
    finally:
        os.close(fd)

    with open(path, "rb") as f:
        f.read(3)
        assert_restored_like_zip(psv.restore(f), path, numpy_too=False)
        assert f.tell() == 3


@pytest.mark.parametrize("writer", ["psv", "psv_compressed", "savez", "savez_compressed"])
def test_stream_sources(psv, tmp_path, writer):
    """Objects without a usable fileno and pipes are read once, front to back."""
    if writer.startswith("psv"):
        path = Path(psv.ParallelSaver(**mf.sample_arrays()).save(tmp_path / "cat.npz", compress=6 if "compressed" in writer else 0))
    else:
        path = mf.fx_all_dtypes(tmp_path, writer == "savez_compressed")
    data = path.read_bytes()
    assert_restored_like_zip(psv.restore(io.BytesIO(data)), path, numpy_too=False)

    class ReadOnly:  # read() only, short reads
        def __init__(self, b):
            self.f = io.BytesIO(b)

        def read(self, n):
            return self.f.read(min(n, 777))

    assert_restored_like_zip(psv.restore(ReadOnly(data)), path, numpy_too=False)

    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed)
    t.start()
    try:
        with os.fdopen(r, "rb") as f:
            assert_restored_like_zip(psv.restore(f), path, numpy_too=False)
    finally:
        t.join()


def test_stream_errors(psv, saved):
    _, _, ref = saved
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(io.BytesIO(ref[: len(ref) // 2]))
    expect_status(ei, ["PSV_ERR_FORMAT"])

    class Failing:
        def __init__(self):
            self.n = 0

        def readinto(self, b):
            self.n += 1
            if self.n == 3:
                raise TimeoutError("socket timed out")
            b[:1] = ref[self.n - 1 : self.n]
            return 1

    with pytest.raises(TimeoutError, match="socket timed out"):
        psv.restore(Failing())


def test_path_is_opened_as_given(psv, saved, tmp_path):
    _, arrays, ref = saved
    (tmp_path / "weights.bin").write_bytes(ref)
    _assert_values(psv.restore(tmp_path / "weights.bin"), arrays)
    (tmp_path / "plain.npz").write_bytes(ref)
    _assert_values(psv.restore(str(tmp_path / "plain")), arrays)  # numpy's .npz fallback


# --- restore into caller memory ----------------------------------------------------------------


def _aligned(n):
    raw = np.zeros(n + 64, np.uint8)
    skip = (-raw.ctypes.data) % 64
    return raw[skip : skip + n]


@pytest.mark.parametrize("source_kind", ["path", "bytes", "fd", "stream"])
def test_restore_into_caller_memory(psv, saved, tmp_path, source_kind):
    _, arrays, ref = saved
    path = tmp_path / "x.npz"
    path.write_bytes(ref)
    listing = psv.ls(path)
    out = _aligned(listing.required_bytes)
    fd = os.open(path, os.O_RDONLY) if source_kind == "fd" else None
    source = {"path": path, "bytes": ref, "fd": fd, "stream": io.BytesIO(ref)}[source_kind]
    try:
        got = psv.restore(source, out=out)
    finally:
        if fd is not None:
            os.close(fd)
    _assert_values(got, arrays)
    base = out.ctypes.data
    for k, a in got.items():
        assert data_ptr(a) == base + listing[k].offset, k  # in out, where ls() said
        assert listing[k].offset % 64 == 0
    again = psv.views(out, listing)
    _assert_values(again, arrays)
    got["ints"][0] = -1  # writes land in out
    assert again["ints"][0] == -1


def test_restore_into_keeps_out_pinned_and_checks_it(psv, saved):
    _, arrays, ref = saved
    need = psv.ls(ref).required_bytes
    buf = bytearray(need + 64)
    view = memoryview(buf)
    skip = (-np.frombuffer(buf, np.uint8).ctypes.data) % 64
    got = psv.restore(ref, out=view[skip : skip + need])
    with pytest.raises(BufferError):
        buf.extend(b"x")  # the arrays keep the buffer exported: it cannot move
    _assert_values(got, arrays)
    del got
    view.release()
    buf.extend(b"x")  # released with the arrays

    with pytest.raises(psv.PsvError) as ei:
        psv.restore(ref, out=_aligned(need - 64))
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    assert str(need) in ei.value.message
    misaligned = _aligned(need + 64)[8 : 8 + need]
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(ref, out=misaligned)
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    with pytest.raises(TypeError, match="read-only"):
        psv.restore(ref, out=bytes(need))
    with pytest.raises(ValueError, match="mmap"):
        psv.restore(ref, out=_aligned(need), mmap=True)


def test_keys_subset_into_memory(psv, saved):
    _, arrays, ref = saved
    listing = psv.ls(ref, keys=["ints", "be"])
    assert list(listing) == ["ints", "be"]
    out = _aligned(listing.required_bytes)
    got = psv.restore(ref, keys=["ints", "be"], out=out)
    assert np.array_equal(got["ints"], arrays["ints"]) and np.array_equal(got["be"], arrays["be"])


def test_listing_pickles_with_offsets(psv, saved):
    import pickle

    _, _, ref = saved
    listing = psv.ls(ref)
    back = pickle.loads(pickle.dumps(dict(listing)))
    assert {k: v.offset for k, v in back.items()} == {k: v.offset for k, v in listing.items()}


def test_shared_memory_example(psv):
    """Process A restores into SharedMemory; process B attaches by name and rebuilds the arrays
    zero-copy from ls()'s offsets (examples/python_shm)."""
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_shm" / "shared_restore.py")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical" in r.stdout
    assert "Traceback" not in r.stderr, r.stderr


def test_stream_progress_total_is_known_at_the_end(psv, saved):
    _, arrays, ref = saved
    calls = []
    got = psv.restore(io.BytesIO(ref), progress=lambda d, t: calls.append((d, t)))
    _assert_values(got, arrays)
    assert calls and calls[-1][0] == calls[-1][1] > 0
    assert all(t == 0 for _, t in calls[:-1])
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(io.BytesIO(ref), progress=lambda d, t: False)
    expect_status(ei, ["PSV_ERR_ABORTED"])


def test_alignment_reaches_every_target(psv, tmp_path):
    arrays = {"big": np.arange(300_000, dtype=np.float64), "small": np.arange(10, dtype=np.int8)}
    saver = psv.ParallelSaver(arrays)
    ref = Path(saver.save(tmp_path / "a.npz", alignment=4096)).read_bytes()
    assert ref != Path(saver.save(tmp_path / "b.npz")).read_bytes()
    assert saver.to_bytes(alignment=4096) == ref
    assert saver.nbytes(alignment=4096) == len(ref)
    bio = io.BytesIO()
    saver.save(bio, alignment=4096)
    assert bio.getvalue() == ref
    with saver.prepare(alignment=4096) as p:
        assert p.render(0, len(p)) == ref
    with np.load(io.BytesIO(ref)) as z:
        assert np.array_equal(z["big"], arrays["big"])
    with pytest.raises(psv.PsvError) as ei:
        saver.save(tmp_path / "c.npz", alignment=100)
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
