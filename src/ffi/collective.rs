//! `psv_saver_manifest` and `psv_collective_*`: N processes save ONE `.npz` together. libpsv
//! never links MPI: the host moves the small blobs between its processes with its own
//! collectives (MPI_Allgatherv, torch.distributed's all_gather_object, a shared file, ...).
//!
//! A `psv_collective` is used by one thread at a time (it may move between threads).

use std::ffi::{c_char, c_void, CString};
use std::os::unix::ffi::OsStrExt;

use super::boundary::{status, value};
use super::ptr::{self, null_arg};
use super::types::*;
use crate::error::{Error, Result};
use crate::memory::AnonMap;
use crate::save::Collective;

/// Length in bytes of a plan id (`psv_collective_plan_id`).
pub const PSV_PLAN_ID_LEN: usize = 16;

/// One process's part in a collective save (`psv_collective_new`); free with
/// `psv_collective_free`. Not thread-safe: one thread at a time (it may move between threads).
pub struct psv_collective {
    pub(crate) inner: Collective,
    temp: CString,
    /// The options' progress callback (its userdata must outlive the handle's writes).
    progress: Progress,
}

/// `bytes` as a new `psv_buffer` written to `*out`.
///
/// # Safety
/// `out` is non-NULL and writable.
unsafe fn buffer_out(out: *mut *mut psv_buffer, bytes: &[u8]) -> Result<()> {
    let mut map = AnonMap::new(bytes.len())?;
    map.as_mut_slice().copy_from_slice(bytes);
    // SAFETY: forwarded contract.
    unsafe { ptr::write_out(out, ptr::into_handle(psv_buffer { bytes: map })) };
    Ok(())
}

/// The blobs `blobs[0 .. n]` with lengths `lens[0 .. n]`, borrowed for the call.
///
/// # Safety
/// `blobs` and `lens` are NULL or arrays of `n` elements; each `blobs[i]` is NULL (only with
/// `lens[i] == 0`) or points to `lens[i]` readable bytes.
unsafe fn blob_list<'a>(
    blobs: *const *const c_void,
    lens: *const usize,
    n: usize,
) -> Result<Vec<&'a [u8]>> {
    // SAFETY: forwarded contract.
    let (blobs, lens) = unsafe { (ptr::slice(blobs, n, "blobs")?, ptr::slice(lens, n, "lens")?) };
    blobs
        .iter()
        .zip(lens)
        .enumerate()
        .map(|(i, (&b, &len))| {
            // SAFETY: per the contract, blob i holds `len` readable bytes (NULL only if 0).
            unsafe { ptr::slice(b.cast::<u8>(), len, &format!("blobs[{i}]")) }
        })
        .collect()
}

/// Writes `*out` = a new buffer holding the manifest of `s`'s arrays for a collective save: a
/// compact, versioned description of every array (key, numpy descr, shape, order, byte count;
/// no data), to be gathered from every rank and passed to `psv_collective_new`. Read it with
/// `psv_buffer_data`/`psv_buffer_len`, free it with `psv_buffer_free`. On failure `*out` is NULL.
///
/// Errors: NULL_ARG, NOMEM.
#[no_mangle]
pub extern "C" fn psv_saver_manifest(s: *const psv_saver, out: *mut *mut psv_buffer) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `s` is NULL or a live saver.
        let s = unsafe { ptr::handle(s, "saver") }?;
        let blob = s.inner.manifest()?;
        // SAFETY: checked non-NULL above.
        unsafe { buffer_out(out, &blob) }
    })
}

/// Starts this process's part in the collective save of every rank's arrays into `path`
/// (".npz" appended if missing), as rank `rank` of `nranks`: `blobs[r]` (`lens[r]` bytes) is
/// rank `r`'s manifest (`psv_saver_manifest`), in rank order, the same on every rank. Sets
/// `*out` (free with `psv_collective_free`); NULL on failure. The blobs are parsed as untrusted
/// input and only borrowed during the call.
///
/// Every rank computes the same plan (rank order, then each saver's add order): the file is
/// byte-identical to `psv_saver_save` of all the arrays in that order with the same `opts`
/// (threads, fsync, alignment; compression and the directory layout are refused). Keys must be
/// unique across ranks; a duplicate is INVALID_ARG on every rank, naming both ranks, before
/// anything is written. The flow, with the host's collectives in brackets:
///
/// 1. every rank: `psv_saver_manifest` [allgather the blobs], `psv_collective_new`,
///    `psv_collective_plan_id` [check all ranks agree];
/// 2. rank 0: `psv_collective_create` [barrier; share its status];
/// 3. every rank: `psv_collective_write` [gather the CRC blobs and statuses to rank 0];
/// 4. rank 0: `psv_collective_commit` if every rank succeeded, else `psv_collective_abort`
///    [broadcast the outcome].
///
/// Errors: NULL_ARG, INVALID_ARG (nranks 0, rank >= nranks, compression or directory layout,
/// duplicate keys), FORMAT / UNSUPPORTED / LIMIT (a malformed manifest: the message names its
/// rank), OVERFLOW, NOMEM.
#[no_mangle]
pub extern "C" fn psv_collective_new(
    path: *const c_char,
    blobs: *const *const c_void,
    lens: *const usize,
    nranks: usize,
    rank: usize,
    opts: *const psv_save_options,
    out: *mut *mut psv_collective,
) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `path` is NULL or a NUL-terminated string; `blobs`/`lens` hold `nranks`
        // elements (documented contract); `opts` is NULL or live options.
        let (path, manifests) = unsafe { (ptr::path(path)?, blob_list(blobs, lens, nranks)?) };
        let defaults = psv_save_options::default();
        // SAFETY: `opts` is NULL or a live options handle.
        let opts = unsafe { opts.as_ref() }.unwrap_or(&defaults);
        let inner = Collective::new(path, &manifests, rank, &opts.inner)?;
        let temp = CString::new(inner.temp_path().as_os_str().as_bytes())
            .map_err(|_| Error::invalid_arg("path contains a NUL byte"))?;
        let collective = psv_collective {
            inner,
            temp,
            progress: opts.progress,
        };
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, ptr::into_handle(collective)) };
        Ok(())
    })
}

/// Writes the plan id, `PSV_PLAN_ID_LEN` (16) bytes, into `out`: a hash of the global plan
/// (every key, descr, shape, size and offset, which rank writes it, the alignment). Equal on
/// every rank exactly when they hold the same plan: compare it across ranks before any write
/// (a rank that got the blobs in another order has another id, and another temporary file).
///
/// Errors: NULL_ARG.
#[no_mangle]
pub extern "C" fn psv_collective_plan_id(c: *const psv_collective, out: *mut u8) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `c` is NULL or a live collective save.
        let c = unsafe { ptr::handle(c, "collective") }?;
        let id = c.inner.plan_id();
        // SAFETY: `out` is non-NULL and holds PSV_PLAN_ID_LEN writable bytes (documented).
        unsafe { std::ptr::copy_nonoverlapping(id.as_ptr(), out, PSV_PLAN_ID_LEN) };
        Ok(())
    })
}

/// The temporary file's path, the same on every rank: `.<16 hex digits>.psv-tmp` in the
/// target's directory, the digits a hash of the target's file name and the plan id. A killed
/// collective save leaves its file under this name; `psv_collective_abort` (or the next
/// `psv_collective_create` of the same plan) removes it. Valid until `psv_collective_free`;
/// NULL for a NULL handle.
#[no_mangle]
pub extern "C" fn psv_collective_temp_path(c: *const psv_collective) -> *const c_char {
    value(std::ptr::null(), || {
        // SAFETY: `c` is NULL or a live collective save.
        Ok(unsafe { ptr::handle(c, "collective") }?.temp.as_ptr())
    })
}

/// Rank 0 only: creates the temporary file (`psv_collective_temp_path`), replacing a leftover
/// of a killed save of the same plan, and reserves the archive's length in it (a full disk
/// fails here, before any rank writes). Other ranks call `psv_collective_write` only after
/// this succeeded (the host's barrier).
///
/// Errors: NULL_ARG, INVALID_ARG (not rank 0, already created, committed or aborted), IO (a
/// read-only target is refused, as `psv_saver_save` does).
#[no_mangle]
pub extern "C" fn psv_collective_create(c: *mut psv_collective) -> psv_status {
    status(|| {
        // SAFETY: `c` is NULL or a live collective save used by this thread only.
        let c = unsafe { ptr::handle_mut(c, "collective") }?;
        c.inner.create()
    })
}

/// Writes this rank's arrays (`s`: the saver whose manifest this rank contributed; same keys,
/// order, types and shapes; the data may have changed) at their planned offsets in the
/// temporary file, in parallel on the options' threads, fsync'd when the options ask. Sets
/// `*crcs` to a new buffer holding this rank's CRC report (free with `psv_buffer_free`), to be
/// gathered to rank 0 for `psv_collective_commit`; NULL on failure. `s`'s arrays are borrowed
/// during the call only. The options' progress callback, if any, runs on this thread.
///
/// Errors: NULL_ARG, INVALID_ARG (the saver differs from its manifest: the message names the
/// key; committed or aborted), IO (the temporary file is missing, e.g. not created yet or
/// aborted), NOMEM, ABORTED.
#[no_mangle]
pub extern "C" fn psv_collective_write(
    c: *mut psv_collective,
    s: *const psv_saver,
    crcs: *mut *mut psv_buffer,
) -> psv_status {
    status(|| {
        if crcs.is_null() {
            return Err(null_arg("crcs"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(crcs, std::ptr::null_mut()) };
        // SAFETY: `c` is NULL or a live collective save used by this thread only; `s` is NULL
        // or a live saver.
        let (c, s) = unsafe { (ptr::handle_mut(c, "collective")?, ptr::handle(s, "saver")?) };
        let progress = c.progress;
        let report = match progress.as_fn() {
            Some(mut cb) => c.inner.write(&s.inner, Some(&mut cb))?,
            None => c.inner.write(&s.inner, None)?,
        };
        // SAFETY: checked non-NULL above.
        unsafe { buffer_out(crcs, &report) }
    })
}

/// Rank 0 only, once every rank's write succeeded: `blobs[r]` (`lens[r]` bytes) is rank `r`'s
/// CRC report, in rank order. Checks them (this plan, one per rank), writes the central
/// directory and end records, fsyncs when the options ask and renames the file over the
/// target atomically. The blobs are only borrowed during the call.
///
/// Errors: NULL_ARG, INVALID_ARG (not rank 0, not created, committed or aborted; reports not
/// one per rank of this plan in rank order), FORMAT (a malformed report), IO. After an error,
/// call `psv_collective_abort`: the target is untouched.
#[no_mangle]
pub extern "C" fn psv_collective_commit(
    c: *mut psv_collective,
    blobs: *const *const c_void,
    lens: *const usize,
    nranks: usize,
) -> psv_status {
    status(|| {
        // SAFETY: `c` is NULL or a live collective save used by this thread only; `blobs` and
        // `lens` hold `nranks` elements (documented contract).
        let (c, reports) = unsafe {
            (
                ptr::handle_mut(c, "collective")?,
                blob_list(blobs, lens, nranks)?,
            )
        };
        c.inner.commit(&reports).map(|_| ())
    })
}

/// Removes the temporary file by name (any rank may call it; a missing file is not an error):
/// the target is untouched. Call it on rank 0 when any rank failed. Afterwards the handle can
/// only be freed. After a commit it does nothing.
///
/// Errors: NULL_ARG, IO (the file exists but cannot be removed).
#[no_mangle]
pub extern "C" fn psv_collective_abort(c: *mut psv_collective) -> psv_status {
    status(|| {
        // SAFETY: `c` is NULL or a live collective save used by this thread only.
        let c = unsafe { ptr::handle_mut(c, "collective") }?;
        c.inner.abort()
    })
}

/// Frees a collective save. On rank 0, freeing it after `psv_collective_create` and before a
/// commit removes the temporary file (as an abort). NULL is a no-op.
#[no_mangle]
pub extern "C" fn psv_collective_free(c: *mut psv_collective) {
    value((), || {
        // SAFETY: `c` is NULL or from psv_collective_new, not yet freed.
        unsafe { ptr::free_handle(c) };
        Ok(())
    })
}
