//! The panic boundary: every exported function runs its body through one of these helpers, so a
//! Rust panic becomes `PSV_ERR_PANIC` (or a neutral value) instead of unwinding into C.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::types::*;
use crate::error::{clear_last_error, set_last_error, Error, ErrorKind, Result};

/// Maps an error kind to its C status code.
pub(crate) fn status_of(kind: ErrorKind) -> psv_status {
    match kind {
        ErrorKind::NullArg => PSV_ERR_NULL_ARG,
        ErrorKind::InvalidArg => PSV_ERR_INVALID_ARG,
        ErrorKind::BadDtype => PSV_ERR_BAD_DTYPE,
        ErrorKind::Overflow => PSV_ERR_OVERFLOW,
        ErrorKind::Io => PSV_ERR_IO,
        ErrorKind::Format => PSV_ERR_FORMAT,
        ErrorKind::Unsupported => PSV_ERR_UNSUPPORTED,
        ErrorKind::Limit => PSV_ERR_LIMIT,
        ErrorKind::NotFound => PSV_ERR_NOT_FOUND,
        ErrorKind::NoMem => PSV_ERR_NOMEM,
        ErrorKind::Aborted => PSV_ERR_ABORTED,
        ErrorKind::Panic => PSV_ERR_PANIC,
        ErrorKind::Crc => PSV_ERR_CRC,
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_string());
    format!("internal error (panic caught at the C boundary): {what}")
}

/// Runs a fallible body: clears the thread's last error, returns `PSV_OK` or the error's status
/// (recording its message), and turns a panic into `PSV_ERR_PANIC`.
pub(crate) fn status(body: impl FnOnce() -> Result<()>) -> psv_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => PSV_OK,
        Ok(Err(e)) => {
            set_last_error(e.message());
            status_of(e.kind())
        }
        Err(payload) => {
            set_last_error(&panic_message(payload));
            PSV_ERR_PANIC
        }
    }
}

/// Runs a getter: on an error or a panic, records the message and returns `fallback`.
/// A successful getter leaves the last error alone.
pub(crate) fn value<T>(fallback: T, body: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(e.message());
            fallback
        }
        Err(payload) => {
            set_last_error(&panic_message(payload));
            fallback
        }
    }
}

/// The error for a NULL pointer argument named `what`.
pub(crate) fn null_arg(what: &str) -> Error {
    Error::new(ErrorKind::NullArg, format!("argument {what} is NULL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::with_last_error;

    #[test]
    fn a_panic_becomes_psv_err_panic_with_its_message() {
        let st = status(|| panic!("deliberate test panic"));
        assert_eq!(st, PSV_ERR_PANIC);
        with_last_error(|m| assert!(m.contains("deliberate test panic"), "{m}"));
        // Getters fall back to their neutral value.
        assert_eq!(value(7usize, || panic!("again")), 7);
        // A later success clears the message.
        assert_eq!(status(|| Ok(())), PSV_OK);
        with_last_error(|m| assert!(m.is_empty()));
    }
}
