//! `psv_save_options`: the settings of `psv_saver_save`, one setter per knob.
//!
//! An options handle is used by one thread at a time; NULL options mean the defaults.

use std::ffi::{c_int, c_void};

use super::boundary::{set_option, value};
use super::ptr;
use super::types::*;
use crate::error::Error;
use crate::options::Layout;

/// Creates save options with the defaults (all cores, no fsync). Free with
/// `psv_save_options_free`. NULL only if memory is exhausted.
///
/// Every save is atomic: it writes a temporary file `.<16 hex digits>.psv-tmp` (always 25 bytes,
/// random, created with O_EXCL) beside the target and renames it over the target when complete.
/// What the new file keeps of the regular file it replaces (symbolic links followed to read
/// these; the link itself is then replaced by the new file):
/// - kept: the permission bits (mode & 0777); the owner and group where the process may set
///   them (root may; another user's save owns the new file, with the old group if he belongs to
///   it); `user.*` extended attributes and the POSIX access ACL (if the ACL cannot be copied,
///   group and others lose their permissions). Until the rename, the temporary file is readable
///   by its owner only;
/// - not kept: set-user-ID, set-group-ID and sticky bits, `security.*` and `trusted.*`
///   attributes, timestamps, the inode: other hard links to the old file keep the old contents
///   (a rename cannot keep a hard link; there is no in-place mode, which would let readers see
///   a torn file);
/// - refused: a file the caller may not write (e.g. mode 0444, not root): `PSV_ERR_IO` with
///   `EACCES` (`psv_last_error_os_code`), as numpy's savez fails there; the file is untouched.
///
/// A new file gets 0666 less the umask.
#[no_mangle]
pub extern "C" fn psv_save_options_new() -> *mut psv_save_options {
    value(std::ptr::null_mut(), || {
        Ok(ptr::into_handle(psv_save_options::default()))
    })
}

/// Sets the number of worker threads for a save; 0 (the default) means one per core.
///
/// Errors: NULL_ARG, INVALID_ARG (more than 1024).
#[no_mangle]
pub extern "C" fn psv_save_options_set_threads(
    o: *mut psv_save_options,
    threads: usize,
) -> psv_status {
    set_option(o, |o| {
        crate::pool::check_threads(threads)?;
        o.inner.threads = threads;
        Ok(())
    })
}

/// Makes saves durable when `fsync` is true: the file is fsync'd before the rename and its
/// directory after it, so the new file survives a power loss once `psv_saver_save` returns.
/// Without it (the default) the rename is still atomic for other processes, but a crash of the
/// machine may leave the old file or an empty one, as for any unsynced write.
#[no_mangle]
pub extern "C" fn psv_save_options_set_fsync(o: *mut psv_save_options, fsync: bool) -> psv_status {
    set_option(o, |o| {
        o.inner.fsync = fsync;
        Ok(())
    })
}

/// Sets the deflate level for every member: 1 (fastest) to 9 (smallest), as
/// `numpy.savez_compressed` (level 6) writes; 0 (the default) stores members uncompressed, which
/// is what makes saves run at disk speed and keeps array data 64-aligned in the file.
/// Compression runs in parallel: large arrays are cut into 1 MiB blocks deflated independently.
///
/// Errors: NULL_ARG, INVALID_ARG (level outside 0..=9).
#[no_mangle]
pub extern "C" fn psv_save_options_set_compression(
    o: *mut psv_save_options,
    level: c_int,
) -> psv_status {
    set_option(o, |o| {
        o.inner.compression = u32::try_from(level)
            .ok()
            .filter(|l| *l <= 9)
            .ok_or_else(|| {
                Error::invalid_arg(format!("compression level {level} is not in 0..=9"))
            })?;
        Ok(())
    })
}

/// Chooses the container: `PSV_LAYOUT_NPZ` (default; `path` gets ".npz" appended) or
/// `PSV_LAYOUT_DIR` (`path` is a directory, created if missing, holding one `<key>.npy` per
/// array and `psv-index.txt`, the commit point: a crash leaves the previous contents intact).
/// In the directory layout keys must be safe file names (no '/', no leading '.', no NUL, tab or
/// line break; at most 240 bytes) and compression is not available.
///
/// Directory saves never overwrite a file: each array goes to `<key>.npy`, else `<key>.<n>.npy`
/// with the smallest n that no existing file, the current index or another key of the same save
/// uses. Saves of one directory take turns (an exclusive flock on the directory for the whole
/// save, or on `.psv-lock` inside it where a directory cannot be locked): the last to commit
/// wins whole. A restore overlapping a save sees the old or the new version whole. Every name a
/// save creates is first listed in `.psv-journal`, so the next save of the directory removes
/// what a killed save left (temporary files, files no index names), and never a file psv did
/// not create. Each array's new file keeps the attributes of the same key's previous file, as
/// `psv_save_options_new` describes.
///
/// Errors: NULL_ARG, INVALID_ARG (unknown layout code).
#[no_mangle]
pub extern "C" fn psv_save_options_set_layout(
    o: *mut psv_save_options,
    layout: psv_layout,
) -> psv_status {
    set_option(o, |o| {
        o.inner.layout = match layout {
            PSV_LAYOUT_NPZ => Layout::Npz,
            PSV_LAYOUT_DIR => Layout::Dir,
            other => return Err(Error::invalid_arg(format!("unknown layout code {other}"))),
        };
        Ok(())
    })
}

/// Makes asynchronous saves (`psv_saver_save_async` and its siblings) work on a **snapshot**
/// when `snapshot` is true: before the call returns, the arrays are copied (in parallel) into the
/// saver's staging area, so the caller may change or free its arrays, and change or free the
/// saver, at once. The staging area is huge-page advised, reused by the next snapshot that fits
/// and freed with the saver; `psv_saver_staging_bytes` tells its size. Without snapshot (the
/// default) the job borrows the saver and its arrays until it has finished: the arrays must not
/// change, `psv_saver_add*` gives `PSV_ERR_BUSY` and `psv_saver_free` waits for the job.
/// Blocking saves ignore this setting.
///
/// Errors: NULL_ARG.
#[no_mangle]
pub extern "C" fn psv_save_options_set_snapshot(
    o: *mut psv_save_options,
    snapshot: bool,
) -> psv_status {
    set_option(o, |o| {
        o.snapshot = snapshot;
        Ok(())
    })
}

/// Sets the alignment in the file of large arrays' data: a power of two from 64 (the default)
/// to 1 MiB (1048576). Every stored array with at least `alignment` bytes of data then starts at
/// a multiple of `alignment` in the archive: a page (4096) for `O_DIRECT` reads and page-aligned
/// mappings, or a parallel file system's stripe size, so that large arrays (and the processes
/// of a collective save writing them) never share a stripe's first bytes with a neighbour.
/// Smaller arrays, and compressed members, stay 64-aligned. Applies to every save of an `.npz`
/// (path, fd, stream, memory, prepared, collective); the directory layout ignores it. The file
/// is a plain `.npz` numpy reads: the padding is in each member's 0xA11E extra field, and where
/// it exceeds that field's 64 KiB, zero bytes before the member's local header. The larger the
/// alignment, the larger the file: up to `alignment` bytes of padding per large array.
///
/// Errors: NULL_ARG, INVALID_ARG (not a power of two in 64..=1048576).
#[no_mangle]
pub extern "C" fn psv_save_options_set_alignment(
    o: *mut psv_save_options,
    alignment: usize,
) -> psv_status {
    set_option(o, |o| {
        let a = alignment as u64;
        if !crate::npz::plan::valid_align(a) {
            return Err(Error::invalid_arg(format!(
                "alignment {alignment} is not a power of two from 64 to 1048576"
            )));
        }
        o.inner.alignment = a;
        Ok(())
    })
}

/// Sets a progress callback for saves (NULL `cb` removes it); see `psv_progress_cb`.
/// `userdata` is passed back unchanged and must stay valid while these options are used.
#[no_mangle]
pub extern "C" fn psv_save_options_set_progress(
    o: *mut psv_save_options,
    cb: psv_progress_cb,
    userdata: *mut c_void,
) -> psv_status {
    set_option(o, |o| {
        o.progress = Progress { cb, userdata };
        Ok(())
    })
}

/// Frees save options. NULL is a no-op.
#[no_mangle]
pub extern "C" fn psv_save_options_free(o: *mut psv_save_options) {
    value((), || {
        // SAFETY: `o` is NULL or from psv_save_options_new, not yet freed.
        unsafe { ptr::free_handle(o) };
        Ok(())
    })
}
