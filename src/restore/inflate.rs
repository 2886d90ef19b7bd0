//! Raw inflate of deflated members, straight into caller buffers.

use flate2::{Decompress, FlushDecompress, Status};

use super::source::Reader;
use crate::error::{Error, Result};

/// Compressed bytes read per `pread` while inflating.
pub(super) const INFLATE_INPUT_LEN: usize = 256 << 10;

impl Reader<'_> {
    /// An inflater over a member's `len` compressed bytes at `start`: from `memory` when phase A
    /// holds them all, else from the source.
    pub(super) fn inflater<'a>(
        &'a self,
        memory: Option<&'a [u8]>,
        start: u64,
        len: u64,
    ) -> Inflater<'a> {
        let (reader, memory, next) = match memory {
            // The whole stream is in memory: inflate straight from it, nothing left to read.
            Some(bytes) => (None, bytes, start.saturating_add(len)),
            None => (Some(self), &[][..], start),
        };
        Inflater {
            reader,
            memory,
            buffer: Vec::new(),
            next,
            end: start.saturating_add(len),
            in_pos: 0,
            z: Decompress::new(false),
            ended: false,
        }
    }
}

/// Raw-deflate reader over a byte range, inflating straight into caller buffers. Its input is
/// either a phase-A region already in memory (used in place) or read from the archive's source
/// in pieces of `INFLATE_INPUT_LEN` into `buffer`.
pub(super) struct Inflater<'a> {
    /// Where to read more compressed bytes; `None` when the whole stream is `memory`.
    pub(super) reader: Option<&'a Reader<'a>>,
    pub(super) memory: &'a [u8],
    pub(super) buffer: Vec<u8>,
    /// Next file offset to read (equal to `end` once everything has been read).
    pub(super) next: u64,
    pub(super) end: u64,
    /// Position in the current input (`memory` or `buffer`).
    pub(super) in_pos: usize,
    pub(super) z: Decompress,
    pub(super) ended: bool,
}

impl Inflater<'_> {
    /// Fills `out`; returns fewer bytes only if the deflate stream ended first.
    pub(super) fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        let mut written = 0;
        while written < out.len() && !self.ended {
            if let Some(reader) = self.reader {
                if self.in_pos == self.buffer.len() && self.next < self.end {
                    let n = (self.end - self.next).min(INFLATE_INPUT_LEN as u64) as usize;
                    self.buffer.resize(n, 0);
                    reader.read_at(&mut self.buffer, self.next)?;
                    self.next += n as u64;
                    self.in_pos = 0;
                }
            }
            let input: &[u8] = if self.reader.is_some() {
                &self.buffer
            } else {
                self.memory
            };
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(
                    &input[self.in_pos..],
                    &mut out[written..],
                    FlushDecompress::None,
                )
                .map_err(|e| Error::format(format!("corrupt deflate stream: {e}")))?;
            let consumed = (self.z.total_in() - before_in) as usize;
            let produced = (self.z.total_out() - before_out) as usize;
            self.in_pos += consumed;
            written += produced;
            if status == Status::StreamEnd {
                self.ended = true;
            } else if consumed == 0 && produced == 0 {
                let input_exhausted = self.in_pos == input.len() && self.next >= self.end;
                return Err(Error::format(if input_exhausted {
                    "truncated: the deflate stream ends early".to_string()
                } else {
                    "corrupt deflate stream (no progress)".to_string()
                }));
            }
        }
        Ok(written)
    }

    /// Checks that the stream ends exactly here (after `size` bytes of output).
    pub(super) fn expect_end(&mut self, size: u64) -> Result<()> {
        if self.ended {
            return Ok(());
        }
        let mut probe = [0u8; 1];
        match self.read(&mut probe) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Error::format(format!(
                "the member inflates to more than its declared size {size}"
            ))),
            Err(e) => Err(e),
        }
    }
}
