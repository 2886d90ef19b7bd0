//! The C functions that report errors: `psv_status_str` (from the status table) and
//! `psv_last_error_message` / `psv_last_error_os_code` (from the thread's last-error store).
//! They sit above the panic boundary, which itself records into that store: so the table and
//! the store import nothing of the boundary.

use std::ffi::c_char;

use super::boundary::value;
use super::last_error::{os_code, with_message};
use super::ptr;
use super::status::{name_of, psv_status, UNKNOWN};

/// The name of a status code (`"PSV_OK"`, `"PSV_ERR_IO"`, ...), or `"PSV_ERR_UNKNOWN"`.
/// Static, never NULL, thread-safe.
#[no_mangle]
pub extern "C" fn psv_status_str(s: psv_status) -> *const c_char {
    value(UNKNOWN.as_ptr(), || {
        Ok(name_of(s).unwrap_or(UNKNOWN).as_ptr())
    })
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
    use crate::error::Error;
    use crate::ffi::boundary::status;
    use crate::ffi::last_error::with_message;
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
