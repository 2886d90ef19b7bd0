//! The ZIP records as bytes (APPNOTE 6.3.10; FORMAT.md sections 5 and 7): the encoding of
//! every record our writer emits, and the decoding of the fixed parts a reader needs beyond
//! what the zip crate parses (local headers, central records' fixed fields, end signatures).
//!
//! Written members are stored (method 0) or deflated (method 8), dated 1980-01-01 like numpy's,
//! with no data descriptor: every size and CRC is known when the headers are written.

use super::plan::{MemberPlan, Plan, CENTRAL_HEADER_LEN, LOCAL_HEADER_LEN, ZIP16_MAX};

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
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// APPNOTE 4.6.11 "Data Stream Alignment" extra field.
const ALIGN_EXTRA_ID: u16 = 0xA11E;
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

/// The fields a reader checks in a central directory record's fixed part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CentralFixed {
    /// "Version needed to extract", low byte (the ZIP spec version times ten).
    pub version_needed: u16,
    /// General purpose flags.
    pub flags: u16,
    /// Bytes of name, extra field and comment after the fixed part.
    pub variable_len: u64,
}

impl CentralFixed {
    /// Decodes a central directory record's fixed part; `None` without its signature.
    pub fn parse(fixed: &[u8; CENTRAL_HEADER_LEN as usize]) -> Option<CentralFixed> {
        if signature(fixed)? != CENTRAL_SIG {
            return None;
        }
        Some(CentralFixed {
            version_needed: get16(fixed, 6) & 0xff,
            flags: get16(fixed, 8),
            variable_len: u64::from(get16(fixed, 28))
                + u64::from(get16(fixed, 30))
                + u64::from(get16(fixed, 32)),
        })
    }
}

/// The central directory size an end record declares, from the bytes that follow the
/// directory: `Ok(Some(size))` from a ZIP64 or plain end record, `Ok(None)` when the record
/// defers to ZIP64 or is a digital signature, `Err(signature)` for anything else (`None`
/// when fewer than four bytes follow).
pub fn declared_central_size(end: &[u8]) -> Result<Option<u64>, Option<u32>> {
    match signature(end) {
        Some(ZIP64_END_SIG) if end.len() >= 48 => Ok(Some(u64::from_le_bytes(
            end[40..48].try_into().expect("8 bytes"),
        ))),
        Some(END_SIG) if end.len() >= 16 => {
            let size = u32::from_le_bytes(end[12..16].try_into().expect("4 bytes"));
            Ok((size != u32::MAX).then_some(u64::from(size)))
        }
        Some(DIGITAL_SIG) => Ok(None),
        other => Err(other),
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
        assert_eq!(declared_central_size(&end), Ok(Some(p.central_size)));
        assert_eq!(declared_central_size(b"PK"), Err(None));
    }
}
