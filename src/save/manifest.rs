//! The blobs a collective save exchanges between processes: a rank's *manifest* (what its
//! arrays are: member names, `.npy` headers, byte counts; no data) and its *CRC report* (the
//! CRC-32s of the members it wrote). Both are versioned little-endian byte strings, and both are
//! parsed like hostile input: every length is bounded and checked before anything is allocated
//! or sliced, and trailing bytes are an error.
//!
//! Manifest, version 1:
//!
//! ```text
//! magic "PSVMANIF" | version u32 = 1 | header count u32 | member count u64
//! per distinct .npy header: length u32, bytes
//! per member, in add order: name length u32, name (`<key>.npy`, UTF-8),
//!                           header index u32, data length u64
//! ```
//!
//! CRC report, version 1:
//!
//! ```text
//! magic "PSVCRCS\0" | version u32 = 1 | rank u32 | plan id [16] | first member u64 |
//! member count u64 | CRC-32 u32 per member
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use super::{validate_key, Member, MAX_KEY_LEN};
use crate::error::{Error, Result};
use crate::npy::header;
use crate::npz;
use crate::options::{DEFAULT_MAX_HEADER_LEN, DEFAULT_MAX_MEMBERS};

const MANIFEST_MAGIC: &[u8; 8] = b"PSVMANIF";
const CRCS_MAGIC: &[u8; 8] = b"PSVCRCS\0";
/// The format version both blobs are written in (and the only one read).
const VERSION: u32 = 1;
/// Length of a plan id.
pub const PLAN_ID_LEN: usize = 16;
/// Smallest `.npy` header (magic, version, length, and a dict).
const MIN_HEADER_LEN: usize = 16;
/// Fixed part of a manifest.
const MANIFEST_FIXED: usize = 8 + 4 + 4 + 8;
/// Smallest member record: name length, a 5-byte name (`k.npy`), header index, data length.
const MIN_MEMBER_RECORD: usize = 4 + 5 + 4 + 8;
/// Fixed part of a CRC report.
const CRCS_FIXED: usize = 8 + 4 + 4 + PLAN_ID_LEN + 8 + 8;

/// The manifest of `members` (a saver's arrays, in add order). Headers shared by several
/// members are written once.
pub(crate) fn encode_manifest(members: &[Member]) -> Result<Vec<u8>> {
    let mut index: HashMap<&[u8], u32> = HashMap::new();
    let mut headers: Vec<&[u8]> = Vec::new();
    let mut member_index = Vec::with_capacity(members.len());
    for m in members {
        let next = headers.len() as u32;
        let i = *index.entry(&m.header[..]).or_insert_with(|| {
            headers.push(&m.header[..]);
            next
        });
        member_index.push(i);
    }
    let len = MANIFEST_FIXED
        + headers.iter().map(|h| 4 + h.len()).sum::<usize>()
        + members.iter().map(|m| 16 + m.name.len()).sum::<usize>();
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .map_err(|_| Error::nomem("cannot allocate the manifest"))?;
    out.extend_from_slice(MANIFEST_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    out.extend_from_slice(&(members.len() as u64).to_le_bytes());
    for h in &headers {
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(h);
    }
    for (m, i) in members.iter().zip(member_index) {
        out.extend_from_slice(&(m.name.len() as u32).to_le_bytes());
        out.extend_from_slice(&m.name);
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&(m.data_len as u64).to_le_bytes());
    }
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

/// A cursor over a blob whose every read is bounded.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
    what: &'static str,
}

impl<'b> Reader<'b> {
    fn truncated(&self) -> Error {
        Error::format(format!(
            "{} is truncated at byte {} of {}",
            self.what,
            self.at,
            self.bytes.len()
        ))
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8]> {
        let end = self.at.checked_add(n).ok_or_else(|| self.truncated())?;
        let bytes = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| self.truncated())?;
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The magic and the version.
    fn preamble(&mut self, magic: &[u8; 8]) -> Result<()> {
        if self.bytes.get(..8) != Some(&magic[..]) {
            return Err(Error::format(format!(
                "not a psv {} (bad magic)",
                self.what
            )));
        }
        self.at = 8;
        let version = self.u32()?;
        if version != VERSION {
            return Err(Error::unsupported(format!(
                "{} version {version} (this libpsv reads version {VERSION})",
                self.what
            )));
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::format(format!(
                "{} has {} bytes after its end",
                self.what,
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Parses a manifest into the members it describes, checking everything: bounded counts and
/// lengths, UTF-8 `<key>.npy` names with valid keys, `.npy` headers that parse and whose byte
/// count is the member's data length.
///
/// # Errors
/// [`crate::ErrorKind::Format`] for a malformed manifest (the message says where),
/// [`crate::ErrorKind::Unsupported`] for another version, [`crate::ErrorKind::Limit`] beyond the
/// member count or header length limits.
pub(crate) fn parse_manifest(blob: &[u8]) -> Result<Vec<Member>> {
    let mut r = Reader {
        bytes: blob,
        at: 0,
        what: "manifest",
    };
    r.preamble(MANIFEST_MAGIC)?;
    let n_headers = r.u32()? as usize;
    let n_members = r.u64()?;
    if n_members > DEFAULT_MAX_MEMBERS {
        return Err(Error::limit(format!(
            "manifest lists {n_members} arrays; the limit is {DEFAULT_MAX_MEMBERS}"
        )));
    }
    let n_members = n_members as usize;
    // Bounds from the blob's own length, before anything is allocated.
    if n_members > r.remaining() / MIN_MEMBER_RECORD
        || n_headers > r.remaining() / (4 + MIN_HEADER_LEN)
        || n_headers > n_members
        || (n_members > 0 && n_headers == 0)
    {
        return Err(Error::format(format!(
            "manifest of {} bytes cannot hold {n_members} arrays and {n_headers} headers",
            blob.len()
        )));
    }
    let max_header = DEFAULT_MAX_HEADER_LEN as usize;
    let mut headers: Vec<(Arc<[u8]>, usize)> = Vec::with_capacity(n_headers);
    for k in 0..n_headers {
        let len = r.u32()? as usize;
        if !(MIN_HEADER_LEN..=max_header).contains(&len) {
            return Err(Error::format(format!(
                "manifest header {k} has a length of {len} bytes"
            )));
        }
        let bytes = r.take(len)?;
        let parsed = header::parse(bytes, max_header)
            .map_err(|e| e.context(format!("manifest header {k}")))?;
        if parsed.header_len != len {
            return Err(Error::format(format!(
                "manifest header {k}: {len} bytes hold a .npy header of {}",
                parsed.header_len
            )));
        }
        headers.push((bytes.into(), parsed.nbytes));
    }
    let mut members = Vec::with_capacity(n_members);
    for k in 0..n_members {
        let name_len = r.u32()? as usize;
        if name_len > MAX_KEY_LEN + npz::MEMBER_SUFFIX.len() {
            return Err(Error::format(format!(
                "manifest array {k} has a name of {name_len} bytes"
            )));
        }
        let name = r.take(name_len)?;
        let key = std::str::from_utf8(name)
            .ok()
            .and_then(npz::key_of)
            .ok_or_else(|| {
                Error::format(format!(
                    "manifest array {k}: name {:?} is not UTF-8 `<key>.npy`",
                    String::from_utf8_lossy(name)
                ))
            })?;
        validate_key(key).map_err(|e| Error::format(format!("manifest array {k}: {e}")))?;
        let h = r.u32()? as usize;
        let data_len = r.u64()?;
        let (header, nbytes) = headers.get(h).ok_or_else(|| {
            Error::format(format!(
                "manifest array {key:?} names header {h} of {n_headers}"
            ))
        })?;
        if data_len != *nbytes as u64 {
            return Err(Error::format(format!(
                "manifest array {key:?}: {data_len} bytes of data, but its header's shape and \
                 type need {nbytes}"
            )));
        }
        members.push(Member {
            name: name.to_vec(),
            header: Arc::clone(header),
            data_len: *nbytes,
        });
    }
    r.finish()?;
    Ok(members)
}

/// A rank's CRC report, as parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CrcReport {
    pub(crate) rank: u32,
    pub(crate) plan_id: [u8; PLAN_ID_LEN],
    pub(crate) first: u64,
    pub(crate) crcs: Vec<u32>,
}

/// The CRC report of `rank`, which wrote members `first ..` of plan `plan_id`.
pub(crate) fn encode_crcs(
    rank: u32,
    plan_id: &[u8; PLAN_ID_LEN],
    first: u64,
    crcs: &[u32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRCS_FIXED + 4 * crcs.len());
    out.extend_from_slice(CRCS_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&rank.to_le_bytes());
    out.extend_from_slice(plan_id);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&(crcs.len() as u64).to_le_bytes());
    for c in crcs {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out
}

/// Parses a CRC report (its length must be exactly what its count says).
///
/// # Errors
/// [`crate::ErrorKind::Format`] for a malformed report, [`crate::ErrorKind::Unsupported`] for
/// another version.
pub(crate) fn parse_crcs(blob: &[u8]) -> Result<CrcReport> {
    let mut r = Reader {
        bytes: blob,
        at: 0,
        what: "CRC report",
    };
    r.preamble(CRCS_MAGIC)?;
    let rank = r.u32()?;
    let mut plan_id = [0u8; PLAN_ID_LEN];
    plan_id.copy_from_slice(r.take(PLAN_ID_LEN)?);
    let first = r.u64()?;
    let count = r.u64()?;
    if count != (r.remaining() / 4) as u64 || r.remaining() % 4 != 0 {
        return Err(Error::format(format!(
            "CRC report of {} bytes does not hold {count} CRCs",
            blob.len()
        )));
    }
    let crcs = r
        .take(count as usize * 4)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    r.finish()?;
    Ok(CrcReport {
        rank,
        plan_id,
        first,
        crcs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::error::ErrorKind;
    use crate::save::Saver;

    fn sample() -> Vec<u8> {
        let a = [0u8; 24];
        let mut s = Saver::new();
        s.add("a", &a, Dtype::F64, &[3]).unwrap();
        s.add("b", &a, Dtype::F64, &[3]).unwrap();
        s.add("中", &a[..6], Dtype::U16, &[3]).unwrap();
        s.add_descr("rec", &a[..12], "[('x', '<i4')]", &[3], false)
            .unwrap();
        encode_manifest(&s.members).unwrap()
    }

    #[test]
    fn a_manifest_round_trips_and_shares_headers() {
        let blob = sample();
        let m = parse_manifest(&blob).unwrap();
        let keys: Vec<&str> = m.iter().map(Member::key).collect();
        assert_eq!(keys, ["a", "b", "中", "rec"]);
        assert_eq!(
            m.iter().map(|m| m.data_len).collect::<Vec<_>>(),
            [24, 24, 6, 12]
        );
        assert!(Arc::ptr_eq(&m[0].header, &m[1].header));
        assert_eq!(u32::from_le_bytes(blob[12..16].try_into().unwrap()), 3);
        let empty = encode_manifest(&[]).unwrap();
        assert_eq!(empty.len(), MANIFEST_FIXED);
        assert!(parse_manifest(&empty).unwrap().is_empty());
    }

    #[test]
    fn every_truncation_and_any_trailing_byte_is_a_clean_error() {
        let blob = sample();
        for cut in 0..blob.len() {
            let e = parse_manifest(&blob[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Format, "cut {cut}: {e}");
        }
        let mut long = blob.clone();
        long.push(0);
        let e = parse_manifest(&long).unwrap_err();
        assert!(e.message().contains("after its end"), "{e}");
    }

    #[test]
    fn hostile_manifests_are_refused_without_allocating_what_they_claim() {
        let blob = sample();
        let patched = |at: usize, bytes: &[u8]| {
            let mut b = blob.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            parse_manifest(&b).unwrap_err()
        };
        // Bad magic, another version.
        assert_eq!(patched(0, b"X").kind(), ErrorKind::Format);
        assert_eq!(
            patched(8, &2u32.to_le_bytes()).kind(),
            ErrorKind::Unsupported
        );
        // Counts far beyond the blob, or beyond the member limit.
        assert_eq!(
            patched(12, &u32::MAX.to_le_bytes()).kind(),
            ErrorKind::Format
        );
        assert_eq!(
            patched(16, &(1u64 << 40).to_le_bytes()).kind(),
            ErrorKind::Limit
        );
        assert_eq!(
            patched(16, &1000u64.to_le_bytes()).kind(),
            ErrorKind::Format
        );
        // The first header's length: huge, tiny.
        assert_eq!(
            patched(24, &u32::MAX.to_le_bytes()).kind(),
            ErrorKind::Format
        );
        assert_eq!(patched(24, &3u32.to_le_bytes()).kind(), ErrorKind::Format);
        // A header whose bytes are not a .npy header.
        assert_ne!(patched(28, b"\x93NUMPX").kind(), ErrorKind::Panic);
        // Member records: find the first ("a.npy") and break its fields.
        let at = blob.windows(5).position(|w| w == b"a.npy").unwrap() - 4;
        assert_eq!(
            patched(at, &u32::MAX.to_le_bytes()).kind(),
            ErrorKind::Format
        );
        assert_eq!(patched(at + 4, b"a.npz").kind(), ErrorKind::Format);
        assert_eq!(patched(at + 4, b"\0.npy").kind(), ErrorKind::Format);
        assert_eq!(patched(at + 4, b"\xff.npy").kind(), ErrorKind::Format);
        assert_eq!(
            patched(at + 9, &77u32.to_le_bytes()).kind(),
            ErrorKind::Format
        );
        let e = patched(at + 13, &25u64.to_le_bytes());
        assert!(e.message().contains("need 24"), "{e}");
        // Random corruption never panics.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut b = blob.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % b.len() as u64) as usize;
                b[i] = (seed >> 32) as u8;
            }
            let _ = parse_manifest(&b);
        }
    }

    #[test]
    fn crc_reports_round_trip_and_are_checked() {
        let id = [7u8; PLAN_ID_LEN];
        let blob = encode_crcs(3, &id, 10, &[1, 2, 0xdead_beef]);
        let r = parse_crcs(&blob).unwrap();
        assert_eq!(
            r,
            CrcReport {
                rank: 3,
                plan_id: id,
                first: 10,
                crcs: vec![1, 2, 0xdead_beef]
            }
        );
        for cut in 0..blob.len() {
            assert_eq!(
                parse_crcs(&blob[..cut]).unwrap_err().kind(),
                ErrorKind::Format
            );
        }
        let mut b = blob.clone();
        b[CRCS_FIXED - 8..CRCS_FIXED].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse_crcs(&b).unwrap_err().kind(), ErrorKind::Format);
        assert_eq!(parse_crcs(&sample()).unwrap_err().kind(), ErrorKind::Format);
    }
}
