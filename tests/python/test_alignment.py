"""psv_save_options_set_alignment against real numpy: files saved with a larger alignment (up to
1 MiB, where padding goes before local headers) load in numpy and zipfile, large arrays' data
starts at a multiple of the alignment, small ones at 64, the memory save gives the same bytes,
and mmap restores map the large arrays in place at aligned addresses."""

from __future__ import annotations

import ctypes
import struct
import zipfile

import numpy as np
import pytest


def _set_alignment(psv, opts, alignment: int) -> int:
    fn = psv._lib().psv_save_options_set_alignment
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int32
    return fn(ctypes.cast(opts, ctypes.c_void_p), alignment)


def _save(psv, arrays, path, alignment):
    lib = psv._lib()
    saver = psv.ParallelSaver(**arrays)
    opts = lib.psv_save_options_new()
    try:
        assert _set_alignment(psv, opts, alignment) == 0
        assert lib.psv_saver_save(saver._handle, str(path).encode(), opts) == 0
        # The same archive in memory (psv_saver_save_to_alloc): the same bytes.
        alloc = lib.psv_saver_save_to_alloc
        alloc.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        alloc.restype = ctypes.c_int32
        buf = ctypes.c_void_p()
        st = alloc(ctypes.cast(saver._handle, ctypes.c_void_p), ctypes.cast(opts, ctypes.c_void_p), ctypes.byref(buf))
        assert st == 0
        data, length = lib.psv_buffer_data, lib.psv_buffer_len
        data.argtypes = length.argtypes = [ctypes.c_void_p]
        data.restype, length.restype = ctypes.c_void_p, ctypes.c_size_t
        in_memory = ctypes.string_at(data(buf), length(buf))
        free = lib.psv_buffer_free
        free.argtypes = [ctypes.c_void_p]
        free(buf)
        return in_memory
    finally:
        lib.psv_save_options_free(opts)
        saver.close()


def _data_offsets(path):
    out = {}
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        for info in z.infolist():
            f.seek(info.header_offset)
            n, e = struct.unpack("<HH", f.read(30)[26:30])
            payload = info.header_offset + 30 + n + e
            f.seek(payload)
            magic = f.read(12)
            hlen = 10 + struct.unpack("<H", magic[8:10])[0] if magic[6] == 1 else 12 + struct.unpack("<I", magic[8:12])[0]
            out[info.filename[:-4]] = payload + hlen
    return out


@pytest.mark.parametrize("alignment", [64, 4096, 1 << 16, 1 << 20])
def test_numpy_reads_aligned_files_and_large_data_is_aligned(psv, tmp_path, alignment):
    rng = np.random.default_rng(alignment)
    arrays = {
        "tiny": np.arange(3, dtype=np.int8),
        "page": rng.random(512),  # exactly 4096 bytes
        "big": rng.random((300, 700)).astype(np.float32),
        "fortran": np.asfortranarray(rng.random((129, 1000))),
        "empty": np.zeros((0, 4)),
        "mb": rng.integers(0, 9, size=(1 << 20) + 8, dtype=np.uint8),
        "scalar": np.float64(2.5),
    }
    path = tmp_path / "a"
    in_memory = _save(psv, arrays, path, alignment)
    npz = tmp_path / "a.npz"
    assert npz.read_bytes() == in_memory
    with zipfile.ZipFile(npz) as z:
        assert z.testzip() is None
    with np.load(npz) as d:
        assert list(d.files) == list(arrays)
        for k, v in arrays.items():
            assert d[k].dtype == v.dtype and d[k].shape == np.shape(v) and np.array_equal(d[k], v), k
        assert d["fortran"].flags.f_contiguous and not d["fortran"].flags.c_contiguous
    for k, off in _data_offsets(npz).items():
        want = alignment if np.asarray(arrays[k]).nbytes >= alignment else 64
        assert off % want == 0, (k, off, want)
    # Restored as a mapping: large arrays are views of the file, at aligned addresses.
    got = psv.restore(npz, mmap=True)
    for k, v in arrays.items():
        assert np.array_equal(got[k], v), k
        if np.asarray(v).nbytes >= alignment:
            assert got[k].ctypes.data % alignment == 0, k


def test_a_bad_alignment_is_invalid_arg(psv):
    lib = psv._lib()
    opts = lib.psv_save_options_new()
    try:
        for bad in (0, 1, 63, 96, 3 << 12, 2 << 20):
            assert psv.STATUS_NAMES[_set_alignment(psv, opts, bad)] == "PSV_ERR_INVALID_ARG"
    finally:
        lib.psv_save_options_free(opts)
