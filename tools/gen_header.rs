//! Generates `include/psv.h` from `src/ffi/` with cbindgen's library (pinned in Cargo.toml).
//!
//! Run through `make header` (`cargo run --example gen_header -- include/psv.h`). The header
//! is committed, so users of the C API need no Rust; `make test` regenerates it into `build/`
//! and fails when the committed one differs (STYLE rule 33). This is a build-time tool and not
//! the build script because a build script must not write into the source tree: `cargo
//! package` refuses a crate whose build modifies its sources.
//!
//! Usage: `gen_header OUT` writes the header to OUT when its content changed (`-` prints it).

use std::env;
use std::fs;
use std::path::Path;
use std::process::ExitCode;

/// The version macros placed after the includes; the crate version is this package's own.
fn version_macros() -> String {
    let major: u32 = env!("CARGO_PKG_VERSION_MAJOR")
        .parse()
        .expect("numeric major");
    let minor: u32 = env!("CARGO_PKG_VERSION_MINOR")
        .parse()
        .expect("numeric minor");
    let patch: u32 = env!("CARGO_PKG_VERSION_PATCH")
        .parse()
        .expect("numeric patch");
    let abi = psv::abi_version();
    format!(
        "\n/* Version of this header; psv_version() and psv_abi_version() report the library's. */\n\
         #define PSV_VERSION_MAJOR {major}\n\
         #define PSV_VERSION_MINOR {minor}\n\
         #define PSV_VERSION_PATCH {patch}\n\
         /* MAJOR * 10000 + MINOR * 100 + PATCH */\n\
         #define PSV_VERSION_NUMBER {}\n\
         /* Equal to psv_abi_version() of every library this header is ABI-compatible with. */\n\
         #define PSV_ABI_VERSION {abi}\n",
        major * 10000 + minor * 100 + patch
    )
}

/// The header's bytes, generated from the crate at `root`.
fn generate(root: &Path) -> Result<Vec<u8>, String> {
    let preamble = fs::read_to_string(root.join("include/psv_preamble.h"))
        .map_err(|e| format!("include/psv_preamble.h (the header's opening comment): {e}"))?;
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .map_err(|e| format!("cbindgen.toml: {e}"))?;
    config.header = Some(preamble.trim_end().to_string());
    config.after_includes = Some(version_macros());
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .map_err(|e| format!("cbindgen: {e}"))?
        .write(&mut out);
    Ok(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: gen_header OUT   (writes the generated psv.h to OUT; - for stdout)");
        return ExitCode::from(2);
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = match generate(root) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("gen_header: {e}");
            return ExitCode::FAILURE;
        }
    };
    if out == "-" {
        use std::io::Write;
        return match std::io::stdout().write_all(&header) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gen_header: stdout: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Rewrite only on change, so that make and editors see no needless update.
    if fs::read(out).ok().as_deref() == Some(&header[..]) {
        return ExitCode::SUCCESS;
    }
    match fs::write(out, &header) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_header: cannot write {out}: {e}");
            ExitCode::FAILURE
        }
    }
}
