//! Private rayon thread pools, built lazily and reused: at most two are kept, the default one
//! (one worker per core) and the one with the thread count last asked for.
//!
//! We never touch rayon's global pool (hosts such as polars use it). A pool inherited through
//! fork() has no threads in the child, so pools are keyed by process id and rebuilt after a fork.
//!
//! Why at most two: a pool's threads live as long as the pool, so keeping one per distinct
//! `threads` value leaked them (calls with 1024, 1000, 1001 and 1002 threads left 4029 idle
//! threads). A pool dropped from the cache ends its threads once the calls still using it
//! return (they hold their own reference).

use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

/// The cached pools of one process.
struct Pools {
    /// The process that built them.
    pid: u32,
    /// The pool with one worker per core (what `threads` 0 means).
    default: Option<Arc<ThreadPool>>,
    /// The pool last asked for with another thread count, and that count.
    last: Option<(usize, Arc<ThreadPool>)>,
}

static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();

/// Most worker threads a caller may ask for.
pub const MAX_THREADS: usize = 1024;

/// Resolves a requested thread count: 0 means one per available core.
pub fn resolve_threads(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// Rejects thread counts above [`MAX_THREADS`].
pub fn check_threads(threads: usize) -> Result<()> {
    if threads > MAX_THREADS {
        return Err(Error::invalid_arg(format!(
            "{threads} threads requested; the maximum is {MAX_THREADS} (0 means one per core)"
        )));
    }
    Ok(())
}

/// The shared private pool with `threads` workers (0 = one per core). Asking for a count other
/// than the default and the last one builds a pool and drops the last one from the cache.
pub fn get(threads: usize) -> Result<Arc<ThreadPool>> {
    check_threads(threads)?;
    let cores = resolve_threads(0);
    let threads = resolve_threads(threads);
    let pid = std::process::id();
    let mut pools = POOLS
        .get_or_init(|| {
            Mutex::new(Pools {
                pid,
                default: None,
                last: None,
            })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if pools.pid != pid {
        // Forked child: the parent's worker threads do not exist here. Leak the stale pools
        // (dropping them would signal threads that are gone) and start afresh.
        std::mem::forget(pools.default.take());
        std::mem::forget(pools.last.take());
        pools.pid = pid;
    }
    if threads == cores {
        if let Some(pool) = &pools.default {
            return Ok(Arc::clone(pool));
        }
    } else if let Some((n, pool)) = &pools.last {
        if *n == threads {
            return Ok(Arc::clone(pool));
        }
    }
    // Dropped before the new pool starts its threads, so the two never coexist in the cache.
    if threads != cores {
        pools.last = None;
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("psv-worker-{i}"))
        .build()
        .map_err(|e| Error::nomem(format!("cannot start {threads} worker threads: {e}")))?;
    let pool = Arc::new(pool);
    if threads == cores {
        pools.default = Some(Arc::clone(&pool));
    } else {
        pools.last = Some((threads, Arc::clone(&pool)));
    }
    Ok(pool)
}
