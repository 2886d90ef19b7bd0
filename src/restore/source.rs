//! Where the archive's bytes come from (a file or a caller's buffer, read positionally), and the
//! [`Reader`]: a source with what every phase needs to read and report from it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::npz::index::MemberInfo;
use crate::options::RestoreOptions;

/// Where the archive's bytes come from: a file (positional reads) or a caller's buffer.
pub(super) trait Source: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

/// Reads exactly `buf.len()` bytes at `offset` from `src`; running past the end is a format
/// error (the file is shorter than its records say), anything else an I/O error.
pub(super) fn read_exact(src: &dyn Source, buf: &mut [u8], offset: u64) -> Result<()> {
    src.read_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::format(format!(
                "file ends before offset {}",
                offset + buf.len() as u64
            ))
        } else {
            Error::io(format!("cannot read at offset {offset}"), e)
        }
    })
}

/// A caller's in-memory archive.
pub(super) struct Memory<'a>(pub(super) &'a [u8]);

impl Source for Memory<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// One restore's input: the source, its length, where its central directory starts, its name
/// for messages, and the options.
pub(super) struct Reader<'r> {
    pub(super) src: &'r (dyn Source + 'r),
    pub(super) file_len: u64,
    /// Where the central directory starts (zip archives): member data must end before it.
    pub(super) central_start: Option<u64>,
    pub(super) shown: &'r str,
    pub(super) opts: &'r RestoreOptions,
}

impl<'r> Reader<'r> {
    /// A reader of `src` (`file_len` bytes), named `shown` in messages.
    pub(super) fn new(
        src: &'r (dyn Source + 'r),
        file_len: u64,
        central_start: Option<u64>,
        shown: &'r str,
        opts: &'r RestoreOptions,
    ) -> Self {
        Reader {
            src,
            file_len,
            central_start,
            shown,
            opts,
        }
    }

    /// `e` with the archive and member named in front.
    pub(super) fn in_member(&self, m: &MemberInfo, e: Error) -> Error {
        e.context(format!("{}: member {:?}", self.shown, m.name))
    }

    /// Reads exactly `buf.len()` bytes at `offset`; running past the end is a format error.
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        read_exact(self.src, buf, offset)
    }
}
