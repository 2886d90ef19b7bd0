//! `psv_restore`, `psv_restore_from_memory`, `psv_restore_fd` and `psv_restore_into`: reading an
//! archive into a new `psv_archive`, in the library's block, a caller's allocator's, or a
//! caller's buffer.

use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_void};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::ptr::NonNull;

use super::archive::wrap_archive;
use super::boundary::status;
use super::ptr;
use super::ptr::null_arg;
use super::types::*;
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::memory::CallerBlock;
use crate::restore::{restore_from, BlockFrom, Source};

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
    run_restore(out, opts, None, || {
        // SAFETY: NUL-terminated per contract.
        Ok(Source::Path(Cow::Borrowed(unsafe { ptr::path(path) }?)))
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
    run_restore(out, opts, None, || {
        // SAFETY: `buf` holds `len` readable bytes for the duration of the call.
        Ok(Source::Memory(unsafe {
            ptr::slice(buf.cast::<u8>(), len, "buf")
        }?))
    })
}

/// Restores the archive in the caller's open file descriptor `fd` (a regular file or a block
/// device) exactly as `psv_restore` restores a path. Reads are positional: the fd's offset does
/// not move, and the caller keeps the fd (it is not closed). In mmap mode the archive maps the
/// file, which stays mapped after the fd is closed.
///
/// Errors: as `psv_restore`, and INVALID_ARG for a negative fd.
#[no_mangle]
pub extern "C" fn psv_restore_fd(
    fd: c_int,
    opts: *const psv_restore_options,
    out: *mut *mut psv_archive,
) -> psv_status {
    run_restore_fd(fd, opts, None, out)
}

/// Restores the `.npz` at `path` (as `psv_restore`) into the caller's memory: every array lands
/// in `buf` (`len` bytes, 64-byte aligned), at `psv_archive_offset`, and `psv_archive_data`
/// points there. `len` must be at least `psv_archive_required_bytes` of a metadata-only restore
/// with the same options (keys). The archive refers to `buf` without owning it: `psv_free`
/// frees the descriptions only; `buf` must outlive the archive's use. The mmap option and an
/// allocator set in `opts` do not apply. On failure `*out` is NULL and `buf` may hold part of
/// the data.
///
/// Errors: as `psv_restore`; INVALID_ARG when `buf` is too small (the message names the size
/// needed) or not 64-byte aligned; NULL_ARG for a NULL `buf` with a non-zero `len`.
#[no_mangle]
pub extern "C" fn psv_restore_into(
    path: *const c_char,
    opts: *const psv_restore_options,
    buf: *mut c_void,
    len: usize,
    out: *mut *mut psv_archive,
) -> psv_status {
    let caller = (buf, len);
    run_restore(out, opts, Some(caller), || {
        // SAFETY: NUL-terminated per contract.
        Ok(Source::Path(Cow::Borrowed(unsafe { ptr::path(path) }?)))
    })
}

/// `psv_restore_from_memory` (an archive of `src_len` bytes at `src`, read during the call) into
/// the caller's memory `buf`, as `psv_restore_into`.
///
/// Errors: as `psv_restore_into`, without IO.
#[no_mangle]
pub extern "C" fn psv_restore_from_memory_into(
    src: *const c_void,
    src_len: usize,
    opts: *const psv_restore_options,
    buf: *mut c_void,
    len: usize,
    out: *mut *mut psv_archive,
) -> psv_status {
    run_restore(out, opts, Some((buf, len)), || {
        // SAFETY: `src` holds `src_len` readable bytes for the duration of the call.
        Ok(Source::Memory(unsafe {
            ptr::slice(src.cast::<u8>(), src_len, "src")
        }?))
    })
}

/// `psv_restore_fd` into the caller's memory, as `psv_restore_into`.
///
/// Errors: as `psv_restore_into`, and INVALID_ARG for a negative fd.
#[no_mangle]
pub extern "C" fn psv_restore_fd_into(
    fd: c_int,
    opts: *const psv_restore_options,
    buf: *mut c_void,
    len: usize,
    out: *mut *mut psv_archive,
) -> psv_status {
    run_restore_fd(fd, opts, Some((buf, len)), out)
}

/// The body of the fd entry points: the caller's descriptor, borrowed for the call.
fn run_restore_fd(
    fd: c_int,
    opts: *const psv_restore_options,
    caller: Option<(*mut c_void, usize)>,
    out: *mut *mut psv_archive,
) -> psv_status {
    // SAFETY: a non-negative `fd` is the caller's open descriptor for the duration of the
    // call (checked negative below before use); ManuallyDrop never closes it.
    let file = (fd >= 0).then(|| ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) }));
    run_restore(out, opts, caller, || match &file {
        Some(f) => Ok(Source::File(f)),
        None => Err(Error::invalid_arg(format!(
            "fd {fd} is not a file descriptor"
        ))),
    })
}

/// The body of every restore entry point: `*out` is NULL until success; the options (or the
/// defaults), their progress callback and their allocator, or the caller's buffer, go to the
/// restore; the archive is wrapped for C.
fn run_restore<'s>(
    out: *mut *mut psv_archive,
    opts: *const psv_restore_options,
    caller: Option<(*mut c_void, usize)>,
    source: impl FnOnce() -> Result<Source<'s>>,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `out` is non-NULL and writable per contract.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `opts` is NULL or a live options handle.
        let opts = unsafe { restore_options(opts) }?;
        let source = source()?;
        let allocator = opts.allocator;
        let mut allocate = |size: usize| allocate_with(allocator, size);
        let memory = match caller {
            Some((buf, len)) => {
                // SAFETY: `buf` holds `len` writable bytes for the call (and, by contract,
                // for as long as the archive is used).
                BlockFrom::Caller(unsafe { ptr::bytes_mut(buf.cast(), len, "buf") }?)
            }
            None if allocator.alloc.is_some() => BlockFrom::Allocator(&mut allocate),
            None => BlockFrom::Own,
        };
        let archive: Archive = match opts.progress.as_fn() {
            Some(mut f) => restore_from(source, &opts.inner, Some(&mut f), memory),
            None => restore_from(source, &opts.inner, None, memory),
        }?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, ptr::into_handle(wrap_archive(archive)?)) };
        Ok(())
    })
}

/// `userdata` of a caller's allocator, sent to the thread that frees the archive.
struct Userdata(*mut c_void);
// SAFETY: `psv_restore_options_set_allocator` documents that userdata may be used from the
// threads that restore and free.
unsafe impl Send for Userdata {}
// SAFETY: as above; the free function is called once, never concurrently.
unsafe impl Sync for Userdata {}

/// `size` bytes from the caller's allocator, released through its free function.
fn allocate_with(allocator: Allocator, size: usize) -> Result<CallerBlock> {
    let alloc = allocator
        .alloc
        .ok_or_else(|| Error::invalid_arg("no allocator"))?;
    // SAFETY: the caller registered `alloc` with this userdata (set_allocator's contract).
    let ptr = unsafe { alloc(allocator.userdata, size, crate::memory::BLOCK_ALIGN) };
    let Some(ptr) = NonNull::new(ptr.cast::<u8>()) else {
        return Err(Error::nomem(format!(
            "the allocator returned NULL for {size} bytes"
        )));
    };
    let release: Option<Box<dyn FnOnce() + Send + Sync>> = allocator.free.map(|free| {
        let userdata = Userdata(allocator.userdata);
        let raw = Userdata(ptr.as_ptr().cast());
        Box::new(move || {
            let (userdata, raw) = (userdata, raw);
            // SAFETY: `free` is the caller's counterpart of `alloc`, called once with what
            // `alloc` returned (set_allocator's contract).
            unsafe { free(userdata.0, raw.0, size) }
        }) as Box<dyn FnOnce() + Send + Sync>
    });
    // SAFETY: the allocator's contract: `size` writable bytes at `ptr`, ours until `free`,
    // usable from any thread.
    Ok(unsafe { CallerBlock::from_raw(ptr, size, release) })
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
