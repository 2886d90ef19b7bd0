//! The `.npy` header: strict, bounded parsing and byte-exact numpy formatting.
//!
//! Layout: `\x93NUMPY`, major, minor, HEADER_LEN (`<u2` for 1.0, `<u4` for 2.0/3.0), then
//! HEADER_LEN bytes of a Python dict literal `{'descr': .., 'fortran_order': .., 'shape': ..}`
//! (latin-1 for 1.0/2.0, UTF-8 for 3.0), then the array data.

use crate::descr::{self, ArrayType, Descr};
use crate::error::{Error, Result};
use crate::pylit::{self, Value};
use crate::shape;

/// The six magic bytes every `.npy` member starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy pads headers so that data starts at a multiple of this.
pub const ARRAY_ALIGN: usize = 64;
/// numpy 1.24+ leaves room for the first (or, in Fortran order, last) axis to grow to this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Bytes needed to know a header's total length: magic, version, and a 4-byte length.
pub const PREFIX_LEN: usize = 12;

/// A parsed and validated `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format version `(major, minor)`.
    pub version: (u8, u8),
    /// Bytes from the magic to the first data byte.
    pub header_len: usize,
    /// Element type (top-level sub-array dims are already folded into `shape`).
    pub descr: Descr,
    /// Array shape (`[]` for 0-d).
    pub shape: Vec<u64>,
    /// True if the data is in Fortran (column-major) order.
    pub fortran_order: bool,
    /// Bytes of array data after the header: prod(shape) * itemsize, checked.
    pub nbytes: usize,
}

/// True if `bytes` starts with the npy magic.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Reads the magic, version and HEADER_LEN from the first bytes of a member and returns the
/// header's total length (magic through padding), after checking it against `max_header_len`.
///
/// `prefix` must hold at least the first 10 bytes (12 for versions 2.0 and 3.0); fewer bytes
/// mean the member is truncated.
pub fn total_header_len(prefix: &[u8], max_header_len: usize) -> Result<usize> {
    let truncated = || Error::format("member is too short for a .npy header");
    if prefix.len() < 8 {
        return Err(truncated());
    }
    if !has_magic(prefix) {
        return Err(Error::format("member does not start with the .npy magic"));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (len, fixed) = match (major, minor) {
        (1, 0) => {
            let b = prefix.get(8..10).ok_or_else(truncated)?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10)
        }
        (2, 0) | (3, 0) => {
            let b = prefix.get(8..12).ok_or_else(truncated)?;
            let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            (
                usize::try_from(len).map_err(|_| Error::limit("header too long"))?,
                12,
            )
        }
        _ => {
            return Err(Error::unsupported(format!(
                ".npy format version {major}.{minor} is not supported (only 1.0, 2.0, 3.0)"
            )))
        }
    };
    if len > max_header_len {
        return Err(Error::limit(format!(
            ".npy header length {len} exceeds the limit of {max_header_len} bytes"
        )));
    }
    Ok(fixed + len)
}

/// Remembers the last few headers parsed, so that an archive of thousands of arrays of a few
/// types and shapes parses each distinct header once: parsing was most of what a small member
/// cost to restore (README, "Performance notes"), and a hit costs a byte comparison and a clone.
#[derive(Default)]
pub struct ParseCache {
    recent: Vec<(Vec<u8>, NpyHeader)>,
}

impl ParseCache {
    /// How many distinct headers are remembered.
    const LEN: usize = 4;

    /// [`parse`], or a clone of the result for the same bytes parsed before. One cache must
    /// always be used with the same `max_header_len`.
    pub fn parse(&mut self, bytes: &[u8], max_header_len: usize) -> Result<NpyHeader> {
        if let Some((_, header)) = self.recent.iter().find(|(b, _)| b == bytes) {
            return Ok(header.clone());
        }
        let header = parse(bytes, max_header_len)?;
        self.recent.truncate(Self::LEN - 1);
        self.recent.insert(0, (bytes.to_vec(), header.clone()));
        Ok(header)
    }
}

/// Parses a complete header (`bytes` holds at least `total_header_len` bytes).
pub fn parse(bytes: &[u8], max_header_len: usize) -> Result<NpyHeader> {
    let total = total_header_len(bytes, max_header_len)?;
    let version = (bytes[6], bytes[7]);
    let fixed = if version == (1, 0) { 10 } else { 12 };
    let raw = bytes
        .get(fixed..total)
        .ok_or_else(|| Error::format("member is shorter than its .npy header"))?;
    let text: String = if version == (3, 0) {
        std::str::from_utf8(raw)
            .map_err(|_| Error::format(".npy 3.0 header is not valid UTF-8"))?
            .to_owned()
    } else {
        raw.iter().map(|&b| char::from(b)).collect() // latin-1
    };
    let Value::Dict(items) = pylit::parse(&text)? else {
        return Err(Error::format(".npy header is not a dict"));
    };
    let (mut descr_v, mut order_v, mut shape_v) = (None, None, None);
    for (k, v) in &items {
        let slot = match k {
            Value::Str(k) if k == "descr" => &mut descr_v,
            Value::Str(k) if k == "fortran_order" => &mut order_v,
            Value::Str(k) if k == "shape" => &mut shape_v,
            other => {
                return Err(Error::format(format!(
                    ".npy header has an unexpected key {other:?} (only descr, fortran_order, shape)"
                )))
            }
        };
        if slot.replace(v).is_some() {
            return Err(Error::format(format!(".npy header repeats the key {k:?}")));
        }
    }
    let (Some(descr_v), Some(order_v), Some(shape_v)) = (descr_v, order_v, shape_v) else {
        return Err(Error::format(
            ".npy header must have exactly the keys descr, fortran_order and shape",
        ));
    };
    let Value::Bool(fortran_order) = *order_v else {
        return Err(Error::format(".npy header fortran_order is not True/False"));
    };
    let Value::Tuple(_) = shape_v else {
        return Err(Error::format(".npy header shape is not a tuple"));
    };
    let mut shape = descr::shape_from_value(shape_v)?;
    let ArrayType { descr, sub_shape } = descr::array_type_from_value(descr_v)?;
    shape.extend_from_slice(&sub_shape);
    let nbytes = shape::byte_count(&shape, descr.itemsize())?;
    Ok(NpyHeader {
        version,
        header_len: total,
        descr,
        shape,
        fortran_order,
        nbytes,
    })
}

/// Formats the header numpy (>= 1.24) writes for an array: the same version choice, key
/// order, growth spaces and 64-byte padding, byte for byte.
pub fn format(descr: &Descr, shape: &[u64], fortran_order: bool) -> Vec<u8> {
    let mut text = format!(
        "{{'descr': {}, 'fortran_order': {}, 'shape': {}, }}",
        descr.repr(),
        if fortran_order { "True" } else { "False" },
        pylit::repr_shape(shape)
    );
    let growth_axis = if fortran_order {
        shape.last()
    } else {
        shape.first()
    };
    if let Some(axis) = growth_axis {
        let digits = axis.to_string().len();
        text.extend(std::iter::repeat_n(
            ' ',
            GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
        ));
    }
    // Version 1.0 if the text is latin-1 and short enough, 2.0 if only too long, else 3.0 (UTF-8).
    let latin1: Option<Vec<u8>> = text
        .chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect();
    let (version, body, len_bytes) = match latin1 {
        Some(b) if wrapped_len(b.len(), 2) <= usize::from(u16::MAX) => ((1u8, 0u8), b, 2),
        Some(b) => ((2, 0), b, 4),
        None => ((3, 0), text.into_bytes(), 4),
    };
    let hlen = wrapped_len(body.len(), len_bytes);
    let mut out = Vec::with_capacity(8 + len_bytes + hlen);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version.0, version.1]);
    if len_bytes == 2 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(&body);
    out.resize(out.len() + (hlen - body.len() - 1), b' ');
    out.push(b'\n');
    out
}

/// HEADER_LEN for a body of `body_len` bytes: body, padding (1..=64 spaces) and the newline.
fn wrapped_len(body_len: usize, len_bytes: usize) -> usize {
    let hlen = body_len + 1;
    let padlen = ARRAY_ALIGN - ((MAGIC.len() + 2 + len_bytes + hlen) % ARRAY_ALIGN);
    hlen + padlen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descr::parse_descr_text;

    fn simple(s: &str) -> Descr {
        parse_descr_text(s).unwrap().descr
    }

    #[test]
    fn matches_numpy_for_f8_2x3() {
        // np.save of np.zeros((2, 3)): HEADER_LEN 118, total 128 (FORMAT.md 1.4).
        let h = format(&simple("<f8"), &[2, 3], false);
        assert_eq!(h.len(), 128);
        assert_eq!(&h[..10], b"\x93NUMPY\x01\x00\x76\x00");
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(text.ends_with(" \n"));
        let parsed = parse(&h, 1 << 20).unwrap();
        assert_eq!(parsed.shape, vec![2, 3]);
        assert_eq!(parsed.nbytes, 48);
        assert_eq!(parsed.header_len, 128);
    }

    #[test]
    fn every_header_is_a_multiple_of_64() {
        for n in 0..200u64 {
            let h = format(&simple("<i4"), &[n, 7, n * 1000], n % 2 == 0);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(parse(&h, 1 << 20).unwrap().header_len, h.len());
        }
        let h = format(&simple("|b1"), &[], false);
        assert_eq!(h.len() % 64, 0);
    }

    #[test]
    fn version_choice() {
        let wide: Vec<String> = (0..3000).map(|i| format!("('field_{i}', '<f8')")).collect();
        let rec = parse_descr_text(&format!("[{}]", wide.join(", ")))
            .unwrap()
            .descr;
        let h = format(&rec, &[1], false);
        assert_eq!((h[6], h[7]), (2, 0));
        let h = format(
            &parse_descr_text("[('\u{e9}', '<f8')]").unwrap().descr,
            &[1],
            false,
        );
        assert_eq!((h[6], h[7]), (1, 0));
        assert!(h.contains(&0xe9));
        let h = format(
            &parse_descr_text("[('\u{4e2d}', '<f8')]").unwrap().descr,
            &[1],
            false,
        );
        assert_eq!((h[6], h[7]), (3, 0));
        assert_eq!(
            parse(&h, 1 << 20).unwrap().descr.repr(),
            "[('\u{4e2d}', '<f8')]"
        );
    }

    #[test]
    fn tolerates_what_numpy_tolerates() {
        let mk = |text: &str| {
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend_from_slice(&(text.len() as u16).to_le_bytes());
            v.extend_from_slice(text.as_bytes());
            v
        };
        let h = parse(
            &mk("{\"shape\": (3L,), \"descr\": \"<i2\", \"fortran_order\": False}"),
            1 << 20,
        )
        .unwrap();
        assert_eq!(h.shape, vec![3]);
        assert_eq!(h.nbytes, 6);
        let h = parse(
            &mk("{'descr': ('<f4', (2,)), 'fortran_order': False, 'shape': (3,)}\n"),
            1 << 20,
        )
        .unwrap();
        assert_eq!(h.shape, vec![3, 2]);
        for bad in [
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'x': 1}",
            "{'descr': '<f8', 'fortran_order': False}",
            "{'descr': '<f8', 'fortran_order': 0, 'shape': (3,)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': [3]}",
            "{'descr': '<q8', 'fortran_order': False, 'shape': (3,)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'shape': (3,)}",
            "['descr']",
        ] {
            assert_eq!(
                parse(&mk(bad), 1 << 20).unwrap_err().kind(),
                crate::error::ErrorKind::Format,
                "{bad}"
            );
        }
        let neg = parse(
            &mk("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}"),
            1 << 20,
        );
        assert_eq!(neg.unwrap_err().kind(), crate::error::ErrorKind::Overflow);
        let big = "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4)}";
        assert_eq!(
            parse(&mk(big), 1 << 20).unwrap_err().kind(),
            crate::error::ErrorKind::Overflow
        );
    }

    #[test]
    fn header_length_cap_applies_before_reading() {
        let h = format(&simple("<f8"), &[2], false);
        assert_eq!(total_header_len(&h, 1 << 20).unwrap(), 128);
        assert_eq!(
            total_header_len(&h, 100).unwrap_err().kind(),
            crate::error::ErrorKind::Limit
        );
        assert_eq!(
            total_header_len(&h[..9], 1 << 20).unwrap_err().kind(),
            crate::error::ErrorKind::Format
        );
        assert_eq!(
            total_header_len(b"\x93NUMPY\x04\x00\x00\x00", 100)
                .unwrap_err()
                .kind(),
            crate::error::ErrorKind::Unsupported
        );
    }
}
