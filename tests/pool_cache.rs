//! Issue 17: a save or restore with a new `threads` value must not leave its pool's threads
//! behind. Its own test binary: it counts this process's `psv-worker` threads.

use std::time::{Duration, Instant};

use psv::{restore, Dtype, RestoreOptions, SaveOptions, Saver};

mod common;

/// Live threads of this process named `psv-worker-*` (rayon names them; /proc shows 15 bytes).
fn psv_workers() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("psv-worker"))
        .count()
}

/// Waits (up to 20 s: dropped pools end their threads asynchronously) until at most `most`
/// workers are left; returns how many there are.
fn settle(most: usize) -> usize {
    let start = Instant::now();
    loop {
        let n = psv_workers();
        if n <= most || start.elapsed() > Duration::from_secs(20) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn distinct_thread_counts_keep_at_most_two_pools() {
    let root = common::scratch("pool", "counts");
    std::fs::create_dir_all(&root).unwrap();
    let data = vec![7u8; 4096];
    let mut saver = Saver::new();
    saver.add("a", &data, Dtype::U8, &[4096]).unwrap();
    let path = root.join("x.npz");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    saver.save(&path, &SaveOptions::default()).unwrap();
    let counts = [200usize, 100, 101, 102, 103, 104];
    for &n in &counts {
        saver
            .save(&path, &SaveOptions::default().threads(n))
            .unwrap();
        let a = restore(&path, &RestoreOptions::default().threads(n)).unwrap();
        assert_eq!(a.data(0).unwrap(), &data[..]);
    }
    // The default pool and the last one (104 threads); before, every pool stayed: 610 + cores.
    let left = settle(cores + 104);
    println!(
        "psv-worker threads after thread counts {counts:?}: {left} (default pool {cores} + last 104)"
    );
    assert!(left <= cores + 104, "{left} psv-worker threads left");
    // The last and the default pools are reused, not rebuilt.
    let before = psv_workers();
    saver
        .save(&path, &SaveOptions::default().threads(104))
        .unwrap();
    saver.save(&path, &SaveOptions::default()).unwrap();
    assert_eq!(psv_workers(), before);
    std::fs::remove_dir_all(root).unwrap();
}
