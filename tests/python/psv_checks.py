"""Assertion helpers shared by the libpsv Python tests."""

from __future__ import annotations

import ctypes
import zipfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from make_fixtures import split_npy

BIG_HEADER = 2**40  # max_header_size for np.load: v2.0 / 600-field headers must load


def data_ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def raw_bytes(a: np.ndarray) -> bytes:
    """The array's memory, byte for byte (padding included). a must be contiguous."""
    assert a.flags.c_contiguous or a.flags.f_contiguous, "raw_bytes needs a contiguous array"
    return ctypes.string_at(data_ptr(a), a.nbytes) if a.nbytes else b""


def logical_bytes(a: np.ndarray) -> List[bytes]:
    """Field-by-field C-order contents, ignoring padding bytes (numpy does not preserve those
    through np.load into a fresh array)."""
    if a.dtype.names is None:
        return [a.tobytes(order="C")]
    out: List[bytes] = []
    for name in a.dtype.names:
        out.extend(logical_bytes(a[name]))
    return out


def fortran_flag(a: np.ndarray) -> bool:
    """numpy's rule for fortran_order."""
    return bool(a.flags.f_contiguous and not a.flags.c_contiguous)


def assert_matches_header(got: np.ndarray, header: dict, raw: bytes, what: str) -> None:
    """got has exactly the dtype, shape, memory order and bytes a .npy header + data describe."""
    dt: np.dtype = header["dtype"]
    assert got.dtype == dt, f"{what}: dtype {got.dtype!r} != {dt!r}"
    assert got.dtype.descr == dt.descr, f"{what}: descr {got.dtype.descr!r} != {dt.descr!r}"
    assert got.dtype.itemsize == dt.itemsize, f"{what}: itemsize"
    assert got.shape == tuple(header["shape"]), f"{what}: shape {got.shape} != {header['shape']}"
    if header["fortran_order"]:
        assert got.flags.f_contiguous, f"{what}: expected Fortran order"
    else:
        assert got.flags.c_contiguous, f"{what}: expected C order"
    n = got.nbytes
    assert len(raw) >= n, f"{what}: reference payload too short"
    assert raw_bytes(got) == raw[:n], f"{what}: data bytes differ"


def assert_same_as_numpy(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """got equals what np.load returned: dtype, shape, order, every field's bytes."""
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype!r} != numpy {ref.dtype!r}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != numpy {ref.shape}"
    assert fortran_flag(got) == fortran_flag(ref), f"{what}: memory order differs from numpy"
    assert logical_bytes(got) == logical_bytes(ref), f"{what}: values differ from numpy"


def zip_reference(path: Path) -> Tuple[List[Tuple[str, dict, bytes]], List[str]]:
    """Read an archive with zipfile (CRC-checked): ([(key, header, data bytes)], skipped names)
    in central-directory order, classifying members the way numpy's NpzFile does."""
    arrays: List[Tuple[str, dict, bytes]] = []
    skipped: List[str] = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            payload = z.read(info)
            if info.filename.endswith(".npy") and payload[:6] == b"\x93NUMPY":
                header, _, data = split_npy(payload)
                arrays.append((info.filename[: -len(".npy")], header, data))
            else:
                skipped.append(info.filename)
    return arrays, skipped


def assert_restored_like_zip(got: Dict[str, np.ndarray], path: Path, *, numpy_too: bool = True) -> None:
    """Full check of a restore result against zipfile + the npy headers (+ np.load)."""
    arrays, skipped = zip_reference(path)
    assert list(got.keys()) == [k for k, _, _ in arrays], "keys / central-directory order"
    assert sorted(getattr(got, "skipped", [])) == sorted(skipped), "skipped member names"
    for key, header, data in arrays:
        assert_matches_header(got[key], header, data, key)
    if numpy_too:
        with np.load(path, allow_pickle=False, max_header_size=BIG_HEADER) as f:
            for key, _, _ in arrays:
                assert_same_as_numpy(got[key], f[key], key)


def assert_one_aligned_block(psv, got: Dict[str, np.ndarray]) -> None:
    """Every array is 64-byte aligned, inside the same single block, and no two overlap."""
    blocks = {id(psv.block_of(a)) for a in got.values()}
    assert len(blocks) <= 1, "arrays do not share one block"
    if not got:
        return
    block = psv.block_of(next(iter(got.values())))
    assert block is not None
    lo, hi = block.address, block.address + block.nbytes
    spans = []
    for key, a in got.items():
        p = data_ptr(a)
        assert p % 64 == 0, f"{key}: data pointer 0x{p:x} not 64-byte aligned"
        assert lo <= p and p + a.nbytes <= hi, f"{key}: [0x{p:x}, +{a.nbytes}) outside block [0x{lo:x}, 0x{hi:x})"
        if a.nbytes:
            spans.append((p, p + a.nbytes, key))
    spans.sort()
    for (s0, e0, k0), (s1, e1, k1) in zip(spans, spans[1:]):
        assert e0 <= s1, f"{k0} and {k1} overlap"


def expect_status(excinfo, names: Sequence[str]) -> None:
    err = excinfo.value
    assert err.status_name in names, f"got {err.status_name} ({err.message!r}), expected one of {names}"
