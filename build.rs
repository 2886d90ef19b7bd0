//! Generates `include/psv.h` from `src/ffi/` with cbindgen (the header is committed, and CI
//! fails if it is stale), and gives the shared library its SONAME.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let major: u32 = env::var("CARGO_PKG_VERSION_MAJOR")
        .unwrap()
        .parse()
        .unwrap();
    let minor: u32 = env::var("CARGO_PKG_VERSION_MINOR")
        .unwrap()
        .parse()
        .unwrap();
    let patch: u32 = env::var("CARGO_PKG_VERSION_PATCH")
        .unwrap()
        .parse()
        .unwrap();

    // SONAME as cargo-c computes it: 0.y.z -> libpsv.so.0.y, x.y.z -> libpsv.so.x.
    let sover = if major == 0 {
        format!("0.{minor}")
    } else {
        major.to_string()
    };
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpsv.so.{sover}");
    }

    let abi = if major == 0 {
        minor * 100
    } else {
        major * 10000
    };
    let macros = format!(
        "\n/* Version of this header; psv_version() and psv_abi_version() report the library's. */\n\
         #define PSV_VERSION_MAJOR {major}\n\
         #define PSV_VERSION_MINOR {minor}\n\
         #define PSV_VERSION_PATCH {patch}\n\
         /* MAJOR * 10000 + MINOR * 100 + PATCH */\n\
         #define PSV_VERSION_NUMBER {}\n\
         /* Equal to psv_abi_version() of every library this header is ABI-compatible with. */\n\
         #define PSV_ABI_VERSION {abi}\n",
        major * 10000 + minor * 100 + patch
    );
    let preamble = fs::read_to_string(dir.join("include/psv_preamble.h"))
        .expect("include/psv_preamble.h holds the header's opening documentation");

    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.header = Some(preamble.trim_end().to_string());
    config.after_includes = Some(macros);
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate include/psv.h")
        .write(&mut out);
    let target = dir.join("include/psv.h");
    if fs::read(&target).ok().as_deref() != Some(&out[..]) {
        fs::write(&target, &out).expect("cannot write include/psv.h");
    }
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=include/psv_preamble.h");
    println!("cargo:rerun-if-changed=build.rs");
}
