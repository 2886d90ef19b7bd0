//! Temporary files beside their targets, renamed over them when complete: how every psv
//! write becomes atomic.
//!
//! A temporary file's name is `.<target name>.<token>.psv-tmp` in the target's directory. The
//! token is `<pid>-<n>` by default; a caller that shares the file between processes (several ranks
//! writing one archive) passes a token they all derive, so each can open the file by name
//! ([`TempFile::open`]) and any of them can remove it ([`remove`]). The creating process's
//! handle removes the file on drop unless it was committed; handles made by `open` never do.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Suffix of every temporary file psv creates.
pub(crate) const TEMP_SUFFIX: &str = ".psv-tmp";

/// A temporary file beside the target; removed on drop unless committed, when this handle
/// created it.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Remove the file when this handle drops (set for the creator until it commits).
    armed: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The token of a temporary file only this process uses: `<pid>-<n>`, unique on this machine
/// while the process lives, and telling whoever finds a file left by a killed process which
/// process it was (the robustness tests check exactly that). Files shared between processes
/// use a token they all derive instead ([`TempFile::create_with_token`]).
pub(crate) fn local_token() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The temporary path for `target` with `token`: `.<name>.<token>.psv-tmp` beside it.
pub(crate) fn temp_path(target: &Path, token: &str) -> Result<PathBuf> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = target
        .file_name()
        .ok_or_else(|| Error::invalid_arg(format!("{} is not a file path", target.display())))?;
    let mut name = OsString::from(".");
    name.push(file_name);
    name.push(".");
    name.push(token);
    name.push(TEMP_SUFFIX);
    Ok(dir.join(name))
}

/// Removes a temporary file by name (any process may); a missing file is not an error.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "for saves shared between processes (collective save)"
    )
)]
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}

impl TempFile {
    /// Creates a temporary file beside `target` with this process's next [`local_token`];
    /// removed on drop unless committed.
    pub(crate) fn create(target: &Path) -> Result<TempFile> {
        TempFile::create_with_token(target, &local_token())
    }

    /// Creates the temporary file for `target` named with `token` (it must not exist yet);
    /// removed on drop unless committed.
    pub(crate) fn create_with_token(target: &Path, token: &str) -> Result<TempFile> {
        let path = temp_path(target, token)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                let context = match target.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) if e.kind() == std::io::ErrorKind::NotFound && !dir.is_dir() => {
                        let (t, d) = (target.display(), dir.display());
                        format!("cannot save {t}: directory {d} does not exist")
                    }
                    _ => format!("cannot create a temporary file beside {}", target.display()),
                };
                Error::io(context, e)
            })?;
        Ok(TempFile {
            path,
            file,
            armed: true,
        })
    }

    /// Opens an existing temporary file for writing (another process created it); this handle
    /// never removes it.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "for saves shared between processes (collective save)"
        )
    )]
    pub(crate) fn open(path: &Path) -> Result<TempFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        Ok(TempFile {
            path: path.to_path_buf(),
            file,
            armed: false,
        })
    }

    /// Leaves the file in place when this handle drops (another process commits or removes it).
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "for saves shared between processes (collective save)"
        )
    )]
    pub(crate) fn keep(&mut self) {
        self.armed = false;
    }

    /// Sizes the file to `len` bytes before any data is written, reserving its space where the
    /// filesystem can (Linux `fallocate`, which reports a full disk here, before anything is
    /// written); elsewhere, or where the filesystem cannot reserve, it only sets the length.
    ///
    /// Why reserve: buffered writes into reserved (unwritten) extents skip ext4's per-block
    /// delayed-allocation bookkeeping, which made writes into a plain new file markedly slower
    /// (README, "Performance notes").
    pub(crate) fn preallocate(&self, len: u64) -> Result<()> {
        let failed = |e| {
            Error::io(
                format!("cannot size {} to {len} bytes", self.path.display()),
                e,
            )
        };
        if reserve(&self.file, len).map_err(failed)? {
            return Ok(());
        }
        self.file.set_len(len).map_err(failed)
    }

    /// Makes the file `target`: fsync (when asked), rename, and fsync the directory (when
    /// asked) so the rename itself is durable.
    pub(crate) fn commit(self, target: &Path, fsync: bool) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.rename_into(target, fsync)?;
        if fsync {
            fsync_dir(&dir)?;
        }
        Ok(())
    }

    /// fsync (when asked) and rename over `target`, without syncing the directory.
    pub(crate) fn rename_into(mut self, target: &Path, fsync: bool) -> Result<()> {
        if fsync {
            self.file
                .sync_all()
                .map_err(|e| Error::io(format!("cannot fsync {}", self.path.display()), e))?;
        }
        let failed = |e| {
            Error::io(
                format!(
                    "cannot rename {} to {}",
                    self.path.display(),
                    target.display()
                ),
                e,
            )
        };
        if exchange_with_file(&self.path, target).map_err(failed)? {
            // The target now holds the new file and our temporary name the old one.
            self.armed = false;
            let _ = std::fs::remove_file(&self.path);
            return Ok(());
        }
        std::fs::rename(&self.path, target).map_err(failed)?;
        self.armed = false;
        Ok(())
    }
}

/// Atomically swaps `from` with `target` when `target` is an existing regular file
/// (`renameat2(RENAME_EXCHANGE)`); returns false when it did nothing (no such target, not a
/// regular file, or a filesystem without exchange), so the caller renames instead.
///
/// Why not just rename: ext4 (`auto_da_alloc`) starts writing the new file's data when it is
/// renamed over an existing file, which made saving over a large file several times slower
/// (README, "Performance notes"). An exchange is just as atomic for readers (the name always holds a complete
/// file) and does not trigger that flush. Durability across power loss is what the fsync option
/// is for, with either call.
#[cfg(target_os = "linux")]
fn exchange_with_file(from: &Path, target: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_file() => {}
        _ => return Ok(false),
    }
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let (from_c, target_c) = (c(from)?, c(target)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call; renameat2
    // only reads them.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        // Gone meanwhile, or a filesystem/kernel without RENAME_EXCHANGE: plain rename.
        Some(libc::ENOENT) | Some(libc::EINVAL) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange_with_file(_from: &Path, _target: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// `fallocate(fd, 0, 0, len)`: reserves the disk space and sets the length. `Ok(false)` where the
/// filesystem or kernel cannot (the caller then only sets the length); a full disk or a length
/// the filesystem cannot hold is an error.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let Ok(len_off) = libc::off_t::try_from(len) else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call; fallocate reads
        // no memory of ours.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Not supported by this filesystem (e.g. some network or FUSE ones) or kernel; EINVAL
            // is also a zero length, which `set_len` then handles.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => return Ok(false),
            _ => return Err(err),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _len: u64) -> std::io::Result<bool> {
    Ok(false)
}

/// fsyncs a directory, making renames in it durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::error::ErrorKind;

    fn target(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join("psv-tempfile-tests");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn names_are_local_or_derived_and_other_handles_never_remove() {
        let t = target("named.npz");
        let a = TempFile::create(&t).unwrap();
        let b = TempFile::create(&t).unwrap();
        assert_ne!(a.path, b.path);
        let name = a.path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(".named.npz.") && name.ends_with(".psv-tmp"),
            "{name}"
        );
        assert!(
            name.contains(&format!(".{}-", std::process::id())),
            "{name}"
        );
        // A derived token gives the same name in every process; a second create fails.
        let shared = TempFile::create_with_token(&t, "plan-1234").unwrap();
        assert_eq!(shared.path, temp_path(&t, "plan-1234").unwrap());
        assert!(TempFile::create_with_token(&t, "plan-1234").is_err());
        let other = TempFile::open(&shared.path).unwrap();
        drop(other);
        assert!(
            shared.path.exists(),
            "an opened handle never removes the file"
        );
        let path = shared.path.clone();
        let mut shared = shared;
        shared.keep();
        drop(shared);
        assert!(path.exists(), "a kept handle leaves the file");
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(!path.exists());
        let (pa, pb) = (a.path.clone(), b.path.clone());
        drop((a, b));
        assert!(
            !pa.exists() && !pb.exists(),
            "the creator removes uncommitted files"
        );
    }

    #[test]
    fn preallocate_sizes_the_file_exactly_and_writes_land_in_it() {
        let tmp = TempFile::create(&target("sized.npz")).unwrap();
        tmp.preallocate(3 << 20 | 5).unwrap();
        assert_eq!(tmp.file.metadata().unwrap().len(), 3 << 20 | 5);
        tmp.file.write_all_at(b"psv", (3 << 20) + 2).unwrap();
        let mut tail = [1u8; 5];
        tmp.file.read_exact_at(&mut tail, 3 << 20).unwrap();
        assert_eq!(&tail, b"\0\0psv");
        assert_eq!(tmp.file.metadata().unwrap().len(), 3 << 20 | 5);
    }

    #[test]
    fn preallocate_beyond_what_the_filesystem_holds_is_an_io_error_naming_the_file() {
        let tmp = TempFile::create(&target("huge.npz")).unwrap();
        for len in [1u64 << 62, u64::MAX] {
            let err = tmp.preallocate(len).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io, "{}", err.message());
            assert!(
                err.message().contains(&tmp.path.display().to_string())
                    && err.message().contains("os error"),
                "{}",
                err.message()
            );
        }
    }
}
