#!/usr/bin/env python3
"""Writes the hostile-input corpus for libpsv: malformed (and a few valid but tricky) .npz files.

    .venv/bin/python tests/corpus/make_corpus.py [OUTDIR]     (default: this script's directory)

Every file gets one line `<file> <STATUS>` in OUTDIR/expected.txt: the exact psv status name a
restore must return with a 1 GiB block limit and the default header and member limits. The
status is what is RIGHT by /work/shared/FORMAT.md, STYLE rules 24-26 and include/psv.h:

    truncated, inconsistent or overlapping records, bad .npy headers  -> PSV_ERR_FORMAT
    data that does not match its CRC-32                               -> PSV_ERR_CRC
    a configured cap (HEADER_LEN, block bytes, member count)          -> PSV_ERR_LIMIT
    pickles, other methods, encryption, unknown versions, multi-disk  -> PSV_ERR_UNSUPPORTED
    negative or overflowing shapes                                    -> PSV_ERR_OVERFLOW

ZIP records are written by the small builder below (not zipfile), so that any field can lie.
Layouts follow APPNOTE 6.3.10 (FORMAT.md section 5); numpy-made members mimic np.savez
(FORMAT.md section 2.3: ZIP64 local extra with both sizes, version 45). The output is
deterministic (fixed data, fixed dates); regenerate and `git diff` to review a change.
"""

from __future__ import annotations

import bz2
import io
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent

SIG_LOCAL = 0x04034B50
SIG_CENTRAL = 0x02014B50
SIG_DD = 0x08074B50
SIG_Z64_END = 0x06064B50
SIG_Z64_LOC = 0x07064B50
SIG_END = 0x06054B50
U32 = 0xFFFFFFFF
U16 = 0xFFFF

# ---------------------------------------------------------------------------------------------
# .npy payloads
# ---------------------------------------------------------------------------------------------


def npy(arr: np.ndarray) -> bytes:
    """The .npy bytes numpy writes for `arr` (no pickles)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(text, version=(1, 0), header_len=None, magic=b"\x93NUMPY") -> bytes:
    """A hand-made .npy header: `text` (str or raw bytes) padded to 64 like numpy, or with an
    explicit (lying) HEADER_LEN."""
    body = text.encode("latin-1") if isinstance(text, str) else text
    lenfield = 2 if version == (1, 0) else 4
    fixed = len(magic) + 2 + lenfield
    pad = 64 - ((fixed + len(body) + 1) % 64)
    body = body + b" " * pad + b"\n"
    hl = len(body) if header_len is None else header_len
    fmt = "<H" if lenfield == 2 else "<I"
    return magic + bytes(version) + struct.pack(fmt, hl) + body


def hdr_dict(descr: str, shape: str, fortran: str = "False") -> str:
    return "{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)


# The standard arrays: x is 512 float64 (4 KiB of data, so a cut member always ends past EOF).
X = np.arange(512, dtype="<f8") * 0.5
Y = np.arange(6, dtype="<i4").reshape(2, 3)
X_NPY = npy(X)
Y_NPY = npy(Y)
X_HDR_LEN = len(X_NPY) - X.nbytes  # 128


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def lzma_zip(data: bytes) -> bytes:
    """An LZMA member's payload as Python's zipfile writes it (header, properties, raw LZMA1
    with an end marker)."""
    c = zipfile.LZMACompressor()
    return c.compress(data) + c.flush()


# ---------------------------------------------------------------------------------------------
# A ZIP builder in which every field can be overridden
# ---------------------------------------------------------------------------------------------


class Member:
    """One member. `payload` is the uncompressed bytes; everything else may lie.

    numpy_zip64: local sizes are sentinels and the local extra holds both sizes (np.savez).
    dd: None, 'sig' (numpy's 24-byte ZIP64 descriptor), or 'nosig' (12 bytes, no signature).
    local / central: field overrides (see `_local` and `_central` for names).
    cut: write only this many bytes of the local record (header + name + extra + data).
    """

    def __init__(self, name, payload, method=0, comp=None, numpy_zip64=True, dd=None,
                 local=None, central=None, cut=None, tail=b""):
        self.name = name.encode() if isinstance(name, str) else name
        self.payload = payload
        self.method = method
        if comp is None:
            comp = deflate(payload) if method == 8 else payload
        self.comp = comp
        self.numpy_zip64 = numpy_zip64
        self.dd = dd
        self.local = dict(local or {})
        self.central = dict(central or {})
        self.cut = cut
        self.tail = tail  # raw bytes written after the data (and descriptor), outside the member
        self.crc = zlib.crc32(payload)
        # filled in by build()
        self.lh = self.data_off = self.ch = 0


def _local(m: Member) -> bytes:
    o = m.local
    flags = o.get("flags", 0x08 if m.dd else 0)
    crc, csize, usize = m.crc, len(m.comp), len(m.payload)
    extra = b""
    if m.numpy_zip64:
        zsize, zcsize = (0, 0) if m.dd == "sig" else (usize, csize)
        extra = struct.pack("<HHQQ", 1, 16, zsize, zcsize)
        csize = usize = U32
    if m.dd:
        crc = 0
        if m.dd == "nosig":
            csize = usize = 0
    extra = o.get("extra", extra)
    name = o.get("name", m.name)
    hdr = struct.pack(
        "<IHHHHHIIIHH",
        o.get("sig", SIG_LOCAL),
        o.get("ver", 45 if m.numpy_zip64 else 20),
        flags,
        o.get("method", m.method),
        o.get("time", 0),
        o.get("date", 0x21),
        o.get("crc", crc),
        o.get("csize", csize),
        o.get("usize", usize),
        o.get("nlen", len(name)),
        o.get("elen", len(extra)),
    )
    return hdr + name + extra


def _descriptor(m: Member) -> bytes:
    if m.dd == "sig":
        return struct.pack("<IIQQ", SIG_DD, m.crc, len(m.comp), len(m.payload))
    if m.dd == "nosig":
        return struct.pack("<III", m.crc, len(m.comp), len(m.payload))
    return b""


def _central(m: Member) -> bytes:
    o = m.central
    csize, usize, offset = len(m.comp), len(m.payload), m.lh
    extra = o.get("extra", b"")
    name = o.get("name", m.name)
    comment = o.get("comment", b"")
    flags = o.get("flags", 0x08 if m.dd else 0)
    return struct.pack(
        "<IHHHHHHIIIHHHHHII",
        o.get("sig", SIG_CENTRAL),
        o.get("made_by", 0x032D),
        o.get("ver", 45 if m.numpy_zip64 else 20),
        flags,
        o.get("method", m.method),
        o.get("time", 0),
        o.get("date", 0x21),
        o.get("crc", m.crc),
        o.get("csize", csize),
        o.get("usize", usize),
        o.get("nlen", len(name)),
        o.get("elen", len(extra)),
        o.get("clen", len(comment)),
        o.get("disk", 0),
        0,
        0o100644 << 16,
        o.get("offset", offset),
    ) + name + extra + comment


def build(members, comment=b"", zip64_end=False, eocd=None, z64=None, loc=None,
          z64_ext=b"", cd_order=None, cd_extra=b""):
    """Returns (bytes, info). eocd/z64/loc: field overrides for the end records."""
    out = bytearray()
    for m in members:
        m.lh = len(out)
        rec = _local(m)
        m.data_off = m.lh + len(rec)
        rec += m.comp + _descriptor(m)
        if m.cut is not None:
            rec = rec[: m.cut]
        out += rec + m.tail
    cd_off = len(out)
    order = cd_order if cd_order is not None else range(len(members))
    for i in order:
        members[i].ch = len(out)
        out += _central(members[i])
    out += cd_extra
    cd_size = len(out) - cd_off
    count = len(order)
    info = {"cd_off": cd_off, "cd_size": cd_size}
    e = dict(eocd or {})
    if zip64_end:
        z = dict(z64 or {})
        info["z64"] = len(out)
        out += struct.pack(
            "<IQHHIIQQQQ",
            z.get("sig", SIG_Z64_END),
            z.get("size", 44 + len(z64_ext)),
            0x032D,
            45,
            z.get("disk", 0),
            z.get("cd_disk", 0),
            z.get("n_disk", count),
            z.get("n_total", count),
            z.get("cd_size", cd_size),
            z.get("cd_off", cd_off),
        ) + z64_ext
        lo = dict(loc or {})
        info["loc"] = len(out)
        out += struct.pack("<IIQI", lo.get("sig", SIG_Z64_LOC), 0, lo.get("offset", info["z64"]),
                           lo.get("disks", 1))
        e.setdefault("n_disk", U16)
        e.setdefault("n_total", U16)
        e.setdefault("cd_size", U32)
        e.setdefault("cd_off", U32)
    info["eocd"] = len(out)
    out += struct.pack(
        "<IHHHHIIH",
        e.get("sig", SIG_END),
        e.get("disk", 0),
        e.get("cd_disk", 0),
        e.get("n_disk", min(count, U16)),
        e.get("n_total", min(count, U16)),
        e.get("cd_size", cd_size),
        e.get("cd_off", cd_off),
        e.get("clen", len(comment)),
    ) + comment
    return bytes(out), info


def poke(data: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def xm(**kw) -> Member:
    return Member("x.npy", X_NPY, **kw)


def ym(**kw) -> Member:
    return Member("y.npy", Y_NPY, **kw)


def one(payload: bytes, name="a.npy", **kw) -> bytes:
    return build([Member(name, payload, **kw)])[0]


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------

CORPUS: list[tuple[str, bytes, str]] = []


def add(name: str, data: bytes, status: str) -> None:
    assert len(data) < 100_000, (name, len(data))
    assert all(n != name for n, _, _ in CORPUS), name
    CORPUS.append((name, data, status))


OK, FORMAT, CRC, LIMIT = "PSV_OK", "PSV_ERR_FORMAT", "PSV_ERR_CRC", "PSV_ERR_LIMIT"
UNSUP, OVERFLOW = "PSV_ERR_UNSUPPORTED", "PSV_ERR_OVERFLOW"


def base():
    """x (stored, numpy layout) + y; returns (bytes, members, info)."""
    ms = [xm(), ym()]
    data, info = build(ms)
    return data, ms, info


# ----- valid but tricky files: these must restore --------------------------------------------

buf = io.BytesIO()
np.savez(buf, x=X, y=Y)
add("ok_numpy_savez.npz", buf.getvalue(), OK)
buf = io.BytesIO()
np.savez_compressed(buf, x=X, y=Y)
add("ok_numpy_savez_compressed.npz", buf.getvalue(), OK)
add("ok_empty_archive.npz", build([])[0], OK)

# Junk in front, offsets not adjusted (FORMAT.md 2.5 / 4.6: zipfile and zip 9.8.2 read it).
plain = io.BytesIO()
with zipfile.ZipFile(plain, "w") as z:
    z.writestr(zipfile.ZipInfo("x.npy", date_time=(1980, 1, 1, 0, 0, 0)), X_NPY)
add("ok_prefix_junk.npz", b"#!/bin/sh\necho not a zip\n" + b"\0" * 75 + plain.getvalue(), OK)

# An archive comment that contains the EOCD signature (edge 19b).
add("ok_comment_with_eocd_sig.npz",
    build([xm(), ym()], comment=b"comment PK\x05\x06 with a signature inside")[0], OK)

# Data descriptors: as numpy writes to a pipe (signature, ZIP64 sizes), and 12 bytes unsigned.
add("ok_data_descriptor_numpy.npz", build([xm(dd="sig"), ym(dd="sig")])[0], OK)
add("ok_data_descriptor_nosig.npz",
    build([xm(dd="nosig", numpy_zip64=False), ym(dd="nosig", numpy_zip64=False)])[0], OK)

# Local CRC, sizes, version, dates and ZIP64 extra contents are never trusted (FORMAT.md 4.2, 7).
add("ok_local_crc_wrong.npz", build([xm(local={"crc": 0xDEADBEEF}), ym()])[0], OK)
add("ok_local_sizes_version_garbage.npz",
    build([xm(local={"ver": 0xFFFF, "csize": 7, "usize": 12345, "time": 0xFFFF,
                     "date": 0xFFFF,
                     "extra": struct.pack("<HHQQ", 1, 16, 2**63, 3)}), ym()])[0], OK)
add("ok_local_encryption_flag_only.npz", build([xm(local={"flags": 1}), ym()])[0], OK)

# ZIP64 everywhere on a tiny file: sentinels in the central sizes and offset, ZIP64 end record.
zx = xm(central={"csize": U32, "usize": U32, "offset": U32,
                 "extra": struct.pack("<HHQQQ", 1, 24, len(X_NPY), len(X_NPY), 0)})
add("ok_zip64_everything.npz", build([zx], zip64_end=True)[0], OK)
# ZIP64 end record with 8 bytes of extensible data (the locator points at it; APPNOTE 4.3.14).
add("ok_zip64_eocd_extensible_data.npz",
    build([xm(), ym()], zip64_end=True, z64_ext=b"\x99\x99\x04\x00abcd")[0], OK)

# A .npy member that is not an array (no magic) is skipped, as numpy returns its raw bytes.
add("ok_npy_member_without_magic.npz",
    build([Member("notes.npy", b"just some text, not an array\n"), ym()])[0], OK)
# Trailing bytes after the array data inside a member (numpy tolerates them; CRC covers them).
add("ok_trailing_bytes_in_member.npz", build([Member("x.npy", X_NPY + b"trailing"), ym()])[0], OK)
# Members that are not arrays are skipped unread, whatever their method or encryption flag.
add("ok_non_npy_members_skipped.npz",
    build([Member("readme.txt", b"hello" * 20, method=12, comp=bz2.compress(b"hello" * 20)),
           Member("secret.txt", b"\x8a" * 40, central={"flags": 1}, local={"flags": 1}),
           Member("dir/", b""), xm(), Member("weird.bin", b"x", central={"method": 77})])[0], OK)
# Only the offset needs ZIP64: the central extra holds just that value (edge 31).
add("ok_zip64_offset_only.npz",
    build([ym(), xm(central={"offset": U32,
                             "extra": struct.pack("<HHQ", 1, 8, 30 + 5 + 20 + len(Y_NPY))})])[0],
    OK)
# Central directory order differs from file order.
add("ok_cd_order_reversed.npz", build([xm(), ym()], cd_order=[1, 0])[0], OK)

# ----- truncated files: the file simply ends early --------------------------------------------

good, ms, info = base()
x = ms[0]
cuts = {
    "cut_in_local_header": 17,
    "cut_after_local_header": 30,
    "cut_in_name": 32,
    "cut_in_extra": 30 + 5 + 9,
    "cut_in_npy_magic": x.data_off + 3,
    "cut_in_npy_header": x.data_off + 60,
    "cut_in_data": x.data_off + X_HDR_LEN + 1000,
    "cut_in_central_header": info["cd_off"] + 20,
    "cut_in_central_name": info["cd_off"] + 48,
    "cut_before_eocd": info["eocd"],
    "cut_in_eocd": info["eocd"] + 12,
    "cut_eocd_last_byte": len(good) - 1,
}
for n, at in cuts.items():
    add(f"{n}.npz", good[:at], FORMAT)

z64good, z64info = build([xm(), ym()], zip64_end=True)
add("cut_in_zip64_eocd.npz", z64good[: z64info["z64"] + 30], FORMAT)
add("cut_in_zip64_locator.npz", z64good[: z64info["loc"] + 10], FORMAT)
# The ZIP64 EOCD and locator are gone, the EOCD still says "look in ZIP64".
add("cut_zip64_records_removed.npz", z64good[: z64info["z64"]] + z64good[z64info["eocd"]:], FORMAT)
add("empty_file.npz", b"", FORMAT)
add("eocd_comment_truncated.npz", poke(good, info["eocd"] + 20, "<H", 40), FORMAT)

# ----- truncated members: the member ends early, but a central directory follows --------------
# Central sizes still claim the whole member, so its data runs past the end of the file.

for n, cut in {
    "member_cut_in_local_header": 20,
    "member_cut_in_name": 33,
    "member_cut_in_extra": 30 + 5 + 12,
    "member_cut_in_npy_magic": 30 + 5 + 20 + 4,
    "member_cut_in_npy_header": 30 + 5 + 20 + 70,
    "member_cut_in_data": 30 + 5 + 20 + X_HDR_LEN + 2000,
}.items():
    add(f"{n}.npz", build([xm(cut=cut)])[0], FORMAT)
# Deflated member whose compressed stream is cut (central csize adjusted to the cut: the stream
# itself ends early).
comp = deflate(X_NPY)
add("member_deflate_stream_cut.npz",
    one(X_NPY, method=8, comp=comp[: len(comp) // 2]), FORMAT)

# ----- flipped bytes in header fields ------------------------------------------------------------

add("flip_local_signature.npz", poke(good, 0, "<I", 0x04034B51), FORMAT)
add("flip_central_signature.npz", poke(good, info["cd_off"], "<I", 0x02014B51), FORMAT)
add("flip_eocd_signature.npz", poke(good, info["eocd"], "<I", 0x06054B51), FORMAT)
add("flip_zip64_eocd_signature.npz", poke(z64good, z64info["z64"], "<I", 0x06064B51), FORMAT)
add("flip_zip64_locator_signature.npz", poke(z64good, z64info["loc"], "<I", 0x07064B51), FORMAT)
# Version needed to extract 9.9 (> 6.3): zipfile raises NotImplementedError, Info-ZIP skips.
add("flip_central_version_needed.npz", build([xm(central={"ver": 99}), ym()])[0], UNSUP)
# Encryption (bit 0), compressed patched data (bit 5), strong encryption (bit 6).
add("flip_central_flag_encrypted.npz", build([xm(central={"flags": 0x0001}), ym()])[0], UNSUP)
add("flip_central_flag_patched.npz", build([xm(central={"flags": 0x0020}), ym()])[0], UNSUP)
add("flip_central_flag_strong_encryption.npz",
    build([xm(central={"flags": 0x0041}), ym()])[0], UNSUP)
add("flip_central_method_77.npz", build([xm(central={"method": 77}), ym()])[0], UNSUP)
# Method 99 is WinZip AES encryption.
add("flip_central_method_99_aes.npz", build([xm(central={"method": 99}), ym()])[0], UNSUP)
# bzip2 (12), LZMA (14) and Deflate64 (9) members: numpy reads the first two (7-Zip all three).
add("ok_method_bzip2.npz", one(X_NPY, method=12, comp=bz2.compress(X_NPY)), OK)
add("ok_method_lzma.npz", one(X_NPY, method=14, comp=lzma_zip(X_NPY)), OK)
# A deflate stream is a Deflate64 stream when it never uses length code 285 (258 in deflate, a
# 16-bit extra length in Deflate64): this one's longest match is shorter.
add("ok_method_deflate64_plain_deflate.npz",
    one(X_NPY, method=9, comp=deflate(X_NPY)), OK)
add("flip_central_crc.npz", build([xm(central={"crc": zlib.crc32(X_NPY) ^ 0x10}), ym()])[0], CRC)
add("flip_central_csize_sentinel_no_zip64.npz", build([xm(central={"csize": U32})])[0], FORMAT)
add("flip_central_name_len_plus_1.npz", build([xm(central={"nlen": 6}), ym()])[0], FORMAT)
add("flip_central_name_len_ffff.npz", build([xm(central={"nlen": U16}), ym()])[0], FORMAT)
add("flip_central_extra_len_plus_4.npz", build([xm(central={"elen": 4}), ym()])[0], FORMAT)
add("flip_central_extra_len_ffff.npz", build([xm(central={"elen": U16})])[0], FORMAT)
add("flip_central_comment_len_ffff.npz", build([xm(central={"clen": U16})])[0], FORMAT)
add("flip_local_name_len.npz", build([xm(local={"nlen": 4}), ym()])[0], FORMAT)
add("flip_local_extra_len_ffff.npz", build([xm(local={"elen": U16})])[0], FORMAT)
# One byte more of local extra: the payload shifts by one and overlaps the next local header.
add("flip_local_extra_len_plus_1.npz", build([xm(local={"elen": 21}), ym()])[0], FORMAT)
# "This is disk 1; the central directory starts on disk 0": the directory is not in this file.
# A lone piece of a spanned set is incomplete, not a valid archive (zipfile: BadZipFile).
add("eocd_multi_disk.npz", poke(good, info["eocd"] + 4, "<H", 1), FORMAT)

# ----- lying sizes and offsets ------------------------------------------------------------------

n = len(X_NPY)
add("lie_stored_sizes_past_eof.npz",
    build([xm(central={"csize": n + 10000, "usize": n + 10000})])[0], FORMAT)
add("lie_stored_sizes_smaller.npz",
    build([xm(central={"csize": n - 100, "usize": n - 100}), ym()])[0], FORMAT)
add("lie_stored_usize_only_smaller.npz", build([xm(central={"usize": n - 100}), ym()])[0], FORMAT)
add("lie_stored_csize_only_larger.npz", build([xm(central={"csize": n + 8}), ym()])[0], FORMAT)
# Sizes 20 bytes too large: the member runs into the central directory (which follows it).
add("lie_stored_sizes_overlap_central_dir.npz",
    build([xm(central={"csize": n + 20, "usize": n + 20})])[0], FORMAT)
cx = deflate(X_NPY)
add("lie_deflate_csize_smaller.npz", one(X_NPY, method=8, central={"csize": len(cx) - 50}), FORMAT)
add("lie_deflate_csize_overlap_central_dir.npz",
    one(X_NPY, method=8, central={"csize": len(cx) + 30}), FORMAT)
add("lie_deflate_usize_smaller.npz",
    one(X_NPY + b"8 bytes!", method=8, central={"usize": n}), FORMAT)
add("lie_deflate_usize_larger.npz", one(X_NPY, method=8, central={"usize": n + 1000}), FORMAT)
add("offset_past_eof.npz", build([xm(central={"offset": 1_000_000}), ym()])[0], FORMAT)
add("offset_zip64_huge.npz",
    build([xm(central={"offset": U32, "extra": struct.pack("<HHQ", 1, 8, 2**63 + 5)})])[0],
    FORMAT)
_, inf = build([xm(), ym()])
add("offset_into_central_dir.npz", build([xm(), ym(central={"offset": inf["cd_off"]})])[0], FORMAT)
add("offset_into_eocd.npz", build([xm(), ym(central={"offset": inf["eocd"]})])[0], FORMAT)
# Two central entries point at one local header (its name matches only one of them).
add("two_entries_one_local_header.npz", build([xm(), ym(central={"offset": 0})])[0], FORMAT)
# Member x's sizes (and CRC) cover member y's whole local record: y lies inside x.
ov_x, ov_y = xm(), ym()
y_rec = _local(ov_y) + ov_y.comp
ov_x.central.update(csize=n + len(y_rec), usize=n + len(y_rec), crc=zlib.crc32(X_NPY + y_rec))
add("overlap_members.npz", build([ov_x, ov_y])[0], FORMAT)
# A member nested in another's trailing bytes, reached only through the central directory.
inner = ym()
inner_rec = _local(inner) + inner.comp
outer_payload = X_NPY + inner_rec
outer = Member("x.npy", outer_payload)
nested = Member("y.npy", Y_NPY, central={"offset": 30 + 5 + 20 + n})
add("overlap_nested_member.npz", build([outer, nested])[0], FORMAT)

# ----- entry counts -----------------------------------------------------------------------------

add("eocd_count_ffff_no_zip64.npz", build([xm()], eocd={"n_disk": U16, "n_total": U16})[0], FORMAT)
add("eocd_count_larger.npz", build([xm(), ym()], eocd={"n_disk": 5, "n_total": 5})[0], FORMAT)
add("eocd_count_smaller.npz", build([xm(), ym()], eocd={"n_disk": 1, "n_total": 1})[0], FORMAT)
add("eocd_count_zero_with_entries.npz",
    build([xm(), ym()], eocd={"n_disk": 0, "n_total": 0})[0], FORMAT)
add("eocd_cd_offset_past_eof.npz", build([xm()], eocd={"cd_off": 10_000_000})[0], FORMAT)
add("eocd_cd_size_huge.npz", build([xm()], eocd={"cd_size": 0x7FFFFFFF})[0], FORMAT)
# Counts that the central directory's size cannot hold (46 bytes per entry at least) are
# inconsistent records, found before any allocation: FORMAT, not the member cap's LIMIT (which
# is for counts a directory really holds; no file under 100 KB can exceed the 2**24 default).
add("zip64_eocd_count_huge.npz",
    build([xm(), ym()], zip64_end=True, z64={"n_disk": 2**60, "n_total": 2**60})[0], FORMAT)
add("zip64_eocd_count_max_u64.npz",
    build([xm(), ym()], zip64_end=True, z64={"n_disk": 2**64 - 1, "n_total": 2**64 - 1})[0],
    FORMAT)
# Below the 2**24 member cap but far more than the 2 entries the directory holds.
add("zip64_eocd_count_inconsistent.npz",
    build([xm(), ym()], zip64_end=True, z64={"n_disk": 1_000_000, "n_total": 1_000_000})[0],
    FORMAT)
add("zip64_eocd_cd_offset_past_eof.npz",
    build([xm()], zip64_end=True, z64={"cd_off": 2**62})[0], FORMAT)
add("zip64_eocd_cd_size_huge.npz", build([xm()], zip64_end=True, z64={"cd_size": 2**62})[0],
    FORMAT)

# ----- ZIP64 extra fields (central) -------------------------------------------------------------

# Both sizes are sentinels but the extra holds only one value.
add("zip64_extra_missing_field.npz",
    build([xm(central={"csize": U32, "usize": U32, "extra": struct.pack("<HHQ", 1, 8, n)})])[0],
    FORMAT)
# Only the offset is a sentinel, but the extra also holds both sizes first (FORMAT.md 4.3).
add("zip64_extra_unrequested_fields.npz",
    build([ym(), xm(central={"offset": U32, "extra": struct.pack("<HHQQQ", 1, 24, n, n, 0)})])[0],
    FORMAT)
# The record claims 16 bytes but the extra field ends after 8.
add("zip64_extra_record_truncated.npz",
    build([xm(central={"csize": U32, "usize": U32,
                       "extra": struct.pack("<HHQ", 1, 16, n)})])[0], FORMAT)
add("zip64_extra_empty_with_sentinels.npz",
    build([xm(central={"csize": U32, "usize": U32, "extra": struct.pack("<HH", 1, 0)})])[0],
    FORMAT)
# ZIP64 sizes claim 2**63: far past the end of the file.
add("zip64_extra_size_2_63.npz",
    build([xm(central={"csize": U32, "usize": U32,
                       "extra": struct.pack("<HHQQ", 1, 16, 2**63, 2**63)})])[0], FORMAT)

# ----- deflate bombs ------------------------------------------------------------------------------

# Claims 4224 bytes (header + data) but inflates to 16 MiB more.
bomb_payload = X_NPY + b"\0" * (16 << 20)
add("bomb_inflates_past_declared_size.npz",
    one(bomb_payload, method=8, central={"usize": n, "crc": zlib.crc32(X_NPY)}), FORMAT)
# The same for bzip2.
add("bomb_bzip2_decodes_past_declared_size.npz",
    one(bomb_payload, method=12, comp=bz2.compress(bomb_payload),
        central={"usize": n, "crc": zlib.crc32(X_NPY)}), FORMAT)
# LZMA: the decoder is told the declared size and stops there; a stream that goes on (neither
# an end marker nor the end of the data there) is an error.
add("bomb_lzma_decodes_past_declared_size.npz",
    one(bomb_payload, method=14, comp=lzma_zip(bomb_payload),
        central={"usize": n, "crc": zlib.crc32(X_NPY)}), FORMAT)
# LZMA properties of 4 bytes instead of 5; a stream cut inside the properties.
add("lzma_properties_length_4.npz",
    one(X_NPY, method=14, comp=lzma_zip(X_NPY)[:2] + b"\x04\x00" + lzma_zip(X_NPY)[4:]), FORMAT)
add("lzma_cut_in_properties.npz", one(X_NPY, method=14, comp=lzma_zip(X_NPY)[:6]), FORMAT)
add("bzip2_stream_cut.npz",
    one(X_NPY, method=12, comp=bz2.compress(X_NPY)[:-20]), FORMAT)
add("bzip2_bitflip.npz",
    one(X_NPY, method=12, comp=poke(bz2.compress(X_NPY), 60, "<B",
                                    bz2.compress(X_NPY)[60] ^ 0x08)), FORMAT)
# Claims 1 TiB of float64 (ZIP64 sizes); the block limit stops it before any allocation.
tb_hdr = npy_header(hdr_dict("'<f8'", "(137438953472,)"))
tb_payload = tb_hdr + b"\0" * (1 << 20)
add("bomb_claims_terabyte_array.npz",
    one(tb_payload, method=8,
        central={"usize": U32, "csize": U32,
                 "extra": struct.pack("<HHQQ", 1, 16, (1 << 40) + len(tb_hdr),
                                      len(deflate(tb_payload)))}), LIMIT)
# A 24-byte array in a member that claims 1 TiB of trailing bytes: the stream ends long before.
tail_payload = Y_NPY + b"\0" * (1 << 20)
add("bomb_claims_terabyte_tail.npz",
    one(tail_payload, method=8,
        central={"usize": U32, "csize": U32,
                 "extra": struct.pack("<HHQQ", 1, 16, 1 << 40, len(deflate(tail_payload)))}),
    FORMAT)
# Stored member claiming 1 TiB.
add("stored_claims_terabyte.npz",
    one(X_NPY, central={"usize": U32, "csize": U32,
                        "extra": struct.pack("<HHQQ", 1, 16, 1 << 40, 1 << 40)}), FORMAT)

# ----- data corruption ----------------------------------------------------------------------------

corrupt = bytearray(good)
corrupt[x.data_off + X_HDR_LEN + 100] ^= 0x01
add("data_bitflip_stored.npz", bytes(corrupt), CRC)
# Deflate with stored blocks (level 0): a flipped literal byte still inflates, to wrong data.
c0 = bytearray(deflate(X_NPY, 0))
c0[len(c0) // 2] ^= 0x40
add("data_bitflip_deflated.npz", one(X_NPY, method=8, comp=bytes(c0)), CRC)
# A deflate block of the reserved type 3: the stream cannot be decoded.
bad_stream = bytes([0x07]) + deflate(X_NPY)[1:]
add("deflate_reserved_block_type.npz", one(X_NPY, method=8, comp=bad_stream), FORMAT)
# The npy magic itself is corrupted (stale CRC): numpy reads the raw member and fails its CRC.
add("npy_magic_bitflip.npz", poke(good, x.data_off, "<B", 0x92), CRC)

# ----- .npy headers (the CRC always matches, so the header is the only problem) -----------------


def hdr_case(name, payload, status, method=0):
    add(name, one(payload, method=method), status)


data48 = np.arange(6, dtype="<f8").tobytes()
hdr_case("npy_version_4_0.npz", b"\x93NUMPY\x04\x00" + X_NPY[8:], UNSUP)
hdr_case("npy_version_1_1.npz", b"\x93NUMPY\x01\x01" + X_NPY[8:], UNSUP)
hdr_case("npy_version_0_0.npz", b"\x93NUMPY\x00\x00" + X_NPY[8:], UNSUP)
hdr_case("npy_header_len_over_cap.npz",
         npy_header(hdr_dict("'<f8'", "(6,)"), (2, 0), header_len=0xFFFFFFF0) + data48, LIMIT)
# A real 2 MiB header (deflated to a few KiB): over the default 1 MiB cap.
big_text = hdr_dict("'<f8'", "(6,)") + " " * (2 << 20)
hdr_case("npy_header_len_over_cap_real.npz", npy_header(big_text, (2, 0)) + data48, LIMIT,
         method=8)
hdr_case("npy_header_len_past_member.npz",
         npy_header(hdr_dict("'<f8'", "(6,)"), header_len=0xFFFF) + data48, FORMAT)
hdr_case("npy_header_len_short.npz",
         npy_header(hdr_dict("'<f8'", "(6,)"), header_len=20) + data48, FORMAT)
hdr_case("npy_header_len_zero.npz", npy_header(hdr_dict("'<f8'", "(6,)"), header_len=0) + data48,
         FORMAT)
# The same, deflated: HEADER_LEN 0 makes the header (10 bytes) shorter than the 12-byte prefix
# a reader inflates first (found by cargo-fuzz; it panicked).
hdr_case("npy_header_len_zero_deflated.npz",
         npy_header(hdr_dict("'<f8'", "(6,)"), header_len=0) + data48, FORMAT, method=8)
hdr_case("npy_header_len_one_deflated.npz", b"\x93NUMPY\x01\x00\x01\x00{" + data48, FORMAT,
         method=8)
hdr_case("npy_member_shorter_than_prefix.npz", b"\x93NUMPY\x01", FORMAT)
hdr_case("npy_member_shorter_than_prefix_deflated.npz", b"\x93NUMPY\x01", FORMAT, method=8)
hdr_case("npy_v3_not_utf8.npz",
         npy_header(b"{'descr': [('\xff\xfe', '<f8')], 'fortran_order': False, 'shape': (6,), }",
                    (3, 0)) + data48, FORMAT)
hdr_case("npy_extra_key.npz",
         npy_header("{'descr': '<f8', 'fortran_order': False, 'shape': (6,), 'x': 1, }")
         + data48, FORMAT)
hdr_case("npy_missing_key.npz", npy_header("{'descr': '<f8', 'shape': (6,), }") + data48, FORMAT)
hdr_case("npy_repeated_key.npz",
         npy_header("{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (6,)}")
         + data48, FORMAT)
hdr_case("npy_not_a_dict.npz", npy_header("['descr', 'fortran_order', 'shape']") + data48, FORMAT)
hdr_case("npy_unterminated_string.npz",
         npy_header("{'descr': '<f8, 'fortran_order': False, 'shape': (6,), }") + data48, FORMAT)
hdr_case("npy_bad_descr.npz", npy_header(hdr_dict("'<q8'", "(6,)")) + data48, FORMAT)
hdr_case("npy_descr_not_string.npz", npy_header(hdr_dict("42", "(6,)")) + data48, FORMAT)
hdr_case("npy_fortran_not_bool.npz", npy_header(hdr_dict("'<f8'", "(6,)", "1")) + data48, FORMAT)
hdr_case("npy_shape_list.npz", npy_header(hdr_dict("'<f8'", "[6]")) + data48, FORMAT)
hdr_case("npy_shape_float.npz", npy_header(hdr_dict("'<f8'", "(6.0,)")) + data48, FORMAT)
# Object arrays: a real pickle payload as numpy writes it, and an object field in a record.
obj = io.BytesIO()
np.lib.format.write_array(obj, np.array([{"a": 1}, None, "s"], dtype=object), allow_pickle=True)
hdr_case("npy_object_pickle.npz", obj.getvalue(), UNSUP)
hdr_case("npy_object_in_record.npz",
         npy_header(hdr_dict("[('a', '<i4'), ('o', '|O')]", "(1,)"))
         + pickle.dumps([1, None], protocol=4), UNSUP)
# Shapes.
hdr_case("npy_negative_dim.npz", npy_header(hdr_dict("'<f8'", "(-1,)")) + data48, OVERFLOW)
hdr_case("npy_negative_second_dim.npz", npy_header(hdr_dict("'<f8'", "(3, -2)")) + data48,
         OVERFLOW)
hdr_case("npy_shape_bytes_overflow.npz",
         npy_header(hdr_dict("'<f8'", "(4611686018427387904, 4)")) + data48, OVERFLOW)
hdr_case("npy_shape_elements_overflow.npz",
         npy_header(hdr_dict("'|u1'", "(1099511627776, 1099511627776)")) + data48, OVERFLOW)
hdr_case("npy_shape_dim_beyond_i128.npz",
         npy_header(hdr_dict("'|u1'", "(10000000000000000000000000000000000000000,)")) + data48,
         OVERFLOW)
hdr_case("npy_shape_ndim_65.npz", npy_header(hdr_dict("'|u1'", "(" + "1, " * 65 + ")")) + data48,
         OVERFLOW)
hdr_case("npy_record_itemsize_overflow.npz",
         npy_header(hdr_dict("[('a', '<f8', (2305843009213693952,)), "
                             "('b', '<f8', (2305843009213693952,))]", "(1,)")) + data48,
         OVERFLOW)
nest = "'<f4'"
for _ in range(50):
    nest = "(%s, (4,))" % nest
hdr_case("npy_subarray_nesting_overflow.npz", npy_header(hdr_dict(nest, "(1,)")) + data48,
         OVERFLOW)
# A legal shape of 8 TiB in a member of 48 data bytes.
hdr_case("npy_shape_larger_than_member.npz",
         npy_header(hdr_dict("'<f8'", "(1099511627776,)")) + data48, FORMAT)
# Deep nesting.
deep = "'<f8'"
for _ in range(200):
    deep = "[('a', %s)]" % deep
hdr_case("npy_descr_deep_records.npz", npy_header(hdr_dict(deep, "(1,)")) + data48, FORMAT)
hdr_case("npy_descr_deep_parens.npz",
         npy_header(hdr_dict("(" * 20000 + "'<f8'" + ")" * 20000, "(6,)"), (2, 0)) + data48,
         FORMAT)
hdr_case("npy_descr_deep_lists.npz",
         npy_header(hdr_dict("[" * 30000 + "]" * 30000, "(6,)"), (2, 0)) + data48, FORMAT)

# ----- names ------------------------------------------------------------------------------------

add("name_with_nul.npz", build([Member(b"a\0b.npy", Y_NPY), xm()])[0], FORMAT)
add("name_duplicate.npz", build([xm(), Member("x.npy", Y_NPY)])[0], FORMAT)
add("name_key_collision.npz", build([Member("a.npy", Y_NPY), Member("a", b"raw")])[0], FORMAT)
add("name_local_mismatch.npz", build([xm(local={"name": b"z.npy"}), ym()])[0], FORMAT)

# ----- not a zip at all ------------------------------------------------------------------------

add("not_zip_npy_file.npz", X_NPY, FORMAT)
add("not_zip_random.npz", bytes((i * 7919 + 13) % 251 for i in range(3000)), FORMAT)
add("not_zip_only_signature.npz", b"PK\x05\x06", FORMAT)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.npz"):
        old.unlink()
    lines = []
    for name, data, status in CORPUS:
        (OUT / name).write_bytes(data)
        lines.append(f"{name} {status}\n")
    (OUT / "expected.txt").write_text(
        "# <file> <status psv must return> - written by make_corpus.py; do not edit by hand\n"
        + "".join(lines))
    total = sum(len(d) for _, d, _ in CORPUS)
    print(f"wrote {len(CORPUS)} files ({total} bytes) and expected.txt to {OUT}")


if __name__ == "__main__":
    main()
