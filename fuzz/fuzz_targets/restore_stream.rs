//! Fuzzes the one-pass stream restore on an archive read front to back: 64 MiB block cap, one
//! thread; the input is also cut into odd-sized reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use psv::RestoreOptions;

/// A reader that hands out at most 7 bytes per call, so every buffer boundary is crossed.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(7);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let opts = RestoreOptions::default()
        .threads(1)
        .max_total_bytes(Some(64 << 20));
    if let Ok(archive) = psv::restore_stream(Trickle(data), &opts) {
        for i in 0..archive.arrays().len() {
            let a = &archive.arrays()[i];
            let d = archive.data(i).expect("data of a restored array");
            assert_eq!(d.len(), a.nbytes);
            assert_eq!(archive.data_ptr(i).expect("pointer") as usize % 64, 0);
        }
    }
});
