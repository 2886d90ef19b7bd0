//! The calling thread's last error message (STYLE rules 8 and 9). The boundary clears it on
//! entry to every status-returning function and records an error or a caught panic; C reads it
//! with `psv_last_error_message`. Only the C ABI uses it: Rust callers get the [`Error`] itself.

use std::cell::RefCell;
use std::ffi::c_char;

use super::boundary::value;
use super::ptr;
use crate::error::Error;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `e`'s message as the calling thread's last error.
pub(crate) fn set_error(e: &Error) {
    set_message(e.message());
}

/// Replaces the calling thread's last error message.
pub(crate) fn set_message(message: &str) {
    LAST_ERROR.with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.clear();
        slot.push_str(message);
    });
}

/// Clears the calling thread's last error message.
pub(crate) fn clear() {
    LAST_ERROR.with(|slot| slot.borrow_mut().clear());
}

/// Calls `f` with the calling thread's last error message ("" when there is none).
pub(crate) fn with_message<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|slot| f(&slot.borrow()))
}

/// Copies the calling thread's last error message into `buf` (NUL-terminated, truncated to
/// `len - 1` bytes) and returns the message's full length, like `snprintf`. `buf` may be NULL
/// when `len` is 0 (to ask for the length). Every status-returning call clears the message on
/// entry and sets it on failure; read it on the same thread right after the failing call.
#[no_mangle]
pub extern "C" fn psv_last_error_message(buf: *mut c_char, len: usize) -> usize {
    value(0, || {
        with_message(|msg| {
            if !buf.is_null() && len > 0 {
                let n = msg.len().min(len - 1);
                // SAFETY: the caller provides `len` writable bytes at `buf`; we write n + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast::<u8>(), n);
                    ptr::write_out(buf.add(n), 0);
                }
            }
            Ok(msg.len())
        })
    })
}
