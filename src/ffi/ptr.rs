//! Every conversion from a C pointer to a Rust reference happens here, NULL-checked: handles,
//! strings, paths, slices, out-parameters.
//!
//! Callers of these `unsafe fn`s promise what C promises for the argument: a non-NULL pointer
//! is valid for the documented lifetime (a live handle from this library, a NUL-terminated
//! string, an array of at least `len` elements).

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// The error for a NULL pointer argument named `what`.
pub(crate) fn null_arg(what: &str) -> Error {
    Error::new(ErrorKind::NullArg, format!("argument {what} is NULL"))
}

/// A shared reference to a handle, or `PSV_ERR_NULL_ARG`.
///
/// # Safety
/// `p` is NULL or points to a live `T` that is not mutated during `'a`.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the caller guarantees a non-NULL `p` points to a live, unaliased-for-writes `T`.
    unsafe { p.as_ref() }.ok_or_else(|| null_arg(what))
}

/// An exclusive reference to a handle, or `PSV_ERR_NULL_ARG`.
///
/// # Safety
/// `p` is NULL or points to a live `T` that nothing else uses during `'a`.
pub(crate) unsafe fn handle_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    // SAFETY: the caller guarantees a non-NULL `p` points to a live `T` used by no one else.
    unsafe { p.as_mut() }.ok_or_else(|| null_arg(what))
}

/// Moves a handle to the heap and hands it to C.
pub(crate) fn into_handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Frees a handle made by [`into_handle`]; NULL is a no-op.
///
/// # Safety
/// `p` is NULL or came from `into_handle::<T>` and has not been freed.
pub(crate) unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: per the contract, `p` is a live allocation from `Box::into_raw`.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// A NUL-terminated C string, or `PSV_ERR_NULL_ARG`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a CStr> {
    if p.is_null() {
        return Err(null_arg(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the contract.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// A NUL-terminated UTF-8 string, or `PSV_ERR_NULL_ARG` / `PSV_ERR_INVALID_ARG`.
///
/// # Safety
/// As [`c_str`].
pub(crate) unsafe fn utf8<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    // SAFETY: forwarded contract.
    let s = unsafe { c_str(p, what) }?;
    s.to_str()
        .map_err(|_| Error::invalid_arg(format!("{what} is not valid UTF-8: {s:?}")))
}

/// A C path (bytes, not necessarily UTF-8) as a `Path`, or `PSV_ERR_NULL_ARG` /
/// `PSV_ERR_INVALID_ARG` (empty).
///
/// # Safety
/// As [`c_str`].
pub(crate) unsafe fn path<'a>(p: *const c_char) -> Result<&'a Path> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { c_str(p, "path") }?.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid_arg("path is empty"));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// A slice of `len` elements; `p` may be NULL only when `len` is 0 (an empty slice is then
/// built from a dangling pointer, never from the caller's NULL).
///
/// # Safety
/// If `len > 0`, `p` is NULL or points to `len` initialised `T`s valid and unmutated for `'a`.
pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null_arg(what));
    }
    // No real array is longer than isize::MAX bytes; a larger count is a caller's mistake that
    // must not reach from_raw_parts (whose contract forbids it).
    if len
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(Error::overflow(format!(
            "{what}: {len} elements is too many"
        )));
    }
    // SAFETY: non-NULL, `len` valid elements for `'a` per the contract (and the byte length fits
    // isize, checked above).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A writable slice of `len` bytes; `p` may be NULL only when `len` is 0.
///
/// # Safety
/// If `len > 0`, `p` is NULL or points to `len` writable bytes that nothing else uses for `'a`.
pub(crate) unsafe fn bytes_mut<'a>(p: *mut u8, len: usize, what: &str) -> Result<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(null_arg(what));
    }
    if len > isize::MAX as usize {
        return Err(Error::overflow(format!("{what}: {len} bytes is too many")));
    }
    // SAFETY: non-NULL, `len` writable bytes used by no one else for `'a`, per the contract;
    // the length fits isize (checked above).
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Writes `value` through an out-pointer that was already checked to be non-NULL.
///
/// # Safety
/// `p` is non-NULL, aligned and valid for writes.
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T) {
    // SAFETY: per the contract.
    unsafe { p.write(value) }
}
