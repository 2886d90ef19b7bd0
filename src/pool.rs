//! Private rayon thread pools, one per requested thread count, built lazily and reused.
//!
//! We never touch rayon's global pool (hosts such as polars use it). A pool inherited through
//! fork() has no threads in the child, so pools are keyed by process id and rebuilt after a fork.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, Result};

type Pools = HashMap<usize, Arc<ThreadPool>>;

static POOLS: OnceLock<Mutex<(u32, Pools)>> = OnceLock::new();

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

/// The shared private pool with `threads` workers (0 = one per core).
pub fn get(threads: usize) -> Result<Arc<ThreadPool>> {
    check_threads(threads)?;
    let threads = resolve_threads(threads);
    let pid = std::process::id();
    let mut guard = POOLS
        .get_or_init(|| Mutex::new((pid, HashMap::new())))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.0 != pid {
        // Forked child: the parent's worker threads do not exist here. Leak the stale pools
        // (dropping them would signal threads that are gone) and start afresh.
        for (_, pool) in guard.1.drain() {
            std::mem::forget(pool);
        }
        guard.0 = pid;
    }
    if let Some(pool) = guard.1.get(&threads) {
        return Ok(Arc::clone(pool));
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("psv-worker-{i}"))
        .build()
        .map_err(|e| Error::nomem(format!("cannot start {threads} worker threads: {e}")))?;
    let pool = Arc::new(pool);
    guard.1.insert(threads, Arc::clone(&pool));
    Ok(pool)
}
