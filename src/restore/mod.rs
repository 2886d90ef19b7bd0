//! Restoring: any `.npz` (or directory archive) -> one 64-byte-aligned block with a view per
//! array.
//!
//! A restore is two steps:
//! 1. the plan ([`plan`]): index the central directory ([`crate::npz::index`]), select the
//!    members, read and validate each one's local and `.npy` headers in parallel (phase A,
//!    [`inspect`]), and place every array in the block: packed (each at the next 64-aligned
//!    offset) for any file, or as an [`inspect::Image`] of the file's data region for files
//!    whose stored arrays are 64-aligned
//!    (every file psv writes; phase A then reads small members straight into their final place).
//!    A metadata-only restore is exactly the plan;
//! 2. the fill ([`fill`]): `pread` stored members into the block in ~4 MiB chunks and inflate
//!    deflated ones ([`inflate`]) straight into it, in parallel; combine the CRCs and compare them
//!    with the central directory.
//!
//! Where bytes come from is [`source`]: a file, a caller's buffer, or a directory archive's
//! files (listed by [`crate::npy_dir`]). A sequential stream (a pipe, a socket, a read
//! callback) cannot be planned first: [`stream`] reads it once, front to back, from its local
//! headers, placing each array as it arrives, and checks the central directory at the end.

use std::borrow::Cow;
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use crate::archive::{Archive, Storage};
use crate::error::{Error, Result};
use crate::memory::{self, AnonMap, CallerBlock, FileMap};
use crate::npy_dir;
use crate::npz::{self, index};
use crate::options::RestoreOptions;
use crate::pool;
use crate::progress::ProgressFn;

mod dir;
mod fill;
mod inflate;
mod inspect;
mod plan;
mod source;
mod stream;

pub(crate) use stream::restore_stream_from;

use source::{Memory, Reader};

/// Stored array data is read (and CRC'd) in chunks of this size, so one large array uses every
/// core.
pub(crate) const CHUNK_LEN: usize = 4 << 20;

/// Where a restore reads from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Source<'a> {
    /// A `.npz` file (`.npz` appended to the path if missing), or a directory archive.
    Path(Cow<'a, Path>),
    /// A whole `.npz` held in memory (e.g. downloaded). The mmap option does not apply.
    Memory(&'a [u8]),
    /// A caller's open file, which the caller keeps. A seekable one (a regular file or a
    /// block device) is read with positional reads and its offset does not move; any other
    /// (a pipe, a socket) is read once, front to back, as [`restore_stream`] reads, up to the
    /// archive's end record.
    File(&'a File),
}

impl<'a> From<&'a File> for Source<'a> {
    fn from(f: &'a File) -> Self {
        Source::File(f)
    }
}

impl<'a> From<&'a Path> for Source<'a> {
    fn from(p: &'a Path) -> Self {
        Source::Path(Cow::Borrowed(p))
    }
}

impl<'a> From<&'a PathBuf> for Source<'a> {
    fn from(p: &'a PathBuf) -> Self {
        Source::Path(Cow::Borrowed(p))
    }
}

impl From<PathBuf> for Source<'_> {
    fn from(p: PathBuf) -> Self {
        Source::Path(Cow::Owned(p))
    }
}

impl<'a> From<&'a str> for Source<'a> {
    fn from(p: &'a str) -> Self {
        Source::Path(Cow::Borrowed(Path::new(p)))
    }
}

impl<'a> From<&'a [u8]> for Source<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Source::Memory(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Source<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Source::Memory(bytes)
    }
}

/// Restores every array of `source` (a path to a `.npz` or a directory archive, or a `.npz` in
/// memory) into one block.
///
/// ```
/// # use psv::{restore, Dtype, RestoreOptions, SaveOptions, Saver};
/// # let dir = std::env::temp_dir().join(format!("psv-doc-restore-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let mut saver = Saver::new();
/// # saver.add("a", &[1, 2, 3], Dtype::U8, &[3])?;
/// # saver.add("b", &[0; 8], Dtype::F64, &[])?;
/// # let path = saver.save(dir.join("x"), &SaveOptions::default())?;
/// // List without reading data, then read only "a".
/// let listing = restore(&path, &RestoreOptions::default().metadata_only(true))?;
/// assert_eq!(listing.arrays()[1].shape, Vec::<u64>::new()); // b is 0-d
/// let only_a = RestoreOptions::default().keys(["a"]);
/// let a = restore(&path, &only_a)?;
/// assert_eq!(a.data(0), Some(&[1u8, 2, 3][..]));
/// // The same file from memory.
/// let bytes = std::fs::read(&path).unwrap();
/// assert_eq!(restore(&bytes, &RestoreOptions::default())?.len(), 2);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), psv::Error>(())
/// ```
///
/// With `mmap`, stored arrays that are 64-aligned in the file (every file psv writes) are views
/// into a private mapping of the file: nothing is read up front and nothing is copied.
///
/// ```
/// # use psv::{restore, Dtype, RestoreOptions, SaveOptions, Saver};
/// # let dir = std::env::temp_dir().join(format!("psv-doc-mmap-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let weights: Vec<u8> = (0..=255).cycle().take(1 << 20).collect();
/// let mut saver = Saver::new();
/// saver.add("weights", &weights, Dtype::U8, &[1024, 1024])?;
/// let path = saver.save(dir.join("model"), &SaveOptions::default())?;
///
/// let archive = restore(&path, &RestoreOptions::default().mmap(true))?;
/// let info = &archive.arrays()[0];
/// assert!(info.mapped); // a view into the file mapping, not a copy
/// assert_eq!(archive.data(0).unwrap(), &weights[..]);
/// assert_eq!(archive.data_ptr(0).unwrap() as usize % 64, 0);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), psv::Error>(())
/// ```
///
/// # Errors
/// [`crate::ErrorKind::Io`] when the file cannot be opened or read; `Format` for anything that
/// is not a valid `.npz` (truncated, inconsistent records, bad `.npy` headers); `Unsupported`
/// for pickled arrays, other compression methods or encryption; `Limit` when an option's
/// limit is exceeded; `NotFound` for a requested key that is not there; `Crc` for corrupt
/// data; `NoMem`.
pub fn restore<'a>(source: impl Into<Source<'a>>, opts: &RestoreOptions) -> Result<Archive> {
    restore_from(source.into(), opts, None, BlockFrom::Own)
}

/// [`restore`] with a progress callback `(done, total) -> continue?`, run on the calling thread;
/// returning `false` cancels ([`crate::ErrorKind::Aborted`]).
///
/// # Errors
/// As [`restore`], and `Aborted` when the callback cancels.
pub fn restore_with_progress<'a>(
    source: impl Into<Source<'a>>,
    opts: &RestoreOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<Archive> {
    restore_from(source.into(), opts, Some(progress), BlockFrom::Own)
}

/// Restores `source` into the caller's `buf`: the same arrays and checks as [`restore`], but
/// every array lands in `buf` (at `arrays()[i].offset`, 64-byte aligned when `buf` is) instead
/// of a block of the library's. `buf` must hold [`Archive::required_bytes`] of a metadata-only
/// restore of the same source and keys. The returned archive describes the arrays; its `data`
/// is `None` (the bytes are the caller's: read them from `buf`). The mmap option does not
/// apply.
///
/// ```
/// # use psv::{restore, restore_into, Dtype, RestoreOptions, SaveOptions, Saver};
/// # let dir = std::env::temp_dir().join(format!("psv-doc-into-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let mut saver = Saver::new();
/// # saver.add("a", &[1, 2, 3], Dtype::U8, &[3])?;
/// # let path = saver.save(dir.join("x"), &SaveOptions::default())?;
/// let need = restore(&path, &RestoreOptions::default().metadata_only(true))?.required_bytes();
/// let mut raw = vec![0u8; need + 63]; // any memory will do, 64-byte aligned
/// let pad = raw.as_ptr().align_offset(64);
/// let buf = &mut raw[pad..pad + need];
/// let listing = restore_into(&path, &RestoreOptions::default(), buf)?;
/// let a = &listing.arrays()[0];
/// assert_eq!(&buf[a.offset..a.offset + a.nbytes], &[1, 2, 3]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), psv::Error>(())
/// ```
///
/// # Errors
/// As [`restore`], and [`crate::ErrorKind::InvalidArg`] when `buf` is too small (the message
/// names the size needed).
pub fn restore_into<'a>(
    source: impl Into<Source<'a>>,
    opts: &RestoreOptions,
    buf: &mut [u8],
) -> Result<Archive> {
    restore_from(source.into(), opts, None, BlockFrom::Caller(buf))
}

/// Restores the archive that `reader` streams (a pipe, a socket, a download), reading it
/// once, front to back, without seeking: the same arrays and checks as [`restore`], each
/// array 64-byte aligned in one block.
///
/// Members are read from their local headers; the central directory and end records that
/// follow them are checked against what the stream held (a mismatch is
/// [`crate::ErrorKind::Format`]). Reading stops right after the end record (and its
/// comment): bytes after the archive are left in `reader` (reads never ask for more than the
/// records read so far say the archive holds; only while a deflated member with a data
/// descriptor is decoded, up to 256 KiB may be read ahead). Memory: the block, reserved as
/// address space up to the block limit ([`RestoreOptions::max_total_bytes`]) and committed as
/// it fills, plus a 256 KiB buffer and at most 48 MiB of compressed members waiting to be
/// decoded on the pool (those of up to 16 MiB; larger ones are decoded as they arrive). The
/// mmap option does not apply.
///
/// Members with a data descriptor (what Python's `zipfile`, and so `numpy.savez`, writes into
/// a pipe) are read when their end can be found in one pass: deflated members (the stream
/// ends itself) and stored `.npy` members holding exactly their header and array data (what
/// numpy writes). Any other stored member with a data descriptor is
/// [`crate::ErrorKind::Unsupported`] (restore such a file from a path or memory).
///
/// ```
/// # use psv::{restore_stream, Dtype, RestoreOptions, SaveOptions, Saver};
/// let mut saver = Saver::new();
/// saver.add("a", &[1, 2, 3], Dtype::U8, &[3])?;
/// let bytes = saver.to_vec(&SaveOptions::default())?;
/// let archive = restore_stream(&bytes[..], &RestoreOptions::default())?;
/// assert_eq!(archive.data(0), Some(&[1u8, 2, 3][..]));
/// # Ok::<(), psv::Error>(())
/// ```
///
/// # Errors
/// As [`restore`]; `Format` for a stream that ends early (at any byte); `Io` when `reader`
/// fails; `Unsupported` as above.
pub fn restore_stream(mut reader: impl std::io::Read, opts: &RestoreOptions) -> Result<Archive> {
    stream::restore_stream_from(&mut reader, "the stream", opts, None, BlockFrom::Own)
}

/// [`restore_stream`] with a progress callback `(done, total) -> continue?`, run on the
/// calling thread: `done` counts the bytes read from the stream; `total` is 0 (not known)
/// until the last call, which gets `(done, done)`. Returning `false` cancels
/// ([`crate::ErrorKind::Aborted`]).
///
/// # Errors
/// As [`restore_stream`], and `Aborted` when the callback cancels.
pub fn restore_stream_with_progress(
    mut reader: impl std::io::Read,
    opts: &RestoreOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<Archive> {
    stream::restore_stream_from(
        &mut reader,
        "the stream",
        opts,
        Some(progress),
        BlockFrom::Own,
    )
}

/// [`restore_stream`] into the caller's `buf`, as [`restore_into`]: `buf` must be 64-byte
/// aligned and hold [`Archive::required_bytes`] of a metadata-only restore of the same archive
/// and keys. The arrays are read straight into `buf`; when it turns out too small the rest of
/// the stream is still read (to name the size needed) and the restore fails.
///
/// # Errors
/// As [`restore_stream`], and [`crate::ErrorKind::InvalidArg`] when `buf` is misaligned or too
/// small (the message names the size needed).
pub fn restore_stream_into(
    mut reader: impl std::io::Read,
    opts: &RestoreOptions,
    buf: &mut [u8],
) -> Result<Archive> {
    stream::restore_stream_from(
        &mut reader,
        "the stream",
        opts,
        None,
        BlockFrom::Caller(buf),
    )
}

/// Where a restore's block comes from.
pub(crate) enum BlockFrom<'m> {
    /// The library's own huge-page block.
    Own,
    /// A caller's memory, given up front.
    Caller(&'m mut [u8]),
    /// Memory from a caller's allocator, asked for once the plan knows the length; the
    /// archive releases it.
    Allocator(&'m mut dyn FnMut(usize) -> Result<CallerBlock>),
}

impl BlockFrom<'_> {
    /// The same memory, for one more attempt (a directory archive read again).
    fn reborrow(&mut self) -> BlockFrom<'_> {
        match self {
            BlockFrom::Own => BlockFrom::Own,
            BlockFrom::Caller(buf) => BlockFrom::Caller(buf),
            BlockFrom::Allocator(alloc) => BlockFrom::Allocator(*alloc),
        }
    }
}

/// The one restore: open the source, plan, fill `memory`.
pub(crate) fn restore_from(
    source: Source<'_>,
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
    memory: BlockFrom<'_>,
) -> Result<Archive> {
    match source {
        Source::Memory(bytes) => {
            let shown = "<memory>";
            let index = index::read_index(Cursor::new(bytes), shown, opts.max_members)?;
            let memory_src = Memory(bytes);
            let reader = Reader::new(
                &memory_src,
                bytes.len() as u64,
                Some(index.central_start),
                shown,
                opts,
            );
            finish(&reader, &index.members, None, None, progress, memory)
        }
        Source::File(file) => {
            let shown = crate::dest::fd_name(file);
            if crate::dest::is_seekable(file) {
                restore_file(file, &shown, opts, progress, memory)
            } else {
                let mut reader = crate::dest::sequential::Sequential(file);
                stream::restore_stream_from(&mut reader, &shown, opts, progress, memory)
            }
        }
        Source::Path(path) if path.is_dir() => restore_dir(&path, opts, progress, memory),
        Source::Path(path) => {
            let (file, shown) = open_archive(&path)?;
            restore_file(&file, &shown, opts, progress, memory)
        }
    }
}

/// Opens the archive at `path` as given; only when nothing exists there and the name lacks
/// `.npz`, `path` + `.npz` (as `numpy.savez` names files). Refuses anything but a regular file
/// or a block device before reading: a FIFO would block, a character device never ends.
fn open_archive(path: &Path) -> Result<(File, String)> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let given_exists = std::fs::symlink_metadata(path).is_ok();
    let path: Cow<'_, Path> =
        if given_exists || path.as_os_str().as_encoded_bytes().ends_with(b".npz") {
            Cow::Borrowed(path)
        } else {
            match npz::npz_path(path) {
                with_npz if with_npz.exists() => Cow::Owned(with_npz),
                _ => Cow::Borrowed(path),
            }
        };
    let shown = path.display().to_string();
    // O_NONBLOCK: opening a FIFO without a writer must not hang; reads of regular files and
    // block devices are not affected by it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
    let kind = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?
        .file_type();
    if !(kind.is_file() || kind.is_block_device()) {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else {
            "not a regular file"
        };
        return Err(Error::invalid_arg(format!(
            "{shown} is {what}: only regular files (and block devices) are restored from a \
             path; stream it instead"
        )));
    }
    Ok((file, shown))
}

/// Restores the archive in an open `file`, named `shown` in messages.
fn restore_file(
    file: &File,
    shown: &str,
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
    memory: BlockFrom<'_>,
) -> Result<Archive> {
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?
        .len();
    // Positional reads (a `&File` seeks, so a duplicate of the descriptor keeps the caller's
    // offset); unbuffered: the index reads the end records and the directory in a few reads.
    let positional = PositionalReader { file, at: 0 };
    let index = index::read_index(positional, shown, opts.max_members)?;
    let map = if opts.mmap && !opts.metadata_only && matches!(memory, BlockFrom::Own) {
        Some(FileMap::new(file, file_len).map_err(|e| e.context(shown))?)
    } else {
        None
    };
    let reader = Reader::new(file, file_len, Some(index.central_start), shown, opts);
    finish(&reader, &index.members, map, None, progress, memory)
}

/// `Read + Seek` over a file with positional reads: the file's own offset never moves (the
/// caller's descriptor is left as it was).
struct PositionalReader<'f> {
    file: &'f File,
    at: u64,
}

impl std::io::Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for PositionalReader<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        use std::io::SeekFrom;
        let len = self.file.metadata()?.len();
        let to = match pos {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.at.checked_add_signed(d),
        };
        self.at = to.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        Ok(self.at)
    }
}

/// A directory archive: its index lists the members (see [`npy_dir::read_consistently`]); each
/// is read from its own file through the same plan, fill and CRC machinery.
fn restore_dir(
    dir: &Path,
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
    memory: BlockFrom<'_>,
) -> Result<Archive> {
    let shown = dir.display().to_string();
    let nothing = Memory(&[]);
    let reader = Reader::new(&nothing, 0, None, &shown, opts);
    let (mut progress, mut memory) = (progress, memory);
    // Again if a save replaced the index meanwhile (files may be of another version).
    npy_dir::read_consistently(dir, |members| {
        if members.len() as u64 > opts.max_members {
            return Err(Error::limit(format!(
                "{shown}: {} arrays exceed the limit of {}",
                members.len(),
                opts.max_members
            )));
        }
        finish(
            &reader,
            members,
            None,
            Some(dir),
            progress.as_deref_mut(),
            memory.reborrow(),
        )
    })?
    .ok_or_else(|| {
        Error::format(format!(
            "{shown} is a directory without {}: not a psv archive",
            npy_dir::INDEX_NAME
        ))
    })
}

/// Plans the restore of `members`, then fills the block (unless metadata only) in `memory`.
fn finish(
    reader: &Reader<'_>,
    members: &[index::MemberInfo],
    map: Option<FileMap>,
    dir: Option<&Path>,
    progress: Option<&mut ProgressFn<'_>>,
    memory: BlockFrom<'_>,
) -> Result<Archive> {
    let pool = pool::get(reader.opts.threads)?;
    // Caller memory is sized from a metadata-only plan, which is packed: so is this one.
    let own = matches!(memory, BlockFrom::Own);
    let mut plan = reader.plan(&pool, members, map.as_ref(), dir, own)?;
    let required = plan.block_len;
    if reader.opts.metadata_only {
        return Ok(Archive::new(
            Storage::listing()?,
            plan.arrays,
            plan.skipped,
            required,
        ));
    }
    let storage = match memory {
        BlockFrom::Own => {
            let mut block = match plan.staged.take() {
                Some(image) if image.len() == plan.block_len => image,
                Some(image) => {
                    // Arrays not aligned in the image go after it (never in files psv
                    // writes): the block is allocated now that its length is known, and the
                    // image copied in.
                    let mut block = AnonMap::new(plan.block_len)?;
                    block.as_mut_slice()[..image.len()].copy_from_slice(image.as_slice());
                    block
                }
                None => AnonMap::new(plan.block_len)?,
            };
            reader.fill(&pool, &mut plan, members, block.as_mut_slice(), progress)?;
            match map {
                Some(map) => Storage::Mapped { map, block },
                None => Storage::Block(block),
            }
        }
        BlockFrom::Caller(buf) => {
            let dest = caller_block(buf, required)?;
            let addr = dest.as_ptr() as usize;
            reader.fill(&pool, &mut plan, members, dest, progress)?;
            Storage::Borrowed {
                addr,
                len: required,
            }
        }
        BlockFrom::Allocator(alloc) => {
            let mut block = alloc(required)?;
            if block.len() < required || block.as_ptr() as usize % memory::BLOCK_ALIGN != 0 {
                return Err(Error::invalid_arg(format!(
                    "the allocator gave {} bytes at {:p}; the restore needs {required} bytes \
                     at a 64-byte-aligned address",
                    block.len(),
                    block.as_ptr()
                )));
            }
            reader.fill(&pool, &mut plan, members, block.as_mut_slice(), progress)?;
            Storage::Allocated(block)
        }
    };
    Ok(Archive::new(storage, plan.arrays, plan.skipped, required))
}

/// The first `required` bytes of a caller's buffer, which must be 64-byte aligned.
fn caller_block(buf: &mut [u8], required: usize) -> Result<&mut [u8]> {
    if buf.as_ptr() as usize % memory::BLOCK_ALIGN != 0 {
        return Err(Error::invalid_arg(format!(
            "the buffer at {:p} is not 64-byte aligned",
            buf.as_ptr()
        )));
    }
    let len = buf.len();
    buf.get_mut(..required).ok_or_else(|| {
        Error::invalid_arg(format!(
            "the buffer holds {len} bytes; the arrays need {required} (see required_bytes)"
        ))
    })
}
