//! Fuzzes the collective save's manifest parsing and global planning (psv_collective_new's
//! core) on hostile blobs. Must return Ok or Err, never panic or allocate what a blob claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    psv::fuzzing::collective_manifests(data);
});
