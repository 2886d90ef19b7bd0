//! `psv_restore` and `psv_restore_from_memory`: reading an archive into a new `psv_archive`.

use std::borrow::Cow;
use std::ffi::{c_char, c_void};

use super::archive::wrap_archive;
use super::boundary::{null_arg, status};
use super::ptr;
use super::types::*;
use crate::archive::Archive;
use crate::error::Result;
use crate::options::RestoreOptions;
use crate::progress::ProgressFn;

/// Restores every array of the `.npz` at `path` (".npz" appended unless present; or the
/// directory archive at `path`, see `PSV_LAYOUT_DIR`) into one block in which each array starts
/// at a 64-byte-aligned address.
///
/// On success `*out` is a new archive the caller frees with `psv_free`; on failure `*out` is
/// set to NULL. Reads any `.npz` numpy writes (stored or deflated); members that are not arrays
/// are skipped (see `psv_archive_skipped_name`). `opts` may be NULL for defaults.
///
/// Errors: NULL_ARG, IO (missing or unreadable file), FORMAT (not a zip, truncated, bad header,
/// duplicate or colliding names), OVERFLOW (a header's shape has a negative dimension, more than
/// 64 dimensions, or a byte count that overflows), UNSUPPORTED (object arrays, compression other
/// than stored/deflate, encryption, `.npy` versions other than 1.0/2.0/3.0), CRC, LIMIT, NOMEM,
/// NOT_FOUND (a key set with `psv_restore_options_set_keys` is absent), ABORTED.
#[no_mangle]
pub extern "C" fn psv_restore(
    path: *const c_char,
    opts: *const psv_restore_options,
    out: *mut *mut psv_archive,
) -> psv_status {
    restore_into(out, opts, |opts, progress| {
        // SAFETY: NUL-terminated per contract.
        let path = unsafe { ptr::path(path) }?;
        match progress {
            Some(f) => crate::restore::restore_with_progress(path, opts, f),
            None => crate::restore::restore(path, opts),
        }
    })
}

/// Restores a `.npz` held in memory (`len` bytes at `buf`, e.g. a download) exactly as
/// `psv_restore` restores a file; the mmap option is ignored. `buf` is only read during the
/// call: the archive copies what it needs and does not refer to `buf` afterwards.
///
/// Errors: as `psv_restore`, except that there is no file to open (no IO errors).
#[no_mangle]
pub extern "C" fn psv_restore_from_memory(
    buf: *const c_void,
    len: usize,
    opts: *const psv_restore_options,
    out: *mut *mut psv_archive,
) -> psv_status {
    restore_into(out, opts, |opts, progress| {
        // SAFETY: `buf` holds `len` readable bytes for the duration of the call.
        let bytes = unsafe { ptr::slice(buf.cast::<u8>(), len, "buf") }?;
        match progress {
            Some(f) => crate::restore::restore_with_progress(bytes, opts, f),
            None => crate::restore::restore(bytes, opts),
        }
    })
}

/// The body of both restore entry points: `*out` is NULL until success, the options (or the
/// defaults) and their progress callback go to `run`, the archive is wrapped for C.
fn restore_into(
    out: *mut *mut psv_archive,
    opts: *const psv_restore_options,
    run: impl FnOnce(&RestoreOptions, Option<&mut ProgressFn<'_>>) -> Result<Archive>,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `out` is non-NULL and writable per contract.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `opts` is NULL or a live options handle.
        let opts = unsafe { restore_options(opts) }?;
        let archive = match opts.progress.as_fn() {
            Some(mut f) => run(&opts.inner, Some(&mut f)),
            None => run(&opts.inner, None),
        }?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, ptr::into_handle(wrap_archive(archive)?)) };
        Ok(())
    })
}

/// The options behind `opts`, or the defaults for NULL.
///
/// # Safety
/// `opts` is NULL or a live options handle.
unsafe fn restore_options<'a>(
    opts: *const psv_restore_options,
) -> Result<Cow<'a, psv_restore_options>> {
    if opts.is_null() {
        Ok(Cow::Owned(psv_restore_options::default()))
    } else {
        // SAFETY: forwarded contract.
        Ok(Cow::Borrowed(unsafe { ptr::handle(opts, "opts") }?))
    }
}
