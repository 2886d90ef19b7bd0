//! Status codes: the `PSV_*` constants, the one table that gives every code its name and the
//! error kind it stands for, and `psv_status_str`.
//!
//! The constants stay literal (`pub const PSV_ERR_IO: psv_status = 5;`) because cbindgen turns
//! them into `#define`s and cannot expand macros. Everything else about a code (its C name,
//! which [`ErrorKind`] produces it) is written once, in the [`status_table!`] invocation below,
//! and [`status_of`], [`name_of`] and `psv_status_str` are derived from it.

use std::ffi::CStr;

use crate::error::ErrorKind;

/// A status code: `PSV_OK` (0) or one of the `PSV_ERR_*` codes (> 0). Codes are append-only.
pub type psv_status = i32;
/// Success.
pub const PSV_OK: psv_status = 0;
/// A required pointer argument was NULL.
pub const PSV_ERR_NULL_ARG: psv_status = 1;
/// An argument is invalid: empty, non-UTF-8, duplicate or too long key; bad option value;
/// index out of range; data size that does not match the shape.
pub const PSV_ERR_INVALID_ARG: psv_status = 2;
/// Unknown dtype code, `PSV_DTYPE_OTHER` without a descr, unparsable descr, or an object descr.
pub const PSV_ERR_BAD_DTYPE: psv_status = 3;
/// A shape's byte count overflows, a dimension is negative, or ndim exceeds 64.
pub const PSV_ERR_OVERFLOW: psv_status = 4;
/// The operating system reported an error; the message has the path and the OS text, and
/// `psv_last_error_os_code` the error number.
pub const PSV_ERR_IO: psv_status = 5;
/// Not a valid `.npz`: not a zip, truncated, bad `.npy` header, duplicate or colliding members,
/// local and central records that disagree.
pub const PSV_ERR_FORMAT: psv_status = 6;
/// Valid but not restorable: object (pickled) arrays, compression other than stored/deflate,
/// encryption, unknown `.npy` versions.
pub const PSV_ERR_UNSUPPORTED: psv_status = 7;
/// A restore limit (header length, total bytes, member count) was exceeded.
pub const PSV_ERR_LIMIT: psv_status = 8;
/// No array has the requested key.
pub const PSV_ERR_NOT_FOUND: psv_status = 9;
/// Memory (or worker threads) could not be allocated.
pub const PSV_ERR_NOMEM: psv_status = 10;
/// The operation was cancelled by the caller.
pub const PSV_ERR_ABORTED: psv_status = 11;
/// An internal error (a Rust panic) was caught; the message has the details.
pub const PSV_ERR_PANIC: psv_status = 12;
/// A member's CRC-32 does not match the central directory: the file is corrupt.
pub const PSV_ERR_CRC: psv_status = 13;
/// The saver is borrowed by a running job (`psv_saver_save_async` without snapshot): adding to
/// it is refused until the job has finished.
pub const PSV_ERR_BUSY: psv_status = 14;
/// `psv_job_wait` returned because its timeout ended first; the job is still running.
pub const PSV_ERR_TIMEOUT: psv_status = 15;

/// One row of the status table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StatusInfo {
    /// The code.
    pub(crate) code: psv_status,
    /// The constant's name as C spells it, e.g. `"PSV_ERR_IO"`.
    pub(crate) name: &'static CStr,
}

/// A static C string from a literal whose only NUL is its last byte (checked when the table is
/// evaluated at compile time: anything else fails the build).
const fn c_name(with_nul: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(with_nul.as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("a status name holds a NUL"),
    }
}

/// Builds [`STATUSES`] and [`status_of`] from one list: `PSV_OK` first, then every error code
/// with the [`ErrorKind`] it stands for. The name of each row is its constant's identifier, and
/// `status_of` is an exhaustive `match`, so a new `ErrorKind` without a row does not compile
/// (and a kind listed twice is an unreachable pattern, which clippy rejects).
macro_rules! status_table {
    ($ok:ident; $($code:ident => $kind:ident,)*) => {
        /// Every status code with its name, in the order of the table.
        pub(crate) const STATUSES: &[StatusInfo] = &[
            StatusInfo { code: $ok, name: c_name(concat!(stringify!($ok), "\0")) },
            $(StatusInfo { code: $code, name: c_name(concat!(stringify!($code), "\0")) },)*
        ];

        /// Maps an error kind to its C status code.
        pub(crate) fn status_of(kind: ErrorKind) -> psv_status {
            match kind {
                $(ErrorKind::$kind => $code,)*
            }
        }
    };
}

status_table! {
    PSV_OK;
    PSV_ERR_NULL_ARG => NullArg,
    PSV_ERR_INVALID_ARG => InvalidArg,
    PSV_ERR_BAD_DTYPE => BadDtype,
    PSV_ERR_OVERFLOW => Overflow,
    PSV_ERR_IO => Io,
    PSV_ERR_FORMAT => Format,
    PSV_ERR_UNSUPPORTED => Unsupported,
    PSV_ERR_LIMIT => Limit,
    PSV_ERR_NOT_FOUND => NotFound,
    PSV_ERR_NOMEM => NoMem,
    PSV_ERR_ABORTED => Aborted,
    PSV_ERR_PANIC => Panic,
    PSV_ERR_CRC => Crc,
    PSV_ERR_BUSY => Busy,
    PSV_ERR_TIMEOUT => Timeout,
}

/// The name of the status code `kind` maps to (`"PSV_ERR_IO"`), for [`ErrorKind::status_name`].
pub(crate) fn status_name(kind: ErrorKind) -> &'static str {
    name_of(status_of(kind))
        .and_then(|name| name.to_str().ok())
        .unwrap_or("PSV_ERR_UNKNOWN")
}

/// What `psv_status_str` returns for a code that is not in the table.
pub(crate) const UNKNOWN: &CStr = c"PSV_ERR_UNKNOWN";

/// The name of status `code` (`"PSV_ERR_IO"`), or `None` for a code that does not exist.
pub(crate) fn name_of(code: psv_status) -> Option<&'static CStr> {
    STATUSES.iter().find(|s| s.code == code).map(|s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::errors::psv_status_str;

    /// Every error kind. The `match` below stops compiling when a kind is added, so this list
    /// cannot silently fall behind.
    const ALL_KINDS: [ErrorKind; 15] = [
        ErrorKind::NullArg,
        ErrorKind::InvalidArg,
        ErrorKind::BadDtype,
        ErrorKind::Overflow,
        ErrorKind::Io,
        ErrorKind::Format,
        ErrorKind::Unsupported,
        ErrorKind::Limit,
        ErrorKind::NotFound,
        ErrorKind::NoMem,
        ErrorKind::Aborted,
        ErrorKind::Panic,
        ErrorKind::Crc,
        ErrorKind::Busy,
        ErrorKind::Timeout,
    ];

    fn listed(kind: ErrorKind) -> bool {
        match kind {
            ErrorKind::NullArg
            | ErrorKind::InvalidArg
            | ErrorKind::BadDtype
            | ErrorKind::Overflow
            | ErrorKind::Io
            | ErrorKind::Format
            | ErrorKind::Unsupported
            | ErrorKind::Limit
            | ErrorKind::NotFound
            | ErrorKind::NoMem
            | ErrorKind::Aborted
            | ErrorKind::Panic
            | ErrorKind::Crc
            | ErrorKind::Busy
            | ErrorKind::Timeout => ALL_KINDS.contains(&kind),
        }
    }

    #[test]
    fn each_kinds_status_name_is_what_psv_status_str_prints() {
        for kind in ALL_KINDS {
            // SAFETY: psv_status_str returns a static NUL-terminated string.
            #[allow(unsafe_code)]
            let c = unsafe { CStr::from_ptr(psv_status_str(status_of(kind))) };
            assert_eq!(kind.status_name(), c.to_str().unwrap());
            assert!(kind.status_name().starts_with("PSV_ERR_"), "{kind:?}");
        }
    }

    #[test]
    fn the_table_covers_every_kind_and_every_code_exactly_once() {
        // Every `pub const PSV_*: psv_status` of this file (what psv.h #defines) has one row,
        // with its own name and value, and there are no other rows.
        let consts: Vec<(&str, psv_status)> = include_str!("status.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter_map(|l| l.split_once(": psv_status = "))
            .map(|(name, value)| (name, value.trim_end_matches(';').parse().unwrap()))
            .collect();
        assert_eq!(consts.len(), STATUSES.len(), "{consts:?}");
        for (name, code) in &consts {
            let rows: Vec<_> = STATUSES.iter().filter(|s| s.code == *code).collect();
            assert_eq!(rows.len(), 1, "{name} = {code}");
            assert_eq!(rows[0].name.to_str().unwrap(), *name);
        }
        // In code order, PSV_OK first.
        assert_eq!(STATUSES[0].code, PSV_OK);
        assert!(STATUSES.windows(2).all(|w| w[0].code < w[1].code));
        // Every kind maps to an error code, no two kinds to the same code, and every error code
        // is some kind's: status_of is a bijection between the kinds and the codes but PSV_OK.
        let mut codes: Vec<psv_status> = ALL_KINDS
            .iter()
            .map(|&kind| {
                assert!(listed(kind));
                status_of(kind)
            })
            .collect();
        codes.sort_unstable();
        let error_codes: Vec<psv_status> = STATUSES[1..].iter().map(|s| s.code).collect();
        assert_eq!(codes, error_codes);
    }

    #[test]
    fn status_str_names_every_code_and_only_those() {
        for s in STATUSES {
            // SAFETY: psv_status_str returns a static NUL-terminated string.
            let got = unsafe { CStr::from_ptr(psv_status_str(s.code)) };
            assert_eq!(got, s.name);
            assert!(got.to_str().unwrap().starts_with("PSV_"));
        }
        assert_eq!(name_of(PSV_ERR_IO), Some(c"PSV_ERR_IO"));
        let next = STATUSES.last().unwrap().code + 1; // the first code not yet assigned
        for unknown in [-1, next, 999, i32::MIN, i32::MAX] {
            assert_eq!(name_of(unknown), None);
            // SAFETY: as above.
            let got = unsafe { CStr::from_ptr(psv_status_str(unknown)) };
            assert_eq!(got, UNKNOWN);
        }
    }
}
