//! Version facts derived from Cargo.toml.

/// The library version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The ABI version, packed like the version number: changes exactly when the SONAME does.
///
/// `0.y.z` has SONAME `libpsv.so.0.y` and ABI version `y * 100`; `x.y.z` (x >= 1) has SONAME
/// `libpsv.so.x` and ABI version `x * 10000`.
pub fn abi_version() -> u32 {
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    if major == 0 {
        minor * 100
    } else {
        major * 10000
    }
}
