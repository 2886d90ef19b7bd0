//! `psv_saver`: collecting borrowed arrays and writing them into one `.npz` (or a directory).
//!
//! A saver borrows every array's memory from `psv_saver_add*` until `psv_saver_free`; it is used
//! by one thread at a time.

use std::ffi::{c_char, c_void};

use super::boundary::{status, value};
use super::ptr;
use super::types::*;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::save::Saver;
use crate::shape;

/// Creates an empty saver. Free it with `psv_saver_free`.
///
/// Returns NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn psv_saver_new() -> *mut psv_saver {
    value(std::ptr::null_mut(), || {
        Ok(ptr::into_handle(psv_saver {
            inner: std::sync::Arc::new(Saver::new()),
            jobs_pid: 0,
        }))
    })
}

/// The saver behind `s` for a change: `PSV_ERR_BUSY` while a job borrows it.
///
/// # Safety
/// `s` is NULL or a live saver used only by this thread.
pub(crate) unsafe fn saver_mut<'a>(s: *mut psv_saver) -> Result<&'a mut Saver<'static>> {
    // SAFETY: forwarded contract.
    let s = unsafe { ptr::handle_mut(s, "saver") }?;
    std::sync::Arc::get_mut(&mut s.inner).ok_or_else(|| {
        Error::new(
            crate::error::ErrorKind::Busy,
            "the saver is borrowed by a running save job (psv_saver_save_async without \
             snapshot): wait for the job first",
        )
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
/// ndim > 64, byte count overflows), INVALID_ARG (bad or duplicate key), BUSY (a job started by
/// `psv_saver_save_async` without snapshot is still running: nothing is added).
#[no_mangle]
pub extern "C" fn psv_saver_add(
    s: *mut psv_saver,
    key: *const c_char,
    data: *const c_void,
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
    data: *const c_void,
    dtype: psv_dtype,
    shape: *const i64,
    ndim: usize,
    fortran_order: bool,
) -> Result<()> {
    // SAFETY: `s` is NULL or a live saver used only by this thread (documented contract).
    let s = unsafe { saver_mut(s) }?;
    // SAFETY: `shape` points to `ndim` dims (documented contract).
    let dims = unsafe { read_shape(shape, ndim) }?;
    // SAFETY: `key` and `data` as documented for psv_saver_add.
    unsafe { add_numeric(s, key, data, dtype, dims, fortran_order) }
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
    data: *const c_void,
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
    data: *const c_void,
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
/// mismatch), BUSY (as `psv_saver_add`).
#[no_mangle]
pub extern "C" fn psv_saver_add_descr(
    s: *mut psv_saver,
    key: *const c_char,
    data: *const c_void,
    nbytes: usize,
    numpy_descr: *const c_char,
    shape: *const i64,
    ndim: usize,
    fortran_order: bool,
) -> psv_status {
    status(|| {
        // SAFETY: see psv_saver_add.
        let s = unsafe { saver_mut(s) }?;
        // SAFETY: NUL-terminated per contract.
        let key = unsafe { ptr::utf8(key, "key") }?;
        // SAFETY: NUL-terminated per contract.
        let descr = unsafe { ptr::utf8(numpy_descr, "numpy_descr") }?;
        // SAFETY: `shape` points to `ndim` dims per contract.
        let dims = unsafe { read_shape(shape, ndim) }?;
        if nbytes > isize::MAX as usize {
            return Err(Error::overflow(format!("nbytes {nbytes} is too large")));
        }
        // SAFETY: the caller keeps `nbytes` bytes at `data` valid until the saver is freed.
        let data: &'static [u8] = unsafe { ptr::slice(data.cast::<u8>(), nbytes, "data") }?;
        s.add_descr(key, data, descr, &dims, fortran_order)
    })
}

/// Adds `count` C-order numeric arrays in one call, as `count` calls of `psv_saver_add` would,
/// in order: for hosts where each foreign call is expensive (Python's ctypes, for one).
///
/// `keys[i]`, `data[i]`, `dtypes[i]` and `ndims[i]` describe array `i`; `shapes` holds every
/// array's dims back to back (array 0's `ndims[0]` dims, then array 1's, ...; NULL allowed when
/// every ndim is 0). `data` pointers are borrowed exactly as in `psv_saver_add`; keys and shapes
/// are copied. All or nothing: on any error no array of this call is added, and the message
/// names the failing index and key. `count` 0 is OK (the array arguments may then be NULL).
///
/// Errors: NULL_ARG, BAD_DTYPE, OVERFLOW, INVALID_ARG, BUSY, as `psv_saver_add`.
#[no_mangle]
pub extern "C" fn psv_saver_add_many(
    s: *mut psv_saver,
    count: usize,
    keys: *const *const c_char,
    data: *const *const c_void,
    dtypes: *const psv_dtype,
    shapes: *const i64,
    ndims: *const usize,
) -> psv_status {
    status(|| {
        // SAFETY: `s` is NULL or a live saver used only by this thread (documented contract).
        let saver = unsafe { saver_mut(s) }?;
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
        let path = unsafe { ptr::path(path) }?;
        let defaults = psv_save_options::default();
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
///
/// If jobs that borrow the saver (`psv_saver_save_async` without snapshot) are still running,
/// this **waits until they have finished** (they are not cancelled; their results stay in their
/// job handles): when it returns, libpsv no longer reads the arrays, which the caller may then
/// free. Snapshot jobs do not borrow the saver: they go on, and free their staging memory when
/// they end. In a child forked while a borrowing job ran, the job does not exist and this does
/// not wait.
#[no_mangle]
pub extern "C" fn psv_saver_free(s: *mut psv_saver) {
    value((), || {
        if !s.is_null() {
            // SAFETY: `s` is a saver from psv_saver_new, not yet freed, used by this thread only.
            let saver = unsafe { &*s };
            let owner = saver.jobs_pid == std::process::id();
            while owner && std::sync::Arc::strong_count(&saver.inner) > 1 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // SAFETY: `s` is NULL or a saver from psv_saver_new, not yet freed.
        unsafe { ptr::free_handle(s) };
        Ok(())
    })
}

/// Bytes of memory the saver's snapshot staging area holds now: the copies used by running
/// snapshot jobs plus at most one idle copy, kept for the next snapshot that fits (it is
/// reused, not reallocated, so a loop of asynchronous saves does not grow the process). Freed
/// with the saver (and, for copies in use, when their jobs end). 0 for NULL.
#[no_mangle]
pub extern "C" fn psv_saver_staging_bytes(s: *const psv_saver) -> usize {
    value(0, || {
        // SAFETY: `s` is NULL or a live saver.
        Ok(unsafe { ptr::handle(s, "saver") }?.inner.staging_bytes())
    })
}
