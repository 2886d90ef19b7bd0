//! The 14 numeric element types that have a C dtype code, and their numpy descr strings.

use crate::error::{Error, Result};

/// A numeric element type in the host's native byte order.
///
/// The discriminants are the C `PSV_DTYPE_*` codes; they never change (STYLE rule 28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Dtype {
    /// numpy `bool` (`|b1`).
    Bool = 1,
    /// `int8` (`|i1`).
    I8 = 2,
    /// `int16`.
    I16 = 3,
    /// `int32`.
    I32 = 4,
    /// `int64`.
    I64 = 5,
    /// `uint8` (`|u1`).
    U8 = 6,
    /// `uint16`.
    U16 = 7,
    /// `uint32`.
    U32 = 8,
    /// `uint64`.
    U64 = 9,
    /// `float16`.
    F16 = 10,
    /// `float32`.
    F32 = 11,
    /// `float64`.
    F64 = 12,
    /// `complex64` (two float32).
    C64 = 13,
    /// `complex128` (two float64).
    C128 = 14,
}

/// The C code for "no numeric code; see the descr" (strings, records, datetimes, non-native order).
pub const DTYPE_OTHER_CODE: i32 = 15;

/// All numeric dtypes, in code order.
pub const ALL_DTYPES: [Dtype; 14] = [
    Dtype::Bool,
    Dtype::I8,
    Dtype::I16,
    Dtype::I32,
    Dtype::I64,
    Dtype::U8,
    Dtype::U16,
    Dtype::U32,
    Dtype::U64,
    Dtype::F16,
    Dtype::F32,
    Dtype::F64,
    Dtype::C64,
    Dtype::C128,
];

/// The byte-order character numpy uses for native multi-byte types on this host.
pub const NATIVE_ORDER: char = if cfg!(target_endian = "little") {
    '<'
} else {
    '>'
};

impl Dtype {
    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            Dtype::Bool | Dtype::I8 | Dtype::U8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 | Dtype::C64 => 8,
            Dtype::C128 => 16,
        }
    }

    /// numpy's kind character: `b`, `i`, `u`, `f` or `c`.
    pub fn kind(self) -> char {
        match self {
            Dtype::Bool => 'b',
            Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => 'i',
            Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => 'u',
            Dtype::F16 | Dtype::F32 | Dtype::F64 => 'f',
            Dtype::C64 | Dtype::C128 => 'c',
        }
    }

    /// The descr numpy writes for this type on this host, e.g. `<f4` or `|u1`.
    pub fn descr(self) -> String {
        let order = if self.itemsize() == 1 {
            '|'
        } else {
            NATIVE_ORDER
        };
        format!("{order}{}{}", self.kind(), self.itemsize())
    }

    /// The numeric dtype with this kind and size, if there is one.
    pub fn from_kind_size(kind: char, size: usize) -> Option<Dtype> {
        ALL_DTYPES
            .into_iter()
            .find(|d| d.kind() == kind && d.itemsize() == size)
    }

    /// The C code (`PSV_DTYPE_*`).
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl TryFrom<i32> for Dtype {
    type Error = Error;

    /// Validates a dtype code coming from C; `PSV_DTYPE_OTHER` and unknown codes are rejected.
    fn try_from(code: i32) -> Result<Dtype> {
        ALL_DTYPES
            .into_iter()
            .find(|d| d.code() == code)
            .ok_or_else(|| {
                if code == DTYPE_OTHER_CODE {
                    Error::bad_dtype("PSV_DTYPE_OTHER needs a numpy descr: use psv_saver_add_descr")
                } else {
                    Error::bad_dtype(format!("unknown dtype code {code}"))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_reject_unknown() {
        for d in ALL_DTYPES {
            assert_eq!(Dtype::try_from(d.code()).unwrap(), d);
            assert_eq!(Dtype::from_kind_size(d.kind(), d.itemsize()), Some(d));
        }
        for bad in [0, -1, 15, 16, 1000, i32::MIN] {
            assert!(Dtype::try_from(bad).is_err());
        }
    }

    #[test]
    fn descr_strings_match_numpy() {
        assert_eq!(Dtype::Bool.descr(), "|b1");
        assert_eq!(Dtype::U8.descr(), "|u1");
        assert_eq!(Dtype::F32.descr(), format!("{NATIVE_ORDER}f4"));
        assert_eq!(Dtype::C128.descr(), format!("{NATIVE_ORDER}c16"));
    }
}
