//! The calling thread's last error (STYLE rules 8 and 9): its message and, when the operating
//! system reported it, its error number. The boundary clears it on entry to every
//! status-returning function and records an error or a caught panic; C reads it with
//! `psv_last_error_message` and `psv_last_error_os_code`. Only the C ABI uses it: Rust callers
//! get the [`Error`] itself.

use std::cell::RefCell;
use std::ffi::c_char;

use super::boundary::value;
use super::ptr;
use crate::error::Error;

/// One thread's last error. Empty message and code 0: no error.
struct LastError {
    message: String,
    os_code: i32,
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const {
        RefCell::new(LastError {
            message: String::new(),
            os_code: 0,
        })
    };
}

/// Records `e` (its message and OS error number) as the calling thread's last error.
pub(crate) fn set_error(e: &Error) {
    set(e.message(), e.os_code().unwrap_or(0));
}

/// Records a message that has no OS error number (a caught panic) as the last error.
pub(crate) fn set_message(message: &str) {
    set(message, 0);
}

/// Replaces the calling thread's last error.
fn set(message: &str, os_code: i32) {
    LAST_ERROR.with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.message.clear();
        slot.message.push_str(message);
        slot.os_code = os_code;
    });
}

/// Clears the calling thread's last error (message and OS error number).
pub(crate) fn clear() {
    LAST_ERROR.with(|slot| {
        let mut slot = slot.borrow_mut();
        slot.message.clear();
        slot.os_code = 0;
    });
}

/// Calls `f` with the calling thread's last error message ("" when there is none).
pub(crate) fn with_message<R>(f: impl FnOnce(&str) -> R) -> R {
    LAST_ERROR.with(|slot| f(&slot.borrow().message))
}

/// The calling thread's last OS error number (0 when there is none).
fn os_code() -> i32 {
    LAST_ERROR.with(|slot| slot.borrow().os_code)
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

/// The OS error number (`errno`, e.g. `ENOENT`) of the calling thread's last error when the
/// operating system reported it (`PSV_ERR_IO`, or `PSV_ERR_NOMEM` from the OS); 0 when the last
/// error did not come from the OS or there is none. Set and cleared together with
/// `psv_last_error_message`: every status-returning call clears it on entry and sets it on
/// failure; read it on the same thread right after the failing call. Never fails.
#[no_mangle]
pub extern "C" fn psv_last_error_os_code() -> i32 {
    value(0, || Ok(os_code()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::status;
    use crate::ffi::status::{PSV_ERR_INVALID_ARG, PSV_ERR_IO, PSV_OK};

    #[test]
    fn the_os_code_is_set_and_cleared_with_the_message() {
        let enoent = || {
            Error::io(
                "cannot open x",
                std::io::Error::from_raw_os_error(libc::ENOENT),
            )
        };
        assert_eq!(status(|| Err(enoent())), PSV_ERR_IO);
        assert_eq!(psv_last_error_os_code(), libc::ENOENT);
        with_message(|m| assert!(m.starts_with("cannot open x"), "{m}"));
        // Reading does not clear; another thread has its own.
        assert_eq!(psv_last_error_os_code(), libc::ENOENT);
        std::thread::spawn(|| assert_eq!(psv_last_error_os_code(), 0))
            .join()
            .unwrap();
        // An error that is not the OS's replaces the code with 0.
        assert_eq!(
            status(|| Err(Error::invalid_arg("bad"))),
            PSV_ERR_INVALID_ARG
        );
        assert_eq!(psv_last_error_os_code(), 0);
        assert_eq!(status(|| Err(enoent())), PSV_ERR_IO);
        // A success clears both.
        assert_eq!(status(|| Ok(())), PSV_OK);
        assert_eq!(psv_last_error_os_code(), 0);
        with_message(|m| assert!(m.is_empty()));
    }
}
