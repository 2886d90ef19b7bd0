//! Fuzzes the whole restore path on an in-memory archive: 64 MiB block cap, one thread.
#![no_main]

use libfuzzer_sys::fuzz_target;
use psv::RestoreOptions;

fuzz_target!(|data: &[u8]| {
    let opts = RestoreOptions::default()
        .threads(1)
        .max_total_bytes(Some(64 << 20));
    if let Ok(archive) = psv::restore(data, &opts) {
        // Every view must lie inside the archive and be 64-aligned.
        for i in 0..archive.arrays().len() {
            let a = &archive.arrays()[i];
            let d = archive.data(i).expect("data of a restored array");
            assert_eq!(d.len(), a.nbytes);
            assert_eq!(archive.data_ptr(i).expect("pointer") as usize % 64, 0);
        }
    }
});
