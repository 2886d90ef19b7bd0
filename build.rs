//! Gives the shared library its SONAME, and makes the SONAME name resolve in the build
//! directory.
//!
//! The header `include/psv.h` is not generated here: a build script must not write into the
//! source tree (`cargo package` refuses that). `make header` generates it (tools/gen_header.rs).

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    let major: u32 = env::var("CARGO_PKG_VERSION_MAJOR")
        .expect("cargo sets CARGO_PKG_VERSION_MAJOR")
        .parse()
        .expect("numeric major version");
    let minor: u32 = env::var("CARGO_PKG_VERSION_MINOR")
        .expect("cargo sets CARGO_PKG_VERSION_MINOR")
        .parse()
        .expect("numeric minor version");

    // SONAME as cargo-c computes it: 0.y.z -> libpsv.so.0.y, x.y.z -> libpsv.so.x.
    let sover = if major == 0 {
        format!("0.{minor}")
    } else {
        major.to_string()
    };
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let soname = format!("libpsv.so.{sover}");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
        if let Some(dir) = artifact_dir() {
            soname_link(&dir, &soname);
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The directory cargo puts this package's final artifacts in (`target/<profile>`, or
/// `target/<triple>/<profile>`): OUT_DIR is `<that>/build/<package>-<hash>/out`.
fn artifact_dir() -> Option<PathBuf> {
    let out = PathBuf::from(env::var_os("OUT_DIR")?);
    let dir = out.parent()?.parent()?.parent()?;
    (dir.join("build").is_dir()).then(|| dir.to_path_buf())
}

/// Creates `<dir>/<soname> -> libpsv.so`, so that a program linked with `-Ltarget/release
/// -lpsv` (whose NEEDED entry is the SONAME) runs with `-Wl,-rpath,target/release` or
/// `LD_LIBRARY_PATH=target/release`, as an installed lib/ has it. The link may dangle until
/// the library is linked, right after this script. Best effort: a failure only warns.
#[cfg(unix)]
fn soname_link(dir: &Path, soname: &str) {
    let link = dir.join(soname);
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new("libpsv.so")) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink("libpsv.so", &link) {
        println!(
            "cargo:warning=cannot create {}: {e} (programs linked against target/ need it)",
            link.display()
        );
    }
}

/// Symbolic links need a Unix build host; elsewhere the SONAME link is left to the user.
#[cfg(not(unix))]
fn soname_link(_dir: &Path, _soname: &str) {}
