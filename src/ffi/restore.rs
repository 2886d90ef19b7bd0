//! `psv_restore`, `psv_restore_from_memory`, `psv_restore_fd`, `psv_restore_stream` and the
//! `_into` variants: reading an archive into a new `psv_archive`, in the library's block, a
//! caller's allocator's, or a caller's buffer.

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
use crate::progress::ProgressFn;
use crate::restore::{restore_from, restore_stream_from, BlockFrom, Source};

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

/// Restores the archive in the caller's open file descriptor `fd` exactly as `psv_restore`
/// restores a path; the caller keeps the fd (it is not closed). A regular file or a block
/// device is read with positional reads: the fd's offset does not move; in mmap mode the
/// archive maps the file, which stays mapped after the fd is closed. Any other fd (a pipe, a
/// socket) is read once, front to back, as `psv_restore_stream` reads, up to the archive's end
/// record (bytes after it stay unread in the fd); an `O_NONBLOCK` one is waited on with `poll`
/// whenever it has no data yet, as a blocking one would be (its flags are left as they are).
///
/// Errors: as `psv_restore` (for a pipe or socket: as `psv_restore_stream`), and INVALID_ARG
/// for a negative fd.
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

/// Restores the archive that `read_fn` streams (a pipe, a socket, a download, a Python file
/// object), reading it once, front to back, without seeking: the same arrays and checks as
/// `psv_restore`, each array 64-byte aligned in one block. `read_fn` runs on the calling thread
/// only, in order (see `psv_read_fn`); `userdata` is passed to it as is. On success `*out` is a
/// new archive the caller frees with `psv_free`; on failure `*out` is NULL.
///
/// Members are read from their local headers; the central directory and end records after
/// them are checked against what the stream held. Reads never ask for more than the records so
/// far say the archive holds (except up to 256 KiB ahead while a deflated member with a data
/// descriptor is decoded), so reading stops right after the end record's
/// comment. Memory: the block (address space up to the block limit of
/// `psv_restore_options_set_limits` is reserved and committed as it fills) plus a 256 KiB
/// buffer and at most 48 MiB of compressed members (of up to 16 MiB each) waiting to be
/// decoded on the pool. Members with a data descriptor (`numpy.savez` into a pipe) are read when their end
/// can be found in one pass: deflated members, and stored `.npy` members holding exactly their
/// header and array data; any other stored member with one is UNSUPPORTED. The mmap option
/// does not apply. An allocator set in `opts` cannot be used (it needs the size before the
/// data): UNSUPPORTED; restore into caller memory with `psv_restore_stream_into` instead. The
/// progress callback gets the bytes read so far and a total of 0 (not known) until its last
/// call, which gets (done, done).
///
/// Errors: NULL_ARG (`read_fn`, `out`), IO (`read_fn` returned a negative value, or more than
/// `len`), FORMAT (not an archive, a stream that ends early at any byte, records that disagree
/// with the members), UNSUPPORTED (as above, and as `psv_restore`), CRC, LIMIT, NOMEM,
/// NOT_FOUND, ABORTED.
#[no_mangle]
pub extern "C" fn psv_restore_stream(
    read_fn: psv_read_fn,
    userdata: *mut c_void,
    opts: *const psv_restore_options,
    out: *mut *mut psv_archive,
) -> psv_status {
    run_restore_stream(read_fn, userdata, opts, None, out)
}

/// `psv_restore_stream` into the caller's memory, as `psv_restore_into`: every array lands in
/// `buf` (`len` bytes, 64-byte aligned), which must hold `psv_archive_required_bytes` of a
/// metadata-only restore of the same archive with the same options (keys). When `buf` turns
/// out too small, the rest of the stream is still read (to name the size needed) and the
/// restore fails with INVALID_ARG. `psv_free` frees the descriptions only, never `buf`.
///
/// Errors: as `psv_restore_stream`; INVALID_ARG when `buf` is too small (the message names the
/// size needed) or not 64-byte aligned; NULL_ARG for a NULL `buf` with a non-zero `len`.
#[no_mangle]
pub extern "C" fn psv_restore_stream_into(
    read_fn: psv_read_fn,
    userdata: *mut c_void,
    opts: *const psv_restore_options,
    buf: *mut c_void,
    len: usize,
    out: *mut *mut psv_archive,
) -> psv_status {
    run_restore_stream(read_fn, userdata, opts, Some((buf, len)), out)
}

/// A caller's read callback as a `Read`.
struct CallbackReader {
    read_fn: unsafe extern "C" fn(*mut c_void, *mut c_void, usize) -> i64,
    userdata: *mut c_void,
}

impl std::io::Read for CallbackReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: the caller registered `read_fn` for `userdata`; `buf` is writable for
        // `buf.len()` bytes during the call, which runs on this thread.
        let rc = unsafe { (self.read_fn)(self.userdata, buf.as_mut_ptr().cast(), buf.len()) };
        let fail =
            |what: String| std::io::Error::other(Error::new(crate::error::ErrorKind::Io, what));
        match usize::try_from(rc) {
            Ok(n) if n <= buf.len() => Ok(n),
            Ok(n) => Err(fail(format!(
                "the read callback returned {n} for a buffer of {} bytes",
                buf.len()
            ))),
            Err(_) => Err(fail(format!(
                "the read callback returned {rc}; the stream stopped there"
            ))),
        }
    }
}

/// The body of the stream entry points.
fn run_restore_stream(
    read_fn: psv_read_fn,
    userdata: *mut c_void,
    opts: *const psv_restore_options,
    caller: Option<(*mut c_void, usize)>,
    out: *mut *mut psv_archive,
) -> psv_status {
    run_restore_with(out, opts, caller, |opts, progress, memory| {
        let read_fn = read_fn.ok_or_else(|| null_arg("read_fn"))?;
        let mut reader = CallbackReader { read_fn, userdata };
        restore_stream_from(
            &mut reader,
            "the read callback's stream",
            opts,
            progress,
            memory,
        )
    })
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

/// The body of every restore entry point but the streams': `*out` is NULL until success; the
/// options (or the defaults), their progress callback and their allocator, or the caller's
/// buffer, go to the restore; the archive is wrapped for C.
fn run_restore<'s>(
    out: *mut *mut psv_archive,
    opts: *const psv_restore_options,
    caller: Option<(*mut c_void, usize)>,
    source: impl FnOnce() -> Result<Source<'s>>,
) -> psv_status {
    run_restore_with(out, opts, caller, |opts, progress, memory| {
        restore_from(source()?, opts, progress, memory)
    })
}

/// The body of every restore entry point: `*out` is NULL until success; `restore` gets the
/// options (or the defaults), their progress callback, and the memory: the caller's buffer,
/// the options' allocator, or the library's block; the archive is wrapped for C.
fn run_restore_with(
    out: *mut *mut psv_archive,
    opts: *const psv_restore_options,
    caller: Option<(*mut c_void, usize)>,
    restore: impl FnOnce(
        &crate::options::RestoreOptions,
        Option<&mut ProgressFn<'_>>,
        BlockFrom<'_>,
    ) -> Result<Archive>,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `out` is non-NULL and writable per contract.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `opts` is NULL or a live options handle.
        let opts = unsafe { restore_options(opts) }?;
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
            Some(mut f) => restore(&opts.inner, Some(&mut f), memory),
            None => restore(&opts.inner, None, memory),
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
