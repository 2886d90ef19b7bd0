//! Saving somewhere other than a path: a caller's buffer, a library-allocated buffer, a file
//! descriptor, a write callback, and prepared saves rendered by byte range.

use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;

use super::boundary::{status, value};
use super::ptr;
use super::ptr::null_arg;
use super::types::*;
use crate::error::{Error, Result};
use crate::memory::AnonMap;
use crate::progress::ProgressFn;

/// The options behind `opts`, or the defaults for NULL.
///
/// # Safety
/// `opts` is NULL or a live options handle.
unsafe fn save_options<'a>(
    opts: *const psv_save_options,
) -> Result<std::borrow::Cow<'a, psv_save_options>> {
    if opts.is_null() {
        Ok(std::borrow::Cow::Owned(psv_save_options::default()))
    } else {
        // SAFETY: forwarded contract.
        Ok(std::borrow::Cow::Borrowed(unsafe {
            ptr::handle(opts, "opts")
        }?))
    }
}

/// Runs `f` with the options' progress callback as a Rust closure, if one is set.
fn with_progress<T>(
    opts: &psv_save_options,
    f: impl FnOnce(Option<&mut ProgressFn<'_>>) -> Result<T>,
) -> Result<T> {
    match opts.progress.as_fn() {
        Some(mut cb) => f(Some(&mut cb)),
        None => f(None),
    }
}

/// Writes `*out` = the exact byte count of the stored `.npz` that `psv_saver_save` would
/// write for these arrays and options, computed from the plan alone (no I/O, no CRC).
///
/// Errors: NULL_ARG; INVALID_ARG for a compressed save (its size is known only once it is
/// compressed: use `psv_saver_save_to_alloc` or `psv_saver_prepare`) or the directory layout;
/// OVERFLOW.
#[no_mangle]
pub extern "C" fn psv_saver_size(
    s: *const psv_saver,
    opts: *const psv_save_options,
    out: *mut u64,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `s` is NULL or a live saver; `opts` NULL or live options.
        let (s, opts) = unsafe { (ptr::handle(s, "saver")?, save_options(opts)?) };
        let n = s.inner.size(&opts.inner)?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, n) };
        Ok(())
    })
}

/// Writes the stored `.npz` into the first `psv_saver_size` bytes of `buf` (`len` bytes,
/// written by the save's worker threads during the call only), in parallel, exactly the bytes
/// `psv_saver_save` writes. Bytes of `buf` past the archive are left as they were.
///
/// Errors: NULL_ARG; INVALID_ARG when `len` is smaller than the archive (the message names
/// the size needed), for a compressed save (use `psv_saver_save_to_alloc`) or the directory
/// layout; NOMEM, ABORTED.
#[no_mangle]
pub extern "C" fn psv_saver_save_to_buffer(
    s: *const psv_saver,
    buf: *mut c_void,
    len: usize,
    opts: *const psv_save_options,
) -> psv_status {
    status(|| {
        // SAFETY: `s` is NULL or a live saver; `opts` NULL or live options.
        let (s, opts) = unsafe { (ptr::handle(s, "saver")?, save_options(opts)?) };
        if opts.inner.compression > 0 {
            return Err(Error::invalid_arg(
                "a compressed save's size is known only after compressing: save it with \
                 psv_saver_save_to_alloc",
            ));
        }
        // SAFETY: `buf` holds `len` writable bytes, used by nothing else during the call.
        let buf = unsafe { ptr::bytes_mut(buf.cast(), len, "buf") }?;
        with_progress(&opts, |p| s.inner.save_to_buffer_with(buf, &opts.inner, p)).map(|_| ())
    })
}

/// Writes the `.npz` (stored or compressed) into memory libpsv allocates, and sets `*out` to
/// it: read it with `psv_buffer_data`/`psv_buffer_len`, free it with `psv_buffer_free`. The
/// bytes are exactly those `psv_saver_save` writes. On failure `*out` is NULL.
///
/// Errors: NULL_ARG, INVALID_ARG (directory layout, bad options), NOMEM, ABORTED.
#[no_mangle]
pub extern "C" fn psv_saver_save_to_alloc(
    s: *const psv_saver,
    opts: *const psv_save_options,
    out: *mut *mut psv_buffer,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `s` is NULL or a live saver; `opts` NULL or live options.
        let (s, opts) = unsafe { (ptr::handle(s, "saver")?, save_options(opts)?) };
        let bytes = with_progress(&opts, |p| {
            s.inner
                .to_memory(&opts.inner, p, AnonMap::new, AnonMap::as_mut_slice)
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, ptr::into_handle(psv_buffer { bytes })) };
        Ok(())
    })
}

/// The bytes of a buffer from `psv_saver_save_to_alloc` (valid until `psv_buffer_free`); NULL
/// for a NULL buffer.
#[no_mangle]
pub extern "C" fn psv_buffer_data(b: *const psv_buffer) -> *const c_void {
    value(std::ptr::null(), || {
        // SAFETY: `b` is NULL or a live buffer.
        Ok(unsafe { ptr::handle(b, "buffer") }?.bytes.as_ptr().cast())
    })
}

/// The length in bytes of a buffer from `psv_saver_save_to_alloc`; 0 for NULL.
#[no_mangle]
pub extern "C" fn psv_buffer_len(b: *const psv_buffer) -> usize {
    value(0, || {
        // SAFETY: `b` is NULL or a live buffer.
        Ok(unsafe { ptr::handle(b, "buffer") }?.bytes.len())
    })
}

/// Frees a buffer from `psv_saver_save_to_alloc`. NULL is a no-op.
#[no_mangle]
pub extern "C" fn psv_buffer_free(b: *mut psv_buffer) {
    value((), || {
        // SAFETY: `b` is NULL or a buffer from psv_saver_save_to_alloc, not yet freed.
        unsafe { ptr::free_handle(b) };
        Ok(())
    })
}

/// Writes the `.npz` into the caller's open file descriptor `fd`, which the caller keeps: it
/// is not closed, renamed or truncated. A seekable fd (a regular file or a block device) gets
/// positional writes from its current offset on, in parallel, and its offset is left at the end
/// of the archive (bytes the file held past it stay); any other fd (pipe, socket, terminal) gets
/// the bytes in file order with `write` (an `O_NONBLOCK` one is waited on with `poll` whenever
/// it is full, as a blocking one would be; its flags are left as they are). The bytes are
/// exactly those `psv_saver_save` writes.
/// Not atomic: a failed save may leave part of an archive in the file. Writing to a pipe whose
/// reader has gone raises SIGPIPE unless the process ignores it (then the save fails with
/// `PSV_ERR_IO`, errno EPIPE).
///
/// Errors: NULL_ARG, INVALID_ARG (negative fd, directory layout), IO (with the errno in
/// `psv_last_error_os_code`), NOMEM, ABORTED.
#[no_mangle]
pub extern "C" fn psv_saver_save_fd(
    s: *const psv_saver,
    fd: c_int,
    opts: *const psv_save_options,
) -> psv_status {
    status(|| {
        if fd < 0 {
            return Err(Error::invalid_arg(format!(
                "fd {fd} is not a file descriptor"
            )));
        }
        // SAFETY: `s` is NULL or a live saver; `opts` NULL or live options.
        let (s, opts) = unsafe { (ptr::handle(s, "saver")?, save_options(opts)?) };
        // SAFETY: `fd` is the caller's open descriptor for the duration of the call; wrapping it
        // in ManuallyDrop means it is never closed here.
        let file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        with_progress(&opts, |p| s.inner.save_to_file(&file, &opts.inner, p)).map(|_| ())
    })
}

/// Streams the `.npz` to `write_fn` in file order, in pieces (small ones gathered into writes of
/// about 1 MiB; large arrays in pieces of at most 2 MiB, straight from the caller's memory).
/// Each member's CRC-32 is computed (in parallel, while the previous member is being written)
/// before its bytes go out, so the stream has no data descriptors and array data still starts at
/// 64-byte offsets from the stream's start; the bytes are exactly those `psv_saver_save` writes.
/// A compressed save compresses every member first and holds the compressed archive in memory
/// until the stream ends. `write_fn` runs on the calling thread; see `psv_write_fn`.
///
/// Errors: NULL_ARG (`s` or `write_fn`), INVALID_ARG (directory layout), IO (`write_fn` returned
/// non-zero: nothing more is written), NOMEM, ABORTED.
#[no_mangle]
pub extern "C" fn psv_saver_save_stream(
    s: *const psv_saver,
    write_fn: psv_write_fn,
    userdata: *mut c_void,
    opts: *const psv_save_options,
) -> psv_status {
    status(|| {
        let write_fn = write_fn.ok_or_else(|| null_arg("write_fn"))?;
        // SAFETY: `s` is NULL or a live saver; `opts` NULL or live options.
        let (s, opts) = unsafe { (ptr::handle(s, "saver")?, save_options(opts)?) };
        let mut write = |bytes: &[u8]| {
            // SAFETY: the caller registered `write_fn` for `userdata`; `bytes` is valid for the
            // call, which runs on this thread.
            let rc = unsafe { write_fn(userdata, bytes.as_ptr().cast(), bytes.len()) };
            if rc == 0 {
                Ok(())
            } else {
                Err(Error::new(
                    crate::error::ErrorKind::Io,
                    format!("the write callback returned {rc}; the stream stopped there"),
                ))
            }
        };
        with_progress(&opts, |p| {
            s.inner.save_to_stream(&mut write, &opts.inner, p)
        })
        .map(|_| ())
    })
}

/// Prepares a save (`*out`, freed with `psv_prepared_free`): plans the archive and computes
/// every CRC-32 in parallel (compressing first, for a compressed save), so that any byte range
/// can then be rendered with `psv_prepared_render`, e.g. the parts of an object-store multipart
/// upload, from many threads. The prepared save borrows `s`: the saver and its arrays must stay
/// alive and unchanged until `psv_prepared_free`. On failure `*out` is NULL.
///
/// Errors: NULL_ARG, INVALID_ARG (directory layout), OVERFLOW, NOMEM, ABORTED.
#[no_mangle]
pub extern "C" fn psv_saver_prepare(
    s: *const psv_saver,
    opts: *const psv_save_options,
    out: *mut *mut psv_prepared,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `s` is NULL or a live saver that outlives the prepared save (documented);
        // `opts` NULL or live options.
        let (s, opts) = unsafe { (ptr::handle::<psv_saver>(s, "saver")?, save_options(opts)?) };
        let inner = with_progress(&opts, |p| match p {
            Some(p) => s.inner.prepare_with_progress(&opts.inner, p),
            None => s.inner.prepare(&opts.inner),
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, ptr::into_handle(psv_prepared { inner })) };
        Ok(())
    })
}

/// The archive's length in bytes; 0 for NULL.
#[no_mangle]
pub extern "C" fn psv_prepared_size(p: *const psv_prepared) -> u64 {
    value(0, || {
        // SAFETY: `p` is NULL or a live prepared save.
        Ok(unsafe { ptr::handle(p, "prepared") }?.inner.len())
    })
}

/// Writes the archive's bytes `offset .. offset + len` into `out` (`len` writable bytes).
/// Safe to call from many threads at once, in any order; the ranges concatenated are exactly
/// the bytes `psv_saver_save` writes.
///
/// Errors: NULL_ARG, INVALID_ARG (the range runs past `psv_prepared_size`).
#[no_mangle]
pub extern "C" fn psv_prepared_render(
    p: *const psv_prepared,
    offset: u64,
    len: usize,
    out: *mut c_void,
) -> psv_status {
    status(|| {
        // SAFETY: `p` is NULL or a live prepared save.
        let p = unsafe { ptr::handle(p, "prepared") }?;
        // SAFETY: `out` holds `len` writable bytes used by no one else during the call.
        let out = unsafe { ptr::bytes_mut(out.cast(), len, "out") }?;
        p.inner.render(offset, out)
    })
}

/// Frees a prepared save (releasing its borrow of the saver). NULL is a no-op.
#[no_mangle]
pub extern "C" fn psv_prepared_free(p: *mut psv_prepared) {
    value((), || {
        // SAFETY: `p` is NULL or a prepared save from psv_saver_prepare, not yet freed.
        unsafe { ptr::free_handle(p) };
        Ok(())
    })
}
