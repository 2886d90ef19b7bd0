//! Where a save's bytes go. A destination puts bytes at file offsets; a target turns the
//! written bytes into the user's file (or does nothing, for a caller's own file or memory).
//! Neither knows anything of ZIP: the save plans every offset, then writes through them.
//!
//! - [`Destination`]: positional writes (`pwrite` for a file, a copy for memory).
//! - [`PathTarget`]: a temporary file beside the target, reserved to its final length, renamed
//!   over the target on commit and removed if the save fails (see [`tempfile`]).
//! - [`FileTarget`]: a caller's open, seekable file, written from its current offset on.
//! - [`MemoryTarget`]: a caller's buffer.
//! - [`aligned_pieces`]: how a large array's bytes are cut into writes.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crc32fast::Hasher;

use crate::error::{Error, Result};

pub(crate) mod sequential;
pub(crate) mod tempfile;

use tempfile::TempFile;

/// Large arrays are written in pieces of this size, each ending on a multiple of it in the
/// file, so the page cache fills whole 2 MiB folios, and small enough that a piece the save
/// just CRC'd is still in cache when it is written. Not smaller: 1 MiB writes ask for 1 MiB
/// folios, which freshly freed 2 MiB pages do not serve (README, "Performance notes").
pub const WRITE_PIECE_LEN: usize = 2 << 20;

/// Arrays with at most this many bytes of data are written whole, with their headers, in one
/// write (packed with their neighbours in the `.npz` save).
pub(crate) const SMALL_ARRAY_LEN: usize = 64 << 10;

/// Something a save writes its bytes into, at offsets the plan chose. Writes of different
/// ranges may come from several threads at once.
pub(crate) trait Destination: Sync {
    /// Writes all of `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()>;

    /// Writes all of `bytes` at `offset` and adds them to `crc`. By default it hashes, then
    /// writes (a file write is a syscall per piece: pieces stay large); memory destinations
    /// hash and copy in cache-sized steps, so each byte comes from RAM once.
    fn write_hashed(&self, bytes: &[u8], offset: u64, crc: &mut Hasher) -> Result<()> {
        crc.update(bytes);
        self.write_at(bytes, offset)
    }
}

/// Where a save's bytes go and how they become the user's file: a [`Destination`] to write
/// through, and (each implementation's own) commit or abort. Implemented by [`PathTarget`].
pub(crate) trait Target {
    /// The destination writes go through.
    type Dest<'t>: Destination
    where
        Self: 't;
    /// Positional writes into the target.
    fn destination(&self) -> Self::Dest<'_>;
}

impl Target for PathTarget {
    type Dest<'t> = FileDestination<'t>;
    fn destination(&self) -> Self::Dest<'_> {
        PathTarget::destination(self)
    }
}

/// Positional writes into an open file, archive offset `o` at file offset `base + o`, named
/// `shown` in error messages.
pub(crate) struct FileDestination<'f> {
    file: &'f File,
    base: u64,
    shown: &'f str,
    /// Start the disk write of every large write at once (see [`start_writeback`]).
    writeback: bool,
}

impl<'f> FileDestination<'f> {
    /// Writes go to `file` from file offset `base` on; messages name it `shown`.
    pub(crate) fn new(file: &'f File, base: u64, shown: &'f str) -> Self {
        FileDestination {
            file,
            base,
            shown,
            writeback: false,
        }
    }

    /// When `on` (a durable save), each write of at least [`WRITEBACK_MIN_LEN`] bytes starts
    /// going to disk as soon as it is in the page cache, so the final fsync waits only for the
    /// last pieces instead of for the whole file.
    pub(crate) fn with_writeback(mut self, on: bool) -> Self {
        self.writeback = on;
        self
    }
}

/// Smallest write whose disk write [`FileDestination::with_writeback`] starts at once (smaller
/// ones are left to the final fsync, which writes them with their neighbours).
pub(crate) const WRITEBACK_MIN_LEN: usize = 256 << 10;

/// Asks the kernel to start writing `len` bytes of `file` at `offset` to disk now, without
/// waiting for them (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A hint: a failure is ignored,
/// as the fsync that follows reports any real error.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads and writes no memory of ours; the descriptor is open for
    // the whole call (`file` is borrowed).
    #[allow(unsafe_code)]
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Elsewhere the final fsync writes everything.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: usize) {}

impl Destination for FileDestination<'_> {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        let at = self.base.checked_add(offset).ok_or_else(|| {
            Error::overflow(format!("{}: file offset overflows 64 bits", self.shown))
        })?;
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| Error::io(format!("cannot write {} at offset {at}", self.shown), e))?;
        if self.writeback && bytes.len() >= WRITEBACK_MIN_LEN {
            start_writeback(self.file, at, bytes.len());
        }
        Ok(())
    }
}

/// A save into a caller's open file (a regular file or a block device) from its current offset
/// `base` on: the archive's bytes go to `base .. base + len`, reserved first where the
/// filesystem can. The caller keeps the file; [`FileTarget::commit`] leaves its offset at the
/// end of the archive (and fsyncs it when asked). Bytes the file held past the archive stay.
pub(crate) struct FileTarget<'f> {
    file: &'f File,
    base: u64,
    len: u64,
    shown: String,
    /// The destination starts disk writes early (a durable save).
    writeback: bool,
}

impl<'f> FileTarget<'f> {
    /// Prepares `len` bytes of `file` from its current offset on; `shown` names it in messages.
    pub(crate) fn create(file: &'f File, len: u64, shown: String) -> Result<FileTarget<'f>> {
        use std::io::Seek;
        let base = (&mut &*file)
            .stream_position()
            .map_err(|e| Error::io(format!("cannot tell the offset of {shown}"), e))?;
        let end = base
            .checked_add(len)
            .ok_or_else(|| Error::overflow(format!("{shown}: the archive ends past 2^64")))?;
        let is_file = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?
            .file_type()
            .is_file();
        // Only regular files can be reserved (and grown); a full disk is reported before any
        // data is written. A block device has its size already.
        if is_file && end > 0 {
            tempfile::reserve(file, base, len)
                .map_err(|e| Error::io(format!("cannot reserve {len} bytes in {shown}"), e))?;
        }
        Ok(FileTarget {
            file,
            base,
            len,
            shown,
            writeback: false,
        })
    }

    /// Makes the destination start disk writes early ([`FileDestination::with_writeback`]):
    /// for a save that will be fsync'd.
    pub(crate) fn with_writeback(mut self, on: bool) -> Self {
        self.writeback = on;
        self
    }

    /// Positional writes from the file's starting offset on.
    pub(crate) fn destination(&self) -> FileDestination<'_> {
        FileDestination::new(self.file, self.base, &self.shown).with_writeback(self.writeback)
    }

    /// fsyncs when asked and leaves the file offset at the end of the archive; returns the
    /// archive's length.
    pub(crate) fn commit(self, fsync: bool) -> Result<u64> {
        use std::io::{Seek, SeekFrom};
        if fsync {
            self.file
                .sync_all()
                .map_err(|e| Error::io(format!("cannot fsync {}", self.shown), e))?;
        }
        (&mut &*self.file)
            .seek(SeekFrom::Start(self.base + self.len))
            .map_err(|e| Error::io(format!("cannot seek in {}", self.shown), e))?;
        Ok(self.len)
    }
}

impl Target for FileTarget<'_> {
    type Dest<'t>
        = FileDestination<'t>
    where
        Self: 't;
    fn destination(&self) -> Self::Dest<'_> {
        FileTarget::destination(self)
    }
}

/// A save into a caller's buffer: the archive's bytes at the buffer's start.
pub(crate) struct MemoryTarget<'b> {
    ptr: *mut u8,
    len: usize,
    _buffer: std::marker::PhantomData<&'b mut [u8]>,
}

// SAFETY: the target only hands out positional writes into disjoint ranges (see
// `Destination for MemoryTarget`); the buffer is exclusively borrowed for 'b.
#[allow(unsafe_code)]
unsafe impl Send for MemoryTarget<'_> {}
// SAFETY: as above: concurrent writes touch disjoint ranges, and nothing reads the buffer
// through the target.
#[allow(unsafe_code)]
unsafe impl Sync for MemoryTarget<'_> {}

impl<'b> MemoryTarget<'b> {
    /// Writes go into `buf`, which must hold `len` bytes (the archive's length).
    pub(crate) fn new(buf: &'b mut [u8], len: u64) -> Result<MemoryTarget<'b>> {
        if (buf.len() as u64) < len {
            return Err(Error::invalid_arg(format!(
                "the buffer holds {} bytes; the archive needs {len}",
                buf.len()
            )));
        }
        Ok(MemoryTarget {
            ptr: buf.as_mut_ptr(),
            len: len as usize,
            _buffer: std::marker::PhantomData,
        })
    }

    /// The archive's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Destination for MemoryTarget<'_> {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        let start = usize::try_from(offset).ok();
        let end = start.and_then(|s| s.checked_add(bytes.len()));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(Error::overflow("buffer offset overflows"));
        };
        if end > self.len {
            return Err(Error::invalid_arg(format!(
                "a write of {} bytes at {start} runs past the archive's {} bytes",
                bytes.len(),
                self.len
            )));
        }
        // SAFETY: `start..end` lies inside the buffer (checked above), which is exclusively
        // borrowed for the target's lifetime. Every byte of a planned archive is written exactly
        // once (members, then their headers, then the records, at the plan's disjoint offsets),
        // so concurrent calls never touch the same bytes; `bytes` cannot alias the buffer (it
        // is caller data or a header built by the writer, and the buffer is `&mut`).
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(start), bytes.len());
        }
        Ok(())
    }

    fn write_hashed(&self, bytes: &[u8], offset: u64, crc: &mut Hasher) -> Result<()> {
        // Copy a step, then hash it while it is still in the core's cache: one read of the
        // caller's array from RAM instead of two. The copy streams at memory speed; the hash
        // of cached bytes costs little beside it.
        let mut at = offset;
        for step in bytes.chunks(HASH_COPY_STEP) {
            self.write_at(step, at)?;
            crc.update(step);
            at += step.len() as u64;
        }
        Ok(())
    }
}

/// How much a memory destination copies before hashing it: well inside a core's L2 cache.
const HASH_COPY_STEP: usize = 128 << 10;

impl Target for MemoryTarget<'_> {
    type Dest<'t>
        = &'t MemoryTarget<'t>
    where
        Self: 't;
    fn destination(&self) -> Self::Dest<'_> {
        self
    }
}

/// A shared reference writes where its target does (targets that are their own destination
/// hand out `&self`).
impl<D: Destination + ?Sized> Destination for &D {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        (**self).write_at(bytes, offset)
    }

    fn write_hashed(&self, bytes: &[u8], offset: u64, crc: &mut Hasher) -> Result<()> {
        (**self).write_hashed(bytes, offset, crc)
    }
}

/// A save to a path: a temporary file beside `target`, its disk space reserved for the whole
/// archive, renamed over `target` by [`PathTarget::commit`]. Dropped uncommitted (an error, a
/// cancel, a panic), it removes the temporary file: the old target is untouched.
pub(crate) struct PathTarget {
    tmp: TempFile,
    target: PathBuf,
    /// The target's name for messages.
    shown: String,
    /// The destination starts disk writes early (a durable save).
    writeback: bool,
}

impl PathTarget {
    /// Creates the temporary file for `target` and reserves `len` bytes in it.
    pub(crate) fn create(target: &Path, len: u64) -> Result<PathTarget> {
        let tmp = TempFile::create(target)?;
        tmp.preallocate(len)?;
        Ok(PathTarget {
            tmp,
            target: target.to_path_buf(),
            shown: target.display().to_string(),
            writeback: false,
        })
    }

    /// Makes the destination start disk writes early ([`FileDestination::with_writeback`]):
    /// for a save that will be fsync'd.
    pub(crate) fn with_writeback(mut self, on: bool) -> Self {
        self.writeback = on;
        self
    }

    /// Positional writes into the temporary file.
    pub(crate) fn destination(&self) -> FileDestination<'_> {
        FileDestination::new(&self.tmp.file, 0, &self.shown).with_writeback(self.writeback)
    }

    /// Makes the written file the target: fsync (when asked), atomic rename, directory fsync
    /// (when asked).
    pub(crate) fn commit(self, fsync: bool) -> Result<()> {
        self.tmp.commit(&self.target, fsync)
    }
}

/// True for a file that takes positional writes (a regular file or a block device); pipes,
/// sockets and character devices take bytes in order.
pub(crate) fn is_seekable(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let kind = meta.file_type();
    (kind.is_file() || kind.is_block_device())
        && std::io::Seek::stream_position(&mut &*file).is_ok()
}

/// How messages name a caller's file: `fd N`.
pub(crate) fn fd_name(file: &std::fs::File) -> String {
    use std::os::fd::AsRawFd;
    format!("fd {}", file.as_raw_fd())
}

/// How to write `len` bytes that start at file offset `start`: ranges of them, in order, each
/// ending where the file offset is a multiple of [`WRITE_PIECE_LEN`] (or at the end), so that
/// pieces fill whole page-cache folios.
pub(crate) fn aligned_pieces(start: u64, len: usize) -> impl Iterator<Item = Range<usize>> {
    let piece = WRITE_PIECE_LEN as u64;
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let offset = start + done as u64;
        let end = done + ((offset / piece + 1) * piece - offset).min((len - done) as u64) as usize;
        let range = done..end;
        done = end;
        Some(range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_pieces_cover_the_data_and_end_on_piece_boundaries() {
        let piece = WRITE_PIECE_LEN as u64;
        for (start, len) in [
            (0u64, 0usize),
            (192, 10),
            (192, 3 << 20),
            (0, 2 << 20),
            (piece - 1, 5),
        ] {
            let pieces: Vec<Range<usize>> = aligned_pieces(start, len).collect();
            let mut next = 0;
            for (k, p) in pieces.iter().enumerate() {
                assert_eq!(p.start, next, "{start} {len}: pieces are contiguous");
                assert!(!p.is_empty() && p.len() <= WRITE_PIECE_LEN);
                if k + 1 < pieces.len() {
                    assert_eq!(
                        (start + p.end as u64) % piece,
                        0,
                        "{start} {len}: aligned end"
                    );
                }
                next = p.end;
            }
            assert_eq!(next, len, "{start} {len}: every byte once");
        }
    }
}
