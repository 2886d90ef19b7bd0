"""The raw C API through ctypes: codes, NULL handling, options, lookup."""

from __future__ import annotations

import ctypes
import errno
import re
from pathlib import Path

import numpy as np
import pytest

import make_fixtures as mf


@pytest.fixture(scope="module")
def lib(psv):
    return psv._lib()


def _restore_handle(psv, lib, path, opts=None):
    out = psv._ArchiveP()
    st = lib.psv_restore(str(path).encode(), opts, ctypes.byref(out))
    return st, out


def _msg(psv, lib) -> str:
    return psv._last_error_message(lib)


def test_status_strings(psv, lib):
    for code, name in psv.STATUS_NAMES.items():
        assert lib.psv_status_str(code).decode() == name
    assert lib.psv_status_str(999).decode() == "PSV_ERR_UNKNOWN"
    assert lib.psv_status_str(-1).decode() == "PSV_ERR_UNKNOWN"


def test_status_codes_from_the_library_match_the_header(psv):
    """The binding reads its status names and PSV_ERR_* codes from the library: they must be
    exactly psv.h's #defines."""
    header = (Path(__file__).resolve().parents[2] / "include" / "psv.h").read_text()
    defines = {name: int(code) for name, code in
               re.findall(r"^#define (PSV_OK|PSV_ERR_[A-Z0-9_]+) (-?\d+)$", header, re.MULTILINE)}
    assert len(defines) > 10 and defines["PSV_OK"] == psv.PSV_OK == 0
    assert dict(psv.STATUS_NAMES) == {code: name for name, code in defines.items()}
    for name, code in defines.items():
        assert getattr(psv, name) == code, name
    with pytest.raises(AttributeError):
        psv.PSV_ERR_NO_SUCH_CODE


def test_last_error_os_code(psv, lib, tmp_path):
    os_code = lib.psv_last_error_os_code
    os_code.restype, os_code.argtypes = ctypes.c_int32, []
    out = psv._ArchiveP()
    st = lib.psv_restore(str(tmp_path / "missing").encode(), None, ctypes.byref(out))
    assert st == psv.PSV_ERR_IO and not out
    assert os_code() == errno.ENOENT
    with pytest.raises(psv.PsvError) as ei:
        psv.restore(tmp_path / "missing")
    assert ei.value.os_code == errno.ENOENT
    # Not from the OS, and after a success: 0.
    assert lib.psv_saver_save(None, b"x.npz", None) == psv.PSV_ERR_NULL_ARG
    assert os_code() == 0
    assert lib.psv_restore(str(tmp_path / "missing").encode(), None, ctypes.byref(out)) == psv.PSV_ERR_IO
    psv.ParallelSaver(a=np.arange(3)).save(tmp_path / "ok")
    assert os_code() == 0


def test_version(psv, lib):
    v = psv.version()
    parts = v.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), v
    assert isinstance(psv.abi_version(), int)


def test_null_arguments(psv, lib):
    assert lib.psv_saver_count(None) == 0
    assert lib.psv_archive_count(None) == 0
    assert lib.psv_archive_key(None, 0) is None
    assert lib.psv_archive_data(None, 0) is None
    assert lib.psv_archive_descr(None, 0) is None
    assert not lib.psv_archive_shape(None, 0)
    assert lib.psv_archive_dtype(None, 0) == psv.PSV_DTYPE_INVALID
    assert lib.psv_archive_skipped_count(None) == 0
    assert lib.psv_archive_skipped_name(None, 0) is None
    n = ctypes.c_size_t(123)
    assert lib.psv_archive_block(None, ctypes.byref(n)) is None
    lib.psv_free(None)
    lib.psv_saver_free(None)
    lib.psv_save_options_free(None)
    lib.psv_restore_options_free(None)
    out = psv._ArchiveP()
    assert lib.psv_restore(None, None, ctypes.byref(out)) == psv.PSV_ERR_NULL_ARG
    assert not out
    assert lib.psv_restore(b"x.npz", None, None) == psv.PSV_ERR_NULL_ARG
    assert lib.psv_saver_save(None, b"x.npz", None) == psv.PSV_ERR_NULL_ARG
    s = lib.psv_saver_new()
    try:
        assert lib.psv_saver_add(s, None, None, 12, None, 0) == psv.PSV_ERR_NULL_ARG
        assert lib.psv_saver_save(s, None, None) == psv.PSV_ERR_NULL_ARG
    finally:
        lib.psv_saver_free(s)


def test_saver_add_validation(psv, lib):
    a = np.arange(6, dtype="<f8")
    shape = (ctypes.c_int64 * 1)(6)
    s = lib.psv_saver_new()
    try:
        ok = lib.psv_saver_add(s, b"a", a.ctypes.data, 12, shape, 1)
        assert ok == psv.PSV_OK
        assert lib.psv_saver_count(s) == 1
        assert lib.psv_last_error_message(None, 0) == 0, "success must clear the error message"
        assert lib.psv_saver_add(s, b"b", a.ctypes.data, psv.PSV_DTYPE_OTHER, shape, 1) == psv.PSV_ERR_BAD_DTYPE
        assert lib.psv_saver_add(s, b"c", a.ctypes.data, 99, shape, 1) == psv.PSV_ERR_BAD_DTYPE
        assert lib.psv_saver_add(s, b"a", a.ctypes.data, 12, shape, 1) == psv.PSV_ERR_INVALID_ARG
        assert "a" in _msg(psv, lib)
        assert lib.psv_saver_add(s, b"", a.ctypes.data, 12, shape, 1) == psv.PSV_ERR_INVALID_ARG
        assert lib.psv_saver_add(s, b"\xff\xfe", a.ctypes.data, 12, shape, 1) == psv.PSV_ERR_INVALID_ARG
        neg = (ctypes.c_int64 * 1)(-1)
        assert lib.psv_saver_add(s, b"neg", a.ctypes.data, 12, neg, 1) == psv.PSV_ERR_OVERFLOW
        huge = (ctypes.c_int64 * 2)(2**62, 2**62)
        assert lib.psv_saver_add(s, b"huge", a.ctypes.data, 12, huge, 2) == psv.PSV_ERR_OVERFLOW
        dims = (ctypes.c_int64 * 65)(*([1] * 65))
        assert lib.psv_saver_add(s, b"deep", a.ctypes.data, 12, dims, 65) == psv.PSV_ERR_OVERFLOW
        assert lib.psv_saver_add(s, b"nodata", None, 12, shape, 1) in (
            psv.PSV_ERR_NULL_ARG, psv.PSV_ERR_INVALID_ARG)
        assert lib.psv_saver_add_descr(s, b"obj", a.ctypes.data, 48, b"|O", shape, 1, False) == psv.PSV_ERR_BAD_DTYPE
        assert lib.psv_saver_add_descr(s, b"bad", a.ctypes.data, 48, b"<q9", shape, 1, False) == psv.PSV_ERR_BAD_DTYPE
        assert lib.psv_saver_add_descr(s, b"mism", a.ctypes.data, 40, b"<f8", shape, 1, False) == psv.PSV_ERR_INVALID_ARG
        assert lib.psv_saver_add_descr(s, b"ok2", a.ctypes.data, 48, b"<f8", shape, 1, False) == psv.PSV_OK
        empty = np.zeros(0)
        zshape = (ctypes.c_int64 * 1)(0)
        assert lib.psv_saver_add(s, b"z", None, 12, zshape, 1) == psv.PSV_OK, "NULL data allowed for 0 bytes"
        assert lib.psv_saver_add(s, b"scalar", a.ctypes.data, 12, None, 0) == psv.PSV_OK
        assert lib.psv_saver_count(s) == 4
        del empty
    finally:
        lib.psv_saver_free(s)


def test_archive_accessors_and_dtype_codes(psv, lib, tmp_path):
    arrays = {
        "f8": np.arange(6.0).reshape(2, 3),
        "i4": np.arange(4, dtype="<i4"),
        "b": np.array([True, False]),
        "be": np.arange(3, dtype=">f4"),
        "u": np.array(["ab"], dtype="<U2"),
        "c8": np.zeros(2, "<c8"),
        "h": np.zeros(2, "<f2"),
        "F": np.asfortranarray(np.zeros((2, 3), "<i2")),
        "s": np.array(1.5),
    }
    path = psv.ParallelSaver(**arrays).save(tmp_path / "codes")
    st, h = _restore_handle(psv, lib, path)
    assert st == psv.PSV_OK and h
    try:
        assert lib.psv_archive_count(h) == len(arrays)
        expected_codes = {"f8": 12, "i4": 4, "b": 1, "be": 15, "u": 15, "c8": 13, "h": 10, "F": 3, "s": 12}
        for i, (k, a) in enumerate(arrays.items()):
            assert lib.psv_archive_key(h, i).decode() == k
            idx = ctypes.c_size_t(999)
            assert lib.psv_archive_find(h, k.encode(), ctypes.byref(idx)) == psv.PSV_OK and idx.value == i
            assert lib.psv_archive_dtype(h, i) == expected_codes[k], k
            assert lib.psv_archive_descr(h, i).decode() == a.dtype.str
            assert lib.psv_archive_itemsize(h, i) == a.dtype.itemsize
            assert lib.psv_archive_nbytes(h, i) == a.nbytes
            assert lib.psv_archive_ndim(h, i) == a.ndim
            assert lib.psv_archive_fortran_order(h, i) == (k == "F")
            assert lib.psv_archive_data(h, i) % 64 == 0
        assert not lib.psv_archive_shape(h, len(arrays) - 1), "0-d shape pointer must be NULL"
        idx = ctypes.c_size_t()
        assert lib.psv_archive_find(h, b"nope", ctypes.byref(idx)) == psv.PSV_ERR_NOT_FOUND
        n = len(arrays)
        assert lib.psv_archive_key(h, n) is None
        assert lib.psv_archive_data(h, n) is None
        assert lib.psv_archive_dtype(h, n) == psv.PSV_DTYPE_INVALID
        assert lib.psv_archive_skipped_count(h) == 0
    finally:
        lib.psv_free(h)


def test_restore_limits(psv, lib, tmp_path):
    path = mf.fx_savez_basic(tmp_path)  # 4 members, small header, ~150 data bytes

    def run(total, members, header):
        o = lib.psv_restore_options_new()
        try:
            assert lib.psv_restore_options_set_limits(o, total, members, header) == psv.PSV_OK
            st, h = _restore_handle(psv, lib, path, o)
            lib.psv_free(h)
            return st
        finally:
            lib.psv_restore_options_free(o)

    assert run(0, 0, 0) == psv.PSV_OK
    assert run(0, 3, 0) == psv.PSV_ERR_LIMIT
    assert run(0, 4, 0) == psv.PSV_OK
    assert run(16, 0, 0) == psv.PSV_ERR_LIMIT
    assert run(0, 0, 32) in (psv.PSV_ERR_LIMIT,)


def test_options_setters(psv, lib):
    o = lib.psv_save_options_new()
    try:
        assert lib.psv_save_options_set_threads(o, 0) == psv.PSV_OK
        assert lib.psv_save_options_set_threads(o, 3) == psv.PSV_OK
        assert lib.psv_save_options_set_fsync(o, True) == psv.PSV_OK
        assert lib.psv_save_options_set_threads(None, 1) == psv.PSV_ERR_NULL_ARG
    finally:
        lib.psv_save_options_free(o)
    r = lib.psv_restore_options_new()
    try:
        assert lib.psv_restore_options_set_threads(r, 2) == psv.PSV_OK
        assert lib.psv_restore_options_set_verify_crc(r, False) == psv.PSV_OK
        assert lib.psv_restore_options_set_verify_crc(None, False) == psv.PSV_ERR_NULL_ARG
    finally:
        lib.psv_restore_options_free(r)


def test_last_error_message_truncation(psv, lib, tmp_path):
    st, h = _restore_handle(psv, lib, tmp_path / "missing_file_for_truncation.npz")
    assert st == psv.PSV_ERR_IO and not h
    full = lib.psv_last_error_message(None, 0)
    assert full > 10
    buf = ctypes.create_string_buffer(8)
    assert lib.psv_last_error_message(buf, 8) == full
    assert len(buf.value) == 7
    big = ctypes.create_string_buffer(full + 1)
    lib.psv_last_error_message(big, full + 1)
    assert big.value.startswith(buf.value) and len(big.value) == full
