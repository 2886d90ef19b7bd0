"""ParallelSaver: what we write must be numpy's own .npy bytes, in an aligned, valid ZIP."""

from __future__ import annotations

import errno
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import make_fixtures as mf
from psv_checks import (
    BIG_HEADER,
    assert_matches_header,
    assert_one_aligned_block,
    assert_restored_like_zip,
    expect_status,
    fortran_flag,
    logical_bytes,
    raw_bytes,
)

CATALOG = mf.sample_arrays()
CASES = sorted(CATALOG)


@pytest.fixture(scope="module")
def catalog_file(psv, tmp_path_factory) -> Path:
    """All catalog arrays saved by psv into one archive."""
    d = tmp_path_factory.mktemp("catalog")
    saver = psv.ParallelSaver(**CATALOG)
    try:
        out = saver.save(d / "catalog.npz")
    finally:
        saver.close()
    return Path(out)


@pytest.fixture(scope="module")
def catalog_zip(catalog_file):
    with zipfile.ZipFile(catalog_file) as z:
        yield z


@pytest.fixture(scope="module")
def catalog_numpy(catalog_file):
    with np.load(catalog_file, allow_pickle=False, max_header_size=BIG_HEADER) as f:
        yield {k: f[k] for k in f.files}


# --- numpy reads what we write -------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_member_bytes_identical_to_np_save(case, catalog_zip):
    """Header + data of our member == np.save of the same array, byte for byte."""
    ours = catalog_zip.read(case + ".npy")
    theirs = mf.npy_bytes(CATALOG[case])
    if ours != theirs:
        # Make the failure readable: header first, then data.
        h_ours, off_o, _ = mf.split_npy(ours)
        h_theirs, off_t, _ = mf.split_npy(theirs)
        assert ours[:off_o] == theirs[:off_t], f"{case}: .npy header differs"
        assert ours == theirs, f"{case}: data differs"


@pytest.mark.parametrize("case", CASES)
def test_numpy_loads_our_file(case, catalog_numpy):
    arr = CATALOG[case]
    got = catalog_numpy[case]
    assert got.dtype == arr.dtype
    assert got.shape == arr.shape
    assert fortran_flag(got) == fortran_flag(arr), "fortran_order must follow numpy's rule"
    assert logical_bytes(got) == logical_bytes(arr)


def test_member_order_and_names(catalog_zip):
    assert catalog_zip.namelist() == [k + ".npy" for k in CATALOG]


def test_zip_is_valid_and_stored(catalog_file, catalog_zip):
    assert catalog_zip.testzip() is None
    for info in catalog_zip.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.file_size == info.compress_size
        assert info.flag_bits & 0x1 == 0


def test_array_data_offsets_aligned(catalog_file):
    offsets = mf.array_data_offsets(catalog_file)
    assert len(offsets) == len(CATALOG)
    bad = {n: o for n, o in offsets.items() if o % 64}
    assert not bad, f"array data not 64-aligned in file: {bad}"


def test_psv_restores_own_file(psv, catalog_file):
    got = psv.restore(catalog_file)
    assert_restored_like_zip(got, catalog_file)
    assert_one_aligned_block(psv, got)
    for case, arr in CATALOG.items():
        assert logical_bytes(got[case]) == logical_bytes(arr), case


# --- keys ------------------------------------------------------------------------------


def test_unicode_and_slash_keys(psv, tmp_path):
    keys = mf.unicode_keys()
    data = {k: np.arange(i + 2, dtype="<i2") * (i + 1) for i, k in enumerate(keys)}
    path = psv.ParallelSaver(**data).save(tmp_path / "keys.npz")
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert z.namelist() == [k + ".npy" for k in keys]
        for info in z.infolist():
            non_ascii = any(ord(c) > 127 for c in info.filename)
            assert bool(info.flag_bits & 0x800) == non_ascii, f"utf-8 flag of {info.filename!r}"
    with np.load(path) as f:
        assert f.files == keys
        for k in keys:
            np.testing.assert_array_equal(f[k], data[k])
    got = psv.restore(path)
    assert list(got) == keys
    for k in keys:
        assert got[k].dtype == data[k].dtype and got[k].tobytes() == data[k].tobytes()
    assert all(o % 64 == 0 for o in mf.array_data_offsets(path).values())


# --- large -----------------------------------------------------------------------------


@pytest.mark.slow
def test_large_array_round_trip(psv, tmp_path):
    n = 96 * 2**20 // 4  # 96 MiB of float32
    big = np.arange(n, dtype="<f4") * np.float32(0.5)
    small = np.arange(1000, dtype="<i8")
    fbig = np.asfortranarray(np.arange(2**20, dtype="<f8").reshape(1024, 1024))  # 8 MiB
    path = psv.ParallelSaver(big=big, small=small, fbig=fbig).save(tmp_path / "large", threads=2)
    assert path == str(tmp_path / "large") + ".npz"
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        head = z.open("big.npy").read(256)
    h, off, _ = mf.split_npy(head)
    assert h["shape"] == (n,) and h["dtype"] == np.dtype("<f4") and not h["fortran_order"]
    ref = io.BytesIO()
    np.lib.format.write_array_header_1_0(ref, np.lib.format.header_data_from_array_1_0(big))
    assert head[:off] == ref.getvalue(), "large-array header differs from numpy's"
    with np.load(path) as f:
        assert np.array_equal(f["big"].view(np.uint32), big.view(np.uint32))
        assert np.array_equal(f["small"], small)
        assert f["fbig"].flags.f_contiguous and np.array_equal(f["fbig"], fbig)
    assert all(o % 64 == 0 for o in mf.array_data_offsets(path).values())
    got = psv.restore(path)
    assert np.array_equal(got["big"].view(np.uint32), big.view(np.uint32))
    assert got["fbig"].flags.f_contiguous and raw_bytes(got["fbig"]) == raw_bytes(fbig)
    assert_one_aligned_block(psv, got)


# --- API semantics (numpy.savez compatible) -----------------------------------------------


def test_positional_and_keyword_order_like_numpy(psv, tmp_path):
    a, b, c, d = (np.arange(i + 1) for i in range(4))
    ours = psv.ParallelSaver(a, b, zeta=c, alpha=d).save(tmp_path / "ours")
    np.savez(tmp_path / "theirs", a, b, zeta=c, alpha=d)
    with zipfile.ZipFile(ours) as z1, zipfile.ZipFile(tmp_path / "theirs.npz") as z2:
        assert z1.namelist() == z2.namelist() == ["zeta.npy", "alpha.npy", "arr_0.npy", "arr_1.npy"]
        for name in z1.namelist():
            assert z1.read(name) == z2.read(name)


def test_keyword_clash_with_positional_raises_value_error(psv):
    with pytest.raises(ValueError, match="arr_0"):
        psv.ParallelSaver(np.arange(3), arr_0=np.arange(2))
    with pytest.raises(ValueError):
        np.savez(os.devnull, np.arange(3), arr_0=np.arange(2))


def test_dict_and_list_inputs(psv, tmp_path):
    d = {"features": np.ones((2, 3)), "labels": np.array([0, 1, 2])}
    p = psv.ParallelSaver(d).save(tmp_path / "d")
    with zipfile.ZipFile(p) as z:
        assert z.namelist() == ["features.npy", "labels.npy"]
    lst = [np.arange(3), np.ones(2, "<f4"), np.zeros((2, 2), "<i2")]
    p2 = psv.ParallelSaver(lst).save(tmp_path / "l")
    got = psv.restore(p2)
    assert list(got) == ["arr_0", "arr_1", "arr_2"]
    for i, a in enumerate(lst):
        assert got[f"arr_{i}"].dtype == a.dtype and np.array_equal(got[f"arr_{i}"], a)
    # a plain list of numbers is one array, as in numpy.savez
    p3 = psv.ParallelSaver([1, 2, 3]).save(tmp_path / "n")
    got3 = psv.restore(p3)
    assert list(got3) == ["arr_0"] and np.array_equal(got3["arr_0"], np.asarray([1, 2, 3]))


def test_asarray_inputs(psv, tmp_path):
    p = psv.ParallelSaver(x=[[1.5, 2.5]], s="text", n=7, t=(1, 2)).save(tmp_path / "a")
    got = psv.restore(p)
    for k, v in {"x": [[1.5, 2.5]], "s": "text", "n": 7, "t": (1, 2)}.items():
        ref = np.asarray(v)
        assert got[k].dtype == ref.dtype and got[k].shape == ref.shape and np.array_equal(got[k], ref)


def test_object_arrays_rejected_before_c(psv):
    with pytest.raises((TypeError, ValueError)):
        psv.ParallelSaver(o=np.array([1, "a", None], dtype=object))
    with pytest.raises((TypeError, ValueError)):
        psv.ParallelSaver(r=np.zeros(2, [("a", "O"), ("b", "<i4")]))
    with pytest.raises((TypeError, ValueError)):
        psv.ParallelSaver(s=np.array(["a"], dtype=np.dtypes.StringDType()))


def test_out_of_order_fields_rejected_like_numpy(psv):
    dt = np.dtype({"names": ["a", "b"], "formats": ["<i4", "<i4"], "offsets": [4, 0]})
    with pytest.raises(ValueError):
        mf.npy_bytes(np.zeros(2, dt))
    with pytest.raises(ValueError):
        psv.ParallelSaver(x=np.zeros(2, dt))


def test_npz_suffix_appended(psv, tmp_path):
    saver = psv.ParallelSaver(a=np.arange(3))
    assert saver.save(tmp_path / "plain") == str(tmp_path / "plain.npz")
    assert saver.save(str(tmp_path / "already.npz")) == str(tmp_path / "already.npz")
    assert saver.save(str(tmp_path / "upper.NPZ")) == str(tmp_path / "upper.NPZ.npz")  # case-sensitive, as numpy
    saver.close()
    assert sorted(os.listdir(tmp_path)) == ["already.npz", "plain.npz", "upper.NPZ.npz"]
    for stem in ["plain", "already.npz", "upper.NPZ"]:
        assert np.array_equal(psv.restore(tmp_path / stem)["a"], np.arange(3))
        assert np.array_equal(psv.restore(str(tmp_path / stem))["a"], np.arange(3))


def test_save_options_and_reuse(psv, tmp_path):
    arrays = {f"k{i}": np.arange(i * 1000, dtype="<f8") for i in range(20)}
    with psv.ParallelSaver(**arrays) as saver:
        assert len(saver) == 20
        p1 = saver.save(tmp_path / "t1", threads=1)
        p2 = saver.save(tmp_path / "t2", threads=2, fsync=True)
        p3 = saver.save(tmp_path / "t0", threads=0)
        p4 = saver.save(tmp_path / "t1", threads=None)  # overwrite
    assert saver.closed
    blobs = [Path(p).read_bytes() for p in (p1, p2, p3, p4)]
    assert all(b == blobs[0] for b in blobs), "output depends on thread count / repetition"
    assert sorted(os.listdir(tmp_path)) == ["t0.npz", "t1.npz", "t2.npz"], "temp files left behind"
    with pytest.raises(ValueError):
        saver.save(tmp_path / "closed")
    with pytest.raises(ValueError):
        psv.ParallelSaver(a=np.arange(2)).save(tmp_path / "neg", threads=-1)


def test_saver_keeps_borrowed_memory_alive(psv, tmp_path):
    import gc

    saver = psv.ParallelSaver(a=np.arange(100000, dtype="<i8"), b=np.arange(10.0)[::2])
    gc.collect()
    p = saver.save(tmp_path / "alive")
    saver.close()
    got = psv.restore(p)
    assert np.array_equal(got["a"], np.arange(100000))
    assert np.array_equal(got["b"], np.arange(10.0)[::2])


def test_empty_saver_writes_empty_archive(psv, tmp_path):
    p = psv.ParallelSaver().save(tmp_path / "empty")
    with zipfile.ZipFile(p) as z:
        assert z.namelist() == []
    with np.load(p) as f:
        assert f.files == []
    got = psv.restore(p)
    assert dict(got) == {} and got.skipped == []


def test_save_error_names_path(psv, tmp_path):
    target = tmp_path / "no_such_dir" / "x.npz"
    saver = psv.ParallelSaver(a=np.arange(3))
    with pytest.raises(psv.PsvError) as ei:
        saver.save(target)
    expect_status(ei, ["PSV_ERR_IO"])
    assert ei.value.os_code == errno.ENOENT, "psv_last_error_os_code"
    assert str(tmp_path / "no_such_dir") in ei.value.message
    assert os.listdir(tmp_path) == []


def test_duplicate_key_at_add(psv):
    saver = psv.ParallelSaver(dup_key_name=np.arange(3))
    with pytest.raises(psv.PsvError) as ei:
        saver.add("dup_key_name", np.arange(4))
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    assert ei.value.status == psv.PSV_ERR_INVALID_ARG
    assert "dup_key_name" in ei.value.message
    with pytest.raises(psv.PsvError) as ei2:
        psv.ParallelSaver({"same": np.arange(2)}, same=np.arange(3))
    expect_status(ei2, ["PSV_ERR_INVALID_ARG"])
    assert "same" in ei2.value.message


def test_empty_key_rejected(psv):
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(**{"": np.arange(2)})
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    with pytest.raises(ValueError):
        psv.ParallelSaver(**{"a\0b": np.arange(2)})
    with pytest.raises(TypeError):
        psv.ParallelSaver({1: np.arange(2)})


def test_fortran_numeric_goes_through_descr(psv, tmp_path):
    """F-order native numeric arrays must keep fortran_order=True (psv_saver_add is C-order only)."""
    f = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    p = psv.ParallelSaver(f=f).save(tmp_path / "f")
    with zipfile.ZipFile(p) as z:
        payload = z.read("f.npy")
    assert payload == mf.npy_bytes(f)
    h, _, data = mf.split_npy(payload)
    assert h["fortran_order"] is True
    got = psv.restore(p)["f"]
    assert_matches_header(got, h, data, "f")


def test_bulk_add_matches_one_by_one(psv, tmp_path, monkeypatch):
    """Runs of C-order numeric arrays go through psv_saver_add_many; the file must be
    byte-identical to adding each array with its own call, in the same order."""
    ro = np.frombuffer(np.arange(5, dtype=np.int16).tobytes(), dtype=np.int16)  # read-only
    assert not ro.flags.writeable
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ro": ro,
        "empty": np.zeros((0, 4), dtype=np.int64),
        "scalar": np.array(3.5),
        "be": np.arange(3, dtype=">i4"),  # not native: one by one, between two runs
        "b": np.arange(4, dtype=np.uint8),
        "rec": np.zeros(2, dtype=[("x", "<i4"), ("y", "<f8")]),
        "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        **{f"k{i}": np.full(i % 7 + 1, i, dtype=np.int32 if i % 2 else np.complex64) for i in range(300)},
    }
    real_optional = psv._api._optional
    batched = []

    def counting_optional(lib, name):
        fn = real_optional(lib, name)
        if name != "psv_saver_add_many":
            return fn
        return lambda handle, n, *rest: (batched.append(n), fn(handle, n, *rest))[1]

    monkeypatch.setattr(psv._api, "_optional", counting_optional)
    bulk = psv.ParallelSaver(arrays).save(tmp_path / "bulk")
    # a, ro, empty, scalar in one call; b alone (one by one); the 300 k* in another.
    assert batched == [4, 300]
    monkeypatch.setattr(
        psv._api, "_optional", lambda lib, name: None if name == "psv_saver_add_many" else real_optional(lib, name)
    )
    single = psv.ParallelSaver(arrays).save(tmp_path / "single")
    assert Path(bulk).read_bytes() == Path(single).read_bytes()
    with np.load(bulk) as z:
        assert z.files == list(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape, k
            assert np.array_equal(z[k], v), k


@pytest.mark.parametrize("shapes", ["1-d", "mixed", "with-empty"])
def test_one_call_path_matches_one_by_one(psv, tmp_path, monkeypatch, shapes):
    """Keywords (or one dict) of writable C-order native arrays go to C in one
    psv_saver_add_many call built column by column (keys joined, addresses, dims); the file
    must be byte-identical to adding each array with its own call, and numpy must read it."""
    def shape(i):
        return (i % 5 + 1,) if shapes == "1-d" else [(), (i % 3 + 1, 2), (2, 1, i % 4 + 1), (i % 5 + 1,)][i % 4]

    dtypes = [np.float32, np.int32, np.uint8, np.complex128, np.bool_, np.float16]
    arrays = {
        f"k{i}_é{'ü' * (i % 3)}": np.asarray(np.arange(int(np.prod(shape(i))), dtype=np.int64).reshape(shape(i)) % 3)
        .astype(dtypes[i % len(dtypes)])
        for i in range(200)
    }
    if shapes == "with-empty":
        arrays["empty"] = np.zeros((2, 0))  # empty: takes the general path for every array
    real_optional = psv._api._optional
    real_columns = psv.ParallelSaver._add_columns
    taken = []
    monkeypatch.setattr(psv.ParallelSaver, "_add_columns", lambda self, *a: (taken.append(real_columns(self, *a)), taken[-1])[1])
    bulk = psv.ParallelSaver(**arrays).save(tmp_path / "bulk")
    from_dict = psv.ParallelSaver(arrays).save(tmp_path / "dict")
    # An empty array sends every array down the general path.
    assert taken == ([False, False] if shapes == "with-empty" else [True, True])
    monkeypatch.setattr(
        psv._api, "_optional", lambda lib, name: None if name == "psv_saver_add_many" else real_optional(lib, name)
    )
    single = psv.ParallelSaver(**arrays).save(tmp_path / "single")
    assert Path(bulk).read_bytes() == Path(single).read_bytes() == Path(from_dict).read_bytes()
    with np.load(bulk) as z:
        assert z.files == list(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype and z[k].shape == v.shape, k
            assert np.array_equal(z[k], v), k


def test_one_call_path_refuses_like_the_general_path(psv):
    """Keys the one-call path cannot join (a NUL, a lone surrogate) raise exactly as before,
    and a duplicate-free dict with an object array is still refused before C."""
    good = {f"k{i}": np.arange(3) for i in range(5)}
    with pytest.raises(ValueError, match="NUL"):
        psv.ParallelSaver(**good, **{"bad\0key": np.arange(2)})
    with pytest.raises(UnicodeEncodeError):
        psv.ParallelSaver({**good, "\ud800": np.arange(2)})
    with pytest.raises(TypeError, match="object"):
        psv.ParallelSaver({**good, "o": np.array([None, 1], dtype=object)})
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(**good, **{"": np.arange(2)})
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])


def test_bulk_add_error_adds_nothing(psv):
    """A failing run (here a duplicate key from the dict and a keyword) raises and the saver
    is closed; a separate saver with the same arrays minus the clash still works."""
    arrays = {f"k{i}": np.arange(i + 1) for i in range(10)}
    with pytest.raises(psv.PsvError) as ei:
        psv.ParallelSaver(arrays, k5=np.arange(2))
    expect_status(ei, ["PSV_ERR_INVALID_ARG"])
    assert "k5" in ei.value.message
    assert len(psv.ParallelSaver(arrays)) == 10
