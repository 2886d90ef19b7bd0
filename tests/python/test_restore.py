"""restore(): any numpy-written or hand-made .npz -> one aligned block of exact views."""

from __future__ import annotations

import gc
import os
import threading
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest

import make_fixtures as mf
from psv_checks import (
    assert_one_aligned_block,
    assert_restored_like_zip,
    data_ptr,
    expect_status,
    logical_bytes,
    raw_bytes,
)

# --- numpy-written archives of every dtype -------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_restore_numpy_all_dtypes(psv, tmp_path, compressed):
    path = mf.fx_all_dtypes(tmp_path, compressed)
    got = psv.restore(path)
    assert_restored_like_zip(got, path)
    assert_one_aligned_block(psv, got)
    catalog = mf.sample_arrays()
    assert list(got) == list(catalog)
    for k, a in catalog.items():
        assert logical_bytes(got[k]) == logical_bytes(a), k


@pytest.mark.parametrize("threads", [1, 2, None])
def test_restore_thread_counts_agree(psv, tmp_path, threads):
    path = mf.fx_all_dtypes(tmp_path, False)
    got = psv.restore(path, threads=threads)
    assert_restored_like_zip(got, path, numpy_too=False)


# --- FORMAT.md section 8 edge cases that must restore ------------------------------------

OK_FIXTURES = [
    "savez_basic",
    "savez_compressed_basic",
    "header_v2",
    "header_v3",
    "header_latin1",
    "header_over_10000",
    "empty_archive",
    "dd_stored",
    "dd_compressed",
    "comment",
    "local_crc_wrong",
    "trailing_bytes",
    "aligned_a11e",
    "aligned_d935",
    "aligned_raw_zero",
    "aligned_zipinfo_extra",
    "zip64_forced",
    "zip64_offset_only",
    "cd_order_reversed",
    "dd_no_signature",
    "non_npy_members",
    "unicode_keys",
    "header_python2_L",
    "header_nonstandard",
    "longdouble",
    "large_compressible",
    "aligned_deflated_mix",
    "header_no_newline",
    "header_whitespace",
    "header_fortran",
    "empty_npy_member",
    "deflate_trailing",
    "cp437_name",
]


@pytest.mark.parametrize("name", OK_FIXTURES)
def test_edge_fixture_restores_like_numpy(psv, tmp_path, name):
    res = mf.ALL_FIXTURES[name](tmp_path)
    path = res[0] if isinstance(res, tuple) else res
    got = psv.restore(path)
    assert_restored_like_zip(got, path)
    assert_one_aligned_block(psv, got)


def test_savez_basic_key_order(psv, tmp_path):
    got = psv.restore(mf.fx_savez_basic(tmp_path))
    assert list(got) == ["x", "i", "b", "arr_0"]
    assert got["i"].dtype == np.dtype("<i4") and got["i"].shape == (2, 5)
    assert got["arr_0"].dtype == np.dtype("<u2")


def test_numpy_data_is_unaligned_in_file_but_aligned_in_block(psv, tmp_path):
    path = mf.fx_savez_basic(tmp_path)
    assert any(o % 64 for o in mf.array_data_offsets(path).values())
    assert_one_aligned_block(psv, psv.restore(path))


def test_empty_archive(psv, tmp_path):
    path = mf.fx_empty_archive(tmp_path)
    assert path.stat().st_size == 22
    got = psv.restore(path)
    assert isinstance(got, psv.RestoredArrays) and dict(got) == {} and got.skipped == []


def test_non_npy_members_skipped(psv, tmp_path):
    got = psv.restore(mf.fx_non_npy_members(tmp_path))
    assert list(got) == ["x"]
    assert np.array_equal(got["x"], np.arange(5, dtype="<i4"))
    assert sorted(got.skipped) == sorted(["readme.txt", "dir/", "fake.npy"])


def test_unicode_keys_exact(psv, tmp_path):
    got = psv.restore(mf.fx_unicode_keys(tmp_path))
    assert list(got) == mf.unicode_keys()  # 'x.NPY' kept, 'a.npy' from member 'a.npy.npy'


def test_comment_containing_eocd_signature(psv, tmp_path):
    """19b: zipfile/np.load fail on it; a reader that validates the EOCD candidate must not."""
    path = mf.fx_comment(tmp_path, with_sig=True)
    got = psv.restore(path)
    ref = mf.basic_arrays()
    assert list(got) == list(ref)
    for k, a in ref.items():
        assert got[k].dtype == a.dtype and got[k].shape == a.shape and raw_bytes(got[k]) == a.tobytes()
    assert_one_aligned_block(psv, got)


def test_prefixed_junk_accepted_or_cleanly_rejected(psv, tmp_path):
    """18: junk before the archive. Either the concat fix or a FORMAT error; never garbage."""
    path = mf.fx_prefixed_junk(tmp_path)
    try:
        got = psv.restore(path)
    except psv.PsvError as err:
        assert err.status_name == "PSV_ERR_FORMAT", err
        return
    with np.load(mf.fx_savez_basic(tmp_path)) as f:
        assert list(got) == f.files
        for k in f.files:
            assert got[k].dtype == f[k].dtype and raw_bytes(got[k]) == f[k].tobytes()


def test_header_v2_value(psv, tmp_path):
    got = psv.restore(mf.fx_header_v2(tmp_path))
    w = got["wide"]
    assert len(w.dtype.names) == 3000
    assert list(w["f7"]) == [1.5, 2.5] and list(w["f2999"]) == [-1, 3]


def test_header_v3_and_latin1_field_names(psv, tmp_path):
    zh = psv.restore(mf.fx_header_v3(tmp_path))["zh"]
    assert zh.dtype.names == ("中", "b") and list(zh["中"]) == [1, 2, 3]
    e = psv.restore(mf.fx_header_latin1(tmp_path))["e"]
    assert e.dtype.names == ("é",) and list(e["é"]) == [1, 2, 3]


def test_longdouble_opaque(psv, tmp_path):
    got = psv.restore(mf.fx_longdouble(tmp_path))
    assert got["g"].dtype == np.dtype(np.longdouble) and got["G"].dtype == np.dtype(np.clongdouble)
    assert np.array_equal(got["g"], np.arange(5, dtype=np.longdouble) / 3)


def test_python2_L_and_nonstandard_header_values(psv, tmp_path):
    assert np.array_equal(psv.restore(mf.fx_header_python2_L(tmp_path))["h"], np.arange(3, dtype="<i8"))
    h = psv.restore(mf.fx_header_nonstandard(tmp_path))["h"]
    assert h.dtype == np.dtype("<f4") and h.shape == (2, 3)
    assert np.array_equal(h, np.arange(6, dtype="<f4").reshape(2, 3))
    assert data_ptr(h) % 64 == 0


def test_local_crc_is_ignored_and_trailing_bytes_ok(psv, tmp_path):
    assert np.array_equal(psv.restore(mf.fx_local_crc_wrong(tmp_path))["x"], np.arange(10.0))
    got = psv.restore(mf.fx_trailing_bytes(tmp_path))
    assert np.array_equal(got["a"], np.arange(6, dtype="<f4").reshape(2, 3))
    assert np.array_equal(got["b"], np.arange(6, dtype="<f4").reshape(2, 3) * 2)


def test_eocd_count_smaller_than_central_directory(psv, tmp_path):
    """EOCD count 1, two central entries: all arrays (as CPython/numpy) or a FORMAT error,
    never a silent subset."""
    path = mf.fx_eocd_count_too_small(tmp_path)
    with np.load(path) as f:
        assert f.files == ["h", "k"]
    try:
        got = psv.restore(path)
    except psv.PsvError as err:
        assert err.status_name == "PSV_ERR_FORMAT", err
        return
    assert list(got) == ["h", "k"], f"silently restored only {list(got)}"


def test_header_fortran_values(psv, tmp_path):
    got = psv.restore(mf.fx_header_fortran(tmp_path))
    three = got["three"]
    assert three.shape == (2, 3, 4) and three.flags.f_contiguous
    ref = np.arange(24, dtype="<i2").reshape((2, 3, 4), order="F")
    assert np.array_equal(three, ref)
    assert np.array_equal(got["one"], np.arange(10.0))


def test_cd_order_is_result_order(psv, tmp_path):
    assert list(psv.restore(mf.fx_cd_order_reversed(tmp_path))) == ["m2", "m1", "m0"]


@pytest.mark.slow
@pytest.mark.parametrize("n", [65535, 65536])
def test_many_members(psv, tmp_path, n):
    path = mf.fx_entries(tmp_path, n)
    got = psv.restore(path)
    keys = [f"k{i:05d}" for i in range(n)]
    assert list(got) == keys
    vals = np.fromiter((got[k][0] for k in keys), dtype=np.int64, count=n)
    assert np.array_equal(vals, np.arange(n))
    assert all(got[k].dtype == np.dtype("<i4") and got[k].shape == (1,) for k in keys[:: n // 97])
    assert_one_aligned_block(psv, got)


# --- edge cases that must fail cleanly -----------------------------------------------------

ERROR_FIXTURES = {
    "object_array": ["PSV_ERR_UNSUPPORTED"],
    "stringdtype": ["PSV_ERR_UNSUPPORTED"],
    "crc_corrupt_stored": ["PSV_ERR_CRC"],
    "crc_corrupt_deflated": ["PSV_ERR_CRC", "PSV_ERR_FORMAT"],
    "central_crc_wrong": ["PSV_ERR_CRC"],
    "trailing_bad_crc_stored": ["PSV_ERR_CRC"],
    "trailing_bad_crc_deflated": ["PSV_ERR_CRC"],
    "truncated_member": ["PSV_ERR_FORMAT"],
    "encrypted_flag": ["PSV_ERR_UNSUPPORTED"],
    "duplicate_names": ["PSV_ERR_FORMAT"],
    "a_and_a_npy": ["PSV_ERR_FORMAT"],
    "local_name_mismatch": ["PSV_ERR_FORMAT"],
    "header_extra_key": ["PSV_ERR_FORMAT"],
    "negative_shape": ["PSV_ERR_FORMAT", "PSV_ERR_OVERFLOW"],
    "shape_overflow": ["PSV_ERR_OVERFLOW", "PSV_ERR_FORMAT"],
    "shape_exceeds_payload": ["PSV_ERR_FORMAT", "PSV_ERR_LIMIT"],
    "bad_descr": ["PSV_ERR_FORMAT", "PSV_ERR_BAD_DTYPE"],
}


@pytest.mark.parametrize("name", sorted(ERROR_FIXTURES))
def test_edge_fixture_fails_cleanly(psv, tmp_path, name):
    res = mf.ALL_FIXTURES[name](tmp_path)
    path = res[0] if isinstance(res, tuple) else res
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(path)
    expect_status(ei, ERROR_FIXTURES[name])
    err = ei.value
    assert err.status == {v: k for k, v in psv.STATUS_NAMES.items()}[err.status_name]
    assert err.message, "empty error message"


def test_object_array_error_names_key(psv, tmp_path):
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(mf.fx_object_array(tmp_path))
    expect_status(ei, ["PSV_ERR_UNSUPPORTED"])
    assert "objects_here" in ei.value.message


def test_crc_error_and_verify_false(psv, tmp_path):
    path, byte = mf.fx_crc_corrupt_stored(tmp_path)
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(path)
    expect_status(ei, ["PSV_ERR_CRC"])
    assert "x" in ei.value.message
    got = psv.restore(path, verify=False)
    ref = bytearray(np.arange(1000, dtype="<i8").tobytes())
    ref[byte] ^= 1 << 3
    assert raw_bytes(got["x"]) == bytes(ref)
    assert np.array_equal(got["y"], np.ones(3))


def test_missing_file_is_io_error_naming_path(psv, tmp_path):
    missing = tmp_path / "does_not_exist.npz"
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(missing)
    expect_status(ei, ["PSV_ERR_IO"])
    assert ei.value.status == psv.PSV_ERR_IO
    assert str(missing) in ei.value.message
    assert ei.value.status_name in str(ei.value)


def test_not_a_zip_is_format_error_naming_path(psv, tmp_path):
    p = tmp_path / "garbage.npz"
    p.write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(p)
    expect_status(ei, ["PSV_ERR_FORMAT"])
    assert str(p) in ei.value.message
    z = tmp_path / "zero.npz"
    z.write_bytes(b"")
    with pytest.raises(psv.PsvError) as ei2:
        psv.restore(z)
    expect_status(ei2, ["PSV_ERR_FORMAT"])


def test_error_messages_are_per_thread(psv, tmp_path):
    """psv_last_error_message is thread-local: concurrent failures keep their own text."""
    errors = []

    def worker(i: int) -> None:
        for j in range(50):
            p = tmp_path / f"missing_{i}_{j}.npz"
            try:
                psv.restore(p)
            except psv.PsvError as e:
                if str(p) not in e.message:
                    errors.append((str(p), e.message))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []


def test_npz_suffix_appended_on_restore(psv, tmp_path):
    np.savez(tmp_path / "data", a=np.arange(4))
    assert np.array_equal(psv.restore(tmp_path / "data")["a"], np.arange(4))
    assert np.array_equal(psv.restore(str(tmp_path / "data.npz"))["a"], np.arange(4))


# --- block: alignment, ownership, lifetime ---------------------------------------------------


def _mixed(tmp_path: Path) -> Path:
    arrays = {f"s{i}": np.arange(i % 13, dtype="<f8") * i for i in range(200)}
    arrays["big"] = np.arange(3_000_001, dtype="<u1")
    arrays["zero"] = np.zeros((0, 4))
    arrays["odd"] = np.arange(7, dtype="<i2")
    arrays["rec"] = np.zeros(3, [("a", "u1"), ("b", "<f8")])
    p = tmp_path / "mixed.npz"
    np.savez(p, **arrays)
    return p


def test_all_arrays_in_one_aligned_block(psv, tmp_path):
    got = psv.restore(_mixed(tmp_path))
    assert len(got) == 204
    assert_one_aligned_block(psv, got)
    block = psv.block_of(got["big"])
    assert block.nbytes >= sum(a.nbytes for a in got.values())
    assert block.address % 4096 == 0, "psv.h: the block is page-aligned"


def test_concurrent_saves_and_restores(psv, tmp_path):
    """Independent saves and restores may run concurrently (ctypes drops the GIL)."""
    failures = []

    def worker(i: int) -> None:
        try:
            data = {f"a{j}": np.arange(j * 1000 + i, dtype="<f8") * i for j in range(20)}
            for r in range(5):
                p = psv.ParallelSaver(**data).save(tmp_path / f"w{i}_{r}", threads=1 + r % 2)
                got = psv.restore(p, threads=1 + (r + 1) % 2)
                if list(got) != list(data) or any(not np.array_equal(got[k], v) for k, v in data.items()):
                    failures.append((i, r, "mismatch"))
        except Exception as e:  # pragma: no cover - reported below
            failures.append((i, repr(e)))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert failures == []


def test_one_saver_shared_by_threads(psv, tmp_path):
    """The binding serialises calls on one saver (psv.h: one thread at a time)."""
    saver = psv.ParallelSaver(**{f"k{i}": np.arange(50_000, dtype="<i8") + i for i in range(8)})
    errs = []

    def worker(i: int) -> None:
        try:
            saver.save(tmp_path / f"shared{i}")
        except Exception as e:  # pragma: no cover
            errs.append(repr(e))

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    saver.close()
    assert errs == []
    blobs = {(tmp_path / f"shared{i}.npz").read_bytes() for i in range(4)}
    assert len(blobs) == 1


def test_arrays_are_writable_and_independent(psv, tmp_path):
    got = psv.restore(_mixed(tmp_path))
    before = {k: raw_bytes(a) for k, a in got.items()}
    for a in got.values():
        assert a.flags.writeable and a.flags.aligned
    got["odd"][...] = -1
    got["big"][:] = 0xAB
    for k, a in got.items():
        if k not in ("odd", "big"):
            assert raw_bytes(a) == before[k], f"writing to other arrays changed {k}"
    assert (got["odd"] == -1).all() and (got["big"] == 0xAB).all()


def test_block_freed_when_last_view_dies(psv, tmp_path):
    got = psv.restore(_mixed(tmp_path))
    block = psv.block_of(got["s5"])
    assert block is not None and block.alive
    ref = weakref.ref(block)
    fin = block._finalizer
    keep = got["s5"][1:3]  # a derived view keeps the block alive too
    expected = np.arange(5, dtype="<f8")[1:3] * 5
    del block
    got.clear()
    del got
    gc.collect()
    assert ref() is not None and fin.alive, "block freed while a view still exists"
    assert np.array_equal(keep, expected)
    del keep
    gc.collect()
    assert ref() is None, "block owner still alive after the last view died"
    assert not fin.alive, "psv_free was not called"


def test_block_freed_for_each_restore(psv, tmp_path):
    path = _mixed(tmp_path)
    refs = []
    for _ in range(5):
        got = psv.restore(path)
        refs.append(weakref.ref(psv.block_of(got["big"])))
        del got
    gc.collect()
    assert all(r() is None for r in refs)


def test_array_survives_dict_and_restore_of_others(psv, tmp_path):
    path = _mixed(tmp_path)
    a = psv.restore(path)["s12"]
    for _ in range(3):
        psv.restore(path)
    gc.collect()
    assert np.array_equal(a, np.arange(12, dtype="<f8") * 12)
    assert data_ptr(a) % 64 == 0


@pytest.mark.skipif(not os.environ.get("PSV_TEST_LARGE"), reason="set PSV_TEST_LARGE=1 (writes 4 GiB)")
def test_over_4gib_zip64(psv, tmp_path):
    """A 4 GiB + 64 B member then two more: ZIP64 sizes and offsets, numpy and zipfile agree."""
    n = 2**32 + 64
    big = np.zeros(n, np.uint8)
    big[:10] = 7
    big[-1000:] = np.arange(1000) % 251
    after = np.arange(100, dtype="<f8")
    p = psv.ParallelSaver(big=big, after=after, small=np.arange(3)).save(tmp_path / "huge")
    with zipfile.ZipFile(p) as z:
        infos = {i.filename: i for i in z.infolist()}
        assert infos["big.npy"].file_size == n + 128
        assert infos["after.npy"].header_offset > 2**32
        assert z.read("after.npy") == mf.npy_bytes(after)
    assert all(o % 64 == 0 for o in mf.array_data_offsets(p).values())
    with np.load(p) as f:
        assert np.array_equal(f["after"], after) and np.array_equal(f["small"], np.arange(3))
    got = psv.restore(p)
    assert got["big"].shape == (n,)
    assert (got["big"][:10] == 7).all() and np.array_equal(got["big"][-1000:], big[-1000:])
    assert np.array_equal(got["after"], after)
    assert_one_aligned_block(psv, got)
    del got
    os.unlink(p)  # pytest keeps old tmp dirs: do not leave 4 GiB behind


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("mixed_ndim", [False, True])
def test_strided_views_match_numpy(psv, tmp_path, monkeypatch, mixed_ndim, mmap):
    """Groups of same-typed, same-shaped arrays become rows of one strided view (the path that
    makes 20000 small arrays cheap): every view must still be exactly numpy's array, writable,
    independent of its neighbours and owned by the block."""
    rng = np.random.default_rng(7)
    arrays = {}
    for i in range(60):
        kind = ["<f4", "<i2", "<f8", "|u1"][i % 4]
        shape = [(3, 5), (7, 1), (2, 2)][i % 3]  # sizes not multiples of 64
        arrays[f"k{i:02d}"] = (rng.random(shape) * 100).astype(kind)
    arrays["fort"] = np.asfortranarray(np.arange(15.0).reshape(3, 5))
    arrays["empty"] = np.zeros((0, 5), dtype="<f4")
    arrays["be"] = np.arange(15, dtype=">i4").reshape(3, 5)
    if mixed_ndim:
        arrays["scalar"] = np.array(2.5)  # a 0-d array: every array takes the one-by-one path
    path = psv.ParallelSaver(arrays).save(tmp_path / "g")
    grouped = []
    real = psv._api._strided_groups
    monkeypatch.setattr(psv._api, "_strided_groups", lambda *a: grouped.append(real(*a)) or grouped[-1])
    got = psv.restore(path, mmap=mmap)
    rows = sum(len(members) for g in grouped for members, _ in g)
    assert rows == (0 if mixed_ndim else 60), rows
    with np.load(path) as z:
        assert list(got) == z.files
        for k in z.files:
            assert got[k].dtype == z[k].dtype and got[k].shape == z[k].shape, k
            assert got[k].flags.f_contiguous == z[k].flags.f_contiguous or z[k].ndim < 2, k
            assert np.array_equal(got[k], z[k]), k
            assert got[k].flags.writeable and got[k].ctypes.data % 64 == 0, k
            assert psv.block_of(got[k]) is not None, k
    before = {k: raw_bytes(a) for k, a in got.items()}
    got["k10"][...] = 0
    for k, a in got.items():
        if k != "k10":
            assert raw_bytes(a) == before[k], f"writing k10 changed {k}"
