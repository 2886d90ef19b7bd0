//! Progress reports and cancellation.
//!
//! Workers add the bytes they finish to a shared counter and nudge the calling thread over a
//! crossbeam channel; the calling thread (never a worker) runs the caller's callback, at least
//! every [`REPORT_BYTES`] or [`REPORT_INTERVAL`] and once at the end. A callback that returns
//! `false` sets a flag that workers check before each task: the operation ends with
//! [`ErrorKind::Aborted`](crate::error::ErrorKind::Aborted).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rayon::ThreadPool;

use crate::error::{Error, Result};

/// The callback gets `(done, total)` bytes and returns `true` to continue, `false` to cancel.
pub type ProgressFn<'a> = dyn FnMut(u64, u64) -> bool + 'a;

/// Report at least this often (in bytes of progress)...
pub const REPORT_BYTES: u64 = 64 << 20;
/// ... and at least this often (in time).
pub const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// Shared between the workers of one operation.
pub struct Tracker {
    done: AtomicU64,
    cancelled: AtomicBool,
    nudge: Option<Sender<()>>,
}

impl Tracker {
    /// Records `bytes` more of finished work.
    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(tx) = &self.nudge {
            let _ = tx.try_send(());
        }
    }

    /// `Err(Aborted)` once the caller has cancelled; workers call this before each task.
    pub fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(Error::new(
                crate::error::ErrorKind::Aborted,
                "cancelled by the progress callback",
            ))
        } else {
            Ok(())
        }
    }
}

/// Sends a wake-up when dropped, so the calling thread notices the end even after a panic.
struct FinishSignal(Sender<()>, std::sync::Arc<AtomicBool>);

impl Drop for FinishSignal {
    fn drop(&mut self) {
        self.1.store(true, Ordering::Release);
        let _ = self.0.try_send(());
    }
}

/// Runs `work` on `pool`. Without a callback this is `pool.install`. With one, the work runs as
/// a scoped job on the pool while the calling thread relays progress to `progress`; `total` is
/// the byte count that `done` reaches at the end. The callback's last call sees the final count.
pub fn run<T: Send>(
    pool: &ThreadPool,
    total: u64,
    progress: Option<&mut ProgressFn<'_>>,
    work: impl FnOnce(&Tracker) -> Result<T> + Send,
) -> Result<T> {
    let Some(progress) = progress else {
        let tracker = Tracker {
            done: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            nudge: None,
        };
        return pool.install(|| work(&tracker));
    };
    let (tx, rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(64);
    let tracker = Tracker {
        done: AtomicU64::new(0),
        cancelled: AtomicBool::new(false),
        nudge: Some(tx.clone()),
    };
    let finished = std::sync::Arc::new(AtomicBool::new(false));
    let mut result: Option<Result<T>> = None;
    pool.in_place_scope(|scope| {
        let (tracker, result, job_finished) = (&tracker, &mut result, finished.clone());
        scope.spawn(move |_| {
            let _signal = FinishSignal(tx, job_finished);
            *result = Some(work(tracker));
        });
        relay(
            &rx,
            &tracker.done,
            &tracker.cancelled,
            &finished,
            total,
            progress,
        );
    });
    let result = result.unwrap_or_else(|| {
        Err(Error::new(
            crate::error::ErrorKind::Panic,
            "worker vanished",
        ))
    });
    if tracker.cancelled.load(Ordering::Relaxed) {
        return Err(Error::new(
            crate::error::ErrorKind::Aborted,
            "cancelled by the progress callback",
        ));
    }
    result
}

/// The calling thread's loop: call `progress` on nudges (rate-limited) and on timeouts, until
/// the work has finished; then once more with the final count.
fn relay(
    rx: &Receiver<()>,
    done: &AtomicU64,
    cancelled: &AtomicBool,
    finished: &AtomicBool,
    total: u64,
    progress: &mut ProgressFn<'_>,
) {
    let mut last_bytes = 0u64;
    let mut last_time = Instant::now();
    loop {
        let timed_out = matches!(
            rx.recv_timeout(REPORT_INTERVAL),
            Err(RecvTimeoutError::Timeout)
        );
        if finished.load(Ordering::Acquire) {
            break;
        }
        let now = done.load(Ordering::Relaxed);
        if timed_out
            || now - last_bytes >= REPORT_BYTES / 4
            || last_time.elapsed() >= REPORT_INTERVAL / 2
        {
            last_bytes = now;
            last_time = Instant::now();
            if !cancelled.load(Ordering::Relaxed) && !progress(now, total) {
                cancelled.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Calls the callback for the final time (the operation's result is known to be good);
/// returns `Err(Aborted)` if the caller cancels now.
pub fn finish(progress: Option<&mut ProgressFn<'_>>, total: u64) -> Result<()> {
    if let Some(p) = progress {
        if !p(total, total) {
            return Err(Error::new(
                crate::error::ErrorKind::Aborted,
                "cancelled by the progress callback",
            ));
        }
    }
    Ok(())
}
