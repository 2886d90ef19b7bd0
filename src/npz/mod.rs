//! The `.npz` container: the only code that knows ZIP bytes. Planning ([`plan`]),
//! record encoding and local-header decoding ([`records`]), the central-directory index
//! ([`index`]), and the mapping between array keys and member names.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub mod index;
pub mod plan;
pub mod records;

/// The suffix of every array member's name (`<key>.npy`).
pub const MEMBER_SUFFIX: &str = ".npy";

/// The member name that holds array `key`: `<key>.npy`, as numpy's `savez` names it.
pub fn member_name(key: &str) -> Vec<u8> {
    let mut name = Vec::with_capacity(key.len() + MEMBER_SUFFIX.len());
    name.extend_from_slice(key.as_bytes());
    name.extend_from_slice(MEMBER_SUFFIX.as_bytes());
    name
}

/// The key an array member's name stands for (one `.npy` suffix removed, as `numpy.load`
/// does); `None` for members that are not named `*.npy` (numpy hands those back as bytes).
pub fn key_of(member_name: &str) -> Option<&str> {
    member_name.strip_suffix(MEMBER_SUFFIX)
}

/// The key of a member name built by [`member_name`] (UTF-8, suffix present).
pub fn key_of_member_bytes(name: &[u8]) -> &str {
    let key = name.strip_suffix(MEMBER_SUFFIX.as_bytes()).unwrap_or(name);
    // Built from a `&str` key plus an ASCII suffix: always UTF-8 (checked, never assumed).
    std::str::from_utf8(key).unwrap_or_default()
}

/// Appends `.npz` to `path` unless it already ends with it (as numpy and the seed tool do).
pub fn npz_path(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    if bytes.ends_with(b".npz") {
        path.to_path_buf()
    } else {
        let mut v = bytes.to_vec();
        v.extend_from_slice(b".npz");
        PathBuf::from(OsString::from_vec(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_member_names_map_both_ways() {
        for key in ["a", "w.npy", "中文", "a b"] {
            let name = member_name(key);
            assert_eq!(key_of_member_bytes(&name), key);
            assert_eq!(key_of(std::str::from_utf8(&name).unwrap()), Some(key));
        }
        assert_eq!(key_of("data.bin"), None);
        assert_eq!(npz_path(Path::new("x")), Path::new("x.npz"));
        assert_eq!(npz_path(Path::new("x.npz")), Path::new("x.npz"));
    }
}
