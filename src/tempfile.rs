//! Temporary files beside their targets, renamed over them when complete and removed on drop
//! otherwise: how every psv write becomes atomic.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A temporary file beside the target, removed on drop unless committed.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    armed: bool,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempFile {
    /// Creates `.<name>.<pid>-<n>.psv-tmp` in `target`'s directory.
    pub(crate) fn create(target: &Path) -> Result<TempFile> {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = target.file_name().ok_or_else(|| {
            Error::invalid_arg(format!("{} is not a file path", target.display()))
        })?;
        let mut name = OsString::from(".");
        name.push(file_name);
        name.push(format!(
            ".{}-{}.psv-tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| {
                Error::io(
                    format!("cannot create a temporary file beside {}", target.display()),
                    e,
                )
            })?;
        Ok(TempFile {
            path,
            file,
            armed: true,
        })
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
        std::fs::rename(&self.path, target).map_err(|e| {
            Error::io(
                format!(
                    "cannot rename {} to {}",
                    self.path.display(),
                    target.display()
                ),
                e,
            )
        })?;
        self.armed = false;
        Ok(())
    }
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
