//! `psv_restore_options`: the settings of `psv_restore` and `psv_restore_from_memory`, one setter
//! per knob.
//!
//! An options handle is used by one thread at a time; NULL options mean the defaults.

use std::ffi::{c_char, c_void};

use super::boundary::{set_option, value};
use super::ptr;
use super::types::*;
use crate::error::Error;
use crate::options::RestoreOptions;

/// Creates restore options with the defaults (all cores, CRC checked, default limits). Free
/// with `psv_restore_options_free`. NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn psv_restore_options_new() -> *mut psv_restore_options {
    value(std::ptr::null_mut(), || {
        Ok(ptr::into_handle(psv_restore_options::default()))
    })
}

/// Sets the number of worker threads for a restore; 0 (the default) means one per core.
///
/// Errors: NULL_ARG, INVALID_ARG (more than 1024).
#[no_mangle]
pub extern "C" fn psv_restore_options_set_threads(
    o: *mut psv_restore_options,
    threads: usize,
) -> psv_status {
    set_option(o, |o| {
        crate::pool::check_threads(threads)?;
        o.inner.threads = threads;
        Ok(())
    })
}

/// Chooses whether each member's CRC-32 is checked against the central directory (default
/// true). Without the check, corrupt data is returned as it is in the file.
#[no_mangle]
pub extern "C" fn psv_restore_options_set_verify_crc(
    o: *mut psv_restore_options,
    verify: bool,
) -> psv_status {
    set_option(o, |o| {
        o.inner.verify_crc = verify;
        Ok(())
    })
}

/// Sets the limits a restore enforces before allocating; 0 keeps a field's default.
///
/// All three are set at once; passing 0 for one sets that limit to its default.
/// `max_total_bytes`: the block, in bytes: the sum of every restored array's size, each rounded
/// up to a multiple of 64, the last one included (a psv-written file may be read as an image of
/// its data region, headers included and rounded up to 64, only when that image fits) — default:
/// physical memory.
/// `max_members`: central directory entries — default 16777216. `max_header_len`: a `.npy`
/// HEADER_LEN — default 1 MiB (numpy's own largest headers are about 72 KB). Exceeding one is
/// `PSV_ERR_LIMIT`.
#[no_mangle]
pub extern "C" fn psv_restore_options_set_limits(
    o: *mut psv_restore_options,
    max_total_bytes: u64,
    max_members: u64,
    max_header_len: u64,
) -> psv_status {
    set_option(o, |o| {
        let defaults = RestoreOptions::default();
        o.inner.max_total_bytes = (max_total_bytes != 0).then_some(max_total_bytes);
        o.inner.max_members = if max_members != 0 {
            max_members
        } else {
            defaults.max_members
        };
        o.inner.max_header_len = if max_header_len != 0 {
            max_header_len
        } else {
            defaults.max_header_len
        };
        Ok(())
    })
}

/// Sets a progress callback for restores (NULL `cb` removes it); see `psv_progress_cb`.
/// `userdata` is passed back unchanged and must stay valid while these options are used.
#[no_mangle]
pub extern "C" fn psv_restore_options_set_progress(
    o: *mut psv_restore_options,
    cb: psv_progress_cb,
    userdata: *mut c_void,
) -> psv_status {
    set_option(o, |o| {
        o.progress = Progress { cb, userdata };
        Ok(())
    })
}

/// Makes restores place their block in memory from `alloc_fn` (e.g. `cudaHostAlloc`, a
/// huge-page pool, shared memory) instead of the library's own: once the arrays are planned,
/// `alloc_fn(userdata, size, 64)` is called once; NULL fails the restore with
/// `PSV_ERR_NOMEM`, a pointer that is not 64-byte aligned with `PSV_ERR_INVALID_ARG` (it is
/// freed at once). `free_fn(userdata, ptr, size)` (may be NULL: the caller frees the memory
/// itself after `psv_free`) runs exactly once, from `psv_free` or when the restore fails
/// after allocating. `userdata` must stay valid until then and may be used from the threads
/// that restore and free. Such a restore is planned packed (like a metadata-only restore,
/// whose `psv_archive_required_bytes` is the size asked for) and ignores the mmap option.
/// `alloc_fn` NULL removes the allocator.
///
/// Errors: NULL_ARG (`opts`).
#[no_mangle]
pub extern "C" fn psv_restore_options_set_allocator(
    o: *mut psv_restore_options,
    alloc_fn: psv_alloc_fn,
    free_fn: psv_free_fn,
    userdata: *mut c_void,
) -> psv_status {
    set_option(o, |o| {
        o.allocator = Allocator {
            alloc: alloc_fn,
            free: alloc_fn.and(free_fn),
            userdata,
        };
        Ok(())
    })
}

/// Restores only the arrays named in `keys` (`n` NUL-terminated UTF-8 strings, copied), in
/// that order, and sizes the block to them; `n == 0` restores every array again. A key the
/// archive does not have makes the restore fail with `PSV_ERR_NOT_FOUND`.
///
/// Errors: NULL_ARG (`o`, or `keys`/an element NULL with n > 0), INVALID_ARG (non-UTF-8 or
/// repeated key).
#[no_mangle]
pub extern "C" fn psv_restore_options_set_keys(
    o: *mut psv_restore_options,
    keys: *const *const c_char,
    n: usize,
) -> psv_status {
    set_option(o, |o| {
        // SAFETY: `keys` points to `n` string pointers per contract.
        let list = unsafe { ptr::slice(keys, n, "keys") }?;
        let mut owned = Vec::with_capacity(n);
        for &k in list {
            // SAFETY: each element is NULL or NUL-terminated per contract.
            let k = unsafe { ptr::utf8(k, "keys[i]") }?;
            if owned.iter().any(|o: &String| o == k) {
                return Err(Error::invalid_arg(format!("key {k:?} is listed twice")));
            }
            owned.push(k.to_owned());
        }
        o.inner.keys = (n > 0).then_some(owned);
        Ok(())
    })
}

/// When true, a restore reads only the directory and the `.npy` headers: accessors work, but
/// `psv_archive_data` returns NULL and the block is empty. Useful for listing large files.
#[no_mangle]
pub extern "C" fn psv_restore_options_set_metadata_only(
    o: *mut psv_restore_options,
    metadata_only: bool,
) -> psv_status {
    set_option(o, |o| {
        o.inner.metadata_only = metadata_only;
        Ok(())
    })
}

/// When true, arrays stored in non-native byte order (e.g. `>f8` on x86-64) are byte-swapped
/// in place and reported with their native descr and numeric dtype code. Default false: bytes
/// and descr exactly as stored, as numpy does.
#[no_mangle]
pub extern "C" fn psv_restore_options_set_native_endian(
    o: *mut psv_restore_options,
    native_endian: bool,
) -> psv_status {
    set_option(o, |o| {
        o.inner.native_endian = native_endian;
        Ok(())
    })
}

/// When true, the file is mapped (private, copy-on-write) and every stored member whose array
/// data is 64-aligned in the file (every file psv writes) is returned as a view into the
/// mapping: no array data is read up front (the headers are parsed from the mapping) and pages
/// load on first touch. Other members (numpy's
/// unaligned files, deflated members, and members that native_endian must byte-swap) are copied
/// into the block as usual. Mapped members' CRCs are not checked (that would read them).
///
/// Applies to `.npz` files only: directory archives and `psv_restore_from_memory` copy every
/// array. The archive owns the mapping until `psv_free`. Replacing the file by rename while it is
/// mapped is safe (the mapping keeps the old file); truncating it in place is not, from the
/// start of `psv_restore` to `psv_free`: touching a page past the new end raises SIGBUS in the
/// process.
#[no_mangle]
pub extern "C" fn psv_restore_options_set_mmap(
    o: *mut psv_restore_options,
    mmap: bool,
) -> psv_status {
    set_option(o, |o| {
        o.inner.mmap = mmap;
        Ok(())
    })
}

/// Frees restore options. NULL is a no-op.
#[no_mangle]
pub extern "C" fn psv_restore_options_free(o: *mut psv_restore_options) {
    value((), || {
        // SAFETY: `o` is NULL or from psv_restore_options_new, not yet freed.
        unsafe { ptr::free_handle(o) };
        Ok(())
    })
}
