//! `psv_version` and `psv_abi_version`: what the loaded library is, to compare with the header's
//! `PSV_VERSION_*` and `PSV_ABI_VERSION`.

use std::ffi::c_char;

use super::boundary::value;

/// The library version, e.g. `"0.1.0"` (static, never NULL); compare with `PSV_VERSION_*`.
#[no_mangle]
pub extern "C" fn psv_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    value(VERSION.as_ptr().cast(), || Ok(VERSION.as_ptr().cast()))
}

/// The ABI version, equal to `PSV_ABI_VERSION` of the header the caller compiled against when
/// the two are compatible: `y * 100` for 0.y.z releases, `x * 10000` for x.y.z (x >= 1).
#[no_mangle]
pub extern "C" fn psv_abi_version() -> u32 {
    value(0, || Ok(crate::version::abi_version()))
}
