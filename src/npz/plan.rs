//! The archive plan: every record's offset and size, computed before any I/O.
//!
//! Written by hand because no zip crate plans a whole archive up front: we need every member's
//! offset before writing, so that threads can `pwrite` array bytes at their final positions in
//! parallel, and we need each member's array data to start at a multiple of 64 (0xA11E padding in
//! the local extra field) so that array data is 64-byte aligned in the file (FORMAT.md section 7).
//!
//! A larger alignment (a power of two up to [`MAX_ALIGN`]) applies to the stored members whose
//! array data holds at least that many bytes: their data starts at a multiple of it (a file
//! system stripe, a page for `O_DIRECT`); smaller members, and deflated ones, keep 64. Padding
//! that fits goes in the 0xA11E field (at most [`MAX_ALIGN_FIELD`] bytes); beyond that the
//! field keeps its 6 bytes and zero bytes before the local header make up the rest (readers
//! find members through the central directory: numpy, zipfile, `unzip` and the zip crate
//! accept such gaps).

use crate::error::{Error, Result};

/// Values at or above this need ZIP64 (0xFFFFFFFF itself is the sentinel).
pub const ZIP32_MAX: u64 = 0xFFFF_FFFF;
/// Member counts at or above this get a ZIP64 end record.
pub const ZIP16_MAX: u64 = 0xFFFF;
/// Fixed part of a local file header.
pub const LOCAL_HEADER_LEN: u64 = 30;
/// Fixed part of a central directory header.
pub const CENTRAL_HEADER_LEN: u64 = 46;
/// ZIP64 end of central directory record (no extensible data) + locator.
pub const ZIP64_END_LEN: u64 = 56 + 20;
/// End of central directory record without comment.
pub const END_LEN: u64 = 22;
/// Alignment of every member's array data (and payload) by default.
pub const ALIGN: u64 = 64;
/// Largest alignment a save accepts.
pub const MAX_ALIGN: u64 = 1 << 20;
/// Smallest 0xA11E extra field: id, size, alignment word.
const MIN_ALIGN_FIELD: u64 = 6;
/// Largest 0xA11E extra field: the local extra length is 16 bits and may also hold the ZIP64
/// sizes.
pub const MAX_ALIGN_FIELD: u64 = 0xFFFF - LOCAL_ZIP64_LEN;
/// Local ZIP64 extra: id, size, uncompressed and compressed sizes.
pub const LOCAL_ZIP64_LEN: u64 = 20;

/// One member as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub struct MemberSpec {
    /// Length of the member name in bytes (`key.npy`).
    pub name_len: usize,
    /// Bytes of payload in the file: npy header plus array bytes, or their deflate stream.
    pub payload_len: u64,
    /// For a deflated payload, its uncompressed length; `None` for a stored one.
    pub deflated_size: Option<u64>,
    /// Bytes of a stored payload before the array data (the `.npy` header): the data, not the
    /// payload, is what is aligned. 0 for a deflated payload.
    pub header_len: u64,
}

/// Where one member goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberPlan {
    /// Zero bytes between the previous member's end and this local header (alignment padding
    /// that does not fit the 0xA11E field; usually 0).
    pub gap_len: u64,
    /// Offset of the local file header.
    pub header_offset: u64,
    /// The alignment of this member's array data in the file (64, or the save's alignment).
    pub align: u64,
    /// Whether the sizes need ZIP64 (local and central).
    pub zip64_sizes: bool,
    /// Length of the 0xA11E alignment field in the local extra.
    pub align_field_len: u64,
    /// Offset of the payload (the npy header); a multiple of 64.
    pub payload_offset: u64,
    /// Payload length in the file (the compressed size).
    pub payload_len: u64,
    /// Uncompressed payload length (equal to `payload_len` when stored).
    pub size: u64,
    /// Whether the payload is deflated (method 8) rather than stored.
    pub deflated: bool,
    /// Length of this member's central directory record.
    pub central_len: u64,
}

impl MemberPlan {
    /// Where this member's bytes begin: its gap, then its local header.
    pub fn start(&self) -> u64 {
        self.header_offset - self.gap_len
    }

    /// Whether the central record's offset field needs ZIP64.
    pub fn zip64_offset(&self) -> bool {
        self.header_offset >= ZIP32_MAX
    }

    /// Total local extra field length.
    pub fn local_extra_len(&self) -> u64 {
        if self.zip64_sizes {
            LOCAL_ZIP64_LEN + self.align_field_len
        } else {
            self.align_field_len
        }
    }

    /// Number of 8-byte values in the central ZIP64 extra (0 if none).
    pub fn central_zip64_values(&self) -> u64 {
        2 * u64::from(self.zip64_sizes) + u64::from(self.zip64_offset())
    }
}

/// The whole archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Per member, in order.
    pub members: Vec<MemberPlan>,
    /// Offset of the central directory.
    pub central_offset: u64,
    /// Size of the central directory.
    pub central_size: u64,
    /// Whether ZIP64 end records are written.
    pub zip64_end: bool,
    /// Total file size.
    pub total_len: u64,
}

/// Whether `align` is an alignment a save accepts: a power of two from 64 to [`MAX_ALIGN`].
pub fn valid_align(align: u64) -> bool {
    align.is_power_of_two() && (ALIGN..=MAX_ALIGN).contains(&align)
}

/// Plans an archive holding `members` in order; stored members with at least `align` bytes of
/// array data have it start at a multiple of `align` (a valid alignment, see [`valid_align`]),
/// every other member's at a multiple of 64.
pub fn plan(members: &[MemberSpec], align: u64) -> Result<Plan> {
    if !valid_align(align) {
        return Err(Error::invalid_arg(format!(
            "alignment {align} is not a power of two from {ALIGN} to {MAX_ALIGN}"
        )));
    }
    let overflow = || Error::overflow("archive size overflows 64 bits");
    let mut planned = Vec::with_capacity(members.len());
    let mut offset: u64 = 0;
    let mut central_size: u64 = 0;
    for m in members {
        let name_len = m.name_len as u64;
        let size = m.deflated_size.unwrap_or(m.payload_len);
        let zip64_sizes = m.payload_len >= ZIP32_MAX || size >= ZIP32_MAX;
        let fixed = LOCAL_HEADER_LEN + name_len + if zip64_sizes { LOCAL_ZIP64_LEN } else { 0 };
        let data_len = m.payload_len.saturating_sub(m.header_len);
        let want = if m.deflated_size.is_none() && data_len >= align {
            align
        } else {
            ALIGN
        };
        // Where the data would start with no padding at all, then the padding (at least the
        // field's own 6 bytes) that brings it to a multiple of `want`.
        let unpadded = offset
            .checked_add(fixed)
            .and_then(|o| o.checked_add(m.header_len))
            .ok_or_else(overflow)?;
        let pad = MIN_ALIGN_FIELD
            + (want - (unpadded.checked_add(MIN_ALIGN_FIELD).ok_or_else(overflow)? % want)) % want;
        let (gap_len, align_field_len) = if pad <= MAX_ALIGN_FIELD {
            (0, pad)
        } else {
            (pad - MIN_ALIGN_FIELD, MIN_ALIGN_FIELD)
        };
        let header_offset = offset + gap_len;
        let payload_offset = unpadded
            .checked_add(pad)
            .map(|d| d - m.header_len)
            .ok_or_else(overflow)?;
        let mut member = MemberPlan {
            gap_len,
            header_offset,
            align: want,
            zip64_sizes,
            align_field_len,
            payload_offset,
            payload_len: m.payload_len,
            size,
            deflated: m.deflated_size.is_some(),
            central_len: 0,
        };
        let zip64_values = member.central_zip64_values();
        let central_extra = if zip64_values > 0 {
            4 + 8 * zip64_values
        } else {
            0
        };
        member.central_len = CENTRAL_HEADER_LEN + name_len + central_extra;
        central_size = central_size
            .checked_add(member.central_len)
            .ok_or_else(overflow)?;
        offset = payload_offset
            .checked_add(m.payload_len)
            .ok_or_else(overflow)?;
        planned.push(member);
    }
    let central_offset = offset;
    let zip64_end = members.len() as u64 >= ZIP16_MAX
        || central_offset >= ZIP32_MAX
        || central_size >= ZIP32_MAX;
    let total_len = central_offset
        .checked_add(central_size)
        .and_then(|t| t.checked_add(if zip64_end { ZIP64_END_LEN } else { 0 } + END_LEN))
        .ok_or_else(overflow)?;
    Ok(Plan {
        members: planned,
        central_offset,
        central_size,
        zip64_end,
        total_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_64_aligned_and_contiguous() {
        let specs: Vec<MemberSpec> = (0..100)
            .map(|i| MemberSpec {
                name_len: 5 + i % 13,
                payload_len: 128 + (i as u64 * 37) % 1000,
                deflated_size: None,
                header_len: 0,
            })
            .collect();
        let p = plan(&specs, ALIGN).unwrap();
        let mut end = 0;
        for (m, s) in p.members.iter().zip(&specs) {
            assert_eq!(m.header_offset, end);
            assert_eq!(m.payload_offset % 64, 0);
            assert!(m.align_field_len >= 6);
            assert_eq!(
                m.payload_offset,
                m.header_offset + 30 + s.name_len as u64 + m.local_extra_len()
            );
            end = m.payload_offset + m.payload_len;
        }
        assert_eq!(p.central_offset, end);
        assert!(!p.zip64_end);
        assert_eq!(p.total_len, end + p.central_size + 22);
    }

    #[test]
    fn zip64_where_needed() {
        let big = MemberSpec {
            name_len: 5,
            payload_len: 5 << 30,
            deflated_size: None,
            header_len: 0,
        };
        let small = MemberSpec {
            name_len: 5,
            payload_len: 128,
            deflated_size: None,
            header_len: 0,
        };
        let p = plan(&[big, small], ALIGN).unwrap();
        assert!(p.members[0].zip64_sizes && !p.members[0].zip64_offset());
        assert!(!p.members[1].zip64_sizes && p.members[1].zip64_offset());
        assert_eq!(p.members[0].central_len, 46 + 5 + 4 + 16);
        assert_eq!(p.members[1].central_len, 46 + 5 + 4 + 8);
        assert!(p.zip64_end);
        let many = vec![small; 65535];
        assert!(plan(&many, ALIGN).unwrap().zip64_end);
        assert!(!plan(&many[..65534], ALIGN).unwrap().zip64_end);
        let empty = plan(&[], ALIGN).unwrap();
        assert_eq!(empty.total_len, 22);
    }

    #[test]
    fn large_arrays_data_starts_on_the_alignment_and_small_ones_on_64() {
        for align in [64u64, 128, 4096, 1 << 15, 1 << 16, 1 << 20] {
            let specs: Vec<MemberSpec> = (0..40u64)
                .map(|i| MemberSpec {
                    name_len: 3 + (i as usize * 7) % 50,
                    // Around the alignment: below, at, above it.
                    payload_len: 128 + [align - 1, align, 3 * align + 5, 17][i as usize % 4],
                    deflated_size: (i % 5 == 4).then_some(align * 2),
                    header_len: if i % 5 == 4 { 0 } else { 128 },
                })
                .collect();
            let p = plan(&specs, align).unwrap();
            let mut end = 0;
            for (m, s) in p.members.iter().zip(&specs) {
                let data = m.payload_offset + s.header_len;
                let large = s.deflated_size.is_none() && s.payload_len - s.header_len >= align;
                assert_eq!(m.align, if large { align } else { 64 });
                assert_eq!(data % m.align, 0, "{align}: data aligned");
                assert_eq!(m.start(), end, "{align}: no hole the plan does not own");
                assert!(m.align_field_len >= 6 && m.align_field_len <= MAX_ALIGN_FIELD);
                // A gap only when the padding does not fit the field.
                assert!(m.gap_len == 0 || m.align_field_len == 6);
                assert!(m.gap_len + m.align_field_len < m.align + 6);
                assert_eq!(
                    m.payload_offset,
                    m.header_offset + 30 + s.name_len as u64 + m.local_extra_len()
                );
                end = m.payload_offset + m.payload_len;
            }
            assert_eq!(p.central_offset, end);
            if align > 2 * MAX_ALIGN_FIELD {
                assert!(
                    p.members.iter().any(|m| m.gap_len > 0),
                    "{align}: gaps used"
                );
            }
        }
        // 64 is the plain plan: identical to what every save wrote before the option.
        let specs = [MemberSpec {
            name_len: 9,
            payload_len: 1 << 20,
            deflated_size: None,
            header_len: 128,
        }];
        assert_eq!(plan(&specs, 64).unwrap().members[0].payload_offset, 64);
        for bad in [0u64, 32, 63, 65, 96, 3 << 10, 2 << 20] {
            assert!(plan(&specs, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overflow_is_an_error() {
        let huge = MemberSpec {
            name_len: 5,
            payload_len: u64::MAX - 10,
            deflated_size: None,
            header_len: 0,
        };
        assert!(plan(&[huge, huge], ALIGN).is_err());
    }
}
