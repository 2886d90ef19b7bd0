//! Asynchronous saves: the same save as the blocking calls, run on a library thread, with a
//! handle to wait for it (with a timeout), poll its progress, cancel it and read its result.
//!
//! A job either works on a **snapshot** (the arrays copied, in parallel, into the saver's
//! staging area before the call returns: the caller may change or free its arrays at once) or
//! **borrows** the saver (no copy: the arrays must stay unchanged until the job has finished;
//! the Rust type system enforces it through `Arc<Saver<'static>>`, the C API with
//! `PSV_ERR_BUSY`). Its result (status, message, OS error number) belongs to the job, not to a
//! thread. No caller code runs on the job's thread, except a [`JobTarget::writer`]'s `write`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::staging::Snapshot;
use super::{check_compression, Saver};
use crate::error::{Error, ErrorKind, Result};
use crate::memory::AnonMap;
use crate::options::{Layout, SaveOptions};
use crate::pool;

/// Where an asynchronous save writes: every destination of the blocking calls.
pub struct JobTarget(Dest);

enum Dest {
    Path(PathBuf),
    File(std::fs::File),
    Writer(Box<dyn Write + Send>),
    Vec,
    Map,
    Buffer(&'static mut [u8]),
}

impl JobTarget {
    /// `path` (`.npz` appended if missing), atomically, as [`Saver::save`]: a cancelled or
    /// failed job removes its temporary file and leaves an existing file untouched.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        JobTarget(Dest::Path(path.into()))
    }

    /// An open file, as [`Saver::save_to_file`]: positional writes from its offset when it is
    /// seekable, in file order otherwise. The job owns `file` and closes it when it is dropped
    /// (pass a `try_clone` to keep using the descriptor: the offset is shared).
    pub fn file(file: std::fs::File) -> Self {
        JobTarget(Dest::File(file))
    }

    /// A sequential writer, as [`Saver::save_to_writer`]. Its `write` calls run on the job's
    /// thread (the one exception to "no caller code on library threads").
    pub fn writer(writer: Box<dyn Write + Send>) -> Self {
        JobTarget(Dest::Writer(writer))
    }

    /// A new vector, as [`Saver::to_vec`]; [`SaveJob::take_bytes`] hands it over once done.
    pub fn memory() -> Self {
        JobTarget(Dest::Vec)
    }

    /// The start of a caller's buffer, as [`Saver::save_to_buffer`] (stored saves only).
    pub fn buffer(buf: &'static mut [u8]) -> Self {
        JobTarget(Dest::Buffer(buf))
    }

    /// Memory libpsv maps (for `psv_buffer`); taken with [`SaveJob::take_map`].
    pub(crate) fn mapped() -> Self {
        JobTarget(Dest::Map)
    }

    /// The option checks a blocking save would fail at once, made before the job starts.
    fn check(&self, opts: &SaveOptions) -> Result<()> {
        check_compression(opts.compression)?;
        pool::check_threads(opts.threads)?;
        match (&self.0, opts.layout) {
            (_, Layout::Npz) | (Dest::Path(_), _) => {}
            _ => {
                return Err(Error::invalid_arg(
                    "only a save to a path can use the directory layout",
                ))
            }
        }
        if matches!(self.0, Dest::Buffer(_)) && opts.compression > 0 {
            return Err(Error::invalid_arg(
                "a compressed save's size is known only after compressing: save it to memory \
                 the library allocates",
            ));
        }
        Ok(())
    }
}

/// What a finished job produced besides its status.
enum Output {
    Nothing,
    Vec(Vec<u8>),
    Map(AnonMap),
}

/// What the job's thread and its handle share.
struct Shared {
    /// The process that started the job: after a fork, the child has the handle but not the
    /// thread (see [`SaveJob`]).
    pid: u32,
    cancel: AtomicBool,
    done_bytes: AtomicU64,
    total_bytes: AtomicU64,
    finished: AtomicBool,
    result: Mutex<Option<Result<()>>>,
    output: Mutex<Option<Output>>,
    cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A save running on a library thread. Several may run at once, to different targets, and
/// finish in any order.
///
/// The handle may be shared between threads (`wait`, `is_done`, `progress`, `cancel` take
/// `&self`). Dropping it **cancels the save and waits** for its thread to end (the target is
/// then untouched, as after any failed save); call [`SaveJob::wait`] first to keep the save.
///
/// Fork: the job's thread does not exist in a child process. There, `wait` fails at once with
/// [`ErrorKind::InvalidArg`], `is_done` is false, and dropping the handle frees it without
/// waiting; the parent's job goes on unaffected. The child may save and restore on its own.
pub struct SaveJob {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SaveJob {
    /// Starts `run` on a new thread, with a progress function that records progress and reports
    /// a cancel.
    fn spawn(
        run: impl FnOnce(&mut dyn FnMut(u64, u64) -> bool) -> Result<Output> + Send + 'static,
    ) -> Result<SaveJob> {
        let shared = Arc::new(Shared {
            pid: std::process::id(),
            cancel: AtomicBool::new(false),
            done_bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            result: Mutex::new(None),
            output: Mutex::new(None),
            cv: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("psv-save-job".into())
            .spawn(move || {
                let s = &*theirs;
                let mut progress = |done: u64, total: u64| {
                    s.done_bytes.store(done, Ordering::Relaxed);
                    s.total_bytes.store(total, Ordering::Relaxed);
                    !s.cancel.load(Ordering::Relaxed)
                };
                let ran = if s.cancel.load(Ordering::Relaxed) {
                    Err(Error::new(ErrorKind::Aborted, "cancelled"))
                } else {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut progress)))
                        .unwrap_or_else(|_| {
                            Err(Error::new(ErrorKind::Panic, "the save job panicked"))
                        })
                };
                let result = match ran {
                    Ok(out) => {
                        *lock(&s.output) = Some(out);
                        Ok(())
                    }
                    Err(e)
                        if e.kind() == ErrorKind::Aborted && s.cancel.load(Ordering::Relaxed) =>
                    {
                        Err(Error::new(
                            ErrorKind::Aborted,
                            "the save job was cancelled; the target is untouched",
                        ))
                    }
                    Err(e) => Err(e),
                };
                *lock(&s.result) = Some(result);
                s.finished.store(true, Ordering::Release);
                s.cv.notify_all();
            })
            .map_err(|e| Error::nomem(format!("cannot start the save job's thread: {e}")))?;
        Ok(SaveJob {
            shared,
            thread: Some(thread),
        })
    }

    /// Whether this process is the one that started the job (false in a forked child).
    fn in_owner(&self) -> bool {
        self.shared.pid == std::process::id()
    }

    /// Waits for the job and returns its result (again on every call).
    ///
    /// # Errors
    /// The save's error (as the blocking call would have returned it), [`ErrorKind::Aborted`]
    /// after [`SaveJob::cancel`], [`ErrorKind::InvalidArg`] in a forked child.
    pub fn wait(&self) -> Result<()> {
        self.wait_timeout(None)
    }

    /// [`SaveJob::wait`] for at most `timeout` (`None`: no limit).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when the timeout ends first (the job keeps running), as
    /// [`SaveJob::wait`] otherwise.
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        if !self.in_owner() {
            return Err(Error::invalid_arg(
                "this save job belongs to the parent process: it does not run in a forked child",
            ));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut result = lock(&self.shared.result);
        loop {
            if let Some(r) = &*result {
                return r.clone();
            }
            result = match deadline {
                None => self
                    .shared
                    .cv
                    .wait(result)
                    .unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!(
                                "the save job is still running after {} ms",
                                timeout.unwrap_or_default().as_millis()
                            ),
                        ));
                    }
                    self.shared
                        .cv
                        .wait_timeout(result, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// The result if the job has finished, `None` while it runs (or in a forked child).
    pub fn try_result(&self) -> Option<Result<()>> {
        if !self.in_owner() {
            return None;
        }
        lock(&self.shared.result).clone()
    }

    /// True once the job has finished (successfully or not): `wait` would not block.
    pub fn is_done(&self) -> bool {
        self.in_owner() && self.shared.finished.load(Ordering::Acquire)
    }

    /// `(done, total)` bytes so far, updated at least every 100 ms and 64 MiB; `(0, 0)` until the
    /// first report, `done == total` once finished successfully.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.shared.done_bytes.load(Ordering::Relaxed),
            self.shared.total_bytes.load(Ordering::Relaxed),
        )
    }

    /// Asks the job to stop: it ends soon (within about 100 ms) with [`ErrorKind::Aborted`],
    /// its temporary file removed and the target untouched, unless it had already finished (or
    /// committed), which the result then says. Returns at once.
    pub fn cancel(&self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
    }

    /// The archive of a finished [`JobTarget::memory`] job (once; `None` before it finished,
    /// after a failure, for other targets, or when already taken).
    pub fn take_bytes(&self) -> Option<Vec<u8>> {
        let mut out = lock(&self.shared.output);
        match out.take() {
            Some(Output::Vec(v)) => Some(v),
            other => {
                *out = other;
                None
            }
        }
    }

    /// The archive of a finished [`JobTarget::mapped`] job (once).
    pub(crate) fn take_map(&self) -> Option<AnonMap> {
        let mut out = lock(&self.shared.output);
        match out.take() {
            Some(Output::Map(m)) => Some(m),
            other => {
                *out = other;
                None
            }
        }
    }
}

impl Drop for SaveJob {
    /// Cancels the job and waits for its thread (not in a forked child, where it does not run).
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if !self.in_owner() {
            // The thread exists only in the parent: neither join nor detach it here.
            std::mem::forget(thread);
            return;
        }
        self.cancel();
        let _ = thread.join();
    }
}

/// Runs the save of `saver` to `dest` on the current thread (the job's body).
fn run(
    saver: &Saver<'_>,
    dest: Dest,
    opts: &SaveOptions,
    progress: &mut dyn FnMut(u64, u64) -> bool,
) -> Result<Output> {
    let p = Some(progress);
    match dest {
        Dest::Path(path) => {
            saver.save_impl(&path, opts, p)?;
            Ok(Output::Nothing)
        }
        Dest::File(file) => saver.save_to_file(&file, opts, p).map(|_| Output::Nothing),
        Dest::Writer(mut w) => saver
            .save_to_writer(&mut *w, opts, p)
            .and_then(|n| {
                w.flush()
                    .map_err(|e| Error::io("cannot flush the stream", e))?;
                Ok(n)
            })
            .map(|_| Output::Nothing),
        Dest::Buffer(buf) => saver
            .save_to_buffer_with(buf, opts, p)
            .map(|_| Output::Nothing),
        Dest::Vec => saver
            .to_memory(opts, p, crate::memory::zeroed, |v| &mut v[..])
            .map(Output::Vec),
        Dest::Map => saver
            .to_memory(opts, p, AnonMap::new, AnonMap::as_mut_slice)
            .map(Output::Map),
    }
}

impl Saver<'_> {
    /// Bytes held by this saver's snapshot staging area now: at most one idle buffer (kept for
    /// the next snapshot of the same size) plus one per running snapshot job.
    pub fn staging_bytes(&self) -> usize {
        self.staging.bytes()
    }

    /// Starts an asynchronous save of a **snapshot** of the arrays to `target` and returns its
    /// job. Before returning, the arrays are copied in parallel into this saver's staging area
    /// (reused by the next snapshot that fits, see [`Saver::staging_bytes`]), so they, and the
    /// saver, may change or go at once. The job writes exactly the bytes the blocking save
    /// writes.
    ///
    /// ```
    /// # use psv::{Dtype, JobTarget, SaveOptions, Saver};
    /// # let dir = std::env::temp_dir().join(format!("psv-doc-async-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let mut weights = vec![1u8; 1 << 20];
    /// let mut saver = Saver::new();
    /// saver.add("w", &weights, Dtype::U8, &[1 << 20])?;
    /// let job = saver.save_async(JobTarget::path(dir.join("ckpt")), &SaveOptions::default())?;
    /// drop(saver);
    /// weights.fill(2); // the job saves the 1s
    /// job.wait()?;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), psv::Error>(())
    /// ```
    ///
    /// # Errors
    /// At once: [`ErrorKind::InvalidArg`] for bad options (compression level, threads, the
    /// directory layout to anything but a path, a compressed save into a caller's buffer),
    /// [`ErrorKind::NoMem`] when the staging area or the thread cannot be had. Everything else
    /// comes from [`SaveJob::wait`].
    pub fn save_async(&self, target: JobTarget, opts: &SaveOptions) -> Result<SaveJob> {
        target.check(opts)?;
        let pool = pool::get(opts.threads)?;
        let snapshot = Snapshot::take(&self.staging, &self.data, &pool)?;
        let members = self.members.clone();
        let staging = Arc::clone(&self.staging);
        let opts = opts.clone();
        SaveJob::spawn(move |progress| {
            let data = (0..snapshot.len()).map(|i| snapshot.bytes(i)).collect();
            let copy = Saver {
                members,
                data,
                keys: Default::default(),
                hasher: Default::default(),
                recent_headers: Vec::new(),
                staging,
            };
            run(&copy, target.0, &opts, progress)
        })
    }
}

impl Saver<'static> {
    /// Starts an asynchronous save that **borrows** the arrays (no copy: the call returns at
    /// once). The job holds a reference to the saver, so no array can be added until it ends;
    /// the arrays (`'static` borrows) must not change until [`SaveJob::is_done`].
    ///
    /// # Errors
    /// As [`Saver::save_async`] (without the staging area).
    pub fn save_async_borrowed(
        self: Arc<Self>,
        target: JobTarget,
        opts: &SaveOptions,
    ) -> Result<SaveJob> {
        target.check(opts)?;
        pool::get(opts.threads)?;
        let opts = opts.clone();
        SaveJob::spawn(move |progress| {
            let out = run(&self, target.0, &opts, progress);
            drop(self); // before the job is seen finished: the saver is free again
            out
        })
    }
}
