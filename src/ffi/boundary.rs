//! The panic boundary: every exported function runs its body through one of these helpers, so a
//! Rust panic becomes `PSV_ERR_PANIC` (or a neutral value) instead of unwinding into C.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::last_error;
use super::ptr;
use super::status::{psv_status, status_of, PSV_ERR_PANIC, PSV_OK};
use crate::error::Result;

/// The last-error message for a caught panic, with its payload when that is a string.
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
    last_error::clear();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => PSV_OK,
        Ok(Err(e)) => {
            last_error::set_error(&e);
            status_of(e.kind())
        }
        Err(payload) => {
            last_error::set_message(&panic_message(payload));
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
            last_error::set_error(&e);
            fallback
        }
        Err(payload) => {
            last_error::set_message(&panic_message(payload));
            fallback
        }
    }
}

/// The body of every options setter: the NULL check of the handle `o`, then `f` on it, inside
/// [`status`].
pub(crate) fn set_option<T>(o: *mut T, f: impl FnOnce(&mut T) -> Result<()>) -> psv_status {
    status(|| {
        // SAFETY: `o` is NULL or a live options handle used by one thread (documented contract).
        let o = unsafe { ptr::handle_mut(o, "opts") }?;
        f(o)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::last_error::with_message as with_last_error;

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
