"""Array catalog and .npz edge-case generators for the libpsv Python tests.

Everything is produced with numpy 2.4.6, CPython's zipfile, or the small ZIP
writer below (for files zipfile refuses to write: duplicate names, name
mismatches, bad CRCs, hand-made .npy headers ...).  See /work/shared/FORMAT.md
section 8 for the list this follows (edge numbers are given in the docstrings).

Run as a script to write every fixture into a directory for inspection:
    python tests/python/make_fixtures.py OUTDIR
"""

from __future__ import annotations

import io
import struct
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# ---------------------------------------------------------------------------
# Array catalog
# ---------------------------------------------------------------------------


def _rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


def record_dtypes() -> Dict[str, np.dtype]:
    """Structured dtypes numpy can write (dtype.descr must exist)."""
    return {
        "rec_simple": np.dtype([("a", "<i4"), ("b", "<f8", (2,))]),
        "rec_nested": np.dtype([("p", [("x", "<f4"), ("y", "<f4")]), ("n", "<i2")]),
        "rec_titles": np.dtype(
            {"names": ["a", "b"], "formats": ["<i4", "<f4"], "titles": ["Title A", "T b"]}
        ),
        "rec_aligned": np.dtype([("a", "u1"), ("b", "<f8"), ("c", "<i2")], align=True),
        "rec_trailing_pad": np.dtype({"names": ["a"], "formats": ["<i4"], "itemsize": 12}),
        "rec_subarray": np.dtype([("m", "<f4", (2, 3)), ("s", "S3", (2,))]),
        "rec_mixed": np.dtype(
            [("be", ">i4"), ("u", "<U3"), ("t", "<M8[ms]"), ("flag", "?"), ("c", ">c8")]
        ),
        "rec_quote_name": np.dtype([("it's", "<i4"), ('say "hi"', "<i2")]),
        "rec_latin1_e": np.dtype([("é", "<f8")]),
        "rec_utf8_zh": np.dtype([("中", "<f8"), ("x", "<i4")]),
        "rec_nested_deep": np.dtype(
            [("o", [("i", [("z", "<u2", (2,)), ("w", "S1")]), ("k", "<f2")]), ("tail", "<i8")]
        ),
    }


def _fill_record(dt: np.dtype, shape: Tuple[int, ...]) -> np.ndarray:
    """Deterministic contents for a structured array (padding bytes zero)."""
    n = int(np.prod(shape))
    raw = np.frombuffer(_rng().bytes(n * dt.itemsize), dtype=np.uint8).copy()
    arr = np.zeros(shape, dtype=dt)
    # Write field by field so padding stays zero and floats stay finite.
    flat = arr.reshape(-1)
    for i, name in enumerate(dt.names):
        fdt = dt.fields[name][0]
        base = fdt.base if fdt.subdtype is not None else fdt
        count = flat[name].size
        if base.names is not None:
            flat[name] = _fill_record(fdt, (n,)) if fdt.subdtype is None else flat[name]
        elif base.kind in "iub":
            flat[name] = (np.arange(count).reshape(flat[name].shape) * (i + 3)) % 100
        elif base.kind in "fc":
            flat[name] = (np.arange(count).reshape(flat[name].shape) + 0.25) * (i + 1)
        elif base.kind == "M":
            flat[name] = np.datetime64("2024-01-01T00:00:00.000") + np.arange(count).reshape(
                flat[name].shape
            ).astype("m8[s]")
        elif base.kind in "SU":
            flat[name] = np.array([f"{j % 7}x" for j in range(count)]).reshape(flat[name].shape)
        else:
            flat[name] = raw[: flat[name].nbytes].view(flat[name].dtype).reshape(flat[name].shape)
    return arr


def clean_longdouble(a: np.ndarray) -> np.ndarray:
    """Zero the padding bytes of x87 80-bit long doubles (6 per 16-byte value) in place, so two
    arrays with equal values have equal bytes (numpy leaves that padding uninitialised)."""
    if a.dtype.kind in "fc" and a.dtype.itemsize in (16, 32) and np.finfo(np.longdouble).nmant == 63:
        u = a.reshape(-1, order="A").view(np.uint8).reshape(-1, 16)
        u[:, 10:] = 0
    return a


def sample_arrays() -> Dict[str, np.ndarray]:
    """name -> array covering every dtype family, order and shape class numpy can save."""
    out: Dict[str, np.ndarray] = {}
    # numeric, all sizes
    for code in "?bhilqBHILQefdgFDG":
        dt = np.dtype(code)
        if dt.kind == "b":
            a = (np.arange(12) % 3 == 0).reshape(3, 4)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            lo, hi = int(info.min), int(info.max)
            vals = [lo, hi, 0, 1, hi // 3, hi // 7, lo // 5, 2, 3, hi - 1, lo + 1, 42]
            a = np.array([min(max(v, lo), hi) for v in vals], dtype=dt).reshape(3, 4)
        elif dt.kind == "f":
            # zeros first: long double has padding bytes that assignment leaves untouched
            a = np.zeros((3, 4), dt)
            a[...] = ((np.arange(12, dtype=np.float64) - 5.5) / 3).reshape(3, 4)
            a[0, 0] = np.inf
            a[0, 1] = -0.0
            a[0, 2] = np.nan
        else:
            a = np.zeros((3, 4), dt)
            a[...] = ((np.arange(12) - 5.5) / 3 + 1j * np.arange(12)).reshape(3, 4)
        out[f"num_{dt.str.replace('<', 'le').replace('|', 'na').replace('>', 'be')}"] = clean_longdouble(a)
    out["num_i8_1d_large_values"] = np.array([-(2**63), 2**63 - 1, 0, -1], dtype="<i8")
    out["num_u8_max"] = np.array([2**64 - 1, 0], dtype="<u8")
    # strings / void
    out["S7"] = np.array([b"a", b"bc", b"", b"1234567", b"\x00\xff"], dtype="S7")
    out["S1_2d"] = np.array([[b"x", b"y"], [b"z", b""]], dtype="S1")
    out["U5"] = np.array(["a", "éé", "中文", "🎉x", ""], dtype="<U5")
    out["U1_be"] = np.array(["q", "é"], dtype=">U1")
    out["V3"] = np.frombuffer(bytes(range(12)), dtype="V3").copy()
    out["V8"] = np.frombuffer(bytes(range(200, 232)), dtype="V8").copy()
    # datetime / timedelta: every unit, generic, multiples
    for unit in ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]:
        out[f"M8_{unit}"] = (np.arange(5) * 3 - 4).astype(f"M8[{unit}]")
        out[f"m8_{unit}"] = (np.arange(5) * 7 - 11).astype(f"m8[{unit}]")
    out["M8_generic"] = np.array(["NaT", "NaT", "NaT"], dtype="M8")
    out["m8_generic"] = np.array([1, -2, 3], dtype="m8")
    out["M8_25s"] = np.arange(4).astype("M8[25s]")
    out["M8_with_NaT"] = np.array(["2020-01-01", "NaT"], dtype="M8[D]")
    # big-endian
    for s in [">f8", ">i2", ">U2", ">c16", ">u4", ">M8[ns]", ">f2", ">i8", ">f4", ">m8[us]"]:
        base = np.arange(6) + 1
        if s.startswith(">U"):
            a = np.array(["ab", "é", "", "xy", "中", "z"], dtype=s)
        elif "M8" in s or "m8" in s:
            a = base.astype(s)
        else:
            a = (base * 1.5 if s[1] in "fc" else base).astype(s)
        out["be_" + s[1:].replace("[", "_").replace("]", "")] = a
    # records
    for name, dt in record_dtypes().items():
        out[name] = _fill_record(dt, (5,))
    out["rec_2d"] = _fill_record(record_dtypes()["rec_simple"], (2, 3))
    # 0-d
    out["zerod_f8"] = np.array(3.25)
    out["zerod_f2"] = np.array(1.5, dtype="<f2")
    out["zerod_S2"] = np.array(b"hi", dtype="S2")
    out["zerod_U3"] = np.array("中é", dtype="<U3")
    out["zerod_M8D"] = np.array("2024-02-29", dtype="M8[D]")
    out["zerod_bool"] = np.array(True)
    out["zerod_c16"] = np.array(1 - 2j)
    out["zerod_rec"] = _fill_record(record_dtypes()["rec_simple"], ())
    out["zerod_be"] = np.array(7, dtype=">i4")
    # zero-size and itemsize 0
    out["empty_f8_0"] = np.zeros((0,), "<f8")
    out["empty_f8_3x0"] = np.zeros((3, 0), "<f8")
    out["empty_f8_0x0x5"] = np.zeros((0, 0, 5), "<f8")
    out["empty_U3"] = np.zeros((0,), "<U3")
    out["empty_rec"] = np.zeros((0, 2), record_dtypes()["rec_simple"])
    out["itemsize0_3"] = np.zeros((3,), np.dtype([]))
    out["itemsize0_0"] = np.zeros((0,), np.dtype([]))
    out["itemsize0_2x2"] = np.zeros((2, 2), np.dtype([]))
    out["itemsize0_zerod"] = np.zeros((), np.dtype([]))
    out["empty_F_0x3"] = np.zeros((0, 3), "<f8", order="F")
    # Fortran order
    out["F_f8_2d"] = np.asfortranarray(np.arange(12, dtype="<f8").reshape(3, 4))
    out["F_i2_3d"] = np.asfortranarray(np.arange(24, dtype="<i2").reshape(2, 3, 4))
    out["F_bool"] = np.asfortranarray((np.arange(12) % 2 == 0).reshape(4, 3))
    out["F_be_f4"] = np.asfortranarray(np.arange(12, dtype=">f4").reshape(3, 4))
    out["F_U2"] = np.asfortranarray(np.array([["a", "bb"], ["中", "é"], ["", "z"]], dtype="<U2"))
    out["F_c8"] = np.asfortranarray((np.arange(35) + 1j).astype("<c8").reshape(5, 7))
    out["F_rec"] = np.asfortranarray(_fill_record(record_dtypes()["rec_simple"], (3, 4)))
    out["F_transpose"] = np.arange(20, dtype="<u4").reshape(4, 5).T
    out["F_M8"] = np.asfortranarray(np.arange(6).astype("M8[s]").reshape(2, 3))
    f16 = np.zeros((2, 3), np.longdouble, order="F")
    f16[...] = np.arange(6).reshape(2, 3)
    out["F_f16"] = clean_longdouble(f16)
    # non-contiguous views (written in C order, fortran_order False)
    base = np.arange(48, dtype="<i4").reshape(6, 8)
    out["strided_1d"] = np.arange(20, dtype="<f8")[::2]
    out["strided_cols"] = base[:, ::2]
    out["strided_neg"] = np.arange(10, dtype="<i2")[::-1]
    out["strided_T_slice"] = base.T[::2]
    out["strided_broadcast"] = np.broadcast_to(np.arange(3, dtype="<f4"), (4, 3))
    out["strided_be"] = np.arange(20, dtype=">i8")[1::3]
    out["strided_rec_field"] = _fill_record(record_dtypes()["rec_simple"], (6,))["b"]
    out["strided_U"] = np.array(["ab", "cd", "ef", "gh"], dtype="<U2")[::2]
    # odd corners
    out["itemsize0_huge_shape"] = np.zeros((2**32 + 1,), np.dtype([]))  # np.save iterates: keep it < 2**34
    out["zero_size_huge_dim"] = np.zeros((0, 2**40), "<f8")
    out["ndim64"] = np.zeros((1,) * 63 + (3,), "<i2")
    out["ndim20"] = np.arange(2**20, dtype="u1").reshape((2,) * 20)
    out["rec_escapes"] = _fill_record(
        np.dtype([("a\nb", "<i4"), ("back\\slash", "<i2"), ("q'\"both", "u1"), ("tab\t", "u1"),
                  ("nul\x00x", "u1"), ("\u00ff\u0100", "u1")]), (3,))
    out["rec_nonbmp"] = _fill_record(np.dtype([("🎉", "<i4")]), (2,))
    out["rec_title_nonascii"] = _fill_record(
        np.dtype({"names": ["a"], "formats": ["<i4"], "titles": ["é title"]}), (2,))
    out["rec_be_all"] = _fill_record(np.dtype(">i4,>f8,>U2"), (3,))
    out["U_long"] = np.array(["x" * 1000, "中" * 3], dtype="<U1000")
    buf = bytearray(8 * 10 + 1)
    unaligned = np.frombuffer(buf, dtype="<f8", offset=1)
    unaligned[:] = np.arange(10) * 1.25
    out["unaligned_source"] = unaligned
    out["readonly_source"] = np.frombuffer(b"abcdefgh", dtype="<u2")
    return out


def unicode_keys() -> List[str]:
    """Keys that exercise UTF-8 names, '/', spaces and '.npy'-lookalikes (edge 39)."""
    return ["中文", "café", "emoji🎉", "a/b", "dir/sub/deep", "with space", " lead", "x.NPY",
            "dots.in.name", "a.npy", "trailing.npy.npy", "Ω≈ç√"]


# ---------------------------------------------------------------------------
# Reference helpers
# ---------------------------------------------------------------------------


def npy_bytes(arr: np.ndarray) -> bytes:
    """Exactly what np.save writes for arr (header + data)."""
    bio = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.save(bio, arr, allow_pickle=False)
    return bio.getvalue()


def split_npy(payload: bytes) -> Tuple[dict, int, bytes]:
    """(header dict, data offset within payload, data bytes after the header) of a .npy payload."""
    from numpy.lib import _format_impl as fmt

    fp = io.BytesIO(payload)
    version = fmt.read_magic(fp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shape, fortran, dtype = fmt._read_array_header(fp, version, max_header_size=2**40)
    off = fp.tell()
    return {"shape": shape, "fortran_order": fortran, "dtype": dtype, "version": version}, off, payload[off:]


# ---------------------------------------------------------------------------
# A small, fully controllable ZIP writer
# ---------------------------------------------------------------------------


@dataclass
class Member:
    """One ZIP entry for :func:`write_zip`.  Sizes and CRC default to the real ones."""

    name: str
    payload: bytes
    method: int = 0  # 0 stored, 8 deflate
    local_name: Optional[str] = None  # LFH name when it should differ from the CD name
    crc: Optional[int] = None  # central CRC override
    local_crc: Optional[int] = None  # local CRC override
    flags: int = 0
    data_descriptor: Optional[str] = None  # None, "sig" or "nosig"
    local_extra: bytes = b""
    central_extra: bytes = b""
    align: Optional[int] = None  # add a 0xA11E local extra so the payload starts at a multiple


def a11e_extra(pad_total: int, alignment: int = 64) -> bytes:
    """0xA11E data-stream-alignment extra field of exactly pad_total (>= 6) bytes."""
    assert pad_total >= 6
    return struct.pack("<HHH", 0xA11E, pad_total - 4, alignment) + b"\0" * (pad_total - 6)


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def write_zip(
    path: Path,
    members: Sequence[Member],
    *,
    comment: bytes = b"",
    cd_order: Optional[Sequence[int]] = None,
    zip64: bool = False,
    zip64_offset_only: bool = False,
) -> Path:
    """Write members as a ZIP archive.

    zip64=True: every size and offset is a sentinel with a ZIP64 extra (local: sizes;
    central: usize, csize, offset) plus a ZIP64 EOCD and locator (edge 30).
    zip64_offset_only=True: only the central offset is a sentinel and the central
    extra holds just the offset (edge 31).
    """
    out = bytearray()
    central: List[bytes] = []
    for m in members:
        name = m.name.encode("utf-8")
        lname = (m.local_name if m.local_name is not None else m.name).encode("utf-8")
        flags = m.flags | (0x800 if any(b > 127 for b in name) else 0)
        if m.data_descriptor:
            flags |= 0x08
        comp = m.payload if m.method == 0 else _deflate(m.payload)
        real_crc = zlib.crc32(m.payload)
        crc_c = real_crc if m.crc is None else m.crc
        crc_l = real_crc if m.local_crc is None else m.local_crc
        usize, csize = len(m.payload), len(comp)
        offset = len(out)
        lextra = m.local_extra
        if zip64:
            lextra = struct.pack("<HHQQ", 1, 16, usize, csize) + lextra
        if m.align:
            start = offset + 30 + len(lname) + len(lextra)
            pad = (-start) % m.align
            while pad < 6:
                pad += m.align
            lextra = lextra + a11e_extra(pad, m.align)
        if m.data_descriptor:
            l_crc, l_cs, l_us = 0, 0, 0
        elif zip64:
            l_crc, l_cs, l_us = crc_l, 0xFFFFFFFF, 0xFFFFFFFF
        else:
            l_crc, l_cs, l_us = crc_l, csize, usize
        version_needed = 45 if zip64 else 20
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, version_needed, flags, m.method, 0, 0x21,
            l_crc, l_cs, l_us, len(lname), len(lextra),
        )
        out += lname + lextra + comp
        if m.data_descriptor == "sig":
            out += struct.pack("<IIII", 0x08074B50, crc_l, csize, usize)
        elif m.data_descriptor == "nosig":
            out += struct.pack("<III", crc_l, csize, usize)
        cextra = m.central_extra
        c_cs, c_us, c_off = csize, usize, offset
        if zip64:
            cextra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset) + cextra
            c_cs = c_us = c_off = 0xFFFFFFFF
        elif zip64_offset_only:
            cextra = struct.pack("<HHQ", 1, 8, offset) + cextra
            c_off = 0xFFFFFFFF
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 45, version_needed, flags,
                m.method, 0, 0x21, crc_c, c_cs, c_us, len(name), len(cextra), 0, 0, 0,
                0o100644 << 16, c_off,
            )
            + name
            + cextra
        )
    order = list(cd_order) if cd_order is not None else list(range(len(members)))
    cd_offset = len(out)
    for i in order:
        out += central[i]
    cd_size = len(out) - cd_offset
    n = len(order)
    if zip64:
        z64_off = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, n, n, cd_size, cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64_off, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment))
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_offset, len(comment))
    out += comment
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


def raw_npy(header_text: str, data: bytes, *, version: Tuple[int, int] = (1, 0),
            encoding: str = "latin1", pad: bool = True) -> bytes:
    """A hand-made .npy payload.  pad=True pads like numpy (total % 64 == 0, final '\\n');
    pad=False uses header_text verbatim (it should end in '\\n')."""
    text = header_text.encode(encoding)
    lenfmt = "<H" if version[0] == 1 else "<I"
    pre = 8 + struct.calcsize(lenfmt)
    if pad:
        text = text + b" " * (64 - ((pre + len(text) + 1) % 64)) + b"\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack(lenfmt, len(text)) + text + data


def local_data_start(path: Path, info: zipfile.ZipInfo) -> int:
    """File offset where the member's (stored) payload starts, from its local header."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        lfh = f.read(30)
    assert lfh[:4] == b"PK\x03\x04", "bad local header signature"
    n, e = struct.unpack("<HH", lfh[26:30])
    return info.header_offset + 30 + n + e


def array_data_offsets(path: Path) -> Dict[str, int]:
    """member name -> file offset of its array data (payload start + npy header length)."""
    res: Dict[str, int] = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            start = local_data_start(path, info)
            with open(path, "rb") as f:
                f.seek(start)
                head = f.read(12)
            assert head[:6] == b"\x93NUMPY", f"{info.filename}: no npy magic"
            if head[6] == 1:
                hl = 10 + struct.unpack("<H", head[8:10])[0]
            else:
                hl = 12 + struct.unpack("<I", head[8:12])[0]
            res[info.filename] = start + hl
    return res


def _flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    b = bytearray(path.read_bytes())
    b[offset] ^= 1 << bit
    path.write_bytes(bytes(b))


def _eocd(path: Path) -> Tuple[int, int, int, int]:
    """(count, cd_size, cd_offset, eocd_pos) of a comment-less, non-zip64 archive."""
    b = path.read_bytes()
    pos = len(b) - 22
    sig, _, _, _, count, cd_size, cd_off, _ = struct.unpack("<IHHHHIIH", b[pos:])
    assert sig == 0x06054B50
    return count, cd_size, cd_off, pos


class _NonSeekable(io.RawIOBase):
    """A write-only stream without tell/seek, so zipfile writes data descriptors."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.buf += bytes(b)
        return len(b)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise OSError("not seekable")


# ---------------------------------------------------------------------------
# Edge-case fixtures (FORMAT.md section 8).  Each takes a directory, returns the path.
# ---------------------------------------------------------------------------


def basic_arrays() -> Dict[str, np.ndarray]:
    return {
        "x": np.linspace(0, 1, 11),
        "i": np.arange(-5, 5, dtype="<i4").reshape(2, 5),
        "b": np.array([True, False, True]),
    }


def fx_savez_basic(d: Path) -> Path:
    """01: kw x,i,b + one positional; keys x,i,b,arr_0; data unaligned."""
    p = d / "01_savez_basic.npz"
    np.savez(p, np.arange(7, dtype="<u2"), **basic_arrays())
    return p


def fx_savez_compressed_basic(d: Path) -> Path:
    """02: raw deflate."""
    p = d / "02_savez_compressed_basic.npz"
    np.savez_compressed(p, np.arange(7, dtype="<u2"), **basic_arrays())
    return p


def fx_empty_archive(d: Path) -> Path:
    """15: np.savez(f) -> 22-byte EOCD-only file."""
    p = d / "15_empty_archive.npz"
    np.savez(p)
    return p


def fx_data_descriptor(d: Path, compressed: bool) -> Path:
    """16/17: savez to a non-seekable stream: flag 0x08, zero local CRC, data descriptors."""
    s = _NonSeekable()
    (np.savez_compressed if compressed else np.savez)(s, **basic_arrays(), big=np.arange(5000.0))
    p = d / ("17_data_descriptor_compressed.npz" if compressed else "16_data_descriptor_stored.npz")
    p.write_bytes(bytes(s.buf))
    return p


def fx_prefixed_junk(d: Path) -> Path:
    """18: 72 junk bytes in front of an npz, offsets not adjusted."""
    src = fx_savez_basic(d)
    p = d / "18_prefixed_junk.npz"
    p.write_bytes(b"J" * 72 + src.read_bytes())
    return p


def fx_comment(d: Path, with_sig: bool) -> Path:
    """19a: archive comment; 19b: a comment that contains PK\\x05\\x06."""
    p = d / ("19b_comment_contains_eocd_sig.npz" if with_sig else "19a_archive_comment.npz")
    np.savez(p, **basic_arrays())
    with zipfile.ZipFile(p, "a") as z:
        z.comment = (b"note PK\x05\x06 inside, and more text" if with_sig else b"a plain comment")
    return p


def fx_crc_corrupt_stored(d: Path) -> Tuple[Path, int]:
    """20: one bit flipped in stored array data. Returns (path, byte index into x's data)."""
    p = d / "20_crc_corrupt_stored.npz"
    np.savez(p, x=np.arange(1000, dtype="<i8"), y=np.ones(3))
    off = array_data_offsets(p)["x.npy"]
    _flip_bit(p, off + 100, 3)
    return p, 100


def fx_crc_corrupt_deflated(d: Path) -> Path:
    """21: one bit flipped in the middle of a deflate stream."""
    p = d / "21_crc_corrupt_deflated.npz"
    np.savez_compressed(p, x=(np.arange(20000) % 251).astype("<i8"))
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("x.npy")
    start = local_data_start(p, info)
    _flip_bit(p, start + info.compress_size // 2, 5)
    return p


def fx_central_crc_wrong(d: Path) -> Path:
    """22: CRC in the central directory altered."""
    p = d / "22_central_crc_wrong.npz"
    np.savez(p, x=np.arange(10.0))
    _, _, cd_off, _ = _eocd(p)
    b = bytearray(p.read_bytes())
    b[cd_off + 16] ^= 0xFF
    p.write_bytes(bytes(b))
    return p


def fx_local_crc_wrong(d: Path) -> Path:
    """23: CRC in the local header altered (ignored by readers)."""
    p = d / "23_local_crc_wrong.npz"
    np.savez(p, x=np.arange(10.0))
    b = bytearray(p.read_bytes())
    b[14] ^= 0xFF
    p.write_bytes(bytes(b))
    return p


def fx_trailing_bytes(d: Path) -> Path:
    """24: npy payload + 8 extra bytes (CRC covers them)."""
    a = np.arange(6, dtype="<f4").reshape(2, 3)
    return write_zip(d / "24_trailing_bytes_in_member.npz",
                     [Member("a.npy", npy_bytes(a) + b"TRAILING"), Member("b.npy", npy_bytes(a * 2))])


def fx_truncated_member(d: Path) -> Path:
    """25: payload 40 bytes short of header + nbytes (CRC/sizes consistent)."""
    a = np.arange(100, dtype="<f8")
    return write_zip(d / "25_truncated_member.npz", [Member("a.npy", npy_bytes(a)[:-40])])


def _aligned_members() -> List[np.ndarray]:
    return [np.arange(10, dtype="<f8"), np.arange(33, dtype="<i2"), np.ones((3, 5), "<f4")]


def fx_aligned_a11e(d: Path) -> Path:
    """26: our layout: ZIP64 local extra + 0xA11E padding, local only."""
    ms = []
    for i, a in enumerate(_aligned_members()):
        ms.append(Member(f"m{i}.npy", npy_bytes(a), align=64,
                         local_extra=struct.pack("<HHQQ", 1, 16, a.nbytes, a.nbytes)))
    return write_zip(d / "26_aligned_a11e_local_only.npz", ms)


def fx_aligned_d935(d: Path) -> Path:
    """27: Android 0xD935 padding field."""
    ms = []
    off = 0
    for i, a in enumerate(_aligned_members()):
        name = f"m{i}.npy"
        payload = npy_bytes(a)
        pad = (-(off + 30 + len(name) + 4)) % 64
        extra = struct.pack("<HH", 0xD935, pad) + b"\0" * pad
        ms.append(Member(name, payload, local_extra=extra))
        off += 30 + len(name) + len(extra) + len(payload)
    return write_zip(d / "27_aligned_d935.npz", ms)


def fx_aligned_raw_zero(d: Path) -> Path:
    """28: local extra = raw zero bytes (not even a valid extra record)."""
    ms = []
    off = 0
    for i, a in enumerate(_aligned_members()):
        name = f"m{i}.npy"
        payload = npy_bytes(a)
        pad = (-(off + 30 + len(name))) % 64 or 64
        ms.append(Member(name, payload, local_extra=b"\0" * pad))
        off += 30 + len(name) + pad + len(payload)
    return write_zip(d / "28_aligned_raw_zero_pad.npz", ms)


def fx_aligned_zipinfo_extra(d: Path) -> Path:
    """29: zipfile with ZipInfo.extra: padding in both LFH and CD."""
    p = d / "29_aligned_via_zipinfo_extra.npz"
    with zipfile.ZipFile(p, "w") as z:
        for i, a in enumerate(_aligned_members()):
            name = f"m{i}.npy"
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            start = z.fp.tell() + 30 + len(name)
            pad = (-(start)) % 64
            while pad < 6:
                pad += 64
            zi.extra = a11e_extra(pad)
            z.writestr(zi, npy_bytes(a))
    return p


def fx_zip64_forced(d: Path) -> Path:
    """30: every field a sentinel + ZIP64 EOCD, tiny file."""
    return write_zip(d / "30_zip64_forced_everything.npz",
                     [Member(f"m{i}.npy", npy_bytes(a)) for i, a in enumerate(_aligned_members())],
                     zip64=True)


def fx_zip64_offset_only(d: Path) -> Path:
    """31: central extra holds only the offset."""
    return write_zip(d / "31_zip64_offset_only.npz",
                     [Member(f"m{i}.npy", npy_bytes(a)) for i, a in enumerate(_aligned_members())],
                     zip64_offset_only=True)


def fx_cd_order_reversed(d: Path) -> Path:
    """32: central directory order differs from file order."""
    arrs = _aligned_members()
    return write_zip(d / "32_cd_order_reversed.npz",
                     [Member(f"m{i}.npy", npy_bytes(a)) for i, a in enumerate(arrs)],
                     cd_order=list(reversed(range(len(arrs)))))


def fx_dd_no_signature(d: Path) -> Path:
    """33: flag bit 3, 12-byte data descriptor without signature."""
    arrs = _aligned_members()
    return write_zip(d / "33_data_descriptor_no_signature.npz",
                     [Member(f"m{i}.npy", npy_bytes(a), data_descriptor="nosig") for i, a in enumerate(arrs)])


def fx_other_method(d: Path, method: int) -> Path:
    """34/35: bzip2 (12) or lzma (14) member."""
    p = d / f"3{4 if method == zipfile.ZIP_BZIP2 else 5}_method_{method}.npz"
    with zipfile.ZipFile(p, "w", compression=method) as z:
        z.writestr("x.npy", npy_bytes(np.arange(10.0)))
    return p


def fx_encrypted_flag(d: Path) -> Path:
    """Flag bit 0 (encrypted) on a stored member."""
    return write_zip(d / "encrypted_flag.npz", [Member("x.npy", npy_bytes(np.arange(4.0)), flags=1)])


def fx_non_npy_members(d: Path) -> Path:
    """36: readme.txt, dir/, fake.npy (no magic), x.npy."""
    p = d / "36_non_npy_members.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", b"hello")
        z.writestr("dir/", b"")
        z.writestr("fake.npy", b"this is not an npy file at all")
        z.writestr("x.npy", npy_bytes(np.arange(5, dtype="<i4")))
    return p


def fx_duplicate_names(d: Path) -> Path:
    """37: two central entries named a.npy."""
    return write_zip(d / "37_duplicate_names.npz",
                     [Member("a.npy", npy_bytes(np.arange(3.0))), Member("a.npy", npy_bytes(np.arange(4.0)))])


def fx_a_and_a_npy(d: Path) -> Path:
    """38: members 'a.npy' and 'a' (key collision)."""
    return write_zip(d / "38_a_and_a_npy.npz",
                     [Member("a.npy", npy_bytes(np.arange(3.0))), Member("a", npy_bytes(np.arange(4.0)))])


def fx_unicode_keys(d: Path) -> Path:
    """39: np.savez with '中文', 'a/b', 'x.NPY', ... keys."""
    p = d / "39_unicode_slash_keys.npz"
    np.savez(p, **{k: np.arange(i + 1, dtype="<i2") for i, k in enumerate(unicode_keys())})
    return p


def fx_local_name_mismatch(d: Path) -> Path:
    """40: LFH name differs from the CD name."""
    return write_zip(d / "40_local_name_mismatch.npz",
                     [Member("a.npy", npy_bytes(np.arange(3.0)), local_name="b.npy")])


def _hand_header(d: Path, fname: str, text: str, data: bytes, **kw) -> Path:
    return write_zip(d / fname, [Member("h.npy", raw_npy(text, data, **kw))])


def fx_header_python2_L(d: Path) -> Path:
    """41: shape (3L,)."""
    return _hand_header(d, "41_header_python2_L.npz",
                        "{'descr': '<i8', 'fortran_order': False, 'shape': (3L,), }",
                        np.arange(3, dtype="<i8").tobytes())


def fx_header_nonstandard(d: Path) -> Path:
    """42: double quotes, reordered keys, no trailing comma, 80-byte header (data unaligned)."""
    text = '{"shape": (2, 3), "fortran_order": False, "descr": "<f4"}'
    text = text + " " * (80 - 10 - len(text) - 1) + "\n"
    return _hand_header(d, "42_header_nonstandard_text.npz", text,
                        np.arange(6, dtype="<f4").tobytes(), pad=False)


def fx_header_extra_key(d: Path) -> Path:
    """43: a 4th dict key."""
    return _hand_header(d, "43_header_extra_key.npz",
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'extra': 1, }",
                        np.arange(2.0).tobytes())


def fx_negative_shape(d: Path) -> Path:
    """49: shape (-1,)."""
    return _hand_header(d, "49_negative_shape.npz",
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", b"\0" * 8)


def fx_shape_overflow(d: Path) -> Path:
    """50: shape whose byte count overflows 64 bits."""
    return _hand_header(d, "50_shape_overflow.npz",
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 8), }",
                        b"\0" * 8)


def fx_shape_exceeds_payload(d: Path) -> Path:
    """Shape that fits in 64 bits but claims far more bytes than the member holds."""
    return _hand_header(d, "shape_exceeds_payload.npz",
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }",
                        b"\0" * 8)


def fx_bad_descr(d: Path) -> Path:
    """51: descr that is not a dtype."""
    return _hand_header(d, "51_bad_descr.npz",
                        "{'descr': '<q9', 'fortran_order': False, 'shape': (2,), }", b"\0" * 16)


def fx_header_no_newline(d: Path) -> Path:
    """Header without padding or final newline (numpy does not check either)."""
    return _hand_header(d, "header_no_newline.npz",
                        "{'descr': '<f8', 'fortran_order': False, 'shape': (10,)}",
                        np.arange(10.0).tobytes(), pad=False)


def fx_header_whitespace(d: Path) -> Path:
    """Tabs, newlines and odd spacing inside the header dict."""
    return _hand_header(d, "header_whitespace.npz",
                        "{ 'descr' :\t'<f8' ,\n 'fortran_order':False,'shape':( 10 , ) }",
                        np.arange(10.0).tobytes())


def fx_header_fortran(d: Path) -> Path:
    """Hand-made fortran_order True headers: 1-D (same as C) and 3-D."""
    return write_zip(d / "header_fortran.npz", [
        Member("one.npy", raw_npy("{'descr': '<f8', 'fortran_order': True, 'shape': (10,), }",
                                  np.arange(10.0).tobytes())),
        Member("three.npy", raw_npy("{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3, 4), }",
                                    np.arange(24, dtype="<i2").tobytes())),
    ])


def fx_empty_npy_member(d: Path) -> Path:
    """A zero-byte 'h.npy' member (no magic -> skipped; numpy returns b'') next to an array."""
    return write_zip(d / "empty_npy_member.npz",
                     [Member("h.npy", b""), Member("k.npy", npy_bytes(np.arange(10.0)))])


def fx_deflate_trailing(d: Path) -> Path:
    """A deflated member with 100 bytes after the array data."""
    return write_zip(d / "deflate_trailing.npz",
                     [Member("h.npy", npy_bytes(np.arange(10.0)) + b"x" * 100, method=8)])


def fx_eocd_count_too_small(d: Path) -> Path:
    """EOCD says 1 entry but the central directory (by size) holds 2. CPython walks the CD by
    size and sees both; a reader must not silently return a subset."""
    p = write_zip(d / "eocd_count_too_small.npz",
                  [Member("h.npy", npy_bytes(np.arange(10.0))), Member("k.npy", npy_bytes(np.arange(3)))])
    b = bytearray(p.read_bytes())
    struct.pack_into("<HH", b, len(b) - 14, 1, 1)
    p.write_bytes(bytes(b))
    return p


def fx_trailing_bytes_bad_crc(d: Path, method: int) -> Path:
    """Member = npy + 1000 trailing bytes, central CRC right for the npy part only: the CRC
    covers the whole member, so this must be a CRC error (stored and deflated)."""
    npy = npy_bytes(np.arange(10.0))
    tail = bytes(range(250)) * 4
    return write_zip(d / f"trailing_bad_crc_{method}.npz",
                     [Member("h.npy", npy + tail, method=method, crc=zlib.crc32(npy + bytes(len(tail))))])


def fx_cp437_name(d: Path) -> Path:
    """A member name with byte 0x82 and no UTF-8 flag: cp437 'é' (zipfile decodes it so)."""
    p = write_zip(d / "cp437_name.npz", [Member("cafX.npy", npy_bytes(np.arange(3, dtype="<i2")))])
    p.write_bytes(p.read_bytes().replace(b"cafX", b"caf\x82"))
    return p


def fx_object_array(d: Path) -> Path:
    """09: an object array (pickle payload, key objects_here) next to an int array."""
    p = d / "09_object_array.npz"
    np.savez(p, ints=np.arange(3), objects_here=np.array([1, "a", None], dtype=object))
    return p


def fx_stringdtype(d: Path) -> Path:
    """10: numpy 2 StringDType, written as '|O' + pickle."""
    p = d / "10_stringdtype.npz"
    np.savez(p, strings_here=np.array(["a", "bcd"], dtype=np.dtypes.StringDType()))
    return p


def fx_header_v2(d: Path) -> Path:
    """11: 3000-field record -> header v2.0."""
    dt = np.dtype([(f"f{i}", "<f4") for i in range(3000)])
    a = np.zeros(2, dt)
    a["f7"] = [1.5, 2.5]
    a["f2999"] = [-1, 3]
    p = d / "11_header_v2.npz"
    np.savez(p, wide=a)
    return p


def fx_header_v3(d: Path) -> Path:
    """12: field '中' -> header v3.0 (utf-8)."""
    p = d / "12_header_v3_utf8.npz"
    a = np.zeros(3, [("中", "<f8"), ("b", "<i2")])
    a["中"] = [1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.savez(p, zh=a)
    return p


def fx_header_latin1(d: Path) -> Path:
    """13: field 'é' -> v1.0 with raw byte 0xE9."""
    p = d / "13_header_v1_latin1.npz"
    a = np.zeros(3, [("é", "<f8")])
    a["é"] = [1, 2, 3]
    np.savez(p, e=a)
    return p


def fx_header_over_10000(d: Path) -> Path:
    """14: 600 fields, header text > 10000 chars (v1.0)."""
    dt = np.dtype([(f"field_{i:04d}", "<i2") for i in range(600)])
    p = d / "14_header_over_10000.npz"
    a = np.zeros(2, dt)
    a["field_0599"] = [5, 6]
    np.savez(p, many=a)
    return p


def fx_longdouble(d: Path) -> Path:
    """44: '<f16' and '<c32' (x86-64 long double)."""
    p = d / "44_longdouble.npz"
    g = np.zeros(5, np.longdouble)
    g[...] = np.arange(5, dtype=np.longdouble) / 3
    G = np.zeros(3, np.clongdouble)
    G[...] = np.arange(3) + 1j
    np.savez(p, g=clean_longdouble(g), G=clean_longdouble(G))
    return p


def fx_large_compressible(d: Path) -> Path:
    """45: 8 MiB + 4 MiB deflated."""
    p = d / "45_large_compressible.npz"
    np.savez_compressed(p, z=np.zeros(1 << 20, "<f8"), t=np.tile(np.arange(1024, dtype="<i4"), 1024))
    return p


def fx_entries(d: Path, n: int) -> Path:
    """46/47: n tiny members k00000 ... (65535 -> no ZIP64; 65536 -> ZIP64 EOCD)."""
    p = d / f"entries_{n}.npz"
    head = npy_bytes(np.zeros(1, "<i4"))[:-4]
    with zipfile.ZipFile(p, "w") as z:
        for i in range(n):
            z.writestr(f"k{i:05d}.npy", head + struct.pack("<i", i))
    return p


def fx_aligned_deflated_mix(d: Path) -> Path:
    """48: stored + deflated + stored, aligned stored members."""
    arrs = _aligned_members()
    return write_zip(d / "48_aligned_deflated_mix.npz",
                     [Member("s0.npy", npy_bytes(arrs[0]), align=64),
                      Member("d1.npy", npy_bytes(arrs[1]), method=8),
                      Member("s2.npy", npy_bytes(arrs[2]), align=64)])


def fx_all_dtypes(d: Path, compressed: bool) -> Path:
    """03/04: every catalog array through np.savez / np.savez_compressed."""
    p = d / ("04_all_dtypes_compressed.npz" if compressed else "03_all_dtypes.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (np.savez_compressed if compressed else np.savez)(p, **sample_arrays())
    return p


ALL_FIXTURES: Dict[str, Callable[[Path], object]] = {
    "savez_basic": fx_savez_basic,
    "savez_compressed_basic": fx_savez_compressed_basic,
    "all_dtypes": lambda d: fx_all_dtypes(d, False),
    "all_dtypes_compressed": lambda d: fx_all_dtypes(d, True),
    "object_array": fx_object_array,
    "stringdtype": fx_stringdtype,
    "header_v2": fx_header_v2,
    "header_v3": fx_header_v3,
    "header_latin1": fx_header_latin1,
    "header_over_10000": fx_header_over_10000,
    "empty_archive": fx_empty_archive,
    "dd_stored": lambda d: fx_data_descriptor(d, False),
    "dd_compressed": lambda d: fx_data_descriptor(d, True),
    "prefixed_junk": fx_prefixed_junk,
    "comment": lambda d: fx_comment(d, False),
    "comment_sig": lambda d: fx_comment(d, True),
    "crc_corrupt_stored": fx_crc_corrupt_stored,
    "crc_corrupt_deflated": fx_crc_corrupt_deflated,
    "central_crc_wrong": fx_central_crc_wrong,
    "local_crc_wrong": fx_local_crc_wrong,
    "trailing_bytes": fx_trailing_bytes,
    "truncated_member": fx_truncated_member,
    "aligned_a11e": fx_aligned_a11e,
    "aligned_d935": fx_aligned_d935,
    "aligned_raw_zero": fx_aligned_raw_zero,
    "aligned_zipinfo_extra": fx_aligned_zipinfo_extra,
    "zip64_forced": fx_zip64_forced,
    "zip64_offset_only": fx_zip64_offset_only,
    "cd_order_reversed": fx_cd_order_reversed,
    "dd_no_signature": fx_dd_no_signature,
    "bzip2": lambda d: fx_other_method(d, zipfile.ZIP_BZIP2),
    "lzma": lambda d: fx_other_method(d, zipfile.ZIP_LZMA),
    "encrypted_flag": fx_encrypted_flag,
    "non_npy_members": fx_non_npy_members,
    "duplicate_names": fx_duplicate_names,
    "a_and_a_npy": fx_a_and_a_npy,
    "unicode_keys": fx_unicode_keys,
    "local_name_mismatch": fx_local_name_mismatch,
    "header_python2_L": fx_header_python2_L,
    "header_nonstandard": fx_header_nonstandard,
    "header_extra_key": fx_header_extra_key,
    "longdouble": fx_longdouble,
    "large_compressible": fx_large_compressible,
    "aligned_deflated_mix": fx_aligned_deflated_mix,
    "negative_shape": fx_negative_shape,
    "shape_overflow": fx_shape_overflow,
    "shape_exceeds_payload": fx_shape_exceeds_payload,
    "bad_descr": fx_bad_descr,
    "header_no_newline": fx_header_no_newline,
    "header_whitespace": fx_header_whitespace,
    "header_fortran": fx_header_fortran,
    "empty_npy_member": fx_empty_npy_member,
    "deflate_trailing": fx_deflate_trailing,
    "eocd_count_too_small": fx_eocd_count_too_small,
    "trailing_bad_crc_stored": lambda d: fx_trailing_bytes_bad_crc(d, 0),
    "trailing_bad_crc_deflated": lambda d: fx_trailing_bytes_bad_crc(d, 8),
    "cp437_name": fx_cp437_name,
}


def main(argv: List[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "fixtures_out")
    out.mkdir(parents=True, exist_ok=True)
    for name, fn in ALL_FIXTURES.items():
        res = fn(out)
        print(f"{name}: {res}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
