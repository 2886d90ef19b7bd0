//! The C-visible types and constants: dtype and layout codes, the progress callback type, the
//! opaque handles. (Status codes: `status.rs`.)
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

use crate::archive::Archive;
use crate::memory::AnonMap;
use crate::options::{RestoreOptions, SaveOptions};
use crate::save::{Prepared, SaveJob, Saver};

// The status type and codes live with their table in `status.rs`; re-exported here so that
// `psv::ffi::types::*` keeps naming them.
pub use super::status::*;

/// An element type code. Numeric codes mean native byte order.
pub type psv_dtype = i32;
/// Returned by `psv_archive_dtype` for a NULL archive or an index out of range.
pub const PSV_DTYPE_INVALID: psv_dtype = -1;
/// numpy `bool` (1 byte, 0 or 1).
pub const PSV_DTYPE_BOOL: psv_dtype = 1;
/// `int8`.
pub const PSV_DTYPE_I8: psv_dtype = 2;
/// `int16`.
pub const PSV_DTYPE_I16: psv_dtype = 3;
/// `int32`.
pub const PSV_DTYPE_I32: psv_dtype = 4;
/// `int64`.
pub const PSV_DTYPE_I64: psv_dtype = 5;
/// `uint8`.
pub const PSV_DTYPE_U8: psv_dtype = 6;
/// `uint16`.
pub const PSV_DTYPE_U16: psv_dtype = 7;
/// `uint32`.
pub const PSV_DTYPE_U32: psv_dtype = 8;
/// `uint64`.
pub const PSV_DTYPE_U64: psv_dtype = 9;
/// `float16` (IEEE half).
pub const PSV_DTYPE_F16: psv_dtype = 10;
/// `float32`.
pub const PSV_DTYPE_F32: psv_dtype = 11;
/// `float64`.
pub const PSV_DTYPE_F64: psv_dtype = 12;
/// `complex64` (two float32).
pub const PSV_DTYPE_C64: psv_dtype = 13;
/// `complex128` (two float64).
pub const PSV_DTYPE_C128: psv_dtype = 14;
/// Any other element type (strings, records, datetimes, long double, non-native byte order):
/// see `psv_archive_descr` and `psv_archive_itemsize`.
pub const PSV_DTYPE_OTHER: psv_dtype = 15;

/// A save container code (`psv_save_options_set_layout`).
pub type psv_layout = i32;
/// One `.npz` file (the default).
pub const PSV_LAYOUT_NPZ: psv_layout = 0;
/// A directory of `<key>.npy` files (each readable with `numpy.load`) committed atomically by
/// an index file; `psv_restore` reads it like an `.npz`.
pub const PSV_LAYOUT_DIR: psv_layout = 1;

/// A progress callback: called on the thread that called save or restore (never on a worker,
/// never concurrently) with the bytes done so far and the total, at least every 64 MiB or
/// 100 ms and once at the end. Return 0 to continue, anything else to cancel: the operation
/// then fails with `PSV_ERR_ABORTED` (a save removes its temporary file and leaves the target
/// untouched; a restore frees everything). The callback must not call back into libpsv with the
/// same handles and must not unwind (no C++ exceptions or longjmp through libpsv).
pub type psv_progress_cb =
    Option<unsafe extern "C" fn(userdata: *mut c_void, done: u64, total: u64) -> c_int>;

/// A progress callback and its userdata, as stored in options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    pub(crate) cb: psv_progress_cb,
    pub(crate) userdata: *mut c_void,
}

impl Default for Progress {
    /// No callback.
    fn default() -> Self {
        Progress::NONE
    }
}

impl Progress {
    /// No callback.
    pub(crate) const NONE: Progress = Progress {
        cb: None,
        userdata: std::ptr::null_mut(),
    };

    /// The callback as a Rust closure `(done, total) -> continue?`, if one is set.
    pub(crate) fn as_fn(&self) -> Option<impl FnMut(u64, u64) -> bool + '_> {
        let cb = self.cb?;
        let userdata = self.userdata;
        Some(move |done, total| {
            // SAFETY: the caller registered `cb` with this `userdata` and promised both stay
            // valid while the options are used; it runs on the calling thread only.
            unsafe { cb(userdata, done, total) == 0 }
        })
    }
}

/// A sequential write callback for `psv_saver_save_stream`: write all `len` bytes at `buf`
/// (valid only during the call) and return 0, or return non-zero to stop the save, which then
/// fails with `PSV_ERR_IO`. Called on the thread that called the save, never concurrently, in
/// file order. Must not call back into libpsv with the same saver and must not unwind.
pub type psv_write_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, buf: *const c_void, len: usize) -> c_int>;

/// A sequential read callback for `psv_restore_stream`: copy up to `len` bytes of the stream
/// into `buf` (writable, valid only during the call) and return how many (> 0, at most `len`),
/// 0 at the end of the stream, or a negative value for an error, which fails the restore with
/// `PSV_ERR_IO` naming the callback's value. Called on the thread that called the restore,
/// never concurrently, in stream order. Must not call back into libpsv with the same handles
/// and must not unwind.
pub type psv_read_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, buf: *mut c_void, len: usize) -> i64>;

/// Bytes that libpsv allocated: an archive in memory (`psv_saver_save_to_alloc`), or a
/// collective save's manifest or CRC report (`psv_saver_manifest`, `psv_collective_write`).
/// Read it with `psv_buffer_data` and `psv_buffer_len`, free it with `psv_buffer_free`.
/// Immutable: its accessors may run from any threads, but nothing may run concurrently with
/// the free.
pub struct psv_buffer {
    pub(crate) bytes: AnonMap,
}

/// A prepared save (`psv_saver_prepare`): the plan and every CRC-32 of the archive, so that
/// any byte range can be rendered (`psv_prepared_render`) from any threads at once, in any
/// order. Borrows its saver: the saver and its arrays must stay alive and unchanged until
/// `psv_prepared_free`.
pub struct psv_prepared {
    pub(crate) inner: Prepared<'static, 'static>,
}

/// Collects borrowed arrays to save into one `.npz`. Create with `psv_saver_new`, free with
/// `psv_saver_free`. Not thread-safe: use from one thread at a time (it may move between threads).
/// Jobs it started (`psv_saver_save_async`) run on library threads and are handles of their own.
pub struct psv_saver {
    /// Shared with the running jobs that borrow it (asynchronous saves without snapshot): while
    /// one runs, the saver cannot change (`PSV_ERR_BUSY`).
    pub(crate) inner: std::sync::Arc<Saver<'static>>,
    /// The process that started the last borrowing job (a forked child never waits for it).
    pub(crate) jobs_pid: u32,
}

/// An asynchronous save (`psv_saver_save_async` and its siblings) running on library threads.
/// Wait for it with `psv_job_wait`, poll it with `psv_job_done` / `psv_job_progress`, stop it
/// with `psv_job_cancel`, free it with `psv_job_free` (which cancels and waits if it still runs).
/// Its result and error message belong to the job, not to a thread. `psv_job_wait`,
/// `psv_job_done`, `psv_job_progress`, `psv_job_cancel` and `psv_job_error_message` may be
/// called from any threads at once; `psv_job_take_buffer` and `psv_job_free` must not race any
/// other call on the same job.
pub struct psv_job {
    pub(crate) inner: SaveJob,
}

/// A restored archive: one block holding every array, and per-array metadata. Create with
/// `psv_restore`, free with `psv_free`. Immutable: `const` accessors may run concurrently from
/// any threads, but nothing may run concurrently with `psv_free`.
pub struct psv_archive {
    pub(crate) inner: Archive,
    pub(crate) keys: StringTable,
    pub(crate) descrs: StringTable,
    /// Every shape, concatenated; array `i`'s dims are `dims[dim_starts[i]..dim_starts[i + 1]]`.
    pub(crate) dims: Vec<i64>,
    pub(crate) dim_starts: Vec<usize>,
    pub(crate) skipped: StringTable,
}

/// NUL-terminated strings stored back to back in one allocation (one per archive, not one per
/// string: restoring 20000 arrays should not cost 40000 allocations).
#[derive(Default)]
pub(crate) struct StringTable {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl StringTable {
    /// Appends `s`; strings holding NUL are refused (C could not see past it).
    pub(crate) fn push(&mut self, s: &str) -> bool {
        if s.contains('\0') {
            return false;
        }
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        true
    }

    /// Number of strings.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// String `i` as a C string, or NULL if out of range.
    pub(crate) fn get(&self, i: usize) -> *const c_char {
        self.starts
            .get(i)
            .map_or(std::ptr::null(), |&at| self.bytes[at..].as_ptr().cast())
    }

    /// Every string, each followed by its NUL.
    pub(crate) fn all(&self) -> &[u8] {
        &self.bytes
    }
}

/// Settings for `psv_saver_save`. Create with `psv_save_options_new`, free with
/// `psv_save_options_free`; NULL wherever options are taken means the defaults (the settings
/// `psv_save_options_new` starts with). Not thread-safe: use from one thread at a time (it may
/// move between threads).
#[derive(Clone, Default)]
pub struct psv_save_options {
    pub(crate) inner: SaveOptions,
    pub(crate) progress: Progress,
    /// Asynchronous saves copy the arrays first (`psv_save_options_set_snapshot`).
    pub(crate) snapshot: bool,
}

/// Settings for `psv_restore`. Create with `psv_restore_options_new`, free with
/// `psv_restore_options_free`; NULL wherever options are taken means the defaults (the settings
/// `psv_restore_options_new` starts with). Not thread-safe: use from one thread at a time (it may
/// move between threads).
#[derive(Clone, Default)]
pub struct psv_restore_options {
    pub(crate) inner: RestoreOptions,
    pub(crate) progress: Progress,
    pub(crate) allocator: Allocator,
}

/// A block allocator for restores (`psv_restore_options_set_allocator`): return `size` bytes
/// aligned to `align` (64), or NULL to fail the restore with `PSV_ERR_NOMEM`. Called once per
/// restore, on the thread that called it, before any data is read.
pub type psv_alloc_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, size: usize, align: usize) -> *mut c_void>;

/// Frees what a `psv_alloc_fn` returned (`ptr`, `size` as allocated): called exactly once, from
/// `psv_free` (or when the restore fails after allocating), on the thread that calls it.
pub type psv_free_fn =
    Option<unsafe extern "C" fn(userdata: *mut c_void, ptr: *mut c_void, size: usize)>;

/// A caller's allocator and its userdata, as stored in restore options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Allocator {
    pub(crate) alloc: psv_alloc_fn,
    pub(crate) free: psv_free_fn,
    pub(crate) userdata: *mut c_void,
}

impl Default for Allocator {
    fn default() -> Self {
        Allocator {
            alloc: None,
            free: None,
            userdata: std::ptr::null_mut(),
        }
    }
}
