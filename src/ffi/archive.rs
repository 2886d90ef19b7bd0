//! `psv_archive`: the accessors of a restored archive, and `psv_free`.
//!
//! An archive is immutable: its accessors may run concurrently on any threads, and everything
//! they return (keys, descrs, shapes, data) lives until `psv_free`, which must not race them.

use std::ffi::{c_char, c_void};

use super::boundary::{status, value};
use super::ptr;
use super::ptr::null_arg;
use super::types::*;
use crate::archive::Archive;
use crate::dtype::{Dtype, DTYPE_OTHER_CODE};
use crate::error::{Error, Result};

/// Wraps a restored [`Archive`] for C: every key, descr and shape laid out once, so that the
/// accessors hand out pointers into the archive without allocating.
pub(super) fn wrap_archive(inner: Archive) -> Result<psv_archive> {
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
pub extern "C" fn psv_archive_data(a: *const psv_archive, i: usize) -> *const c_void {
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

/// Byte offset of array `i`'s data inside the block (`psv_archive_block`), so that a second
/// process that maps the same block rebuilds the same views; for an array of an mmap-mode
/// archive that is a view into the file mapping, its offset in the file. 0 for a NULL archive
/// or an index out of range.
#[no_mangle]
pub extern "C" fn psv_archive_offset(a: *const psv_archive, i: usize) -> usize {
    entry(a, i, 0, |a| a.inner.arrays()[i].offset)
}

/// Writes every array's `psv_archive_offset` into `offsets` (room for `psv_archive_count(a)`
/// values), in array order: one call instead of one per array, for hosts where calls are
/// costly (a metadata-only listing of 20000 arrays from Python).
///
/// Errors: NULL_ARG (`a`, or `offsets` when the archive has arrays).
#[no_mangle]
pub extern "C" fn psv_archive_offsets(a: *const psv_archive, offsets: *mut usize) -> psv_status {
    status(|| {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        let arrays = a.inner.arrays();
        if arrays.is_empty() {
            return Ok(());
        }
        if offsets.is_null() {
            return Err(null_arg("offsets"));
        }
        for (i, info) in arrays.iter().enumerate() {
            // SAFETY: the caller gives room for count values behind `offsets`; i < count.
            unsafe { ptr::write_out(offsets.add(i), info.offset) };
        }
        Ok(())
    })
}

/// Bytes of block the arrays need: the size caller memory for `psv_restore_into` (or an
/// allocator) must have, known from a metadata-only restore before any data is read. 0 for
/// NULL.
#[no_mangle]
pub extern "C" fn psv_archive_required_bytes(a: *const psv_archive) -> usize {
    value(0, || {
        // SAFETY: `a` is NULL or a live archive.
        Ok(unsafe { ptr::handle(a, "archive") }?.inner.required_bytes())
    })
}

/// The one block that holds every array; writes its length in bytes to `*len` when `len` is
/// not NULL. Page-aligned and never NULL for a valid archive; valid until `psv_free`.
#[no_mangle]
pub extern "C" fn psv_archive_block(a: *const psv_archive, len: *mut usize) -> *const c_void {
    value(std::ptr::null(), || {
        // SAFETY: `a` is NULL or a live archive.
        let a = unsafe { ptr::handle(a, "archive") }?;
        if !len.is_null() {
            // SAFETY: non-NULL and writable per contract.
            unsafe { ptr::write_out(len, a.inner.block_len()) };
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

/// The body of `psv_archive_key_list` and `psv_archive_descr_list`: the table `pick` chooses,
/// as one buffer of NUL-terminated strings, its length written to `*len` when `len` is not NULL.
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
