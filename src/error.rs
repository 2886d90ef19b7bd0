//! The crate's error type: a kind (which `src/ffi/status.rs` maps to a C status code), a message
//! with context, and the OS error number when the operating system reported the error.

use std::fmt;

/// What went wrong, coarse enough to map 1:1 onto a `PSV_ERR_*` status code.
///
/// The detail (path, key, offset) lives in [`Error`]'s message, not in the kind.
///
/// Non-exhaustive: new status codes are appended (as `PSV_ERR_BUSY` and `PSV_ERR_TIMEOUT` were),
/// so a `match` needs a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A required pointer argument was NULL (C ABI only).
    NullArg,
    /// An argument is invalid: bad key, bad option value, size mismatch.
    InvalidArg,
    /// Unknown dtype code, unparsable numpy descr, or an object dtype given to save.
    BadDtype,
    /// A shape's element or byte count overflows, a dimension is negative, or ndim is too large.
    Overflow,
    /// The operating system reported an error (open, read, write, rename, ...).
    Io,
    /// The file is not a valid .npz/.npy: not a zip, truncated, bad header, inconsistent records.
    Format,
    /// A valid file uses something this library does not restore (pickled objects, bzip2, ...).
    Unsupported,
    /// A configured restore limit (header length, total size, member count) was exceeded.
    Limit,
    /// A requested key does not exist.
    NotFound,
    /// A memory allocation failed.
    NoMem,
    /// The caller asked to stop (progress callback).
    Aborted,
    /// An internal panic was caught at the FFI boundary.
    Panic,
    /// A member's CRC-32 does not match the central directory.
    Crc,
    /// The saver is borrowed by a running job (an asynchronous save without snapshot): it
    /// cannot change until the job has finished.
    Busy,
    /// A wait ended before the job did.
    Timeout,
}

impl ErrorKind {
    /// The C status code's name, as `psv_status_str` gives it: `"PSV_ERR_IO"`, ...
    pub fn status_name(self) -> &'static str {
        crate::ffi::status_name(self)
    }
}

/// An error with a human-readable message that names the path, key or offset involved, and the
/// OS error number (`errno`) when it came from the operating system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    os_code: Option<i32>,
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Creates an error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            os_code: None,
        }
    }

    /// The error's kind (maps to a `PSV_ERR_*` code).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The OS error number (`errno`, e.g. `ENOENT`) of an error made by [`Error::io`] from an
    /// OS error; `None` for every other error.
    pub fn os_code(&self) -> Option<i32> {
        self.os_code
    }

    /// Wraps an OS error with what was being done (`context` names the path), keeping its
    /// error number ([`Error::os_code`]).
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::OutOfMemory {
            ErrorKind::NoMem
        } else {
            ErrorKind::Io
        };
        Error {
            os_code: err.raw_os_error(),
            ..Error::new(kind, format!("{context}: {err}"))
        }
    }

    /// Returns the same error with `prefix: ` put in front of the message.
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand constructors, one per kind, used by the format and orchestration code.
macro_rules! err_ctor {
    ($($name:ident => $kind:ident),* $(,)?) => {
        impl Error {
            $(
                #[doc = concat!("A [`ErrorKind::", stringify!($kind), "`] error.")]
                pub fn $name(message: impl Into<String>) -> Self {
                    Error::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}
err_ctor!(
    invalid_arg => InvalidArg,
    bad_dtype => BadDtype,
    overflow => Overflow,
    format => Format,
    unsupported => Unsupported,
    limit => Limit,
    not_found => NotFound,
    nomem => NoMem,
    crc => Crc,
    busy => Busy,
    timeout => Timeout,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_keeps_the_os_error_number() {
        let e = Error::io(
            "cannot open x",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.os_code(), Some(libc::ENOENT));
        assert_eq!(e.clone().context("save").os_code(), Some(libc::ENOENT));
        let nomem = Error::io("alloc", std::io::Error::from_raw_os_error(libc::ENOMEM));
        assert_eq!(nomem.kind(), ErrorKind::NoMem);
        assert_eq!(nomem.os_code(), Some(libc::ENOMEM));
        // Not from the OS: no number.
        let custom = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read");
        assert_eq!(Error::io("read", custom).os_code(), None);
        assert_eq!(Error::invalid_arg("bad").os_code(), None);
    }
}
