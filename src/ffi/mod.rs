//! The C ABI. Every function here: runs its body inside the panic boundary, checks every
//! pointer through `ptr`, calls the safe core, and writes out-parameters only at the end.
//!
//! Thread safety: a `psv_saver` or an options handle is used by one thread at a time (it may
//! move between threads). A `psv_archive` is immutable: its accessors may be called from many
//! threads at once, but `psv_free` must not race any other call on it. Different handles are
//! independent; saves and restores may run concurrently. Error messages are per thread.
#![allow(unsafe_code, non_camel_case_types)]
// These are C entry points, safe `extern "C" fn`s as in rustls-ffi: their pointer arguments'
// validity is the documented C contract, and every pointer is NULL-checked in `ptr`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod ptr;
pub mod types;

use std::ffi::{c_char, c_int, c_void, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use self::boundary::{null_arg, status, value};
use self::types::*;
use crate::archive::Archive;
use crate::dtype::{Dtype, DTYPE_OTHER_CODE};
use crate::error::{with_last_error, Error, Result};
use crate::options::{Layout, RestoreOptions, SaveOptions};
use crate::progress::ProgressFn;
use crate::save::Saver;
use crate::shape;

// ---------------------------------------------------------------------------------------------
// Saving

/// Creates an empty saver. Free it with `psv_saver_free`.
///
/// Returns NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn psv_saver_new() -> *mut psv_saver {
    value(std::ptr::null_mut(), || {
        Ok(ptr::into_handle(psv_saver {
            inner: Saver::new(),
        }))
    })
}

/// `PSV_ERR_OVERFLOW` for an ndim above the maximum of 64.
fn check_ndim(ndim: usize) -> Result<()> {
    if ndim > shape::MAX_NDIM {
        return Err(Error::overflow(format!(
            "ndim {ndim} exceeds the maximum of {}",
            shape::MAX_NDIM
        )));
    }
    Ok(())
}

/// Reads a C shape: `shape` may be NULL only when `ndim` is 0; ndim above 64 and negative
/// dimensions are `PSV_ERR_OVERFLOW`.
///
/// # Safety
/// `shape` is NULL or points to `ndim` readable `int64_t`.
unsafe fn read_shape(shape: *const i64, ndim: usize) -> Result<Vec<u64>> {
    check_ndim(ndim)?;
    // SAFETY: the caller passes `ndim` readable elements (checked small above).
    let dims = unsafe { ptr::slice(shape, ndim, "shape") }?;
    shape::dims_from_i64(dims)
}

/// Adds a C-order array of a numeric dtype (`PSV_DTYPE_BOOL` .. `PSV_DTYPE_C128`, native byte
/// order) under `key`.
///
/// Borrowed, not copied: `data` (prod(shape) * itemsize bytes) must stay valid and unchanged
/// until `psv_saver_free`; it is read during `psv_saver_save`. `key` (non-empty UTF-8, unique in
/// this saver) and `shape` (`ndim` dims, NULL allowed when `ndim` is 0; a 0-d array holds one
/// element) are copied. `data` may be NULL only if the byte count is 0.
///
/// Errors: NULL_ARG, BAD_DTYPE (unknown code or PSV_DTYPE_OTHER), OVERFLOW (negative dims,
/// ndim > 64, byte count overflows), INVALID_ARG (bad or duplicate key).
#[no_mangle]
pub extern "C" fn psv_saver_add(
    s: *mut psv_saver,
    key: *const c_char,
    data: *const core::ffi::c_void,
    dtype: psv_dtype,
    shape: *const i64,
    ndim: usize,
) -> psv_status {
    status(|| add_one(s, key, data, dtype, shape, ndim, false))
}

/// The body of `psv_saver_add` and `psv_saver_add_fortran` (inside their boundary).
fn add_one(
    s: *mut psv_saver,
    key: *const c_char,
    data: *const core::ffi::c_void,
    dtype: psv_dtype,
    shape: *const i64,
    ndim: usize,
    fortran_order: bool,
) -> Result<()> {
    // SAFETY: `s` is NULL or a live saver used only by this thread (documented contract).
    let s = unsafe { ptr::handle_mut(s, "saver") }?;
    // SAFETY: `shape` points to `ndim` dims (documented contract).
    let dims = unsafe { read_shape(shape, ndim) }?;
    // SAFETY: `key` and `data` as documented for psv_saver_add.
    unsafe { add_numeric(&mut s.inner, key, data, dtype, dims, fortran_order) }
}

/// Adds one numeric array given by its C key, data pointer and code, and its checked dims: the
/// part of `psv_saver_add` that `psv_saver_add_many` repeats for every array.
///
/// # Safety
/// `key` is NULL or NUL-terminated; `data` is NULL or points to prod(dims) * itemsize bytes
/// that stay valid and unchanged until the saver is freed.
unsafe fn add_numeric(
    saver: &mut Saver<'static>,
    key: *const c_char,
    data: *const core::ffi::c_void,
    dtype: psv_dtype,
    dims: Vec<u64>,
    fortran_order: bool,
) -> Result<()> {
    // SAFETY: `key` is NULL or NUL-terminated (this function's contract).
    let key = unsafe { ptr::utf8(key, "key") }?;
    let dtype = Dtype::try_from(dtype)?;
    let nbytes = shape::byte_count(&dims, dtype.itemsize())
        .map_err(|e| e.context(format!("key {key:?}")))?;
    // SAFETY: the caller keeps `nbytes` bytes at `data` valid and unchanged until the saver is
    // freed, which is as long as the saver holds this slice.
    let data: &'static [u8] = unsafe { ptr::slice(data.cast::<u8>(), nbytes, "data") }?;
    saver.add_ordered(key, data, dtype, &dims, fortran_order)
}

/// Adds a numeric array (as `psv_saver_add`) whose bytes are in Fortran (column-major) order,
/// as Julia, Fortran and Eigen hold them: numpy reads it back with this shape and
/// `fortran_order` True (for ndim < 2 the two orders are the same and it is saved as C order,
/// as numpy does). Ownership and errors as `psv_saver_add`.
#[no_mangle]
pub extern "C" fn psv_saver_add_fortran(
    s: *mut psv_saver,
    key: *const c_char,
    data: *const core::ffi::c_void,
    dtype: psv_dtype,
    shape: *const i64,
    ndim: usize,
) -> psv_status {
    status(|| add_one(s, key, data, dtype, shape, ndim, true))
}

/// Adds an array described by a numpy descr under `key`: a type string as numpy's
/// `dtype.str` (`"<f8"`, `"|S5"`, `"<U3"`, `"<M8[ns]"`, `">i4"`) or a record as
/// `repr(dtype.descr)` (`"[('a', '<i4'), ('b', '<f8', (2,))]"`). Object dtypes are refused.
///
/// `nbytes` must equal prod(shape) * itemsize. `fortran_order` marks column-major data (ignored
/// for ndim < 2, as numpy does). Ownership as `psv_saver_add`: `data` is borrowed until
/// `psv_saver_free`; `key`, `numpy_descr` and `shape` are copied.
///
/// Errors: NULL_ARG, BAD_DTYPE (bad or object descr), OVERFLOW, INVALID_ARG (bad key, nbytes
/// mismatch).
#[no_mangle]
pub extern "C" fn psv_saver_add_descr(
    s: *mut psv_saver,
    key: *const c_char,
    data: *const core::ffi::c_void,
    nbytes: usize,
    numpy_descr: *const c_char,
    shape: *const i64,
    ndim: usize,
    fortran_order: bool,
) -> psv_status {
    status(|| {
        // SAFETY: see psv_saver_add.
        let s = unsafe { ptr::handle_mut(s, "saver") }?;
        // SAFETY: NUL-terminated per contract.
        let key = unsafe { ptr::utf8(key, "key") }?;
        // SAFETY: NUL-terminated per contract.
        let descr = unsafe { ptr::utf8(numpy_descr, "numpy_descr") }
            .map_err(|e| Error::new(e.kind(), e.message()))?;
        // SAFETY: `shape` points to `ndim` dims per contract.
        let dims = unsafe { read_shape(shape, ndim) }?;
        if nbytes > isize::MAX as usize {
            return Err(Error::overflow(format!("nbytes {nbytes} is too large")));
        }
        // SAFETY: the caller keeps `nbytes` bytes at `data` valid until the saver is freed.
        let data: &'static [u8] = unsafe { ptr::slice(data.cast::<u8>(), nbytes, "data") }?;
        s.inner.add_descr(key, data, descr, &dims, fortran_order)
    })
}

/// Adds `count` C-order numeric arrays in one call, as `count` calls of `psv_saver_add` would,
/// in order: for hosts where each foreign call is expensive (Python's ctypes costs ~1 us a call).
///
/// `keys[i]`, `data[i]`, `dtypes[i]` and `ndims[i]` describe array `i`; `shapes` holds every
/// array's dims back to back (array 0's `ndims[0]` dims, then array 1's, ...; NULL allowed when
/// every ndim is 0). `data` pointers are borrowed exactly as in `psv_saver_add`; keys and shapes
/// are copied. All or nothing: on any error no array of this call is added, and the message
/// names the failing index and key. `count` 0 is OK (the array arguments may then be NULL).
///
/// Errors: NULL_ARG, BAD_DTYPE, OVERFLOW, INVALID_ARG, as `psv_saver_add`.
#[no_mangle]
pub extern "C" fn psv_saver_add_many(
    s: *mut psv_saver,
    count: usize,
    keys: *const *const c_char,
    data: *const *const core::ffi::c_void,
    dtypes: *const psv_dtype,
    shapes: *const i64,
    ndims: *const usize,
) -> psv_status {
    status(|| {
        // SAFETY: `s` is NULL or a live saver used only by this thread (documented contract).
        let saver = &mut unsafe { ptr::handle_mut(s, "saver") }?.inner;
        if count == 0 {
            return Ok(());
        }
        // SAFETY: each array argument points to `count` readable elements (documented contract).
        let (keys, data, dtypes, ndims) = unsafe {
            (
                ptr::slice(keys, count, "keys")?,
                ptr::slice(data, count, "data")?,
                ptr::slice(dtypes, count, "dtypes")?,
                ptr::slice(ndims, count, "ndims")?,
            )
        };
        let mut total_dims = 0usize;
        for &n in ndims {
            check_ndim(n)?;
            total_dims += n; // at most count * 64, and count elements exist in memory
        }
        // SAFETY: `shapes` holds sum(ndims) dims (documented contract).
        let all_dims = unsafe { ptr::slice(shapes, total_dims, "shapes") }?;
        let before = saver.len();
        let mut next_dim = 0;
        for i in 0..count {
            let dims = &all_dims[next_dim..next_dim + ndims[i]];
            next_dim += ndims[i];
            // SAFETY: keys[i] and data[i] as documented for psv_saver_add.
            let added = shape::dims_from_i64(dims).and_then(|dims| unsafe {
                add_numeric(saver, keys[i], data[i], dtypes[i], dims, false)
            });
            if let Err(e) = added {
                saver.truncate(before);
                return Err(e.context(format!("array {i}")));
            }
        }
        Ok(())
    })
}

/// Number of arrays added to the saver; 0 for NULL.
#[no_mangle]
pub extern "C" fn psv_saver_count(s: *const psv_saver) -> usize {
    value(0, || {
        // SAFETY: `s` is NULL or a live saver.
        Ok(unsafe { ptr::handle(s, "saver") }?.inner.len())
    })
}

/// Converts a C path (bytes, not necessarily UTF-8) to a `Path`.
///
/// # Safety
/// `p` is NULL or NUL-terminated.
unsafe fn c_path<'a>(p: *const c_char) -> Result<&'a Path> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { ptr::c_str(p, "path") }?.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid_arg("path is empty"));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// Writes every added array into `path` (".npz" is appended unless `path` ends with it).
///
/// The file appears atomically: it is written under a temporary name in the same directory
/// and renamed over `path` only when complete (fsync'd first when the options ask). On any
/// error the temporary file is removed and an existing file at `path` is left untouched. `opts`
/// may be NULL for defaults. The saver stays usable and may be saved again. Blocks the calling
/// thread; the work runs on a private pool.
///
/// Errors: NULL_ARG, INVALID_ARG (empty path), IO (with the OS text), NOMEM, OVERFLOW.
#[no_mangle]
pub extern "C" fn psv_saver_save(
    s: *mut psv_saver,
    path: *const c_char,
    opts: *const psv_save_options,
) -> psv_status {
    status(|| {
        // SAFETY: `s` is NULL or a live saver.
        let s = unsafe { ptr::handle(s, "saver") }?;
        // SAFETY: NUL-terminated per contract.
        let path = unsafe { c_path(path) }?;
        let defaults = psv_save_options {
            inner: SaveOptions::default(),
            progress: Progress::NONE,
        };
        let opts = if opts.is_null() {
            &defaults
        } else {
            // SAFETY: non-NULL options handle, live per contract.
            unsafe { ptr::handle(opts, "opts") }?
        };
        let saved = match opts.progress.as_fn() {
            Some(mut f) => s.inner.save_with_progress(path, &opts.inner, &mut f),
            None => s.inner.save(path, &opts.inner),
        };
        saved.map(|_| ())
    })
}

/// Frees a saver (and releases its borrows of the arrays' memory). NULL is a no-op.
#[no_mangle]
pub extern "C" fn psv_saver_free(s: *mut psv_saver) {
    value((), || {
        // SAFETY: `s` is NULL or a saver from psv_saver_new, not yet freed.
        unsafe { ptr::free_handle(s) };
        Ok(())
    })
}

/// Creates save options with the defaults (all cores, no fsync). Free with
/// `psv_save_options_free`. NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn psv_save_options_new() -> *mut psv_save_options {
    value(std::ptr::null_mut(), || {
        Ok(ptr::into_handle(psv_save_options {
            inner: SaveOptions::default(),
            progress: Progress::NONE,
        }))
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

/// The body of every options setter: NULL check, then `f` on the options.
fn set_option<T>(o: *mut T, f: impl FnOnce(&mut T) -> Result<()>) -> psv_status {
    status(|| {
        // SAFETY: `o` is NULL or a live options handle used by one thread (documented contract).
        let o = unsafe { ptr::handle_mut(o, "opts") }?;
        f(o)
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

// ---------------------------------------------------------------------------------------------
// Restoring

/// Creates restore options with the defaults (all cores, CRC checked, default limits). Free
/// with `psv_restore_options_free`. NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn psv_restore_options_new() -> *mut psv_restore_options {
    value(std::ptr::null_mut(), || {
        Ok(ptr::into_handle(psv_restore_options {
            inner: RestoreOptions::default(),
            progress: Progress::NONE,
        }))
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
/// `max_total_bytes`: the block (all arrays, each padded to 64; a psv-written file is read as an
/// image of its data region, headers included, only when that image fits) — default: physical
/// memory.
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

fn wrap_archive(inner: Archive) -> Result<psv_archive> {
    let arrays = inner.arrays();
    let mut keys = StringTable::default();
    let mut descrs = StringTable::default();
    let mut dims = Vec::new();
    let mut dim_starts = Vec::with_capacity(arrays.len() + 1);
    for a in arrays {
        if !keys.push(&a.key) || !descrs.push(&a.descr_string) {
            return Err(Error::format(format!(
                "{:?} contains a NUL character",
                a.key
            )));
        }
        dim_starts.push(dims.len());
        dims.extend(a.shape.iter().map(|&d| d as i64));
    }
    dim_starts.push(dims.len());
    let mut skipped = StringTable::default();
    for name in inner.skipped() {
        skipped.push(&name.replace('\0', "\u{fffd}"));
    }
    Ok(psv_archive {
        inner,
        keys,
        descrs,
        dims,
        dim_starts,
        skipped,
    })
}

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
        let path = unsafe { c_path(path) }?;
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
) -> Result<std::borrow::Cow<'a, psv_restore_options>> {
    if opts.is_null() {
        Ok(std::borrow::Cow::Owned(psv_restore_options {
            inner: RestoreOptions::default(),
            progress: Progress::NONE,
        }))
    } else {
        // SAFETY: forwarded contract.
        Ok(std::borrow::Cow::Borrowed(unsafe {
            ptr::handle(opts, "opts")
        }?))
    }
}

/// Runs an accessor on archive `a`, entry `i`; NULL or out-of-range gives `fallback`.
fn entry<T>(a: *const psv_archive, i: usize, fallback: T, f: impl FnOnce(&psv_archive) -> T) -> T {
    value(fallback, || {
        // SAFETY: `a` is NULL or a live archive (immutable, so shared access is fine).
        let a = unsafe { ptr::handle(a, "archive") }?;
        if i >= a.inner.len() {
            return Err(Error::invalid_arg(format!(
                "index {i} is out of range (the archive has {} arrays)",
                a.inner.len()
            )));
        }
        Ok(f(a))
    })
}

/// Number of arrays in the archive; 0 for NULL.
#[no_mangle]
pub extern "C" fn psv_archive_count(a: *const psv_archive) -> usize {
    value(0, || {
        // SAFETY: `a` is NULL or a live archive.
        Ok(unsafe { ptr::handle(a, "archive") }?.inner.len())
    })
}

/// Finds the array named `key`; on success writes its index to `*index`.
///
/// Errors: NULL_ARG, INVALID_ARG (key not UTF-8), NOT_FOUND.
#[no_mangle]
pub extern "C" fn psv_archive_find(
    a: *const psv_archive,
    key: *const c_char,
    index: *mut usize,
) -> psv_status {
    status(|| {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        // SAFETY: NUL-terminated per contract.
        let key = unsafe { ptr::utf8(key, "key") }?;
        if index.is_null() {
            return Err(null_arg("index"));
        }
        let i = a
            .inner
            .find(key)
            .ok_or_else(|| Error::not_found(format!("no array named {key:?}")))?;
        // SAFETY: checked non-NULL; writable per contract.
        unsafe { ptr::write_out(index, i) };
        Ok(())
    })
}

/// The key of array `i` (NUL-terminated UTF-8), valid until `psv_free`; NULL if out of range.
#[no_mangle]
pub extern "C" fn psv_archive_key(a: *const psv_archive, i: usize) -> *const c_char {
    entry(a, i, std::ptr::null(), |a| a.keys.get(i))
}

/// The data of array `i`: 64-byte aligned, inside the archive's block (or, in mmap mode,
/// its file mapping), valid until `psv_free`; never NULL for a valid index (also for empty
/// arrays) except in metadata-only archives. NULL if out of range.
///
/// The memory belongs to the archive; it may be written through (e.g. to modify the arrays in
/// place) as long as no other thread reads it at the same time.
#[no_mangle]
pub extern "C" fn psv_archive_data(a: *const psv_archive, i: usize) -> *const core::ffi::c_void {
    entry(a, i, std::ptr::null(), |a| {
        a.inner.data_ptr(i).unwrap_or(std::ptr::null()).cast()
    })
}

/// True if array `i` is a view into the file mapping (mmap mode) rather than a copy in the
/// block; false if out of range. Mapped views are private copy-on-write pages: writing through
/// them never reaches the file.
#[no_mangle]
pub extern "C" fn psv_archive_is_mapped(a: *const psv_archive, i: usize) -> bool {
    entry(a, i, false, |a| a.inner.arrays()[i].mapped)
}

/// Bytes of array `i`'s data; 0 if out of range.
#[no_mangle]
pub extern "C" fn psv_archive_nbytes(a: *const psv_archive, i: usize) -> usize {
    entry(a, i, 0, |a| a.inner.arrays()[i].nbytes)
}

/// The dtype code of array `i`: a numeric `PSV_DTYPE_*` for native-order numeric types,
/// `PSV_DTYPE_OTHER` for anything else (see `psv_archive_descr`), `PSV_DTYPE_INVALID` if out
/// of range.
#[no_mangle]
pub extern "C" fn psv_archive_dtype(a: *const psv_archive, i: usize) -> psv_dtype {
    entry(a, i, PSV_DTYPE_INVALID, |a| {
        a.inner.arrays()[i]
            .dtype
            .map_or(DTYPE_OTHER_CODE, Dtype::code)
    })
}

/// The numpy descr of array `i`, valid until `psv_free`: the type string for simple types
/// (`"<f4"`, `">i2"`, `"|S5"`, `"<M8[ns]"`) or the record list literal as numpy's
/// `repr(dtype.descr)`; NULL if out of range.
#[no_mangle]
pub extern "C" fn psv_archive_descr(a: *const psv_archive, i: usize) -> *const c_char {
    entry(a, i, std::ptr::null(), |a| a.descrs.get(i))
}

/// Bytes per element of array `i`; 0 if out of range (or for itemsize-0 records).
#[no_mangle]
pub extern "C" fn psv_archive_itemsize(a: *const psv_archive, i: usize) -> usize {
    entry(a, i, 0, |a| a.inner.arrays()[i].descr.itemsize())
}

/// Number of dimensions of array `i` (0 for a 0-d array); 0 if out of range.
#[no_mangle]
pub extern "C" fn psv_archive_ndim(a: *const psv_archive, i: usize) -> usize {
    entry(a, i, 0, |a| a.dim_starts[i + 1] - a.dim_starts[i])
}

/// The shape of array `i` (`psv_archive_ndim` values), valid until `psv_free`; NULL for a 0-d
/// array or if out of range.
#[no_mangle]
pub extern "C" fn psv_archive_shape(a: *const psv_archive, i: usize) -> *const i64 {
    entry(a, i, std::ptr::null(), |a| {
        let shape = &a.dims[a.dim_starts[i]..a.dim_starts[i + 1]];
        if shape.is_empty() {
            std::ptr::null()
        } else {
            shape.as_ptr()
        }
    })
}

/// True if array `i`'s bytes are in Fortran (column-major) order, exactly as stored; false if
/// out of range.
#[no_mangle]
pub extern "C" fn psv_archive_fortran_order(a: *const psv_archive, i: usize) -> bool {
    entry(a, i, false, |a| a.inner.arrays()[i].fortran_order)
}

/// The one block that holds every array; writes its length in bytes to `*len` when `len` is
/// not NULL. Page-aligned and never NULL for a valid archive; valid until `psv_free`.
#[no_mangle]
pub extern "C" fn psv_archive_block(
    a: *const psv_archive,
    len: *mut usize,
) -> *const core::ffi::c_void {
    value(std::ptr::null(), || {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        if !len.is_null() {
            // SAFETY: non-NULL and writable per contract.
            unsafe { ptr::write_out(len, a.inner.block().len()) };
        }
        Ok(a.inner.block_ptr().cast())
    })
}

/// The file mapping of an mmap-mode archive (every mapped array lies inside it); writes its
/// length to `*len` when `len` is not NULL. NULL (and length 0) when the archive has no mapping.
/// Valid until `psv_free`.
#[no_mangle]
pub extern "C" fn psv_archive_mapping(a: *const psv_archive, len: *mut usize) -> *const c_void {
    value(std::ptr::null(), || {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        let map = a.inner.mapping();
        if !len.is_null() {
            // SAFETY: non-NULL and writable per contract.
            unsafe { ptr::write_out(len, map.map_or(0, <[u8]>::len)) };
        }
        Ok(map.map_or(std::ptr::null(), |m| m.as_ptr().cast()))
    })
}

/// Number of members that were skipped because they are not arrays (names not ending in
/// ".npy", or ".npy" members without the npy magic; numpy returns those as raw bytes).
#[no_mangle]
pub extern "C" fn psv_archive_skipped_count(a: *const psv_archive) -> usize {
    value(0, || {
        // SAFETY: `a` is NULL or a live archive.
        Ok(unsafe { ptr::handle(a, "archive") }?.skipped.len())
    })
}

/// The name of skipped member `i`, valid until `psv_free`; NULL if out of range.
#[no_mangle]
pub extern "C" fn psv_archive_skipped_name(a: *const psv_archive, i: usize) -> *const c_char {
    value(std::ptr::null(), || {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        let name = a.skipped.get(i);
        if name.is_null() {
            return Err(Error::invalid_arg(format!(
                "skipped index {i} is out of range"
            )));
        }
        Ok(name)
    })
}

/// Describes every array in one call, for hosts where a call per accessor is costly (Python
/// ctypes or cffi, LuaJIT, Julia). Each non-NULL argument must have room for
/// `psv_archive_count(a)` values and receives them in array order: data addresses (as
/// `psv_archive_data`), byte counts, dtype codes, ndims and Fortran flags. `dims`, when not NULL,
/// receives every shape concatenated (`psv_archive_total_ndim(a)` values).
///
/// Errors: NULL_ARG (`a`).
#[no_mangle]
pub extern "C" fn psv_archive_describe(
    a: *const psv_archive,
    data: *mut *const c_void,
    nbytes: *mut usize,
    dtype: *mut psv_dtype,
    ndim: *mut usize,
    fortran_order: *mut bool,
    dims: *mut i64,
) -> psv_status {
    status(|| {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        // SAFETY (each write below): the caller gives room for count values (or, for `dims`,
        // psv_archive_total_ndim values) behind every non-NULL pointer.
        let out = |p: *mut u8| !p.is_null();
        for (i, info) in a.inner.arrays().iter().enumerate() {
            if out(data.cast()) {
                let ptr = a.inner.data_ptr(i).map_or(std::ptr::null(), |p| p.cast());
                // SAFETY: see above; i < n.
                unsafe { ptr::write_out(data.add(i), ptr) };
            }
            if out(nbytes.cast()) {
                // SAFETY: see above; i < n.
                unsafe { ptr::write_out(nbytes.add(i), info.nbytes) };
            }
            if out(dtype.cast()) {
                let code = info.dtype.map_or(DTYPE_OTHER_CODE, Dtype::code);
                // SAFETY: see above; i < n.
                unsafe { ptr::write_out(dtype.add(i), code) };
            }
            if out(ndim.cast()) {
                // SAFETY: see above; i < n.
                unsafe { ptr::write_out(ndim.add(i), info.shape.len()) };
            }
            if out(fortran_order.cast()) {
                // SAFETY: see above; i < n.
                unsafe { ptr::write_out(fortran_order.add(i), info.fortran_order) };
            }
        }
        if out(dims.cast()) && !a.dims.is_empty() {
            // SAFETY: room for total_ndim = a.dims.len() values per contract.
            unsafe { std::ptr::copy_nonoverlapping(a.dims.as_ptr(), dims, a.dims.len()) };
        }
        Ok(())
    })
}

/// The total number of dimensions over all arrays (the room `psv_archive_describe` needs for
/// `dims`); 0 for NULL.
#[no_mangle]
pub extern "C" fn psv_archive_total_ndim(a: *const psv_archive) -> usize {
    value(0, || {
        // SAFETY: `a` is NULL or a live archive.
        Ok(unsafe { ptr::handle(a, "archive") }?.dims.len())
    })
}

/// Every key, in array order, each followed by a NUL byte, in one buffer valid until
/// `psv_free`; `*len` (when not NULL) receives the buffer's length including the NULs. NULL for
/// a NULL archive; for an archive without arrays, a valid pointer and length 0.
#[no_mangle]
pub extern "C" fn psv_archive_key_list(a: *const psv_archive, len: *mut usize) -> *const c_char {
    string_list(a, len, |a| &a.keys)
}

/// Every descr, in array order, each followed by a NUL byte; as `psv_archive_key_list`.
#[no_mangle]
pub extern "C" fn psv_archive_descr_list(a: *const psv_archive, len: *mut usize) -> *const c_char {
    string_list(a, len, |a| &a.descrs)
}

fn string_list(
    a: *const psv_archive,
    len: *mut usize,
    pick: impl FnOnce(&psv_archive) -> &StringTable,
) -> *const c_char {
    value(std::ptr::null(), || {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        let all = pick(a).all();
        if !len.is_null() {
            // SAFETY: non-NULL and writable per contract.
            unsafe { ptr::write_out(len, all.len()) };
        }
        Ok(all.as_ptr().cast())
    })
}

/// Frees an archive: its block, keys, shapes and descrs. Every pointer obtained from it becomes
/// invalid. NULL is a no-op. Must not race any other call on the same archive.
#[no_mangle]
pub extern "C" fn psv_free(a: *mut psv_archive) {
    value((), || {
        // SAFETY: `a` is NULL or from psv_restore, not yet freed.
        unsafe { ptr::free_handle(a) };
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Errors and versions

/// The name of a status code (`"PSV_OK"`, `"PSV_ERR_IO"`, ...), or `"PSV_ERR_UNKNOWN"`.
/// Static, never NULL, thread-safe.
#[no_mangle]
pub extern "C" fn psv_status_str(s: psv_status) -> *const c_char {
    const UNKNOWN: &[u8] = b"PSV_ERR_UNKNOWN\0";
    value(UNKNOWN.as_ptr().cast(), || {
        let name: &'static [u8] = match s {
            PSV_OK => b"PSV_OK\0",
            PSV_ERR_NULL_ARG => b"PSV_ERR_NULL_ARG\0",
            PSV_ERR_INVALID_ARG => b"PSV_ERR_INVALID_ARG\0",
            PSV_ERR_BAD_DTYPE => b"PSV_ERR_BAD_DTYPE\0",
            PSV_ERR_OVERFLOW => b"PSV_ERR_OVERFLOW\0",
            PSV_ERR_IO => b"PSV_ERR_IO\0",
            PSV_ERR_FORMAT => b"PSV_ERR_FORMAT\0",
            PSV_ERR_UNSUPPORTED => b"PSV_ERR_UNSUPPORTED\0",
            PSV_ERR_LIMIT => b"PSV_ERR_LIMIT\0",
            PSV_ERR_NOT_FOUND => b"PSV_ERR_NOT_FOUND\0",
            PSV_ERR_NOMEM => b"PSV_ERR_NOMEM\0",
            PSV_ERR_ABORTED => b"PSV_ERR_ABORTED\0",
            PSV_ERR_PANIC => b"PSV_ERR_PANIC\0",
            PSV_ERR_CRC => b"PSV_ERR_CRC\0",
            _ => UNKNOWN,
        };
        Ok(name.as_ptr().cast())
    })
}

/// Copies the calling thread's last error message into `buf` (NUL-terminated, truncated to
/// `len - 1` bytes) and returns the message's full length, like `snprintf`. `buf` may be NULL
/// when `len` is 0 (to ask for the length). Every status-returning call clears the message on
/// entry and sets it on failure; read it on the same thread right after the failing call.
#[no_mangle]
pub extern "C" fn psv_last_error_message(buf: *mut c_char, len: usize) -> usize {
    value(0, || {
        with_last_error(|msg| {
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

/// The library version, e.g. `"0.1.0"` (static, never NULL); compare with `PSV_VERSION_*`.
#[no_mangle]
pub extern "C" fn psv_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    value(VERSION.as_ptr().cast(), || Ok(VERSION.as_ptr().cast()))
}

/// The ABI version, equal to `PSV_ABI_VERSION` of the header the caller compiled against when
/// the two are compatible: `y * 100` for 0.y.z releases, `x * 10000` for x.y.z (x >= 1).
#[no_mangle]
pub extern "C" fn psv_abi_version() -> u32 {
    value(0, || Ok(crate::version::abi_version()))
}
