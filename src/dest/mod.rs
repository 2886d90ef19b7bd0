//! Where a save's bytes go. A destination puts bytes at file offsets; a target turns the
//! written bytes into the user's file (or does nothing, for a caller's own file or memory).
//! Neither knows anything of ZIP: the save plans every offset, then writes through them.
//!
//! - [`Destination`]: positional writes (`pwrite` for a file).
//! - [`PathTarget`]: a temporary file beside the target, reserved to its final length, renamed
//!   over the target on commit and removed if the save fails (see [`tempfile`]).
//! - [`aligned_pieces`]: how a large array's bytes are cut into writes.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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

/// Positional writes into an open file, named `shown` in error messages.
pub(crate) struct FileDestination<'f> {
    file: &'f File,
    shown: &'f str,
}

impl<'f> FileDestination<'f> {
    /// Writes go to `file`; messages name it `shown`.
    pub(crate) fn new(file: &'f File, shown: &'f str) -> Self {
        FileDestination { file, shown }
    }
}

impl Destination for FileDestination<'_> {
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io(format!("cannot write {} at offset {offset}", self.shown), e))
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
        })
    }

    /// Positional writes into the temporary file.
    pub(crate) fn destination(&self) -> FileDestination<'_> {
        FileDestination::new(&self.tmp.file, &self.shown)
    }

    /// Makes the written file the target: fsync (when asked), atomic rename, directory fsync
    /// (when asked).
    pub(crate) fn commit(self, fsync: bool) -> Result<()> {
        self.tmp.commit(&self.target, fsync)
    }
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
