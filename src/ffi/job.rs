//! Asynchronous saves: `psv_saver_save*_async` start a save on library threads and return a
//! `psv_job`; `psv_job_*` wait for it, poll it, cancel it and read its result.
//!
//! Every destination of the blocking calls has its asynchronous twin: a path (atomic), a file
//! descriptor, a write callback, a caller's buffer, memory libpsv allocates.

use std::ffi::{c_char, c_int, c_void};
use std::os::fd::FromRawFd;
use std::time::Duration;

use super::boundary::{status, value};
use super::ptr::{self, null_arg};
use super::types::*;
use crate::error::{Error, ErrorKind, Result};
use crate::save::JobTarget;

/// Starts the job of one `psv_saver_save*_async` call: checks `out` (set to NULL first), the
/// saver and the options, then starts a snapshot or a borrowing job to `target()`.
///
/// # Safety
/// `s` is NULL or a live saver used by this thread; `opts` is NULL or live options; `out` is
/// NULL or writable.
unsafe fn start(
    s: *mut psv_saver,
    opts: *const psv_save_options,
    out: *mut *mut psv_job,
    target: impl FnOnce() -> Result<JobTarget>,
) -> Result<()> {
    if out.is_null() {
        return Err(null_arg("out"));
    }
    // SAFETY: checked non-NULL above.
    unsafe { ptr::write_out(out, std::ptr::null_mut()) };
    // SAFETY: forwarded contract.
    let s = unsafe { ptr::handle_mut(s, "saver") }?;
    let defaults = psv_save_options::default();
    let opts = if opts.is_null() {
        &defaults
    } else {
        // SAFETY: non-NULL live options (forwarded contract).
        unsafe { ptr::handle(opts, "opts") }?
    };
    if opts.progress.cb.is_some() {
        return Err(Error::invalid_arg(
            "an asynchronous save runs no progress callback (it would run on a library \
             thread): poll psv_job_progress instead",
        ));
    }
    let target = target()?;
    let job = if opts.snapshot {
        s.inner.save_async(target, &opts.inner)?
    } else {
        let me = std::process::id();
        if s.jobs_pid != me && std::sync::Arc::strong_count(&s.inner) > 1 {
            // A forked child: a job of the parent borrowed the saver at the fork and never ends
            // here. Another borrowing job could never be waited for by psv_saver_free.
            return Err(Error::new(
                ErrorKind::Busy,
                "the saver was borrowed by a job of the parent process when this process was \
                 forked: save it with a snapshot, or use a new saver",
            ));
        }
        s.jobs_pid = me;
        std::sync::Arc::clone(&s.inner).save_async_borrowed(target, &opts.inner)?
    };
    // SAFETY: checked non-NULL above.
    unsafe { ptr::write_out(out, ptr::into_handle(psv_job { inner: job })) };
    Ok(())
}

/// Starts saving every added array into `path` (".npz" appended unless it ends with it) on
/// library threads, and sets `*out` to the job (free it with `psv_job_free`; NULL on failure).
/// The save is the one `psv_saver_save` makes (atomic: temporary file, rename; a cancelled or
/// failed job removes its temporary file and leaves an existing target untouched); its status
/// comes from `psv_job_wait`.
///
/// Returns once the job has started: with `psv_save_options_set_snapshot(opts, true)`, after
/// copying the arrays into the saver's staging area (the caller may then change or free its
/// arrays and the saver at once); without it, at once, and the job borrows the saver and its
/// arrays until it has finished (the arrays must not change; `psv_saver_add*` gives
/// `PSV_ERR_BUSY`; `psv_saver_free` waits for the job). In a child forked while such a job ran,
/// the saver stays borrowed: a borrowing job gives `PSV_ERR_BUSY` there (snapshots work). `path`
/// is copied. Options with a
/// progress callback are refused (no callback runs on a library thread: poll
/// `psv_job_progress`). Several jobs may run at once, to different targets, and finish in any
/// order. `opts` may be NULL for defaults.
///
/// Errors (at once; the save's own errors come from `psv_job_wait`): NULL_ARG, INVALID_ARG
/// (empty path, bad options, a progress callback), NOMEM (staging area, thread).
#[no_mangle]
pub extern "C" fn psv_saver_save_async(
    s: *mut psv_saver,
    path: *const c_char,
    opts: *const psv_save_options,
    out: *mut *mut psv_job,
) -> psv_status {
    status(|| {
        // SAFETY: `path` is NULL or NUL-terminated (documented contract).
        let target = || Ok(JobTarget::path(unsafe { ptr::path(path) }?.to_path_buf()));
        // SAFETY: documented contract of `s`, `opts`, `out`.
        unsafe { start(s, opts, out, target) }
    })
}

/// `psv_saver_save_fd` on library threads: starts writing the `.npz` into `fd` and sets `*out`
/// to the job. The job writes through its own duplicate of `fd` (made during this call, closed
/// when the job ends), so the caller may close `fd` at once; the file offset is shared, so a
/// seekable fd's offset is left at the archive's end once the job has finished. Not atomic:
/// a failed or cancelled job may leave part of an archive in the file. Otherwise as
/// `psv_saver_save_async`.
///
/// Errors: NULL_ARG, INVALID_ARG (negative fd, directory layout), IO (the fd cannot be
/// duplicated: EBADF for a closed fd), NOMEM.
#[no_mangle]
pub extern "C" fn psv_saver_save_fd_async(
    s: *mut psv_saver,
    fd: c_int,
    opts: *const psv_save_options,
    out: *mut *mut psv_job,
) -> psv_status {
    status(|| {
        let target = || {
            if fd < 0 {
                return Err(Error::invalid_arg(format!(
                    "fd {fd} is not a file descriptor"
                )));
            }
            // SAFETY: F_DUPFD_CLOEXEC on any integer is safe: it fails with EBADF for a
            // descriptor that is not open.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(Error::io(
                    format!("cannot duplicate fd {fd}"),
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: `dup` is a new descriptor this process owns and nothing else uses.
            Ok(JobTarget::file(unsafe { std::fs::File::from_raw_fd(dup) }))
        };
        // SAFETY: documented contract of `s`, `opts`, `out`.
        unsafe { start(s, opts, out, target) }
    })
}

/// A C write callback and its userdata as a `std::io::Write` for a job's thread.
struct CallbackWriter {
    write_fn: unsafe extern "C" fn(*mut c_void, *const c_void, usize) -> c_int,
    userdata: *mut c_void,
}

// SAFETY: `psv_saver_save_stream_async` documents that `write_fn` is called with `userdata`
// on a library thread; the caller promised both may be used there.
unsafe impl Send for CallbackWriter {}

impl std::io::Write for CallbackWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: the caller registered `write_fn` for `userdata`; `buf` is valid for the call.
        let rc = unsafe { (self.write_fn)(self.userdata, buf.as_ptr().cast(), buf.len()) };
        if rc == 0 {
            Ok(buf.len())
        } else {
            Err(std::io::Error::other(format!(
                "the write callback returned {rc}; the stream stopped there"
            )))
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `psv_saver_save_stream` on a library thread: starts streaming the `.npz` to `write_fn` and
/// sets `*out` to the job. **`write_fn(userdata, buf, len)` runs on the job's thread** (the one
/// libpsv callback that does; never concurrently with itself, in file order), so `userdata`
/// must stay valid and usable from that thread until the job has finished; the callback must not
/// call into libpsv with this job or saver. Non-zero from `write_fn` ends the job with
/// `PSV_ERR_IO`. Otherwise as `psv_saver_save_async`.
///
/// Errors: NULL_ARG (`s`, `write_fn`, `out`), INVALID_ARG (directory layout), NOMEM.
#[no_mangle]
pub extern "C" fn psv_saver_save_stream_async(
    s: *mut psv_saver,
    write_fn: psv_write_fn,
    userdata: *mut c_void,
    opts: *const psv_save_options,
    out: *mut *mut psv_job,
) -> psv_status {
    status(|| {
        let target = || {
            let write_fn = write_fn.ok_or_else(|| null_arg("write_fn"))?;
            Ok(JobTarget::writer(Box::new(CallbackWriter {
                write_fn,
                userdata,
            })))
        };
        // SAFETY: documented contract of `s`, `opts`, `out`.
        unsafe { start(s, opts, out, target) }
    })
}

/// `psv_saver_save_to_buffer` on library threads: starts writing the stored `.npz` into the
/// first `psv_saver_size` bytes of `buf` (`len` bytes) and sets `*out` to the job. `buf` is
/// written by library threads until the job has finished: it must stay valid, and the caller
/// must not use it, until then. Otherwise as `psv_saver_save_async`.
///
/// Errors: NULL_ARG, INVALID_ARG (compressed, directory layout); the job: INVALID_ARG (`len`
/// too small: the message names the size).
#[no_mangle]
pub extern "C" fn psv_saver_save_to_buffer_async(
    s: *mut psv_saver,
    buf: *mut c_void,
    len: usize,
    opts: *const psv_save_options,
    out: *mut *mut psv_job,
) -> psv_status {
    status(|| {
        let target = || {
            // SAFETY: `buf` holds `len` writable bytes that the caller leaves to the job until
            // it has finished (documented contract).
            let buf: &'static mut [u8] = unsafe { ptr::bytes_mut(buf.cast(), len, "buf") }?;
            Ok(JobTarget::buffer(buf))
        };
        // SAFETY: documented contract of `s`, `opts`, `out`.
        unsafe { start(s, opts, out, target) }
    })
}

/// `psv_saver_save_to_alloc` on library threads: starts writing the `.npz` (stored or
/// compressed) into memory libpsv allocates and sets `*out` to the job. Once `psv_job_wait`
/// returned `PSV_OK`, `psv_job_take_buffer` hands the memory over as a `psv_buffer`. Otherwise
/// as `psv_saver_save_async`.
///
/// Errors: NULL_ARG, INVALID_ARG (directory layout), NOMEM.
#[no_mangle]
pub extern "C" fn psv_saver_save_to_alloc_async(
    s: *mut psv_saver,
    opts: *const psv_save_options,
    out: *mut *mut psv_job,
) -> psv_status {
    status(|| {
        // SAFETY: documented contract of `s`, `opts`, `out`.
        unsafe { start(s, opts, out, || Ok(JobTarget::mapped())) }
    })
}

/// Waits until the job has finished, or for at most `timeout_ms` milliseconds (negative: no
/// limit; 0: just look), and returns the save's status: `PSV_OK`, the error the blocking save
/// would have returned (`PSV_ERR_IO` for ENOSPC, EFBIG, EACCES ...; `PSV_ERR_ABORTED` after
/// `psv_job_cancel`), or `PSV_ERR_TIMEOUT` when the timeout ended first (the job keeps running;
/// wait again). Every wait after the end returns the same status. The error's message and errno
/// are also set as the calling thread's last error, and stay with the job
/// (`psv_job_error_message`, `psv_job_error_os_code`). Blocks only the calling thread; may run
/// on several threads at once.
///
/// In a child process forked while the job ran, the job does not run: this returns
/// `PSV_ERR_INVALID_ARG` at once.
///
/// Errors: NULL_ARG, TIMEOUT, INVALID_ARG (forked child), and the save's own.
#[no_mangle]
pub extern "C" fn psv_job_wait(job: *const psv_job, timeout_ms: i64) -> psv_status {
    status(|| {
        // SAFETY: `job` is NULL or a live job.
        let job = unsafe { ptr::handle(job, "job") }?;
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        job.inner.wait_timeout(timeout)
    })
}

/// True once the job has finished (successfully or not): `psv_job_wait` will not block. False
/// for NULL and, in a forked child, for the parent's jobs. Never blocks.
#[no_mangle]
pub extern "C" fn psv_job_done(job: *const psv_job) -> bool {
    value(false, || {
        // SAFETY: `job` is NULL or a live job.
        Ok(unsafe { ptr::handle(job, "job") }?.inner.is_done())
    })
}

/// Writes the bytes done so far and the total (`*done`, `*total`; either may be NULL) of the
/// job: updated at least every 100 ms and every 64 MiB, both 0 until the first report, equal once
/// it has finished successfully. Never blocks.
///
/// Errors: NULL_ARG (`job`).
#[no_mangle]
pub extern "C" fn psv_job_progress(
    job: *const psv_job,
    done: *mut u64,
    total: *mut u64,
) -> psv_status {
    status(|| {
        // SAFETY: `job` is NULL or a live job.
        let job = unsafe { ptr::handle(job, "job") }?;
        let (d, t) = job.inner.progress();
        // SAFETY: each out-param is NULL (skipped) or writable.
        unsafe {
            if !done.is_null() {
                ptr::write_out(done, d);
            }
            if !total.is_null() {
                ptr::write_out(total, t);
            }
        }
        Ok(())
    })
}

/// Asks the job to stop and returns at once: it ends soon (within about 100 ms) with
/// `PSV_ERR_ABORTED`, its temporary file removed and an existing target untouched, unless it
/// had already committed, which `psv_job_wait` then tells (`PSV_OK`). Cancelling a finished job
/// does nothing.
///
/// Errors: NULL_ARG.
#[no_mangle]
pub extern "C" fn psv_job_cancel(job: *const psv_job) -> psv_status {
    status(|| {
        // SAFETY: `job` is NULL or a live job.
        unsafe { ptr::handle(job, "job") }?.inner.cancel();
        Ok(())
    })
}

/// The job's own error, if it has finished with one.
fn job_error(job: *const psv_job) -> Result<Option<Error>> {
    // SAFETY: `job` is NULL or a live job.
    let job = unsafe { ptr::handle(job, "job") }?;
    Ok(job.inner.try_result().and_then(|r| r.err()))
}

/// Copies the message of the job's error into `buf` (NUL-terminated, truncated to `len - 1`
/// bytes) and returns its full length, like `snprintf`; `buf` may be NULL when `len` is 0. The
/// message belongs to the job (any thread may read it, any time until `psv_job_free`); it is
/// empty (0) while the job runs and after a success. 0 for NULL `job`.
#[no_mangle]
pub extern "C" fn psv_job_error_message(
    job: *const psv_job,
    buf: *mut c_char,
    len: usize,
) -> usize {
    value(0, || {
        let msg = job_error(job)?
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
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
}

/// The OS error number (`errno`: ENOSPC, EFBIG, EACCES ...) behind the job's error when the OS
/// reported it; 0 otherwise (running, success, other errors, NULL).
#[no_mangle]
pub extern "C" fn psv_job_error_os_code(job: *const psv_job) -> i32 {
    value(0, || {
        Ok(job_error(job)?.and_then(|e| e.os_code()).unwrap_or(0))
    })
}

/// Hands over the archive of a finished `psv_saver_save_to_alloc_async` job: `*out` is set to
/// a `psv_buffer` (free it with `psv_buffer_free`; it outlives the job), or NULL on failure.
/// Once only.
///
/// Errors: NULL_ARG; INVALID_ARG when the job has not finished successfully, is of another
/// kind, or its buffer was already taken.
#[no_mangle]
pub extern "C" fn psv_job_take_buffer(job: *mut psv_job, out: *mut *mut psv_buffer) -> psv_status {
    status(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, std::ptr::null_mut()) };
        // SAFETY: `job` is NULL or a live job not used concurrently (documented contract).
        let job = unsafe { ptr::handle_mut(job, "job") }?;
        let bytes = job.inner.take_map().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArg,
                "no buffer to take: the job has not finished successfully, is not a \
                 psv_saver_save_to_alloc_async job, or its buffer was already taken",
            )
        })?;
        // SAFETY: checked non-NULL above.
        unsafe { ptr::write_out(out, ptr::into_handle(psv_buffer { bytes })) };
        Ok(())
    })
}

/// Frees a job. NULL is a no-op. **If the job is still running, this cancels it and waits for
/// it to end** (its temporary file is removed, an existing target untouched); to keep the
/// save, `psv_job_wait` first. Frees the job's message and any buffer not taken. Must not race
/// any other call on the job. In a forked child, frees the parent's job handle without waiting.
#[no_mangle]
pub extern "C" fn psv_job_free(job: *mut psv_job) {
    value((), || {
        // SAFETY: `job` is NULL or a job from psv_saver_save*_async, not yet freed.
        unsafe { ptr::free_handle(job) };
        Ok(())
    })
}
