//! Helpers shared by the integration test binaries (each includes this module with
//! `mod common;`; a binary that uses only some of them would otherwise warn about the rest).
#![allow(dead_code)]

use std::path::PathBuf;

/// A fresh, empty scratch directory for one test: `<tmp>/psv-<suite>-<pid>-<name>`.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("psv-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` pseudo-random bytes (xorshift64 seeded by `seed`): distinct data per array, so a
/// misplaced or swapped array cannot compare equal.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
