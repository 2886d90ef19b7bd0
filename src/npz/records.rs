//! The ZIP records as bytes (APPNOTE 6.3.10; FORMAT.md sections 5 and 7): the encoding of
//! every record our writer emits, and the decoding of every record a reader needs (local
//! headers, central records' fixed fields, extra field records, the end records).
//!
//! Written members are stored (method 0) or deflated (method 8), dated 1980-01-01 like numpy's,
//! with no data descriptor: every size and CRC is known when the headers are written.

use super::plan::{MemberPlan, Plan, CENTRAL_HEADER_LEN, END_LEN, LOCAL_HEADER_LEN, ZIP16_MAX};

/// Local file header signature ("PK\x03\x04").
pub const LOCAL_SIG: u32 = 0x0403_4b50;
/// Central directory header signature ("PK\x01\x02").
pub const CENTRAL_SIG: u32 = 0x0201_4b50;
/// ZIP64 end of central directory record signature ("PK\x06\x06").
pub const ZIP64_END_SIG: u32 = 0x0606_4b50;
/// ZIP64 end of central directory locator signature ("PK\x06\x07").
pub const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// End of central directory record signature ("PK\x05\x06").
pub const END_SIG: u32 = 0x0605_4b50;
/// Digital signature record ("PK\x05\x05"), which may follow the central directory.
pub const DIGITAL_SIG: u32 = 0x0505_4b50;
/// ZIP64 extended information extra field (APPNOTE 4.5.3).
pub const ZIP64_EXTRA_ID: u16 = 0x0001;
/// APPNOTE 4.6.11 "Data Stream Alignment" extra field.
pub const ALIGN_EXTRA_ID: u16 = 0xA11E;
/// "Made by": UNIX (3), spec version 4.5 (45), as numpy/CPython write.
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
/// Flag bit 11: the name is UTF-8.
const FLAG_UTF8: u16 = 1 << 11;
/// MS-DOS date 1980-01-01 (numpy writes the same).
const DOS_DATE: u16 = 0x0021;

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A 32-bit field, or the ZIP64 sentinel when the value does not fit.
fn field32(v: u64) -> u32 {
    u32::try_from(v)
        .ok()
        .filter(|&v| v != u32::MAX)
        .unwrap_or(u32::MAX)
}

fn flags(name: &[u8]) -> u16 {
    if name.is_ascii() {
        0
    } else {
        FLAG_UTF8
    }
}

fn version_needed(m: &MemberPlan) -> u16 {
    if m.zip64_sizes || m.zip64_offset() {
        45
    } else {
        20
    }
}

fn method(m: &MemberPlan) -> u16 {
    if m.deflated {
        8
    } else {
        0
    }
}

/// Compressed and uncompressed size fields (sentinels when ZIP64 holds them).
fn sizes(out: &mut Vec<u8>, m: &MemberPlan) {
    if m.zip64_sizes {
        put32(out, u32::MAX);
        put32(out, u32::MAX);
    } else {
        put32(out, field32(m.payload_len));
        put32(out, field32(m.size));
    }
}

/// The fields local and central headers share, from "version needed" to the name length.
fn shared_fields(out: &mut Vec<u8>, name: &[u8], m: &MemberPlan, crc: u32) {
    put16(out, version_needed(m));
    put16(out, flags(name));
    put16(out, method(m));
    put16(out, 0); // time
    put16(out, DOS_DATE);
    put32(out, crc);
    sizes(out, m);
    put16(out, name.len() as u16);
}

/// Appends the local file header, its extra fields (ZIP64 sizes if needed, then the 0xA11E
/// alignment padding), for a member whose payload has CRC-32 `crc`. Exactly
/// `payload_offset - header_offset` bytes.
pub fn local_header(out: &mut Vec<u8>, name: &[u8], m: &MemberPlan, crc: u32) {
    put32(out, LOCAL_SIG);
    shared_fields(out, name, m, crc);
    put16(out, m.local_extra_len() as u16);
    out.extend_from_slice(name);
    if m.zip64_sizes {
        put16(out, ZIP64_EXTRA_ID);
        put16(out, 16);
        put64(out, m.size); // uncompressed
        put64(out, m.payload_len); // compressed
    }
    put16(out, ALIGN_EXTRA_ID);
    put16(out, (m.align_field_len - 4) as u16);
    // The field's alignment word has 15 bits: the largest power of two it holds that divides
    // the member's alignment (bit 15, "may be recompressed", stays clear).
    put16(out, m.align.min(1 << 14) as u16);
    out.resize(out.len() + (m.align_field_len - 6) as usize, 0);
}

/// Appends the central directory record of a member.
pub fn central_header(out: &mut Vec<u8>, name: &[u8], m: &MemberPlan, crc: u32) {
    put32(out, CENTRAL_SIG);
    put16(out, VERSION_MADE_BY);
    shared_fields(out, name, m, crc);
    let values = m.central_zip64_values();
    put16(
        out,
        if values > 0 {
            (4 + 8 * values) as u16
        } else {
            0
        },
    );
    put16(out, 0); // comment length
    put16(out, 0); // disk number start
    put16(out, 0); // internal attributes
    put32(out, 0o100644 << 16); // external attributes: regular file, rw-r--r--
    put32(out, field32(m.header_offset));
    out.extend_from_slice(name);
    if values > 0 {
        put16(out, ZIP64_EXTRA_ID);
        put16(out, (8 * values) as u16);
        if m.zip64_sizes {
            put64(out, m.size);
            put64(out, m.payload_len);
        }
        if m.zip64_offset() {
            put64(out, m.header_offset);
        }
    }
}

/// Appends the ZIP64 end record and locator (when the plan needs them) and the end record.
pub fn end_records(out: &mut Vec<u8>, plan: &Plan) {
    let count = plan.members.len() as u64;
    if plan.zip64_end {
        let zip64_end_offset = plan.central_offset + plan.central_size;
        put32(out, ZIP64_END_SIG);
        put64(out, 44); // size of the rest of this record
        put16(out, VERSION_MADE_BY);
        put16(out, 45);
        put32(out, 0); // this disk
        put32(out, 0); // disk with the central directory
        put64(out, count);
        put64(out, count);
        put64(out, plan.central_size);
        put64(out, plan.central_offset);
        put32(out, ZIP64_LOCATOR_SIG);
        put32(out, 0);
        put64(out, zip64_end_offset);
        put32(out, 1); // total disks
    }
    let count16 = if count >= ZIP16_MAX {
        u16::MAX
    } else {
        count as u16
    };
    put32(out, END_SIG);
    put16(out, 0);
    put16(out, 0);
    put16(out, count16);
    put16(out, count16);
    put32(out, field32(plan.central_size));
    put32(out, field32(plan.central_offset));
    put16(out, 0); // comment length
}

/// The little-endian u16 at `at` in `b` (the caller checked the length).
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The record signature at the start of `bytes`, if it has four bytes.
pub fn signature(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// The fixed part of a local file header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHeader {
    /// Length of the member name that follows the fixed part.
    pub name_len: u16,
    /// Length of the extra field that follows the name.
    pub extra_len: u16,
}

impl LocalHeader {
    /// Decodes the fixed part at the start of `bytes`; `None` when `bytes` is shorter than it
    /// or does not start with the local header signature.
    pub fn parse(bytes: &[u8]) -> Option<LocalHeader> {
        if bytes.len() < LOCAL_HEADER_LEN as usize || signature(bytes)? != LOCAL_SIG {
            return None;
        }
        Some(LocalHeader {
            name_len: get16(bytes, 26),
            extra_len: get16(bytes, 28),
        })
    }

    /// The name as it appears in `bytes` (which start with this header), if `bytes` hold it.
    pub fn name<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        let start = LOCAL_HEADER_LEN as usize;
        bytes.get(start..start + usize::from(self.name_len))
    }

    /// Bytes from the header's first byte to the member's payload.
    pub fn payload_offset(&self) -> u64 {
        LOCAL_HEADER_LEN + u64::from(self.name_len) + u64::from(self.extra_len)
    }
}

/// Data descriptor signature ("PK\x07\x08"), optional before a descriptor's fields.
pub const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
/// Flag bit 0: the member is encrypted.
pub const FLAG_ENCRYPTED: u16 = 1;
/// Flag bit 3: the CRC and sizes follow the data in a data descriptor (the local header's are
/// zero), as ZIP writers to unseekable streams write (Python's `zipfile`).
pub const FLAG_DESCRIPTOR: u16 = 1 << 3;
/// Flags we cannot honour: 5 (patched data), 6 (strong encryption), 13 (encrypted central
/// directory).
pub const UNSUPPORTED_FLAGS: u16 = (1 << 5) | (1 << 6) | (1 << 13);

/// The little-endian u32 at `at` in `b` (the caller checked the length).
pub fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The little-endian u64 at `at` in `b` (the caller checked the length).
pub fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Every field of a local file header's fixed part that a sequential reader needs: without
/// the central directory, the member's method, sizes and CRC come from here (or, with
/// [`FLAG_DESCRIPTOR`], from the data descriptor after the data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalFields {
    /// "Version needed to extract", low byte.
    pub version_needed: u16,
    /// General purpose flags.
    pub flags: u16,
    /// Compression method code.
    pub method: u16,
    /// CRC-32 (0 with a data descriptor).
    pub crc32: u32,
    /// Compressed size, or the ZIP64 sentinel.
    pub compressed_size: u32,
    /// Uncompressed size, or the ZIP64 sentinel.
    pub size: u32,
    /// Name length.
    pub name_len: u16,
    /// Extra field length.
    pub extra_len: u16,
}

impl LocalFields {
    /// Decodes the fixed part (30 bytes, signature first); `None` without the signature.
    pub fn parse(fixed: &[u8; LOCAL_HEADER_LEN as usize]) -> Option<LocalFields> {
        if signature(fixed)? != LOCAL_SIG {
            return None;
        }
        Some(LocalFields {
            version_needed: get16(fixed, 4) & 0xff,
            flags: get16(fixed, 6),
            method: get16(fixed, 8),
            crc32: get32(fixed, 14),
            compressed_size: get32(fixed, 18),
            size: get32(fixed, 22),
            name_len: get16(fixed, 26),
            extra_len: get16(fixed, 28),
        })
    }
}

/// Every field of a central directory record's fixed part that the stream restore checks
/// against what the local headers said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CentralFields {
    /// "Version needed to extract", low byte.
    pub version_needed: u16,
    /// General purpose flags.
    pub flags: u16,
    /// Compression method code.
    pub method: u16,
    /// CRC-32.
    pub crc32: u32,
    /// Compressed size, or the ZIP64 sentinel.
    pub compressed_size: u32,
    /// Uncompressed size, or the ZIP64 sentinel.
    pub size: u32,
    /// Name length.
    pub name_len: u16,
    /// Extra field length.
    pub extra_len: u16,
    /// Comment length.
    pub comment_len: u16,
    /// Disk number where the member starts, or the ZIP64 sentinel 0xFFFF.
    pub disk_start: u16,
    /// Offset of the local header, or the ZIP64 sentinel.
    pub header_offset: u32,
}

impl CentralFields {
    /// Decodes the fixed part (46 bytes, signature first); `None` without the signature.
    pub fn parse(fixed: &[u8; CENTRAL_HEADER_LEN as usize]) -> Option<CentralFields> {
        if signature(fixed)? != CENTRAL_SIG {
            return None;
        }
        Some(CentralFields {
            version_needed: get16(fixed, 6) & 0xff,
            flags: get16(fixed, 8),
            method: get16(fixed, 10),
            crc32: get32(fixed, 16),
            compressed_size: get32(fixed, 20),
            size: get32(fixed, 24),
            name_len: get16(fixed, 28),
            extra_len: get16(fixed, 30),
            comment_len: get16(fixed, 32),
            disk_start: get16(fixed, 34),
            header_offset: get32(fixed, 42),
        })
    }
}

/// The ZIP64 extra field's data (id 0x0001) in an extra field, if there is one; `Err` when
/// the extra field's records are malformed (one runs past the end).
pub fn zip64_extra(extra: &[u8]) -> Result<Option<&[u8]>, &'static str> {
    let mut at = 0;
    while extra.len() - at >= 4 {
        let (id, len) = (get16(extra, at), usize::from(get16(extra, at + 2)));
        let data = extra
            .get(at + 4..at + 4 + len)
            .ok_or("an extra field record runs past the extra field")?;
        if id == ZIP64_EXTRA_ID {
            return Ok(Some(data));
        }
        at += 4 + len;
    }
    Ok(None)
}

/// The values of a ZIP64 extra field's data, in their fixed order (uncompressed size,
/// compressed size, local header offset), taking one 8-byte value for each field of `present`
/// that is set (the record fields that hold the sentinel); `None` when the data is too short.
pub fn zip64_values(data: &[u8], present: [bool; 3]) -> Option<[Option<u64>; 3]> {
    let mut out = [None; 3];
    let mut at = 0;
    for (slot, wanted) in out.iter_mut().zip(present) {
        if wanted {
            *slot = Some(get64(data.get(at..at + 8)?, 0));
            at += 8;
        }
    }
    Some(out)
}

/// A member name as `numpy.load` decodes it: UTF-8 when the bytes are UTF-8 (whether or not
/// flag bit 11 says so: Info-ZIP writes UTF-8 names without it), else IBM code page 437.
pub fn decode_name(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => raw
            .iter()
            .map(|&b| match b {
                0..=0x7f => char::from(b),
                _ => CP437_HIGH.chars().nth(usize::from(b - 0x80)).unwrap_or('?'),
            })
            .collect(),
    }
}

/// Code page 437, bytes 0x80 to 0xFF.
const CP437_HIGH: &str = "\u{c7}\u{fc}\u{e9}\u{e2}\u{e4}\u{e0}\u{e5}\u{e7}\u{ea}\u{eb}\u{e8}\u{ef}\u{ee}\u{ec}\u{c4}\u{c5}\u{c9}\u{e6}\u{c6}\u{f4}\u{f6}\u{f2}\u{fb}\u{f9}\u{ff}\u{d6}\u{dc}\u{a2}\u{a3}\u{a5}\u{20a7}\u{192}\u{e1}\u{ed}\u{f3}\u{fa}\u{f1}\u{d1}\u{aa}\u{ba}\u{bf}\u{2310}\u{ac}\u{bd}\u{bc}\u{a1}\u{ab}\u{bb}\u{2591}\u{2592}\u{2593}\u{2502}\u{2524}\u{2561}\u{2562}\u{2556}\u{2555}\u{2563}\u{2551}\u{2557}\u{255d}\u{255c}\u{255b}\u{2510}\u{2514}\u{2534}\u{252c}\u{251c}\u{2500}\u{253c}\u{255e}\u{255f}\u{255a}\u{2554}\u{2569}\u{2566}\u{2560}\u{2550}\u{256c}\u{2567}\u{2568}\u{2564}\u{2565}\u{2559}\u{2558}\u{2552}\u{2553}\u{256b}\u{256a}\u{2518}\u{250c}\u{2588}\u{2584}\u{258c}\u{2590}\u{2580}\u{3b1}\u{df}\u{393}\u{3c0}\u{3a3}\u{3c3}\u{b5}\u{3c4}\u{3a6}\u{398}\u{3a9}\u{3b4}\u{221e}\u{3c6}\u{3b5}\u{2229}\u{2261}\u{b1}\u{2265}\u{2264}\u{2320}\u{2321}\u{f7}\u{2248}\u{b0}\u{2219}\u{b7}\u{221a}\u{207f}\u{b2}\u{25a0}\u{a0}";

/// The end of central directory record's fixed part (22 bytes; a comment may follow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndRecord {
    /// Number of this disk.
    pub disk: u16,
    /// Disk where the central directory starts.
    pub central_disk: u16,
    /// Central directory records on this disk.
    pub count_here: u16,
    /// Central directory records in all (0xFFFF: see the ZIP64 end record).
    pub count: u16,
    /// Size of the central directory (0xFFFFFFFF: see the ZIP64 end record).
    pub central_size: u32,
    /// Offset of the central directory, before any prefix data (0xFFFFFFFF: ZIP64).
    pub central_offset: u32,
    /// Length of the archive comment that follows.
    pub comment_len: u16,
}

impl EndRecord {
    /// Decodes the fixed part; `None` without the end record's signature.
    pub fn parse(b: &[u8; END_LEN as usize]) -> Option<EndRecord> {
        if signature(b)? != END_SIG {
            return None;
        }
        Some(EndRecord {
            disk: get16(b, 4),
            central_disk: get16(b, 6),
            count_here: get16(b, 8),
            count: get16(b, 10),
            central_size: get32(b, 12),
            central_offset: get32(b, 16),
            comment_len: get16(b, 20),
        })
    }

    /// Whether a field holds a ZIP64 sentinel, so that ZIP64 end records may hold the value.
    pub fn may_be_zip64(&self) -> bool {
        self.count == u16::MAX || self.central_size == u32::MAX || self.central_offset == u32::MAX
    }
}

/// Length of the ZIP64 end of central directory locator.
pub const ZIP64_LOCATOR_LEN: u64 = 20;
/// Length of the ZIP64 end of central directory record's fixed part (extensible data may
/// follow).
pub const ZIP64_END_FIXED_LEN: u64 = 56;

/// The ZIP64 end of central directory locator (20 bytes, right before the end record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zip64Locator {
    /// Disk where the ZIP64 end record is.
    pub end_disk: u32,
    /// Offset of the ZIP64 end record, before any prefix data.
    pub end_offset: u64,
    /// Number of disks.
    pub disks: u32,
}

impl Zip64Locator {
    /// Decodes the locator; `None` without its signature.
    pub fn parse(b: &[u8; ZIP64_LOCATOR_LEN as usize]) -> Option<Zip64Locator> {
        if signature(b)? != ZIP64_LOCATOR_SIG {
            return None;
        }
        Some(Zip64Locator {
            end_disk: get32(b, 4),
            end_offset: get64(b, 8),
            disks: get32(b, 16),
        })
    }
}

/// The ZIP64 end of central directory record's fixed part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zip64EndRecord {
    /// Size of the rest of the record (44 without extensible data).
    pub rest_len: u64,
    /// Number of this disk.
    pub disk: u32,
    /// Disk where the central directory starts.
    pub central_disk: u32,
    /// Central directory records on this disk.
    pub count_here: u64,
    /// Central directory records in all.
    pub count: u64,
    /// Size of the central directory.
    pub central_size: u64,
    /// Offset of the central directory, before any prefix data.
    pub central_offset: u64,
}

impl Zip64EndRecord {
    /// Decodes the fixed part; `None` without its signature.
    pub fn parse(b: &[u8; ZIP64_END_FIXED_LEN as usize]) -> Option<Zip64EndRecord> {
        if signature(b)? != ZIP64_END_SIG {
            return None;
        }
        Some(Zip64EndRecord {
            rest_len: get64(b, 4),
            disk: get32(b, 16),
            central_disk: get32(b, 20),
            count_here: get64(b, 24),
            count: get64(b, 32),
            central_size: get64(b, 40),
            central_offset: get64(b, 48),
        })
    }
}

/// One record of an extra field: its id and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraRecord<'e> {
    /// The record's header id (0x0001 ZIP64, 0x7075 Info-ZIP Unicode Path, ...).
    pub id: u16,
    /// The record's data.
    pub data: &'e [u8],
}

/// Header ids the zip crate (and so psv until it read directories itself) requires a length
/// for: a record of one of these cut after its id is malformed; any other id with fewer than
/// four bytes left is trailing padding.
const KNOWN_EXTRA_IDS: [u16; 8] = [
    ZIP64_EXTRA_ID,
    0x000a, // NTFS
    0x5455, // extended timestamp
    0x6375, // Info-ZIP Unicode Comment
    UNICODE_PATH_EXTRA_ID,
    0x9901, // AE-x encryption
    ALIGN_EXTRA_ID,
    0xd935, // Android alignment
];

/// Info-ZIP Unicode Path extra field (APPNOTE 4.6.9): a UTF-8 name for the member.
pub const UNICODE_PATH_EXTRA_ID: u16 = 0x7075;

/// The records of an extra field, in order; `Err` when one runs past the end of the field.
/// Trailing bytes too few for a record header (1 to 3) are padding, except 2 or 3 bytes that
/// start with a known id (see [`KNOWN_EXTRA_IDS`]), which are a record cut short.
pub fn extra_records(extra: &[u8]) -> impl Iterator<Item = Result<ExtraRecord<'_>, ()>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = extra.get(at..)?;
        if rest.len() < 4 {
            at = extra.len();
            let cut_known = rest.len() >= 2 && KNOWN_EXTRA_IDS.contains(&get16(rest, 0));
            return cut_known.then_some(Err(()));
        }
        let (id, len) = (get16(rest, 0), usize::from(get16(rest, 2)));
        match rest.get(4..4 + len) {
            Some(data) => {
                at += 4 + len;
                Some(Ok(ExtraRecord { id, data }))
            }
            None => {
                at = extra.len();
                Some(Err(()))
            }
        }
    })
}

/// The name the zip crate gave an unsupported compression method (psv's messages have shown
/// these since it used that crate: `Shrink`, `Implode`, `Aes`, `Unknown`, ...).
pub fn method_name(code: u16) -> &'static str {
    match code {
        0 => "Stored",
        1 => "Shrink",
        2 => "Reduce(1)",
        3 => "Reduce(2)",
        4 => "Reduce(3)",
        5 => "Reduce(4)",
        6 => "Implode",
        8 => "Deflated",
        9 => "Deflate64",
        12 => "Bzip2",
        14 => "Lzma",
        93 => "Zstd",
        95 => "Xz",
        98 => "Ppmd",
        99 => "Aes",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npz::plan::{plan, MemberSpec};

    #[test]
    fn record_lengths_match_the_plan() {
        let specs = [
            MemberSpec {
                name_len: 5,
                payload_len: 200,
                deflated_size: None,
                header_len: 128,
            },
            MemberSpec {
                name_len: 9,
                payload_len: 5 << 30,
                deflated_size: None,
                header_len: 128,
            },
        ];
        let p = plan(&specs, super::super::plan::ALIGN).unwrap();
        for (m, s) in p.members.iter().zip(&specs) {
            let name = vec![b'a'; s.name_len];
            let mut local = Vec::new();
            local_header(&mut local, &name, m, 7);
            assert_eq!(local.len() as u64, m.payload_offset - m.header_offset);
            let mut central = Vec::new();
            central_header(&mut central, &name, m, 7);
            assert_eq!(central.len() as u64, m.central_len);
        }
        let mut end = Vec::new();
        end_records(&mut end, &p);
        assert_eq!(end.len(), 22 + 76);
    }

    #[test]
    fn stream_fields_names_and_zip64_values_decode() {
        let p = plan(
            &[MemberSpec {
                name_len: 5,
                payload_len: 200,
                deflated_size: None,
                header_len: 128,
            }],
            64,
        )
        .unwrap();
        let mut local = Vec::new();
        local_header(&mut local, b"a.npy", &p.members[0], 0xDEAD_BEEF);
        let fixed: [u8; 30] = local[..30].try_into().unwrap();
        let f = LocalFields::parse(&fixed).unwrap();
        assert_eq!((f.method, f.crc32, f.name_len), (0, 0xDEAD_BEEF, 5));
        assert_eq!((f.compressed_size, f.size), (200, 200));
        let mut central = Vec::new();
        central_header(&mut central, b"a.npy", &p.members[0], 7);
        let fixed: [u8; 46] = central[..46].try_into().unwrap();
        let c = CentralFields::parse(&fixed).unwrap();
        assert_eq!((c.crc32, c.header_offset, c.name_len), (7, 0, 5));
        // ZIP64 values are taken only for the sentinel fields, in their fixed order.
        let mut extra = vec![0x99, 0x99, 2, 0, 1, 2];
        extra.extend_from_slice(&[1, 0, 16, 0]);
        extra.extend_from_slice(&5u64.to_le_bytes());
        extra.extend_from_slice(&9u64.to_le_bytes());
        let data = zip64_extra(&extra).unwrap().unwrap();
        assert_eq!(
            zip64_values(data, [false, true, true]),
            Some([None, Some(5), Some(9)])
        );
        assert_eq!(zip64_values(data, [true, true, true]), None);
        assert!(zip64_extra(&[1, 0, 99, 0, 1]).is_err());
        assert_eq!(zip64_extra(&[]).unwrap(), None);
        // Names: UTF-8 as is, anything else as code page 437.
        assert_eq!(decode_name("π.npy".as_bytes()), "π.npy");
        assert_eq!(decode_name(b"\x80\xe3\xff.npy"), "Ç\u{3c0}\u{a0}.npy");
    }

    #[test]
    fn local_headers_decode_what_they_encode() {
        let p = plan(
            &[MemberSpec {
                name_len: 5,
                payload_len: 200,
                deflated_size: None,
                header_len: 128,
            }],
            super::super::plan::ALIGN,
        )
        .unwrap();
        let mut local = Vec::new();
        local_header(&mut local, b"a.npy", &p.members[0], 7);
        let h = LocalHeader::parse(&local).unwrap();
        assert_eq!(h.name(&local), Some(&b"a.npy"[..]));
        assert_eq!(h.payload_offset(), p.members[0].payload_offset);
        assert_eq!(LocalHeader::parse(&local[..29]), None);
        local[0] = b'X';
        assert_eq!(LocalHeader::parse(&local), None);
        let mut end = Vec::new();
        end_records(&mut end, &p);
        let rec = EndRecord::parse(end[..22].try_into().unwrap()).unwrap();
        assert_eq!(u64::from(rec.central_size), p.central_size);
        assert_eq!((rec.count, rec.count_here, rec.comment_len), (1, 1, 0));
        assert!(!rec.may_be_zip64());
        end[0] = b'X';
        assert_eq!(EndRecord::parse(end[..22].try_into().unwrap()), None);
    }
}
