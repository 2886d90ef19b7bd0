//! Where the archive's bytes come from: a file (positional reads) or a caller's buffer.

use super::*;

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
