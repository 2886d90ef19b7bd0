"""Save/restore options of the ctypes wrapper: compression, key subsets, native byte order, mmap,
in-memory archives, progress callbacks, limits, ls(), directory layout, and the
`python -m parallel_saver` command line.  Every result is checked against numpy / zipfile."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest

import make_fixtures as mf
from psv_checks import (
    BIG_HEADER,
    assert_restored_like_zip,
    assert_same_as_numpy,
    data_ptr,
    expect_status,
    fortran_flag,
    logical_bytes,
    raw_bytes,
)

REPO = Path(__file__).resolve().parents[2]


# --- helpers ---------------------------------------------------------------------------------


def _assert_exact(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Same dtype, shape, memory order and every field's bytes (NaN-safe, padding-blind)."""
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype!r} != {ref.dtype!r}"
    assert got.dtype.descr == ref.dtype.descr, f"{what}: descr {got.dtype.descr!r} != {ref.dtype.descr!r}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert fortran_flag(got) == fortran_flag(ref), f"{what}: memory order"
    assert logical_bytes(got) == logical_bytes(ref), f"{what}: values differ"


def _mixed_arrays() -> Dict[str, np.ndarray]:
    """A few of everything, including a member large enough (3 MiB) for several deflate blocks."""
    rng = np.random.default_rng(7)
    big = (np.arange(3 * 2**20 // 8, dtype="<i8") % 1000).astype("<i8")
    big[::7] = rng.integers(-(2**62), 2**62, size=big[::7].shape)
    return {
        "big": big,
        "f8": rng.standard_normal((37, 11)),
        "F": np.asfortranarray(np.arange(60, dtype="<i2").reshape(6, 10)),
        "be": np.arange(17, dtype=">f4") * 1.5,
        "rec": mf.sample_arrays()["rec_mixed"],
        "U": np.array(["a", "éé", "中文"], dtype="<U2"),
        "empty": np.zeros((0, 3), "<f8"),
        "scalar": np.array(2.5),
        "b": np.array([True, False, True]),
    }


def _no_tmp_files(d: Path) -> List[str]:
    return [n for n in os.listdir(d) if n.endswith(".psv-tmp")]


def _maps() -> List[Tuple[int, int, str]]:
    """(start, end, pathname) of every mapping of this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.rstrip("\n").split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out.append((lo, hi, parts[5] if len(parts) > 5 else ""))
    return out


def _mapping_of(addr: int, nbytes: int) -> Optional[str]:
    """Pathname of the mapping that holds [addr, addr + nbytes), or None."""
    for lo, hi, name in _maps():
        if lo <= addr and addr + max(nbytes, 1) <= hi:
            return name
    return None


def _in_block(psv, a: np.ndarray) -> bool:
    blk = psv.block_of(a)
    assert blk is not None, "restored array does not lead back to its RestoredBlock"
    p = data_ptr(a)
    return blk.address <= p and p + a.nbytes <= blk.address + blk.nbytes


# --- compression -----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [1, 6, 9])
def test_compress_levels_load_in_numpy(psv, tmp_path, level):
    arrays = _mixed_arrays()
    path = Path(psv.ParallelSaver(**arrays).save(tmp_path / f"c{level}", compress=level))
    assert path.name == f"c{level}.npz"
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        infos = z.infolist()
        assert [i.filename for i in infos] == [k + ".npy" for k in arrays]
        for info in infos:
            assert info.compress_type == zipfile.ZIP_DEFLATED, f"{info.filename} not deflated"
            # each member inflates to exactly what np.save writes
            assert z.read(info) == mf.npy_bytes(arrays[info.filename[:-4]]), info.filename
        big = next(i for i in infos if i.filename == "big.npy")
        assert big.compress_size < big.file_size, "compressible data did not shrink"
    with np.load(path, allow_pickle=False, max_header_size=BIG_HEADER) as f:
        assert f.files == list(arrays)
        for k, a in arrays.items():
            _assert_exact(f[k], a, k)
    got = psv.restore(path)
    for k, a in arrays.items():
        _assert_exact(got[k], a, k)


def test_compress_smaller_than_stored_and_level_order(psv, tmp_path):
    arrays = {"z": np.zeros(2**20, "<f8"), "r": np.arange(50_000, dtype="<i4") % 17}
    s = psv.ParallelSaver(**arrays)
    sizes = {lvl: os.path.getsize(s.save(tmp_path / f"l{lvl}", compress=lvl)) for lvl in (0, 1, 9)}
    assert sizes[1] < sizes[0] / 10
    assert sizes[9] <= sizes[1]
    with zipfile.ZipFile(tmp_path / "l0.npz") as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


@pytest.mark.parametrize("bad,exc", [(10, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError)])
def test_compress_bad_values(psv, tmp_path, bad, exc):
    with pytest.raises(exc):
        psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "x", compress=bad)
    assert not (tmp_path / "x.npz").exists()


# --- keys ------------------------------------------------------------------------------------


def test_keys_subset_in_requested_order(psv, tmp_path):
    arrays = _mixed_arrays()
    path = psv.ParallelSaver(**arrays).save(tmp_path / "k")
    full = psv.restore(path)
    want = ["U", "be", "F", "scalar"]
    got = psv.restore(path, keys=want)
    assert list(got) == want
    for k in want:
        _assert_exact(got[k], arrays[k], k)
    assert got.skipped == []
    # the block is sized to the subset: the 3 MiB array is not in it
    assert psv.block_of(got["U"]).nbytes < 4096 < psv.block_of(full["big"]).nbytes
    # also from a numpy-written, deflated archive, and as a tuple
    np.savez_compressed(tmp_path / "np", **arrays)
    got2 = psv.restore(tmp_path / "np.npz", keys=("rec", "big"))
    assert list(got2) == ["rec", "big"]
    _assert_exact(got2["big"], arrays["big"], "big")
    _assert_exact(got2["rec"], arrays["rec"], "rec")


def test_keys_unknown_duplicate_empty_and_type(psv, tmp_path):
    path = psv.ParallelSaver(a=np.arange(3), b=np.ones(2)).save(tmp_path / "k")
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(path, keys=["a", "nope"])
    expect_status(ei, ["PSV_ERR_NOT_FOUND"])
    assert ei.value.status == psv.PSV_ERR_NOT_FOUND
    assert "nope" in ei.value.message
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(path, keys=["a", "a"])
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    assert psv.restore(path, keys=[]) == {}
    with pytest.raises(TypeError):
        psv.restore(path, keys="a")
    with pytest.raises(TypeError):
        psv.restore(path, keys=[1])
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(Path(path).read_bytes(), keys=["zzz"])
    expect_status(ei, ["PSV_ERR_NOT_FOUND"])


# --- native byte order -----------------------------------------------------------------------

BE_NUMERIC = [">i2", ">i4", ">i8", ">u2", ">u4", ">u8", ">f2", ">f4", ">f8", ">c8", ">c16"]
BE_RECORD = np.dtype(
    [("a", ">i4"), ("b", ">f8", (2,)), ("s", "S3"), ("c", ">c8"), ("n", [("x", ">u2"), ("y", ">f4")])]
)


def _big_endian_arrays() -> Dict[str, np.ndarray]:
    out: Dict[str, np.ndarray] = {}
    for s in BE_NUMERIC:
        dt = np.dtype(s)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            vals = [int(info.min), int(info.max), 0, 1, 258, int(info.max) // 3]
            a = np.array(vals, dtype=dt)
        elif dt.kind == "f":
            a = np.array([1.5, -0.0, np.inf, np.nan, 1e-3, 65504 if dt.itemsize == 2 else 1e30], dtype=dt)
        else:
            a = (np.arange(6) * 1.25 - 1j * np.arange(6)).astype(dt)
        out["be_" + s[1:]] = a
    rec = np.zeros(4, BE_RECORD)
    rec["a"] = [-5, 7, 2**31 - 1, 0]
    rec["b"] = np.arange(8).reshape(4, 2) / 3
    rec["s"] = [b"ab", b"", b"xyz", b"q"]
    rec["c"] = np.arange(4) + 2j
    rec["n"]["x"] = [1, 256, 65535, 7]
    rec["n"]["y"] = [0.5, -1, 3, 1e10]
    out["be_record"] = rec
    out["be_F"] = np.asfortranarray(np.arange(12, dtype=">i4").reshape(3, 4))
    out["be_0d"] = np.array(-3, dtype=">i8")
    out["be_M8"] = np.arange(3).astype(">M8[ns]")
    # already native / byte-order-free: must come back untouched
    out["le_f8"] = np.arange(4, dtype="<f8")
    out["i1"] = np.array([-1, 2], dtype="i1")
    return out


def _write(psv, arrays, path: Path, writer: str) -> Path:
    if writer == "psv":
        return Path(psv.ParallelSaver(**arrays).save(path))
    (np.savez if writer == "savez" else np.savez_compressed)(path, **arrays)
    return Path(str(path) + ".npz")


@pytest.mark.parametrize("writer", ["psv", "savez", "savez_compressed"])
def test_native_endian_swaps_to_native(psv, tmp_path, writer):
    arrays = _big_endian_arrays()
    path = _write(psv, arrays, tmp_path / "be", writer)
    got = psv.restore(path, native_endian=True)
    assert list(got) == list(arrays)
    for k, a in arrays.items():
        expected = a.astype(a.dtype.newbyteorder("="))
        g = got[k]
        assert g.dtype.isnative, f"{k}: dtype {g.dtype!r} is not native"
        assert g.dtype == expected.dtype, f"{k}: {g.dtype!r} != {expected.dtype!r}"
        _assert_exact(g, expected, k)
        if g.dtype.names is None:
            assert np.array_equal(g, a, equal_nan=a.dtype.kind in "fc"), k
    listed = psv.ls(path)
    assert listed["be_f8"].dtype == np.dtype(">f8"), "ls reports the stored byte order"


@pytest.mark.parametrize("writer", ["psv", "savez", "savez_compressed"])
def test_default_keeps_big_endian(psv, tmp_path, writer):
    arrays = _big_endian_arrays()
    path = _write(psv, arrays, tmp_path / "be", writer)
    got = psv.restore(path)
    for k, a in arrays.items():
        _assert_exact(got[k], a, k)
        if k.startswith("be_") and k != "be_record":
            assert got[k].dtype.byteorder == ">", k
    assert got["be_record"].dtype.fields["a"][0].byteorder == ">"


# --- mmap ------------------------------------------------------------------------------------


def test_mmap_psv_file_is_mapped_not_copied(psv, tmp_path):
    arrays = _mixed_arrays()
    path = Path(psv.ParallelSaver(**arrays).save(tmp_path / "m"))
    real = os.path.realpath(path)
    original = path.read_bytes()
    got = psv.restore(path, mmap=True)
    assert list(got) == list(arrays)
    blk = psv.block_of(got["big"])
    assert blk.mapped
    for k, a in arrays.items():
        g = got[k]
        _assert_exact(g, a, k)
        assert data_ptr(g) % 64 == 0, k
        if g.nbytes:
            assert not _in_block(psv, g), f"{k}: copied into the block, not mapped"
            assert _mapping_of(data_ptr(g), g.nbytes) == real, f"{k}: not inside a mapping of {real}"
        assert psv.block_of(g) is blk, f"{k}: not owned by the archive"
    # copy-on-write: writable, and writes never reach the file
    assert got["big"].flags.writeable
    got["big"][:] = -1
    got["F"][0, :] = 99
    assert (got["big"] == -1).all() and (got["F"][0] == 99).all()
    assert path.read_bytes() == original
    with np.load(path) as f:
        _assert_exact(f["big"], arrays["big"], "big after write")
    again = psv.restore(path, mmap=True)
    _assert_exact(again["big"], arrays["big"], "second mapping")
    subset = psv.restore(path, mmap=True, keys=["F", "big"])
    assert list(subset) == ["F", "big"]
    for k in subset:
        _assert_exact(subset[k], arrays[k], f"mmap+keys {k}")
        assert _mapping_of(data_ptr(subset[k]), subset[k].nbytes) == real
    del subset
    # the mapping goes away with the last view
    del got, again, blk, g
    gc.collect()
    assert real not in {name for _, _, name in _maps()}, "file still mapped after the arrays died"


def test_mmap_numpy_file_restores_exactly(psv, tmp_path):
    path = mf.fx_all_dtypes(tmp_path, False)
    got = psv.restore(path, mmap=True)
    assert_restored_like_zip(got, path)
    real = os.path.realpath(path)
    offsets = mf.array_data_offsets(path)
    for k, g in got.items():
        if _in_block(psv, g):
            continue  # copied (numpy's data is usually unaligned in the file)
        # mapped only when the data happens to be 64-aligned in the file
        assert offsets[k + ".npy"] % 64 == 0, f"{k}: unaligned member returned as a mapped view"
        if g.nbytes:
            assert _mapping_of(data_ptr(g), g.nbytes) == real, k
    assert any(_in_block(psv, g) for g in got.values() if g.nbytes), "nothing was copied?"


def test_mmap_deflated_members_are_copied(psv, tmp_path):
    arrays = _mixed_arrays()
    path = psv.ParallelSaver(**arrays).save(tmp_path / "cm", compress=1)
    got = psv.restore(path, mmap=True)
    for k, a in arrays.items():
        _assert_exact(got[k], a, k)
        assert _in_block(psv, got[k]), f"{k}: a deflated member cannot be a view of the file"


def test_mmap_with_native_endian(psv, tmp_path):
    """psv.h: members that native_endian must byte-swap are copied (and swapped), not mapped;
    the others stay views of the file.  Either way dtype and bytes agree."""
    arrays = _big_endian_arrays()
    path = psv.ParallelSaver(**arrays).save(tmp_path / "mbe")
    real = os.path.realpath(path)
    got = psv.restore(path, mmap=True, native_endian=True)
    bad = []
    for k, a in arrays.items():
        g = got[k]
        expected = a.astype(a.dtype.newbyteorder("="))
        if g.dtype != expected.dtype or logical_bytes(g) != logical_bytes(expected):
            bad.append(f"{k}: dtype {g.dtype.str} values {g.reshape(-1)[:2]!r} expected {a.reshape(-1)[:2]!r}")
            continue
        swapped = a.dtype != expected.dtype or a.dtype.descr != expected.dtype.descr
        if swapped:
            assert _in_block(psv, g), f"{k}: byte-swapped member must be copied into the block"
        elif g.nbytes:
            assert _mapping_of(data_ptr(g), g.nbytes) == real, f"{k}: native member should stay mapped"
    assert not bad, "mmap + native_endian returned wrong values:\n" + "\n".join(bad)


# --- in-memory archives ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["psv", "savez", "savez_compressed"])
def test_restore_from_memory_equals_file(psv, tmp_path, kind):
    if kind == "psv":
        path = Path(psv.ParallelSaver(**mf.sample_arrays()).save(tmp_path / "cat"))
    else:
        path = mf.fx_all_dtypes(tmp_path, kind == "savez_compressed")
    raw = path.read_bytes()
    from_file = psv.restore(path)
    padded = bytearray(b"JUNK" + raw + b"tail")
    for buf in (raw, bytearray(raw), memoryview(raw), memoryview(padded)[4:-4]):
        got = psv.restore(buf)
        assert list(got) == list(from_file), type(buf)
        assert got.skipped == from_file.skipped
        for k, ref in from_file.items():
            assert_same_as_numpy(got[k], ref, k)
            assert raw_bytes(got[k]) == raw_bytes(ref), k
            assert data_ptr(got[k]) % 64 == 0
    assert_restored_like_zip(psv.restore(raw), path, numpy_too=False)


def test_restore_from_memory_does_not_keep_the_buffer(psv, tmp_path):
    a = np.arange(1000, dtype="<i8")
    buf = bytearray(Path(psv.ParallelSaver(a=a).save(tmp_path / "m")).read_bytes())
    got = psv.restore(buf, mmap=True)  # mmap is meaningless for memory: ignored
    buf[:] = bytes(len(buf))  # zero the source
    buf.extend(b"grow")  # and resize it: no buffer export may remain
    _assert_exact(got["a"], a, "a")
    assert _in_block(psv, got["a"])


def test_restore_from_memory_errors(psv, tmp_path):
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(b"")
    expect_status(ei, ["PSV_ERR_FORMAT"])
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(b"not a zip at all" * 10)
    expect_status(ei, ["PSV_ERR_FORMAT"])
    assert "<memory>" in ei.value.message
    raw = Path(psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "e")).read_bytes()
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(raw[: len(raw) // 2])
    expect_status(ei, ["PSV_ERR_FORMAT"])
    strided = memoryview(bytearray(raw * 2))[::2]
    with pytest.raises(ValueError):
        psv.restore(strided)


# --- progress --------------------------------------------------------------------------------


def _progress_arrays() -> Dict[str, np.ndarray]:
    # ~48 MiB in many members so several reports can happen, small enough to stay fast
    return {f"a{i}": np.full(3 * 2**20 // 2, i, dtype="<i2") for i in range(16)}


def _check_calls(calls: List[Tuple[int, int, int]], thread: int, min_total: int) -> None:
    assert calls, "progress callback never called"
    dones = [d for d, _, _ in calls]
    totals = {t for _, t, _ in calls}
    assert dones == sorted(dones), f"done decreased: {dones}"
    assert len(totals) == 1, f"total changed: {totals}"
    total = totals.pop()
    assert total >= min_total
    assert dones[-1] == total, f"last done {dones[-1]} != total {total}"
    assert all(0 <= d <= total for d in dones)
    assert {t for _, _, t in calls} == {thread}, "callback ran on another thread"


def test_progress_save_and_restore(psv, tmp_path):
    arrays = _progress_arrays()
    nbytes = sum(a.nbytes for a in arrays.values())
    calls: List[Tuple[int, int, int]] = []

    def cb(done: int, total: int) -> None:
        calls.append((done, total, threading.get_ident()))

    main = threading.get_ident()
    s = psv.ParallelSaver(**arrays)
    path = s.save(tmp_path / "p", threads=2, progress=cb)
    _check_calls(calls, main, nbytes)
    calls.clear()
    s.save(tmp_path / "pc", compress=1, progress=lambda d, t: calls.append((d, t, threading.get_ident())) or True)
    _check_calls(calls, main, nbytes)
    with np.load(tmp_path / "pc.npz") as f:
        assert np.array_equal(f["a5"], arrays["a5"])
    calls.clear()
    got = psv.restore(path, threads=2, progress=cb)
    _check_calls(calls, main, nbytes)
    assert np.array_equal(got["a15"], arrays["a15"])
    calls.clear()
    psv.restore(Path(path).read_bytes(), progress=cb)
    _check_calls(calls, main, nbytes)

    # from another thread: the callback runs on that thread
    box: Dict[str, object] = {}

    def worker() -> None:
        box["ident"] = threading.get_ident()
        try:
            psv.restore(path, progress=cb)
        except BaseException as e:  # pragma: no cover - reported below
            box["err"] = e

    calls.clear()
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert "err" not in box, box.get("err")
    _check_calls(calls, box["ident"], nbytes)


def test_progress_cancel_save_keeps_old_target(psv, tmp_path):
    target = tmp_path / "keep.npz"
    np.savez(target, old=np.arange(5))
    before = target.read_bytes()
    arrays = _progress_arrays()
    for compress in (0, 1):
        seen = []

        def cancel(done: int, total: int) -> bool:
            seen.append(done)
            return False

        with pytest.raises(psv.PsvError) as ei:
            psv.ParallelSaver(**arrays).save(target, progress=cancel, compress=compress)
        assert ei.value.status == psv.PSV_ERR_ABORTED
        expect_status(ei, ["PSV_ERR_ABORTED"])
        assert len(seen) == 1, "callback called again after it cancelled"
        assert target.read_bytes() == before
        assert _no_tmp_files(tmp_path) == []
    # a new target is not created
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "new", progress=lambda d, t: False)
    assert ei.value.status == psv.PSV_ERR_ABORTED
    assert not (tmp_path / "new.npz").exists()
    assert _no_tmp_files(tmp_path) == []


def test_progress_cancel_restore(psv, tmp_path):
    path = psv.ParallelSaver(**_progress_arrays()).save(tmp_path / "r")
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(path, progress=lambda d, t: False)
    assert ei.value.status == psv.PSV_ERR_ABORTED
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(Path(path).read_bytes(), progress=lambda d, t: 0)
    assert ei.value.status == psv.PSV_ERR_ABORTED
    # None and truthy values continue
    assert len(psv.restore(path, progress=lambda d, t: None)) == 16
    assert len(psv.restore(path, progress=lambda d, t: 1)) == 16


class _CallbackBoom(Exception):
    pass


def test_progress_exception_propagates(psv, tmp_path):
    target = tmp_path / "exc.npz"
    np.savez(target, old=np.arange(5))
    before = target.read_bytes()
    err = _CallbackBoom("from the callback")

    def boom(done: int, total: int) -> None:
        raise err

    with pytest.raises(_CallbackBoom) as ei:
        psv.ParallelSaver(**_progress_arrays()).save(target, progress=boom)
    assert ei.value is err
    assert target.read_bytes() == before
    assert _no_tmp_files(tmp_path) == []
    with pytest.raises(_CallbackBoom) as ei:
        psv.restore(target, progress=boom)
    assert ei.value is err
    with pytest.raises(ZeroDivisionError):
        psv.restore(target.read_bytes(), progress=lambda d, t: 1 / 0)
    # the wrapper is still fine afterwards
    assert np.array_equal(psv.restore(target)["old"], np.arange(5))


def test_progress_callback_must_not_use_its_saver(psv, tmp_path):
    s = psv.ParallelSaver(a=np.arange(10))

    def reenter(done: int, total: int) -> None:
        s.add("b", np.arange(3))

    with pytest.raises(RuntimeError, match="progress callback"):
        s.save(tmp_path / "re", progress=reenter)
    assert not (tmp_path / "re.npz").exists()
    assert s.keys == ["a"] and len(s) == 1
    s.save(tmp_path / "re")  # still usable
    s.close()


def test_progress_bad_type(psv, tmp_path):
    with pytest.raises(TypeError):
        psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "t", progress=5)
    with pytest.raises(TypeError):
        psv.restore(tmp_path / "t", progress="yes")


def test_progress_true_without_tty_prints_nothing(psv, tmp_path, capfd):
    assert not sys.stderr.isatty()
    path = psv.ParallelSaver(**_progress_arrays()).save(tmp_path / "quiet", progress=True)
    psv.restore(path, progress=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_true_draws_a_bar_on_a_tty(psv, tmp_path, monkeypatch):
    class FakeTTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    path = psv.ParallelSaver(**_progress_arrays()).save(tmp_path / "bar", progress=True)
    text = fake.getvalue()
    assert text.startswith("\rsave [") and text.endswith("\n"), repr(text[-200:])
    assert "100.0%" in text.rsplit("\r", 1)[-1]
    fake.seek(0)
    fake.truncate()
    psv.restore(path, progress=True)
    assert fake.getvalue().startswith("\rrestore [") and fake.getvalue().endswith("\n")


# --- limits ----------------------------------------------------------------------------------


def test_restore_limits(psv, tmp_path):
    path = psv.ParallelSaver(a=np.arange(1000, dtype="<f8"), b=np.ones(3), c=np.zeros(2)).save(tmp_path / "l")
    assert len(psv.restore(path, max_members=3, max_total_bytes=1 << 20, max_header_len=4096)) == 3
    for kw in ({"max_members": 2}, {"max_total_bytes": 1000}, {"max_header_len": 32}):
        with pytest.raises(psv.PsvError) as ei:
            psv.restore(path, **kw)
        expect_status(ei, ["PSV_ERR_LIMIT"])
        with pytest.raises(psv.PsvError) as ei:
            psv.restore(Path(path).read_bytes(), **kw)
        expect_status(ei, ["PSV_ERR_LIMIT"])
    # a key subset needs only its own bytes
    assert len(psv.restore(path, keys=["b"], max_total_bytes=1000)) == 1
    for bad in (0, -1):
        with pytest.raises(ValueError):
            psv.restore(path, max_members=bad)
    with pytest.raises(TypeError):
        psv.restore(path, max_total_bytes=1.5)


# --- ls --------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["savez", "savez_compressed", "psv"])
def test_ls_matches_numpy(psv, tmp_path, writer):
    if writer == "psv":
        path = Path(psv.ParallelSaver(**mf.sample_arrays()).save(tmp_path / "cat"))
    else:
        path = mf.fx_all_dtypes(tmp_path, writer == "savez_compressed")
    listing = psv.ls(path)
    with np.load(path, allow_pickle=False, max_header_size=BIG_HEADER) as f:
        assert list(listing) == f.files
        for k in f.files:
            ref = f[k]
            info = listing[k]
            dt, shape, nbytes, fortran = info  # a plain 4-tuple
            assert isinstance(dt, np.dtype)
            assert dt == ref.dtype and dt.descr == ref.dtype.descr, f"{k}: {dt!r} != {ref.dtype!r}"
            assert shape == ref.shape and all(type(d) is int for d in shape), k
            assert nbytes == ref.nbytes, k
            assert fortran == fortran_flag(ref), k
            assert info.dtype is dt and info.fortran_order is fortran


def test_ls_reads_no_data(psv, tmp_path):
    """A listing needs only headers: a corrupt payload still lists, and bytes work too."""
    path, _ = mf.fx_crc_corrupt_stored(tmp_path)
    listing = psv.ls(path)
    assert listing == {
        "x": (np.dtype("<i8"), (1000,), 8000, False),
        "y": (np.dtype("<f8"), (3,), 24, False),
    }
    assert psv.ls(path.read_bytes()) == listing
    with pytest.raises(psv.PsvError) as ei:
        psv.ls(tmp_path / "missing.npz")
    expect_status(ei, ["PSV_ERR_IO"])


# --- command line ----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parallel_saver", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_ls(psv, tmp_path):
    arrays = {
        "f8": np.arange(6.0).reshape(2, 3),
        "be": np.arange(4, dtype=">i2"),
        "rec": np.zeros(2, [("a", "<i4"), ("b", "<f8", (2,))]),
        "s": np.array(1.5),
        "中文": np.zeros((0, 4), "<u1"),
    }
    path = psv.ParallelSaver(**arrays).save(tmp_path / "cli")
    r = _cli("ls", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert [row[0] for row in rows] == list(arrays)
    for (key, dtype, shape, nbytes), a in zip(rows, arrays.values()):
        assert np.dtype(eval(dtype) if dtype.startswith("[") else dtype) == a.dtype, key
        assert eval(shape) == a.shape, key
        assert int(nbytes) == a.nbytes, key
    assert rows[1][1] == ">i2" and rows[0][2] == "(2, 3)" and rows[3][2] == "()"


def test_cli_verify(psv, tmp_path):
    good = mf.fx_savez_basic(tmp_path)
    r = _cli("verify", str(good))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK ")
    assert "4 arrays" in r.stdout
    bad, _ = mf.fx_crc_corrupt_stored(tmp_path)  # one data byte of member "x" flipped
    r = _cli("verify", str(bad))
    assert r.returncode == 1
    assert r.stdout == ""
    assert "PSV_ERR_CRC" in r.stderr and "x.npy" in r.stderr, r.stderr
    r = _cli("verify", str(tmp_path / "missing.npz"))
    assert r.returncode == 1 and "PSV_ERR_IO" in r.stderr
    r = _cli("ls", str(tmp_path / "missing.npz"))
    assert r.returncode == 1 and "missing.npz" in r.stderr
    assert _cli("frobnicate", "x").returncode == 2
    assert _cli().returncode == 2


def test_cli_verify_catches_flipped_byte_in_psv_file(psv, tmp_path):
    path = Path(psv.ParallelSaver(first=np.ones(10), target=np.arange(4096, dtype="<i4")).save(tmp_path / "v"))
    off = mf.array_data_offsets(path)["target.npy"]
    b = bytearray(path.read_bytes())
    b[off + 1234] ^= 0xFF
    path.write_bytes(bytes(b))
    r = _cli("verify", str(path))
    assert r.returncode == 1
    assert "target" in r.stderr and "PSV_ERR_CRC" in r.stderr, r.stderr
    assert "first" not in r.stderr


def test_main_function_in_process(psv, tmp_path, capsys):
    path = psv.ParallelSaver(a=np.arange(3, dtype="<i4")).save(tmp_path / "inproc")
    assert psv.main(["ls", str(path)]) == 0
    assert capsys.readouterr().out == "a\t<i4\t(3,)\t12\n"
    assert psv.main(["verify", str(path)]) == 0


# --- directory layout ------------------------------------------------------------------------


def _has_layout(psv) -> bool:
    return hasattr(psv._lib(), "psv_save_options_set_layout")


class _LibWithout:
    """A view of the loaded library that hides some symbols (an older libpsv)."""

    def __init__(self, lib, hidden: str) -> None:
        self._lib, self._hidden = lib, hidden

    def __getattr__(self, name: str):
        if name == self._hidden:
            raise AttributeError(name)
        return getattr(self._lib, name)


def test_layout_dir_needs_the_symbol(psv, tmp_path):
    s = psv.ParallelSaver(a=np.arange(3))
    s._lib = _LibWithout(psv._lib(), "psv_save_options_set_layout")
    with pytest.raises(RuntimeError, match=r"libpsv too old for layout='dir'"):
        s.save(tmp_path / "d", layout="dir")
    assert not (tmp_path / "d").exists()
    assert Path(s.save(tmp_path / "n")).exists(), "layout='npz' must not need the new symbol"
    with pytest.raises(ValueError):
        s.save(tmp_path / "x", layout="zip")
    if not _has_layout(psv):
        with pytest.raises(RuntimeError, match="too old"):
            psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "d2", layout="dir")


def test_layout_dir(psv, tmp_path):
    if not _has_layout(psv):
        pytest.skip("libpsv does not export psv_save_options_set_layout yet")
    arrays = {k: v for k, v in _mixed_arrays().items()}
    d = tmp_path / "arrays_dir"
    out = psv.ParallelSaver(**arrays).save(d, layout="dir")
    assert Path(out) == d and d.is_dir()
    assert (d / "psv-index.txt").is_file()
    for k, a in arrays.items():
        _assert_exact(np.load(d / f"{k}.npy", allow_pickle=False), a, k)
    got = psv.restore(d)
    assert list(got) == list(arrays)
    for k, a in arrays.items():
        _assert_exact(got[k], a, k)
    listing = psv.ls(d)
    assert {k: (i.dtype, i.shape) for k, i in listing.items()} == {k: (a.dtype, a.shape) for k, a in arrays.items()}
    # saving again replaces the contents atomically
    psv.ParallelSaver(only=np.arange(4)).save(d, layout="dir")
    again = psv.restore(d)
    assert list(again) == ["only"] and np.array_equal(again["only"], np.arange(4))
    assert _no_tmp_files(d) == [] and _no_tmp_files(tmp_path) == []
    # the directory layout stores members uncompressed
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(a=np.arange(2)).save(tmp_path / "cdir", layout="dir", compress=6)
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    # keys that cannot be file names are refused
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(**{"a/b": np.arange(2)}).save(tmp_path / "bad_dir", layout="dir")
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
