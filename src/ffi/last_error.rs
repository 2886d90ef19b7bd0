//! The calling thread's last error (STYLE rules 8 and 9): its message and, when the operating
//! system reported it, its error number. The boundary clears it on entry to every
//! status-returning function and records an error or a caught panic; C reads it with
//! `psv_last_error_message` and `psv_last_error_os_code`. Only the C ABI uses it: Rust callers
//! get the [`Error`] itself.

use std::cell::RefCell;

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
pub(crate) fn os_code() -> i32 {
    LAST_ERROR.with(|slot| slot.borrow().os_code)
}
