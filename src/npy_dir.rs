//! The directory container (`Layout::Dir`), the seed tool's first form: one `<key>.npy` per array (each
//! readable with `numpy.load`, array data 64-aligned in each file) and an index file that
//! names the arrays in order with their sizes and CRC-32s.
//!
//! The index is the commit point, and a save never overwrites an existing file:
//!
//! 1. Saves of one directory take turns: each holds an exclusive `flock` on the directory for its
//!    whole run (on a file system that cannot lock a directory, on [`LOCK_NAME`] inside it). The
//!    last save to commit wins whole, as for an `.npz`.
//! 2. Each array gets a name that is free: `<key>.npy`, else `<key>.<n>.npy` with the smallest
//!    `n` such that no file of that name exists, the current index does not name it, and no other
//!    array of this save took it (keys `a` and `a.1` cannot meet at `a.1.npy`).
//! 3. The save first records every name it will create, temporary and final, in the journal
//!    [`JOURNAL_NAME`]; files are written under temporary names, renamed to their final names
//!    (never over an existing file), then the new index is written the same way and renamed over
//!    the old one. Files only the old index named are removed after that commit, then the
//!    journal.
//! 4. A crash (even SIGKILL) at any moment leaves the old index and its files intact. The journal
//!    then lists what the dead save created; the next save removes those files unless the
//!    current index names them (or the journal marks a name as found taken by another file:
//!    `/<name>`).
//!
//! A restore reads the index, opens every file it names, and checks that the index was not
//! replaced meanwhile ([`read_consistently`]): if it was, files may belong to another version
//! (removed, or a name reused), so it starts again. A restore thus sees one version whole.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crc32fast::Hasher;
use rayon::prelude::*;

use crate::dest::tempfile::{self, TempFile};
use crate::dest::{aligned_pieces, Destination, FileDestination, SMALL_ARRAY_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::npz::index::{MemberInfo, Method};
use crate::npz::member_name;

/// The index file's name inside the directory.
pub const INDEX_NAME: &str = "psv-index.txt";
/// The journal of the save in progress: every name it creates, one a line. Removed when the save
/// ends; present afterwards only if the save was killed.
pub const JOURNAL_NAME: &str = ".psv-journal";
/// The lock file, created only where the directory itself cannot be locked.
pub const LOCK_NAME: &str = ".psv-lock";
/// First line of every index.
const INDEX_MAGIC: &str = "psv-dir 1";
/// Largest index accepted (about a million arrays).
const MAX_INDEX_LEN: u64 = 256 << 20;
/// How many times a restore starts again because saves keep replacing the index under it.
const RESTORE_ATTEMPTS: usize = 100;

/// One array of a directory archive, as the index records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The key.
    pub key: String,
    /// The file name inside the directory.
    pub file: String,
    /// The file's size in bytes (header and data).
    pub size: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

/// Keys must be safe, portable file names in this layout.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid_arg(format!(
            "key {key:?} cannot be a file name in the directory layout: {why}"
        )))
    };
    if key.contains('/') {
        return bad("it contains '/'");
    }
    if key.starts_with('.') {
        return bad("it starts with '.'");
    }
    if key
        .chars()
        .any(|c| c == '\0' || c == '\n' || c == '\r' || c == '\t')
    {
        return bad("it contains NUL, a tab or a line break");
    }
    if key.len() > 240 {
        return bad("it is longer than 240 bytes");
    }
    Ok(())
}

fn parse_index(text: &str, shown: &str) -> Result<Vec<DirEntry>> {
    let bad = |line: usize, why: &str| Error::format(format!("{shown}: index line {line}: {why}"));
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_MAGIC) {
        return Err(bad(1, "not a psv directory index"));
    }
    let mut entries = Vec::new();
    let mut keys = HashSet::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        let [crc, size, file, key] = fields[..] else {
            return Err(bad(n + 2, "expected crc, size, file and key"));
        };
        let crc32 = u32::from_str_radix(crc, 16).map_err(|_| bad(n + 2, "bad CRC"))?;
        let size = size.parse().map_err(|_| bad(n + 2, "bad size"))?;
        if file.contains('/') || file.starts_with('.') || file.is_empty() {
            return Err(bad(n + 2, "unsafe file name"));
        }
        if !keys.insert(key) {
            return Err(bad(n + 2, "duplicate key"));
        }
        entries.push(DirEntry {
            key: key.to_owned(),
            file: file.to_owned(),
            size,
            crc32,
        });
    }
    Ok(entries)
}

/// Reads the index of the directory archive at `dir`; `None` if there is no index file.
pub fn read_index(dir: &Path) -> Result<Option<Vec<DirEntry>>> {
    Ok(open_index(dir)?.map(|(entries, _)| entries))
}

/// Reads the index and returns it with the open index file (whose identity tells whether the
/// index was replaced since); `None` if there is no index file.
fn open_index(dir: &Path) -> Result<Option<(Vec<DirEntry>, File)>> {
    let path = dir.join(INDEX_NAME);
    let shown = path.display().to_string();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot open {shown}"), e)),
    };
    let len = file.metadata().map_err(|e| Error::io(&shown, e))?.len();
    if len > MAX_INDEX_LEN {
        return Err(Error::limit(format!(
            "{shown}: index of {len} bytes is too large"
        )));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut &file, &mut text)
        .map_err(|e| Error::format(format!("{shown}: cannot read the index as UTF-8 text: {e}")))?;
    Ok(Some((parse_index(&text, &shown)?, file)))
}

/// The arrays of the directory archive at `dir` as the members restore reads, in index order:
/// each named `<key>.npy`, its payload the whole file (`header_offset` 0, stored), with the
/// index's size and CRC-32, and its file name as the raw name ([`member_file`] gives the
/// path).
fn members_of(entries: Vec<DirEntry>) -> Vec<MemberInfo> {
    entries
        .into_iter()
        .map(|e| {
            MemberInfo::new(
                e.file.as_bytes(),
                String::from_utf8(member_name(&e.key)).unwrap_or_default(),
                0,
                e.size,
                e.size,
                e.crc32,
                Ok(Method::Stored),
                false,
            )
        })
        .collect()
}

/// Runs `read` on the members of the directory archive at `dir` (see [`members_of`]), which
/// must open every file it reads before it returns (a restore's plan does), and returns its
/// result if the index was not replaced meanwhile: then every file it opened was the one the
/// index named (files are removed, and names reused, only after a save commits a new index).
/// If the index was replaced, `read` runs again on the new one, up to [`RESTORE_ATTEMPTS`] times.
/// `None` if there is no index.
pub(crate) fn read_consistently<T>(
    dir: &Path,
    mut read: impl FnMut(&[MemberInfo]) -> Result<T>,
) -> Result<Option<T>> {
    for _ in 0..RESTORE_ATTEMPTS {
        let Some((entries, index)) = open_index(dir)? else {
            return Ok(None);
        };
        let result = read(&members_of(entries));
        if still_current(dir, &index) {
            return result.map(Some);
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "{}: the directory archive was saved again during each of {RESTORE_ATTEMPTS} \
             restore attempts",
            dir.display()
        ),
    ))
}

/// Whether `dir`'s index is still the file `index` (held open, so its inode number cannot have
/// been reused by a newer index).
fn still_current(dir: &Path, index: &File) -> bool {
    match (std::fs::metadata(dir.join(INDEX_NAME)), index.metadata()) {
        (Ok(now), Ok(read)) => (now.dev(), now.ino()) == (read.dev(), read.ino()),
        _ => false,
    }
}

/// The path of a listed member's own file (see [`read_consistently`]).
pub(crate) fn member_file(dir: &Path, m: &MemberInfo) -> Result<std::path::PathBuf> {
    let name = std::str::from_utf8(m.raw_name()).map_err(|_| Error::format("bad file name"))?;
    Ok(dir.join(name))
}

fn format_index(entries: &[DirEntry]) -> String {
    let mut out = String::from(INDEX_MAGIC);
    out.push('\n');
    for e in entries {
        out.push_str(&format!(
            "{:08x}\t{}\t{}\t{}\n",
            e.crc32, e.size, e.file, e.key
        ));
    }
    out
}

/// One array to write: its key, its numpy-identical header and its bytes.
pub(crate) struct DirArray<'a> {
    pub key: &'a str,
    pub header: &'a [u8],
    pub data: &'a [u8],
}

/// Writes `arrays` into the directory `dir` (created if missing; its parent must exist) and
/// commits them with a new index (see the module docs for the steps). `before_commit` runs once
/// every file is in place and may still cancel (the new files are then removed and the old
/// index stays).
pub(crate) fn save(
    arrays: &[DirArray<'_>],
    dir: &Path,
    fsync: bool,
    pool: &rayon::ThreadPool,
    before_commit: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    for a in arrays {
        validate_key(a.key)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot create directory {}", dir.display()),
                e,
            ))
        }
    }
    let _lock = DirLock::acquire(dir)?;
    let old = read_index(dir)?.unwrap_or_default();
    recover(dir, &old)?;
    let mut taken: HashSet<String> = old.iter().map(|e| e.file.clone()).collect();
    let names: Vec<String> = arrays
        .iter()
        .map(|a| free_name(dir, a.key, &mut taken))
        .collect();
    let old_files: HashMap<&str, &str> = old
        .iter()
        .map(|e| (e.key.as_str(), e.file.as_str()))
        .collect();
    // Every name this save may create, before it creates any.
    let tokens: Vec<String> = arrays.iter().map(|_| tempfile::local_token()).collect();
    let temps: Vec<PathBuf> = names
        .iter()
        .zip(&tokens)
        .map(|(name, token)| tempfile::temp_path(&dir.join(name), token))
        .collect::<Result<_>>()?;
    let index_path = dir.join(INDEX_NAME);
    let index_token = tempfile::local_token();
    let index_temp = tempfile::temp_path(&index_path, &index_token)?;
    let journal = Mutex::new(Journal::start(dir, fsync)?);
    // Old files are listed too: after a commit they are garbage, and if this save is killed
    // before removing them, the next one will.
    journal_lock(&journal).add(
        temps
            .iter()
            .chain([&index_temp])
            .filter_map(|p| p.file_name()?.to_str())
            .chain(names.iter().map(String::as_str))
            .chain(old.iter().map(|e| e.file.as_str())),
    )?;

    // Files given their final names, for the cleanup if this save fails before its commit.
    let placed: Mutex<Vec<PathBuf>> = Mutex::new(Vec::with_capacity(arrays.len()));
    let result = (|| {
        // Each file is written, fsync'd when asked and renamed to its name as soon as it is
        // complete, so it is closed at once: holding every file open until all are written
        // needed one descriptor per array (EMFILE beyond `ulimit -n`, 1024 by default). A name
        // found taken meanwhile keeps its temporary file open for the loop below (rare).
        let files: Vec<FileToWrite<'_>> = arrays
            .iter()
            .zip(&names)
            .zip(tokens.into_iter().zip(&temps))
            .map(|((a, name), (token, first))| FileToWrite {
                array: a,
                target: dir.join(name),
                model: old_files.get(a.key).map(|f| dir.join(f)),
                token,
                first,
            })
            .collect();
        let writer = DirWriter {
            files: &files,
            fsync,
            journal: &journal,
            placed: &placed,
        };
        let written = pool.install(|| writer.write())?;
        let mut entries = Vec::with_capacity(arrays.len());
        for ((tmp, crc32), (a, name)) in written.into_iter().zip(arrays.iter().zip(&names)) {
            let mut name = name.clone();
            let Some(mut tmp) = tmp else {
                entries.push(DirEntry {
                    key: a.key.to_owned(),
                    file: name,
                    size: (a.header.len() + a.data.len()) as u64,
                    crc32,
                });
                continue;
            };
            loop {
                // The first try (fsync'd when asked) found `name` taken; this one renames only.
                match tmp.place_new(&dir.join(&name), false)? {
                    Ok(()) => break,
                    Err(back) => {
                        // A file of that name appeared (not by a psv save: they take turns). It
                        // is not ours: the journal says so ("/<name>"), then names the next one.
                        tmp = back;
                        let theirs =
                            std::mem::replace(&mut name, free_name(dir, a.key, &mut taken));
                        journal_lock(&journal)
                            .add([format!("/{theirs}").as_str(), name.as_str()])?;
                    }
                }
            }
            placed_lock(&placed).push(dir.join(&name));
            entries.push(DirEntry {
                key: a.key.to_owned(),
                file: name,
                size: (a.header.len() + a.data.len()) as u64,
                crc32,
            });
        }
        if fsync {
            tempfile::fsync_dir(dir)?;
        }
        before_commit()?;
        let tmp = TempFile::create_like(
            &index_path,
            None,
            index_token,
            &mut announce(&journal, &index_temp),
        )?;
        (&tmp.file)
            .write_all(format_index(&entries).as_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", tmp.path.display()), e))?;
        tmp.rename_into(&index_path, fsync)?;
        Ok(entries)
    })();
    let entries = match result {
        Ok(entries) => entries,
        Err(e) => {
            // Not committed: the files placed so far are named by no index; remove them.
            for p in placed_lock(&placed).iter() {
                let _ = std::fs::remove_file(p);
            }
            journal_lock(&journal).finish();
            return Err(e);
        }
    };
    // Committed. Files only the old index named are garbage now (best effort).
    let keep: HashSet<&str> = entries.iter().map(|e| e.file.as_str()).collect();
    for e in &old {
        if !keep.contains(e.file.as_str()) {
            let _ = std::fs::remove_file(dir.join(&e.file));
        }
    }
    journal_lock(&journal).finish();
    if fsync {
        tempfile::fsync_dir(dir)?;
    }
    Ok(())
}

/// The first name among `<key>.npy`, `<key>.1.npy`, `<key>.2.npy`, ... that is not in `taken`
/// and names no existing file; added to `taken`.
fn free_name(dir: &Path, key: &str, taken: &mut HashSet<String>) -> String {
    for n in 0u64.. {
        let name = if n == 0 {
            format!("{key}.npy")
        } else {
            format!("{key}.{n}.npy")
        };
        if taken.contains(&name) || std::fs::symlink_metadata(dir.join(&name)).is_ok() {
            continue;
        }
        taken.insert(name.clone());
        return name;
    }
    unreachable!("names run out after u64::MAX tries")
}

/// The list of placed files, locked (a worker's panic cannot leave it inconsistent: a push is
/// the only change).
fn placed_lock(placed: &Mutex<Vec<PathBuf>>) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
    placed.lock().unwrap_or_else(|p| p.into_inner())
}

/// The journal, locked (a panic elsewhere cannot leave it half-written in a way that matters:
/// only complete lines are read back).
fn journal_lock(journal: &Mutex<Journal>) -> std::sync::MutexGuard<'_, Journal> {
    journal.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `announce` callback of [`TempFile::create_like`]: `first` is already in the journal;
/// any other name (a retry after a name collision) is added before it is created.
fn announce<'j>(
    journal: &'j Mutex<Journal>,
    first: &'j Path,
) -> impl FnMut(&Path) -> Result<()> + 'j {
    move |path| {
        if path == first {
            return Ok(());
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid_arg("temporary name is not UTF-8"))?;
        journal_lock(journal).add([name])
    }
}

/// Exclusive right to save a directory, released on drop (closing the descriptor releases the
/// `flock`).
struct DirLock {
    _file: File,
}

impl DirLock {
    /// Waits for the lock on `dir` itself, or on [`LOCK_NAME`] where a directory cannot be
    /// locked (some network file systems).
    fn acquire(dir: &Path) -> Result<DirLock> {
        let failed = |e| Error::io(format!("cannot lock {} for saving", dir.display()), e);
        let handle = File::open(dir).map_err(failed)?;
        match flock_exclusive(&handle) {
            Ok(()) => return Ok(DirLock { _file: handle }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBADF | libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL)
                ) => {}
            Err(e) => return Err(failed(e)),
        }
        let path = dir.join(LOCK_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        flock_exclusive(&file).map_err(failed)?;
        Ok(DirLock { _file: file })
    }
}

/// `flock(LOCK_EX)`, waiting (and retrying after signals).
fn flock_exclusive(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: `file` is an open descriptor for the duration of the call; flock reads no
        // memory of ours.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// The journal of a save in progress ([`JOURNAL_NAME`]): names appended, one a line, before the
/// files are created.
struct Journal {
    path: PathBuf,
    file: Option<File>,
    fsync: bool,
}

impl Journal {
    fn start(dir: &Path, fsync: bool) -> Result<Journal> {
        let path = dir.join(JOURNAL_NAME);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        Ok(Journal {
            path,
            file: Some(file),
            fsync,
        })
    }

    /// Appends `names` in one write (and fsyncs it when the save is durable).
    fn add<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) -> Result<()> {
        let mut text = String::new();
        for n in names {
            text.push_str(n);
            text.push('\n');
        }
        let Some(file) = &mut self.file else {
            return Err(Error::invalid_arg("the save's journal is closed"));
        };
        let failed = |e| Error::io(format!("cannot write {}", self.path.display()), e);
        file.write_all(text.as_bytes()).map_err(failed)?;
        if self.fsync {
            file.sync_data().map_err(failed)?;
        }
        Ok(())
    }

    /// The save is over (committed or rolled back): the journal goes.
    fn finish(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes what a killed save left (the names in its journal that the current index does not
/// name), then the journal. Runs under the directory lock, before anything else.
fn recover(dir: &Path, current: &[DirEntry]) -> Result<()> {
    let path = dir.join(JOURNAL_NAME);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let mut keep: HashSet<&str> = current.iter().map(|e| e.file.as_str()).collect();
    // Only complete lines: the last one may have been cut by the kill.
    let complete = text
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&text[..0], |end| &text[..end]);
    let lines: Vec<&str> = complete
        .split(|&b| b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .collect();
    // "/<name>": a name the save found taken by someone else's file.
    keep.extend(lines.iter().filter_map(|l| l.strip_prefix('/')));
    for &name in &lines {
        let ours = !name.is_empty()
            && !name.contains('/')
            && name != "."
            && name != ".."
            && name != INDEX_NAME
            && name != JOURNAL_NAME
            && name != LOCK_NAME;
        if ours && !keep.contains(name) {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    std::fs::remove_file(&path)
        .map_err(|e| Error::io(format!("cannot remove {}", path.display()), e))
}

/// One file of a directory save: its array, its final name, the file whose attributes it takes
/// and its first temporary name.
struct FileToWrite<'a> {
    array: &'a DirArray<'a>,
    target: PathBuf,
    /// The previous file of the same key, if any ([`TempFile::create_like`]).
    model: Option<PathBuf>,
    /// The token of its first temporary name.
    token: String,
    /// That temporary name (already in the journal).
    first: &'a Path,
}

/// A unit of a directory save's parallel work.
enum DirJob {
    /// Create, write and place a small file whole (header and data in one write).
    Small(usize),
    /// CRC one aligned piece of a large file's array data, then write it (still in cache).
    Piece { file: usize, range: Range<usize> },
}

/// What a [`DirJob`] gives back.
enum DirDone {
    /// A small file's CRC-32; the temporary file if its name was found taken.
    Small {
        file: usize,
        crc: u32,
        back: Option<TempFile>,
    },
    /// The CRC state of piece `job` (a job number: pieces of one file are in file order).
    Piece {
        file: usize,
        job: usize,
        crc: Hasher,
    },
    /// A large file is complete and placed (or, name taken, handed back).
    Placed { file: usize, back: Option<TempFile> },
}

/// A large file being written by several workers: created by whoever writes its first piece,
/// placed by whoever writes its last.
struct LargeFile {
    slot: Mutex<Option<Arc<TempFile>>>,
    /// Pieces not yet written.
    remaining: AtomicUsize,
}

/// Writes every file of a directory save (see [`DirWriter::write`]).
struct DirWriter<'w> {
    files: &'w [FileToWrite<'w>],
    fsync: bool,
    journal: &'w Mutex<Journal>,
    placed: &'w Mutex<Vec<PathBuf>>,
}

impl DirWriter<'_> {
    /// Writes every file under a temporary name and places it under its name (fsync'd first
    /// when asked) as soon as it is complete; returns each file's CRC-32 and, for a file whose
    /// name was found taken, its temporary file, in file order. Runs on the current pool.
    ///
    /// Large arrays are cut into aligned pieces that every worker takes in file order, CRC'ing
    /// each just before writing it, as the `.npz` writer does: one large file is written by all
    /// workers at once, into space reserved first (`fallocate`). Small files are whole jobs of
    /// their own queue, which one worker starts on while the others start on the pieces:
    /// creating files in one directory takes turns on the directory's lock (and on ext4 on its
    /// inode allocator), writing data into files does not, so the two overlap. A worker whose
    /// queue is empty helps with the other.
    fn write(&self) -> Result<Vec<(Option<TempFile>, u32)>> {
        let mut small = Vec::new();
        let mut pieces = Vec::new();
        let mut large = Vec::with_capacity(self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            let a = f.array;
            let mut count = 0;
            if a.data.len() <= SMALL_ARRAY_LEN {
                small.push(DirJob::Small(i));
            } else {
                for range in aligned_pieces(a.header.len() as u64, a.data.len()) {
                    pieces.push(DirJob::Piece { file: i, range });
                    count += 1;
                }
            }
            large.push(LargeFile {
                slot: Mutex::new(None),
                remaining: AtomicUsize::new(count),
            });
        }
        let queues = [
            (&small, AtomicUsize::new(0)),
            (&pieces, AtomicUsize::new(0)),
        ];
        let failed = AtomicBool::new(false);
        let workers = rayon::current_num_threads().clamp(1, (small.len() + pieces.len()).max(1));
        let per_worker = (0..workers)
            .into_par_iter()
            .with_max_len(1)
            .map(|w| {
                let mut done = Vec::new();
                let order = if w == 0 { [0, 1] } else { [1, 0] };
                for q in order {
                    let (jobs, next) = &queues[q];
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        if let Err(e) = self.run(job, i, &large, &mut done) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
                Ok(done)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut crcs: Vec<Option<Hasher>> = vec![None; self.files.len()];
        let mut result: Vec<(Option<TempFile>, u32)> = Vec::with_capacity(self.files.len());
        result.resize_with(self.files.len(), || (None, 0));
        let mut piece_crcs = Vec::new();
        for d in per_worker.into_iter().flatten() {
            match d {
                DirDone::Small { file, crc, back } => result[file] = (back, crc),
                DirDone::Placed { file, back } => result[file].0 = back,
                DirDone::Piece { file, job, crc } => piece_crcs.push((job, file, crc)),
            }
        }
        piece_crcs.sort_unstable_by_key(|(job, _, _)| *job);
        for (_, file, crc) in piece_crcs {
            crcs[file]
                .get_or_insert_with(|| {
                    let mut h = Hasher::new();
                    h.update(self.files[file].array.header);
                    h
                })
                .combine(&crc);
        }
        for (file, h) in crcs.into_iter().enumerate() {
            if let Some(h) = h {
                result[file].1 = h.finalize();
            }
        }
        Ok(result)
    }

    /// Runs job number `job`, appending what it gives back to `done`.
    fn run(
        &self,
        job: &DirJob,
        number: usize,
        large: &[LargeFile],
        done: &mut Vec<DirDone>,
    ) -> Result<()> {
        match job {
            DirJob::Small(file) => {
                let (back, crc) = self.write_small(*file)?;
                done.push(DirDone::Small {
                    file: *file,
                    crc,
                    back,
                });
            }
            DirJob::Piece { file, range } => {
                let lf = &large[*file];
                let tmp = self.open_large(*file, lf)?;
                let f = &self.files[*file];
                let shown = tmp.path.display().to_string();
                let mut crc = Hasher::new();
                FileDestination::new(&tmp.file, f.array.header.len() as u64, &shown)
                    .with_writeback(self.fsync)
                    .write_hashed(&f.array.data[range.clone()], range.start as u64, &mut crc)?;
                drop(tmp);
                done.push(DirDone::Piece {
                    file: *file,
                    job: number,
                    crc,
                });
                // The last piece places the file. Every other writer dropped its handle before
                // counting its piece done, so this one is the only handle left.
                if lf.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                    let tmp = slot_lock(&lf.slot)
                        .take()
                        .and_then(|t| Arc::try_unwrap(t).ok());
                    let tmp = tmp.ok_or_else(|| {
                        Error::new(ErrorKind::Io, "a large file's writers lost track of it")
                    })?;
                    done.push(DirDone::Placed {
                        file: *file,
                        back: self.place(*file, tmp)?,
                    });
                }
            }
        }
        Ok(())
    }

    /// The temporary file of a large array, created (sized to the whole file, header written)
    /// by the first writer that asks.
    fn open_large(&self, file: usize, lf: &LargeFile) -> Result<Arc<TempFile>> {
        let mut slot = slot_lock(&lf.slot);
        if let Some(tmp) = &*slot {
            return Ok(Arc::clone(tmp));
        }
        let a = self.files[file].array;
        let tmp = self.create(file)?;
        tmp.preallocate((a.header.len() + a.data.len()) as u64)?;
        tmp.file
            .write_all_at(a.header, 0)
            .map_err(|e| Error::io(format!("cannot write {}", tmp.path.display()), e))?;
        let tmp = Arc::new(tmp);
        *slot = Some(Arc::clone(&tmp));
        Ok(tmp)
    }

    /// Creates file `file`'s temporary file under its journalled name (or a fresh one).
    fn create(&self, file: usize) -> Result<TempFile> {
        let f = &self.files[file];
        let announce = &mut announce(self.journal, f.first);
        match &f.model {
            Some(model) => TempFile::create_like(&f.target, Some(model), f.token.clone(), announce),
            // A new key's file gets a name no file has: nothing to keep.
            None => TempFile::create_unreplacing(&f.target, f.token.clone(), announce),
        }
    }

    /// Writes a small file whole (header and data in one write) and places it; returns it
    /// back if its name was found taken, and its CRC-32.
    fn write_small(&self, file: usize) -> Result<(Option<TempFile>, u32)> {
        let a = self.files[file].array;
        let tmp = self.create(file)?;
        let mut crc = Hasher::new();
        crc.update(a.header);
        crc.update(a.data);
        let mut buf = Vec::new();
        buf.try_reserve_exact(a.header.len() + a.data.len())
            .map_err(|_| Error::nomem("cannot allocate a write buffer"))?;
        buf.extend_from_slice(a.header);
        buf.extend_from_slice(a.data);
        tmp.file
            .write_all_at(&buf, 0)
            .map_err(|e| Error::io(format!("cannot write {}", tmp.path.display()), e))?;
        Ok((self.place(file, tmp)?, crc.finalize()))
    }

    /// Gives a complete file its name (fsync'd first when asked), unless that name is taken:
    /// then the temporary file comes back, to be placed under another name.
    fn place(&self, file: usize, tmp: TempFile) -> Result<Option<TempFile>> {
        let target = &self.files[file].target;
        match tmp.place_new(target, self.fsync)? {
            Ok(()) => {
                placed_lock(self.placed).push(target.clone());
                Ok(None)
            }
            Err(back) => Ok(Some(back)),
        }
    }
}

/// A large file's slot, locked (a panic elsewhere cannot leave it inconsistent: it is set once
/// and taken once).
fn slot_lock(
    slot: &Mutex<Option<Arc<TempFile>>>,
) -> std::sync::MutexGuard<'_, Option<Arc<TempFile>>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_rejects_garbage() {
        let entries = vec![
            DirEntry {
                key: "a b".into(),
                file: "a b.npy".into(),
                size: 128,
                crc32: 0xdead_beef,
            },
            DirEntry {
                key: "中".into(),
                file: "中.1.npy".into(),
                size: 0,
                crc32: 0,
            },
        ];
        assert_eq!(parse_index(&format_index(&entries), "x").unwrap(), entries);
        for bad in [
            "",
            "psv-dir 2\n",
            "psv-dir 1\nzz\t1\ta.npy\ta\n",
            "psv-dir 1\n0\t1\t../x\ta\n",
            "psv-dir 1\n0\t1\ta.npy\ta\n0\t1\tb.npy\ta\n",
            "psv-dir 1\n0\t1\ta.npy\n",
        ] {
            assert!(parse_index(bad, "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recovery_removes_what_the_journal_lists_and_no_index_names() {
        let dir = std::env::temp_dir().join(format!("psv-npy-dir-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names = [
            "f1.npy",
            "f2.npy",
            "f3.npy",
            ".0123456789abcdef.psv-tmp",
            "user.txt",
        ];
        for n in names {
            std::fs::write(dir.join(n), n).unwrap();
        }
        let journal = "f1.npy\nf2.npy\n/f3.npy\nf3.npy\n.0123456789abcdef.psv-tmp\n../x\nuser.t";
        std::fs::write(dir.join(JOURNAL_NAME), journal).unwrap();
        let current = [DirEntry {
            key: "f1".into(),
            file: "f1.npy".into(),
            size: 6,
            crc32: 0,
        }];
        recover(&dir, &current).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        // f1 is indexed, f3 was someone else's, user.txt's line was cut: all stay.
        assert_eq!(left, ["f1.npy", "f3.npy", "user.txt"]);
        recover(&dir, &current).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unsafe_keys_are_refused() {
        for bad in ["a/b", "..", ".hidden", "a\nb", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        validate_key("weights 1 (é)").unwrap();
    }
}
