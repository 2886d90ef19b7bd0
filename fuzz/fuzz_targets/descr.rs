//! Fuzzes the descr parser on UTF-8 text. Must return Ok or Err.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(at) = psv::fuzzing::parse_descr_text(text) {
        // What parses must print and reparse to the same type.
        let printed = at.descr.to_descr_string();
        let again = psv::fuzzing::parse_descr_text(&printed)
            .unwrap_or_else(|e| panic!("{printed:?} (from {text:?}) does not reparse: {e}"));
        assert_eq!(again.descr, at.descr, "{text:?} -> {printed:?}");
    }
});
