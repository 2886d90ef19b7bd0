//! Fuzzes the `.npy` header parser: any bytes, a 1 MiB HEADER_LEN cap. Must return Ok or Err.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = psv::fuzzing::parse_npy_header(data, 1 << 20) {
        // A header that parses lies within the input and has a checked byte count.
        assert!(h.header_len <= data.len());
        assert!(h.nbytes <= isize::MAX as usize);
    }
});
