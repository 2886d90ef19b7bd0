//! Temporary files beside their targets, renamed over them when complete: how every psv
//! write becomes atomic.
//!
//! A temporary file's name is `.<16 hex digits>.psv-tmp` in the target's directory: always 25
//! bytes, whatever the target's name (a target name of 255 bytes, the most a file system
//! allows, still gets a temporary file). The digits are a 64-bit hash of the target's name and a
//! token. The token is random by default ([`local_token`]), and the file is created with
//! `O_EXCL`, retried with a new token if the name exists: nobody can block a save by creating the
//! name first. A caller that shares the file between processes (several ranks writing one
//! archive) passes a token they all derive, so each can open the file by name
//! ([`TempFile::open`]) and any of them can remove it ([`remove`]). The creating process's
//! handle removes the file on drop unless it was committed; handles made by `open` never do.
//!
//! What a commit keeps of the file it replaces (the *model*: the target itself, or for the
//! directory layout the previous file of the same key), see [`adopt_attributes`]: its permission
//! bits, its owner and group where the process may set them, its `user.*` extended attributes
//! and its POSIX ACL. While it is written, a temporary file that will replace an existing file is
//! readable by its creator only (0600). A model the caller may not write (mode 0444 for a user
//! who is not root) is not replaced: numpy's `savez` fails there too ([`check_writable`]).

use std::ffi::CString;
#[cfg(test)]
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Suffix of every temporary file psv creates.
pub(crate) const TEMP_SUFFIX: &str = ".psv-tmp";

/// Length in bytes of every temporary file name: `.`, 16 hex digits, [`TEMP_SUFFIX`].
#[cfg(test)]
pub(crate) const TEMP_NAME_LEN: usize = 1 + 16 + TEMP_SUFFIX.len();

/// How many fresh names a creation tries before giving up (each is a random 64-bit name: a
/// collision means someone creates names on purpose).
const CREATE_ATTEMPTS: usize = 64;

/// A temporary file beside the target; removed on drop unless committed, when this handle
/// created it.
pub(crate) struct TempFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Remove the file when this handle drops (set for the creator until it commits).
    armed: bool,
    /// The file whose attributes the commit gives this one (see [`adopt_attributes`]).
    model: Model,
}

/// Whose attributes a commit gives the new file ([`adopt_attributes`]).
enum Model {
    /// The file the commit replaces (its target), if it exists then.
    Target,
    /// This file, if it exists then (the directory layout: the previous file of the same key).
    File(PathBuf),
    /// None: the file is new under a name nobody else uses (0666 less the umask, as created).
    New,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh token for a temporary file only this process uses: 64 unpredictable bits (the
/// standard library's randomly keyed SipHash of the process id, a counter and the time), as 16
/// hex digits. Files shared between processes use a token they all derive instead
/// ([`TempFile::create_with_token`]).
pub(crate) fn local_token() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(TEMP_COUNTER.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    format!("{:016x}", h.finish())
}

/// 64-bit FNV-1a: a hash every process computes the same way (derived tokens must give the
/// same name everywhere).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The temporary path for `target` with `token`: `.<h>.psv-tmp` beside it, `h` the 16 hex
/// digits of a hash of the target's file name and the token ([`TEMP_NAME_LEN`] bytes in all).
pub(crate) fn temp_path(target: &Path, token: &str) -> Result<PathBuf> {
    let file_name = target
        .file_name()
        .ok_or_else(|| Error::invalid_arg(format!("{} is not a file path", target.display())))?;
    let h = fnv1a(&[file_name.as_bytes(), token.as_bytes()]);
    Ok(parent_dir(target).join(format!(".{h:016x}{TEMP_SUFFIX}")))
}

/// Whether `name` is a temporary file name psv makes (see [`temp_path`]).
#[cfg(test)]
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.len() == TEMP_NAME_LEN
        && b[0] == b'.'
        && b.ends_with(TEMP_SUFFIX.as_bytes())
        && b[1..17]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// The directory a path's file lives in (`.` for a bare name).
fn parent_dir(target: &Path) -> PathBuf {
    match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes a temporary file by name (any process may); a missing file is not an error.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", path.display()), e)),
    }
}

/// Refuses to replace `model` when it is an existing regular file this process may not write
/// (`access(W_OK)` with the effective ids, as `open(O_WRONLY)` decides): numpy's `savez`, which
/// writes the file in place, fails there with the same error (EACCES). Returns whether `model`
/// exists as a regular file (symbolic links followed).
///
/// Why: a rename needs only the directory's write permission, so without this check a save
/// would silently replace a file its owner made read-only.
pub(crate) fn check_writable(model: &Path) -> Result<bool> {
    match std::fs::metadata(model) {
        Ok(m) if m.is_file() => {}
        _ => return Ok(false),
    }
    match access_write(model) {
        Ok(()) => Ok(true),
        // Gone meanwhile: nothing to keep.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) => {
            Err(Error::io(
                format!(
                    "{} is read-only for this user: not replacing it (numpy's savez fails here too)",
                    model.display()
                ),
                e,
            ))
        }
        // Anything else (e.g. a read-only file system) shows up when the save writes.
        Err(_) => Ok(true),
    }
}

fn c_path(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// `faccessat(path, W_OK, AT_EACCESS)`.
fn access_write(path: &Path) -> std::io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call; faccessat only reads it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl TempFile {
    /// Creates a temporary file beside `target` under a fresh random name (retried while the
    /// name exists); removed on drop unless committed. The commit gives it `target`'s attributes
    /// when `target` exists; a read-only `target` is refused here ([`check_writable`]).
    pub(crate) fn create(target: &Path) -> Result<TempFile> {
        TempFile::create_like(target, None, local_token(), &mut |_| Ok(()))
    }

    /// Creates a temporary file for `target` named with `token` ([`temp_path`]), or with fresh
    /// random tokens while that name exists, whose commit takes the attributes of `model`
    /// (default: `target`); a read-only model is refused ([`check_writable`]). `announce` is
    /// called with each name before the file is created under it (the directory layout records
    /// its names there, so that a later save can remove what a killed process left).
    pub(crate) fn create_like(
        target: &Path,
        model: Option<&Path>,
        token: String,
        announce: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<TempFile> {
        let model = model.map_or(Model::Target, |m| Model::File(m.to_path_buf()));
        TempFile::create_modelled(target, model, token, announce)
    }

    /// As [`TempFile::create_like`], for a file that will get a name no file has (the
    /// directory layout's new keys): there is nothing to keep or to refuse, so no model is
    /// looked up, neither now nor at the commit (one `stat` each, for every small file).
    pub(crate) fn create_unreplacing(
        target: &Path,
        token: String,
        announce: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<TempFile> {
        TempFile::create_modelled(target, Model::New, token, announce)
    }

    fn create_modelled(
        target: &Path,
        model: Model,
        token: String,
        announce: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<TempFile> {
        let private = match &model {
            Model::Target => check_writable(target)?,
            Model::File(m) => check_writable(m)?,
            Model::New => false,
        };
        let mut last = None;
        let mut token = token;
        for _ in 0..CREATE_ATTEMPTS {
            let path = temp_path(target, &token)?;
            token = local_token();
            announce(&path)?;
            match create_file(&path, private) {
                Ok(file) => {
                    return Ok(TempFile {
                        path,
                        file,
                        armed: true,
                        model,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(create_error(target, e)),
            }
        }
        Err(create_error(
            target,
            last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EEXIST)),
        ))
    }

    /// Creates the temporary file for `target` named with `token` (it must not exist yet);
    /// removed on drop unless committed. As [`TempFile::create`] for attributes.
    pub(crate) fn create_with_token(target: &Path, token: &str) -> Result<TempFile> {
        let private = check_writable(target)?;
        let path = temp_path(target, token)?;
        let file = create_file(&path, private).map_err(|e| create_error(target, e))?;
        Ok(TempFile {
            path,
            file,
            armed: true,
            model: Model::Target,
        })
    }

    /// Opens an existing temporary file for writing (another process created it); this handle
    /// never removes it.
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
            model: Model::Target,
        })
    }

    /// Leaves the file in place when this handle drops (another process commits or removes it).
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
        if reserve(&self.file, 0, len).map_err(failed)? {
            return Ok(());
        }
        self.file.set_len(len).map_err(failed)
    }

    /// Makes the file `target`: the model's attributes ([`adopt_attributes`]), fsync (when
    /// asked), rename, and fsync the directory (when asked) so the rename itself is durable.
    pub(crate) fn commit(self, target: &Path, fsync: bool) -> Result<()> {
        let dir = parent_dir(&self.path);
        self.rename_into(target, fsync)?;
        if fsync {
            fsync_dir(&dir)?;
        }
        Ok(())
    }

    /// The model's attributes, fsync (when asked) and rename over `target`, without syncing
    /// the directory.
    pub(crate) fn rename_into(mut self, target: &Path, fsync: bool) -> Result<()> {
        self.prepare(target, fsync)?;
        let failed = |e| self.rename_error(target, e);
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

    /// Gives the file the name `target` only if no file has that name (`RENAME_NOREPLACE`),
    /// after the model's attributes and fsync (when asked). `Ok(Err(self))` when `target`
    /// exists: the temporary file is untouched, to be placed under another name.
    pub(crate) fn place_new(
        mut self,
        target: &Path,
        fsync: bool,
    ) -> Result<std::result::Result<(), TempFile>> {
        self.prepare(target, fsync)?;
        match rename_noreplace(&self.path, target) {
            Ok(()) => {
                self.armed = false;
                Ok(Ok(()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Err(self)),
            Err(e) => Err(self.rename_error(target, e)),
        }
    }

    /// Before a rename: the model's attributes, then fsync when asked.
    fn prepare(&self, target: &Path, fsync: bool) -> Result<()> {
        let model = match &self.model {
            Model::Target => Some(target),
            Model::File(m) => Some(m.as_path()),
            Model::New => None,
        };
        if let Some(model) = model {
            adopt_attributes(&self.file, model).map_err(|e| {
                Error::io(format!("cannot set the mode of {}", self.path.display()), e)
            })?;
        }
        if fsync {
            self.file
                .sync_all()
                .map_err(|e| Error::io(format!("cannot fsync {}", self.path.display()), e))?;
        }
        Ok(())
    }

    fn rename_error(&self, target: &Path, e: std::io::Error) -> Error {
        Error::io(
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                target.display()
            ),
            e,
        )
    }
}

/// `open(O_CREAT | O_EXCL | O_RDWR)`, mode 0600 when the file will replace an existing one
/// (its final mode is set at commit), else 0666 less the umask, as any new file.
fn create_file(path: &Path, private: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o666 })
        .open(path)
}

fn create_error(target: &Path, e: std::io::Error) -> Error {
    let context = match target.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if e.kind() == std::io::ErrorKind::NotFound && !dir.is_dir() => {
            let (t, d) = (target.display(), dir.display());
            format!("cannot save {t}: directory {d} does not exist")
        }
        _ => format!("cannot create a temporary file beside {}", target.display()),
    };
    Error::io(context, e)
}

/// Extended attributes copied from the replaced file: the user's own, and the POSIX ACL (which
/// can restrict access beyond the permission bits). `security.*` (SELinux labels, file
/// capabilities) and `trusted.*` are not copied.
fn copied_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.") || name == b"system.posix_acl_access"
}

/// Gives `file` what the replaced file `model` had, when `model` is an existing regular file
/// (symbolic links followed); does nothing otherwise (a new file keeps 0666 less the umask):
///
/// - its owner and group, where the process may set them (root may; another user may set a
///   group he belongs to); a process that may not keeps its own;
/// - its `user.*` extended attributes and its POSIX ACL (best effort: a file system without
///   them has none to copy); if an ACL cannot be copied, group and other lose every permission
///   rather than gain one;
/// - its permission bits (`mode & 0777`); set-user-ID, set-group-ID and sticky bits are not
///   kept.
///
/// Not kept (a rename makes a new file): other links to the old file (they keep the old
/// contents), its inode number, timestamps, other extended attributes.
pub(crate) fn adopt_attributes(file: &File, model: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let old = match std::fs::metadata(model) {
        Ok(m) if m.is_file() => m,
        _ => return Ok(()),
    };
    let ours = file.metadata()?;
    if (ours.uid(), ours.gid()) != (old.uid(), old.gid()) {
        // Best effort: a user who may not give a file away keeps it, with the old group if he
        // may set that one.
        if std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).is_err() {
            let _ = std::os::unix::fs::fchown(file, None, Some(old.gid()));
        }
    }
    let mut mode = old.mode() & 0o777;
    if !copy_xattrs(model, file) {
        mode &= 0o700;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Copies the [`copied_xattr`] attributes of `from` onto `to`; false when `from` has an ACL that
/// could not be copied.
fn copy_xattrs(from: &Path, to: &File) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(c_from) = c_path(from) else {
        return true;
    };
    let Some(names) = xattr_list(&c_from) else {
        return true;
    };
    let mut acl_ok = true;
    for name in names.split(|&b| b == 0).filter(|n| copied_xattr(n)) {
        let Ok(c_name) = CString::new(name) else {
            continue;
        };
        let is_acl = name == b"system.posix_acl_access";
        let Some(value) = xattr_get(&c_from, &c_name) else {
            acl_ok &= !is_acl;
            continue;
        };
        // SAFETY: `to` is an open descriptor; `c_name` is NUL-terminated and `value` is a live
        // buffer of `value.len()` bytes, both outliving the call, which only reads them.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::fsetxattr(
                to.as_raw_fd(),
                c_name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 && is_acl {
            acl_ok = false;
        }
    }
    acl_ok
}

/// The NUL-separated names of `path`'s extended attributes; `None` when there are none or the
/// file system has none.
fn xattr_list(path: &CString) -> Option<Vec<u8>> {
    for _ in 0..8 {
        // SAFETY: a NULL buffer of size 0 asks for the size; `path` is NUL-terminated.
        #[allow(unsafe_code)]
        let size = unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
        if size <= 0 {
            return None;
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes; listxattr writes at most
        // that many.
        #[allow(unsafe_code)]
        let got = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got >= 0 {
            buf.truncate(got as usize);
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
        // The list grew between the two calls: ask again.
    }
    None
}

/// The value of the extended attribute `name` of `path`.
fn xattr_get(path: &CString, name: &CString) -> Option<Vec<u8>> {
    for _ in 0..8 {
        // SAFETY: a NULL buffer of size 0 asks for the size; both strings are NUL-terminated.
        #[allow(unsafe_code)]
        let size = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return None;
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes; getxattr writes at most
        // that many.
        #[allow(unsafe_code)]
        let got = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got >= 0 {
            buf.truncate(got as usize);
            return Some(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
    }
    None
}

/// `renameat2(from, target, RENAME_NOREPLACE)`: `AlreadyExists` when `target` exists. Where the
/// file system lacks the flag, a hard link (which also fails on an existing name) and an unlink.
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, target: &Path) -> std::io::Result<()> {
    let (from_c, target_c) = (c_path(from)?, c_path(target)?);
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call; renameat2
    // only reads them.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => link_then_unlink(from, target),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, target: &Path) -> std::io::Result<()> {
    link_then_unlink(from, target)
}

fn link_then_unlink(from: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, target)?;
    let _ = std::fs::remove_file(from);
    Ok(())
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
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_file() => {}
        _ => return Ok(false),
    }
    let (from_c, target_c) = (c_path(from)?, c_path(target)?);
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

/// `fallocate(fd, 0, offset, len)`: reserves the disk space of `offset..offset + len` and extends
/// the file to cover it. `Ok(false)` where the
/// filesystem or kernel cannot (the caller then only sets the length); a full disk or a length
/// the filesystem cannot hold is an error.
#[cfg(target_os = "linux")]
pub(crate) fn reserve(file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (Ok(start), Ok(len_off)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
    else {
        return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call; fallocate reads
        // no memory of ours.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, start, len_off) };
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
pub(crate) fn reserve(_file: &File, _offset: u64, _len: u64) -> std::io::Result<bool> {
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
    use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

    use super::*;
    use crate::error::ErrorKind;

    fn target(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join("psv-tempfile-tests");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn names_are_short_random_or_derived_and_other_handles_never_remove() {
        let t = target("named.npz");
        let a = TempFile::create(&t).unwrap();
        let b = TempFile::create(&t).unwrap();
        assert_ne!(a.path, b.path);
        for p in [&a.path, &b.path] {
            let name = p.file_name().unwrap();
            assert!(is_temp_name(name), "{name:?}");
            assert_eq!(name.len(), TEMP_NAME_LEN);
            assert_eq!(p.parent(), t.parent());
        }
        assert_ne!(local_token(), local_token());
        // A derived token gives the same name in every process; a second create fails.
        let shared = TempFile::create_with_token(&t, "plan-1234").unwrap();
        assert_eq!(shared.path, temp_path(&t, "plan-1234").unwrap());
        assert_ne!(
            shared.path,
            temp_path(&target("other.npz"), "plan-1234").unwrap()
        );
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
        for bad in [".named.npz.1-2.psv-tmp", ".0123456789abcdeg.psv-tmp", "x"] {
            assert!(!is_temp_name(OsStr::new(bad)), "{bad}");
        }
    }

    #[test]
    fn a_name_taken_first_is_retried_and_long_target_names_fit() {
        // Someone creates each announced name before us (once): the creation moves on.
        let t = target(&"l".repeat(255));
        let mut taken = Vec::new();
        let tmp = TempFile::create_like(&t, None, local_token(), &mut |p| {
            if taken.is_empty() {
                File::create(p).unwrap();
                taken.push(p.to_path_buf());
            }
            Ok(())
        })
        .unwrap();
        assert_ne!(tmp.path, taken[0]);
        tmp.file.write_all_at(b"new", 0).unwrap();
        tmp.commit(&t, false).unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
        std::fs::remove_file(&taken[0]).unwrap();
        std::fs::remove_file(&t).unwrap();
    }

    #[test]
    fn a_commit_keeps_the_replaced_files_mode_and_user_xattrs() {
        let t = target("kept.npz");
        std::fs::write(&t, b"old").unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o640)).unwrap();
        let xattr = c_path(&t).map(|c| {
            // SAFETY: valid NUL-terminated strings and a 3-byte buffer, all outliving the call.
            #[allow(unsafe_code)]
            let rc = unsafe {
                libc::setxattr(
                    c.as_ptr(),
                    c"user.psv-test".as_ptr(),
                    b"yes".as_ptr().cast(),
                    3,
                    0,
                )
            };
            rc == 0
        });
        let tmp = TempFile::create(&t).unwrap();
        // Written privately until the commit gives it the old mode.
        assert_eq!(tmp.file.metadata().unwrap().mode() & 0o777, 0o600);
        tmp.file.write_all_at(b"new", 0).unwrap();
        tmp.commit(&t, false).unwrap();
        let m = std::fs::metadata(&t).unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
        if xattr.unwrap_or(false) {
            let got = xattr_get(
                &c_path(&t).unwrap(),
                &CString::new("user.psv-test").unwrap(),
            );
            assert_eq!(got.as_deref(), Some(&b"yes"[..]));
        }
        std::fs::remove_file(&t).unwrap();
    }

    #[test]
    fn a_read_only_model_is_refused_unless_the_user_may_write_it() {
        let t = target("readonly.npz");
        std::fs::write(&t, b"old").unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o444)).unwrap();
        // SAFETY: geteuid has no preconditions.
        #[allow(unsafe_code)]
        let root = unsafe { libc::geteuid() } == 0;
        match TempFile::create(&t) {
            // root may write any file, as numpy would.
            Ok(_) => assert!(root, "a read-only target was accepted"),
            Err(e) => {
                assert!(!root);
                assert_eq!(e.kind(), ErrorKind::Io);
                assert_eq!(e.os_code(), Some(libc::EACCES));
            }
        }
        std::fs::remove_file(&t).unwrap();
    }

    #[test]
    fn place_new_never_replaces_an_existing_name() {
        let t = target("placed.npy");
        let _ = std::fs::remove_file(&t);
        std::fs::write(&t, b"someone else's").unwrap();
        let model = Some(Path::new("/nonexistent"));
        let tmp = TempFile::create_like(&t, model, local_token(), &mut |_| Ok(())).unwrap();
        tmp.file.write_all_at(b"ours", 0).unwrap();
        let tmp = tmp
            .place_new(&t, false)
            .unwrap()
            .expect_err("name is taken");
        assert_eq!(std::fs::read(&t).unwrap(), b"someone else's");
        std::fs::remove_file(&t).unwrap();
        assert!(tmp.place_new(&t, false).unwrap().is_ok());
        assert_eq!(std::fs::read(&t).unwrap(), b"ours");
        std::fs::remove_file(&t).unwrap();
    }

    #[test]
    fn an_unreplacing_file_takes_nothing_from_a_file_that_appears_at_its_name() {
        // Someone else's file takes the name first: its mode is not copied onto ours (a
        // replacing temporary file would have taken it), and ours is not made private.
        let t = target("unreplacing.npy");
        let _ = std::fs::remove_file(&t);
        let tmp = TempFile::create_unreplacing(&t, local_token(), &mut |_| Ok(())).unwrap();
        let created = tmp.file.metadata().unwrap().mode() & 0o777;
        std::fs::write(&t, b"theirs").unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o604)).unwrap();
        let tmp = tmp
            .place_new(&t, false)
            .unwrap()
            .expect_err("name is taken");
        let other = target("unreplacing.1.npy");
        let _ = std::fs::remove_file(&other);
        assert!(tmp.place_new(&other, false).unwrap().is_ok());
        let mode = std::fs::metadata(&other).unwrap().mode() & 0o777;
        assert_eq!(mode, created);
        assert_ne!(mode, 0o604);
        assert_eq!(std::fs::read(&t).unwrap(), b"theirs");
        std::fs::remove_file(&t).unwrap();
        std::fs::remove_file(&other).unwrap();
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
