"""psv_cffi — libpsv from Python through cffi in ABI mode (ffi.dlopen; nothing is compiled).

    from psv_cffi import save, restore
    save("out.npz", {"x": np.arange(10.0), "m": np.eye(3, dtype=np.int32)})   # zero-copy
    a = restore("out.npz")              # one 64-byte-aligned block, owned by `a`
    a["x"]                              # a numpy view into the block (no copy)

    python examples/python_cffi/psv_cffi.py [OUT_DIR]   # the demo and self-check (`make test-cffi`)

The declarations come from include/psv.h itself: `cc -std=c99 -E -P include/psv.h` at import
(the C preprocessor drops the system-header noise cffi cannot parse), or, without a C compiler,
the header with its preprocessor lines stripped (cffi knows int32_t, size_t, bool natively).
Either way the `#define` constants are parsed into Python ints (`C.PSV_OK`, `C.PSV_DTYPE_F64`,
module constants of the same names) and handed to cdef() too, so `lib.PSV_OK` works as well.

Environment: PSV_LIBRARY (path of libpsv.so; default target/release/libpsv.so of this repo),
PSV_HEADER (default include/psv.h), CC (default cc).

Lifetimes:
  - save(): the saver borrows each array's buffer (ffi.from_buffer) until psv_saver_free, which
    runs before save() returns; arrays that are not contiguous are copied first.
  - restore(): the Archive owns the block (psv_free runs when the Archive and every array
    returned from it are garbage: each array's buffer keeps the archive alive).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import cffi
import numpy as np

REPO = Path(__file__).resolve().parents[2]
HEADER = Path(os.environ.get("PSV_HEADER", REPO / "include" / "psv.h"))
LIBRARY = os.environ.get("PSV_LIBRARY", str(REPO / "target" / "release" / "libpsv.so"))

_DEFINE = re.compile(r"^\s*#\s*define\s+(PSV_[A-Z0-9_]+)\s+(-?\d+)\s*$", re.MULTILINE)


def parse_constants(header_text: str) -> dict[str, int]:
    """Every integer `#define PSV_...` of psv.h (status codes, dtype codes, versions)."""
    return {name: int(value) for name, value in _DEFINE.findall(header_text)}


def cdef_from_preprocessor(header: Path, cc: str | None = None) -> str:
    """`cc -std=c99 -E -P header`: the header as the compiler sees it, system typedefs included.

    -std=c99 because the default (gnu17) <stddef.h> declares max_align_t with __attribute__,
    which cffi's parser rejects.
    """
    cc = cc or os.environ.get("CC", "cc")
    return subprocess.run(
        [cc, "-std=c99", "-E", "-P", str(header)], check=True, capture_output=True, text=True
    ).stdout


def cdef_by_stripping(header_text: str) -> str:
    """The header without comments, preprocessor lines and the `extern "C"` blocks for C++."""
    text = re.sub(r"/\*.*?\*/", "", header_text, flags=re.DOTALL)
    out, skipping = [], 0
    for line in text.splitlines():
        stripped = line.split("//", 1)[0].strip()
        if stripped.startswith("#"):
            directive = stripped[1:].strip()
            if directive.startswith("ifdef __cplusplus") or skipping and directive.startswith("if"):
                skipping += 1
            elif skipping and directive.startswith("endif"):
                skipping -= 1
            continue  # every other #include, #define, #ifndef, #endif is dropped
        if not skipping and stripped:
            out.append(stripped)
    return "\n".join(out)


def _cdef_source(header: Path) -> str:
    if shutil.which(os.environ.get("CC", "cc")) and not os.environ.get("PSV_CFFI_NO_CC"):
        return cdef_from_preprocessor(header)
    return cdef_by_stripping(header.read_text(encoding="utf-8"))


_header_text = HEADER.read_text(encoding="utf-8")
CONSTANTS = parse_constants(_header_text)
C = types.SimpleNamespace(**CONSTANTS)  # C.PSV_OK, C.PSV_DTYPE_F64, ...
globals().update(CONSTANTS)  # and PSV_OK, PSV_DTYPE_F64, ... at module level

ffi = cffi.FFI()
ffi.cdef(_cdef_source(HEADER))
ffi.cdef("\n".join(f"#define {name} {value}" for name, value in CONSTANTS.items()))
lib = ffi.dlopen(LIBRARY)

if lib.psv_abi_version() != C.PSV_ABI_VERSION:
    raise ImportError(
        f"{LIBRARY} has ABI {lib.psv_abi_version()}, but {HEADER} is for ABI {C.PSV_ABI_VERSION}"
    )


# --- errors ----------------------------------------------------------------------------------


class PsvError(Exception):
    """A failed libpsv call: `.status` (int), `.name` ("PSV_ERR_IO") and the library's message."""

    def __init__(self, status: int, call: str, message: str):
        self.status = status
        self.name = ffi.string(lib.psv_status_str(status)).decode()
        self.message = message
        super().__init__(f"{call}: {self.name}: {message}")


def _last_error() -> str:
    n = lib.psv_last_error_message(ffi.NULL, 0)
    buf = ffi.new("char[]", n + 1)
    lib.psv_last_error_message(buf, n + 1)
    return ffi.string(buf).decode("utf-8", "replace")


def _check(status: int, call: str) -> None:
    if status != C.PSV_OK:
        raise PsvError(status, call, _last_error())  # read at once, on the same thread


# --- dtypes ----------------------------------------------------------------------------------

_CODE_OF = {
    np.dtype(np.bool_): C.PSV_DTYPE_BOOL,
    np.dtype(np.int8): C.PSV_DTYPE_I8,
    np.dtype(np.int16): C.PSV_DTYPE_I16,
    np.dtype(np.int32): C.PSV_DTYPE_I32,
    np.dtype(np.int64): C.PSV_DTYPE_I64,
    np.dtype(np.uint8): C.PSV_DTYPE_U8,
    np.dtype(np.uint16): C.PSV_DTYPE_U16,
    np.dtype(np.uint32): C.PSV_DTYPE_U32,
    np.dtype(np.uint64): C.PSV_DTYPE_U64,
    np.dtype(np.float16): C.PSV_DTYPE_F16,
    np.dtype(np.float32): C.PSV_DTYPE_F32,
    np.dtype(np.float64): C.PSV_DTYPE_F64,
    np.dtype(np.complex64): C.PSV_DTYPE_C64,
    np.dtype(np.complex128): C.PSV_DTYPE_C128,
}
_DTYPE_OF = {code: dt for dt, code in _CODE_OF.items()}


def dtype_from_descr(descr: str) -> np.dtype:
    """numpy's dtype for a descr as psv reports it: a type string or a record list literal."""
    if descr.startswith("["):
        return np.dtype(ast.literal_eval(descr))
    return np.dtype(descr)


def descr_of(dtype: np.dtype) -> str:
    """The descr string numpy writes into a .npy header for `dtype`."""
    return dtype.str if dtype.fields is None and dtype.subdtype is None else repr(dtype.descr)


# --- save ------------------------------------------------------------------------------------


def save(path, arrays: dict, *, threads: int = 0, fsync: bool = False) -> None:
    """Saves `arrays` (key -> array-like) into one .npz at `path` without copying contiguous data.

    Native-order numeric arrays go through psv_saver_add with their PSV_DTYPE_* code; anything
    else (records, strings, datetimes, byte-swapped) through psv_saver_add_descr with numpy's
    descr. Fortran-ordered arrays are saved as such (fortran_order=True), like np.save does.
    """
    saver = lib.psv_saver_new()
    if saver == ffi.NULL:
        raise MemoryError("psv_saver_new")
    opts = ffi.NULL
    keep = []  # the borrowed buffers: alive until psv_saver_free
    try:
        for key, value in arrays.items():
            arr = np.asanyarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"{key!r}: object arrays cannot be saved")
            fortran = arr.ndim > 1 and arr.flags.f_contiguous and not arr.flags.c_contiguous
            if not (arr.flags.c_contiguous or fortran):
                arr = np.ascontiguousarray(arr)
            buf = ffi.from_buffer(arr.reshape(-1, order="F" if fortran else "C").view(np.uint8))
            shape = ffi.new("int64_t[]", list(arr.shape)) if arr.ndim else ffi.NULL
            keep.append((arr, buf, shape))
            code = _CODE_OF.get(arr.dtype) if arr.dtype.isnative else None
            bkey = str(key).encode("utf-8")
            if code is not None and not fortran:
                _check(lib.psv_saver_add(saver, bkey, buf, code, shape, arr.ndim), f"psv_saver_add({key!r})")
            else:
                _check(
                    lib.psv_saver_add_descr(
                        saver, bkey, buf, arr.nbytes, descr_of(arr.dtype).encode(), shape, arr.ndim, fortran
                    ),
                    f"psv_saver_add_descr({key!r})",
                )
        if threads or fsync:
            opts = lib.psv_save_options_new()
            if opts == ffi.NULL:
                raise MemoryError("psv_save_options_new")
            _check(lib.psv_save_options_set_threads(opts, threads), "psv_save_options_set_threads")
            _check(lib.psv_save_options_set_fsync(opts, fsync), "psv_save_options_set_fsync")
        _check(lib.psv_saver_save(saver, os.fsencode(path), opts), "psv_saver_save")
    finally:
        lib.psv_save_options_free(opts)
        lib.psv_saver_free(saver)
        del keep


# --- restore ---------------------------------------------------------------------------------


class Archive:
    """A restored .npz: a mapping key -> numpy array viewing the archive's one aligned block."""

    def __init__(self, handle):
        self._h = ffi.gc(handle, lib.psv_free)  # psv_free when the last reference goes

    def __len__(self) -> int:
        return lib.psv_archive_count(self._h)

    def keys(self) -> list[str]:
        return [ffi.string(lib.psv_archive_key(self._h, i)).decode() for i in range(len(self))]

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key) -> bool:
        return self.index(key, missing_ok=True) is not None

    def index(self, key: str, missing_ok: bool = False):
        out = ffi.new("size_t *")
        st = lib.psv_archive_find(self._h, str(key).encode("utf-8"), out)
        if st == C.PSV_ERR_NOT_FOUND and missing_ok:
            return None
        _check(st, f"psv_archive_find({key!r})")
        return out[0]

    def address(self, i: int) -> int:
        """The data address of array `i` (64-byte aligned)."""
        return int(ffi.cast("uintptr_t", lib.psv_archive_data(self._h, i)))

    def block(self) -> tuple[int, int]:
        """(address, length) of the block holding every array."""
        n = ffi.new("size_t *")
        p = lib.psv_archive_block(self._h, n)
        return int(ffi.cast("uintptr_t", p)), n[0]

    def skipped(self) -> list[str]:
        h = self._h
        return [ffi.string(lib.psv_archive_skipped_name(h, i)).decode() for i in range(lib.psv_archive_skipped_count(h))]

    def array(self, i: int, writable: bool = False) -> np.ndarray:
        """Array `i` as a numpy view into the block (no copy). Read-only unless `writable`."""
        h = self._h
        if i >= len(self):
            raise IndexError(i)
        descr = ffi.string(lib.psv_archive_descr(h, i)).decode()
        code = lib.psv_archive_dtype(h, i)
        dtype = _DTYPE_OF.get(code) or dtype_from_descr(descr)
        ndim = lib.psv_archive_ndim(h, i)
        shape_p = lib.psv_archive_shape(h, i)
        shape = tuple(shape_p[d] for d in range(ndim))
        order = "F" if lib.psv_archive_fortran_order(h, i) else "C"
        nbytes = lib.psv_archive_nbytes(h, i)
        if nbytes == 0 or dtype.itemsize == 0:
            return np.zeros(shape, dtype=dtype, order=order)
        # A pointer cdata whose destructor holds the archive: the buffer below references it and
        # the ndarray references the buffer, so the block outlives every view into it.
        data = ffi.gc(ffi.cast("char *", lib.psv_archive_data(h, i)), lambda _p, _keep=h: None)
        arr = np.frombuffer(ffi.buffer(data, nbytes), dtype=dtype).reshape(shape, order=order)
        arr.flags.writeable = writable
        return arr

    def __getitem__(self, key: str) -> np.ndarray:
        return self.array(self.index(key))

    def items(self):
        return [(k, self.array(i)) for i, k in enumerate(self.keys())]


def restore(path, *, threads: int = 0, verify_crc: bool = True, max_total_bytes: int = 0) -> Archive:
    """Restores the .npz at `path` into one 64-byte-aligned block (see Archive)."""
    opts = lib.psv_restore_options_new()
    if opts == ffi.NULL:
        raise MemoryError("psv_restore_options_new")
    try:
        _check(lib.psv_restore_options_set_threads(opts, threads), "psv_restore_options_set_threads")
        _check(lib.psv_restore_options_set_verify_crc(opts, verify_crc), "psv_restore_options_set_verify_crc")
        _check(lib.psv_restore_options_set_limits(opts, max_total_bytes, 0, 0), "psv_restore_options_set_limits")
        out = ffi.new("psv_archive **")
        st = lib.psv_restore(os.fsencode(path), opts, out)
        if st != C.PSV_OK:
            message = _last_error()
            assert out[0] == ffi.NULL, "psv_restore must set *out to NULL on failure"
            raise PsvError(st, "psv_restore", message)
        return Archive(out[0])
    finally:
        lib.psv_restore_options_free(opts)


# --- demo and self-check ---------------------------------------------------------------------


def _demo_arrays() -> dict:
    rng = np.random.default_rng(20240601)
    points = np.zeros(5, dtype=[("x", "<f4"), ("y", "<f8"), ("tag", "S3")])
    points["x"] = np.arange(5)
    points["y"] = -np.arange(5) / 3
    points["tag"] = [b"a", b"bb", b"ccc", b"", b"e"]
    return {
        "wave": rng.standard_normal(1_000_000),
        "grid": np.arange(300 * 700, dtype=np.int32).reshape(300, 700) * 7 - 100_000,
        "counts": rng.integers(0, 2**16, size=1001, dtype=np.uint16),
        "mask": rng.random((7, 9)) > 0.5,
        "half": np.linspace(-2, 2, 33, dtype=np.float16),
        "phases": (rng.standard_normal(257) + 1j * rng.standard_normal(257)).astype(np.complex64),
        "big": np.array([np.iinfo(np.int64).min, -1, 0, 1, np.iinfo(np.int64).max]),
        "scalar": np.float64(np.pi),  # 0-d
        "empty": np.zeros((0, 5), dtype=np.float32),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "points": points,  # a record
        "words": np.array(["psv", "cffi", "ñandú"]),  # <U5
        "big_endian": np.arange(6, dtype=">i4"),
        "strided": np.arange(40, dtype=np.int16)[::3],  # not contiguous: copied first
        "ünïcode key": np.arange(3, dtype=np.uint8),
    }


def _check_same(name: str, got: np.ndarray, want: np.ndarray) -> None:
    want = np.asarray(want)
    if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
        raise AssertionError(f"{name}: got {got.dtype} {got.shape}, want {want.dtype} {want.shape}")


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1] if len(argv) > 1 else REPO / "build" / "cffi")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"libpsv {ffi.string(lib.psv_version()).decode()} via cffi {cffi.__version__} (ABI mode), numpy {np.__version__}")

    # Both ways of building the cdef declare the same functions.
    stripped = cffi.FFI()
    stripped.cdef(cdef_by_stripping(_header_text))
    lib2 = stripped.dlopen(LIBRARY)
    for name in re.findall(r"\b(psv_[a-z0-9_]+)\s*\(", cdef_by_stripping(_header_text)):
        getattr(lib2, name)

    arrays = _demo_arrays()
    path = out_dir / "cffi_demo.npz"
    save(path, arrays, threads=2)

    # 1. numpy reads what psv wrote.
    with np.load(path) as z:
        for k, v in arrays.items():
            _check_same(f"np.load[{k}]", z[k], v)

    # 2. psv restores it: views into one block, every array 64-byte aligned, every value right.
    a = restore(path, threads=2)
    assert sorted(a.keys()) == sorted(arrays), a.keys()
    block_at, block_len = a.block()
    for i, k in enumerate(a.keys()):
        got = a.array(i)
        _check_same(f"restore[{k}]", got, arrays[k])
        addr = a.address(i)
        assert addr % 64 == 0, f"{k}: data at {addr:#x} is not 64-byte aligned"
        assert block_at <= addr <= block_at + block_len, f"{k}: outside the block"
        if got.nbytes:  # zero-copy: the ndarray's memory is the archive's
            assert got.__array_interface__["data"][0] == addr, f"{k}: not a view"
            assert not got.flags.writeable
    assert a["wave"].base is not None

    # 3. The views keep the block alive after the Archive object is gone.
    wave = a["wave"]
    del a
    _check_same("wave after del", wave, arrays["wave"])

    # 4. psv restores what numpy wrote (compressed too).
    np_path = out_dir / "cffi_numpy.npz"
    numeric = {k: v for k, v in arrays.items() if k not in ("strided",)}
    np.savez_compressed(np_path, **numeric)
    b = restore(np_path)
    for k, v in numeric.items():
        _check_same(f"numpy-written[{k}]", b[k], v)

    # 5. Errors come back as PsvError with the status and the library's message.
    try:
        restore(out_dir / "no_such_file")
        raise AssertionError("restoring a missing file did not fail")
    except PsvError as e:
        assert e.status == C.PSV_ERR_IO == PSV_ERR_IO == lib.PSV_ERR_IO, e  # noqa: F821 (module constant)
        assert "no_such_file" in e.message, e.message
        print(f"expected error: {e}")
    try:
        save(out_dir / "dup", {"": np.zeros(1)})
        raise AssertionError("an empty key was accepted")
    except PsvError as e:
        assert e.status == C.PSV_ERR_INVALID_ARG, e

    for k in ("wave", "grid", "points", "fortran"):
        v = b[k]
        print(f"  {k:8s} {v.dtype.str if v.dtype.fields is None else 'record':7s} shape {v.shape}")
    print(f"cffi: {len(arrays)} arrays saved and restored zero-copy; values, dtypes, shapes, alignment OK")
    for p in (path, np_path):
        p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
