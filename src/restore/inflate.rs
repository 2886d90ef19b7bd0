//! Decompression of compressed members, straight into caller buffers: raw deflate (what
//! `numpy.savez_compressed` writes), and what other ZIP writers use and `numpy.load` (or 7-Zip)
//! reads: bzip2 (method 12), LZMA (method 14) and Deflate64 (method 9). All four decoders are
//! pure Rust. Every member is one stream, decoded by one task; members are decoded in parallel.
//!
//! The bounds are the same for every method: a decoder is asked for at most the member's
//! declared size (the array into its place in the block, the rest in small pieces for the
//! CRC), and [`Inflater::expect_end`] makes a stream that would produce more an error.

use std::io::{BufRead, Read};

use flate2::{Decompress, FlushDecompress, Status};

use super::source::Reader;
use crate::error::{Error, Result};
use crate::npz::index::Method;

/// Compressed bytes read per `pread` while inflating.
pub(super) const INFLATE_INPUT_LEN: usize = 256 << 10;

impl Reader<'_> {
    /// A decoder of `method` over a member's `len` compressed bytes at `start`, which declares
    /// `size` bytes once decoded: from `memory` when phase A holds them all, else from the
    /// source.
    ///
    /// # Errors
    /// `Format` when an LZMA member's properties header is missing or invalid; `Unsupported`
    /// for a stored member (nothing to decode).
    pub(super) fn inflater<'a>(
        &'a self,
        method: Method,
        memory: Option<&'a [u8]>,
        start: u64,
        len: u64,
        size: u64,
    ) -> Result<Inflater<'a>> {
        let (reader, memory, next) = match memory {
            // The whole stream is in memory: decode straight from it, nothing left to read.
            Some(bytes) => (None, bytes, start.saturating_add(len)),
            None => (Some(self), &[][..], start),
        };
        let input = Input {
            reader,
            memory,
            buffer: Vec::new(),
            next,
            end: start.saturating_add(len),
            in_pos: 0,
            stream: None,
            stream_ended: false,
        };
        Inflater::over(method, input, size)
    }
}

/// A sequential source of compressed bytes (a stream restore's input, bounded to one member):
/// what it has buffered, and how much of it was used.
pub(super) trait Feed {
    /// The bytes at hand, read from the source first if none are (empty: no more).
    fn fill(&mut self) -> Result<&[u8]>;
    /// Marks the first `n` bytes at hand as used.
    fn consume(&mut self, n: usize);
}

impl<'a> Inflater<'a> {
    /// A decoder of `method` over the bytes of `feed` (a stream), which decode to `size`
    /// bytes (or an unknown size for deflate, which ends itself: `u64::MAX`).
    ///
    /// # Errors
    /// As [`Reader::inflater`].
    pub(super) fn over_feed(
        method: Method,
        feed: &'a mut (dyn Feed + 'a),
        size: u64,
    ) -> Result<Inflater<'a>> {
        let input = Input {
            reader: None,
            memory: &[],
            buffer: Vec::new(),
            next: 0,
            end: 0,
            in_pos: 0,
            stream: Some(feed),
            stream_ended: false,
        };
        Inflater::over(method, input, size)
    }

    /// A decoder of `method` reading `input`.
    fn over(method: Method, input: Input<'a>, size: u64) -> Result<Inflater<'a>> {
        let codec = match method {
            Method::Deflated => Codec::Deflate {
                input: Box::new(input),
                z: Decompress::new(false),
            },
            Method::Bzip2 => Codec::Stream {
                decoder: Box::new(bzip2::bufread::BzDecoder::new(input)),
                what: "bzip2",
            },
            Method::Deflate64 => Codec::Stream {
                decoder: Box::new(deflate64::Deflate64Decoder::with_buffer(input)),
                what: "Deflate64",
            },
            Method::Lzma => Codec::Stream {
                decoder: Box::new(lzma_reader(input, size)?),
                what: "LZMA",
            },
            Method::Stored => {
                return Err(Error::unsupported("a stored member has nothing to decode"))
            }
        };
        Ok(Inflater {
            codec,
            ended: false,
            name: method.name(),
        })
    }
}

/// An LZMA member's decoder. The payload starts with a 4-byte header (the LZMA SDK version, 2
/// bytes, and the properties' length, 2 bytes: 5) and the 5 properties bytes (lc/lp/pb, then the
/// dictionary size), then the raw LZMA stream, with or without an end marker (ZIP flag bit 1):
/// the decoder stops at the declared size either way.
fn lzma_reader(mut input: Input<'_>, size: u64) -> Result<lzma_rust2::LzmaReader<Input<'_>>> {
    let mut head = [0u8; 9];
    input
        .read_exact(&mut head)
        .map_err(|e| stream_error(e, "LZMA"))?;
    let props_len = u16::from_le_bytes([head[2], head[3]]);
    if props_len != 5 {
        return Err(Error::format(format!(
            "LZMA member: properties of {props_len} bytes (5 expected)"
        )));
    }
    let dict_size = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
    // The decoder allocates its dictionary at once: never more than the member's size (it
    // clamps to that itself), and the allocation is tried fallibly first.
    let dict = u64::from(dict_size.max(lzma_rust2::DICT_SIZE_MIN)).min(size.max(4096));
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(dict as usize).map_err(|_| {
        Error::nomem(format!(
            "LZMA member: cannot allocate its {dict}-byte dictionary"
        ))
    })?;
    drop(probe);
    lzma_rust2::LzmaReader::new_with_props(input, size, head[4], dict_size, None)
        .map_err(|e| Error::format(format!("LZMA member: bad properties: {e}")))
}

/// An error from a decoder's reads: the source's own error when it failed (wrapped by
/// [`Input`]), else corrupt data.
fn stream_error(e: std::io::Error, what: &str) -> Error {
    if let Some(ours) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        return ours.clone();
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return Error::format(format!("truncated: the {what} stream ends early"));
    }
    Error::format(format!("corrupt {what} stream: {e}"))
}

/// A member's compressed bytes: a phase-A region already in memory (used in place), or read
/// from the archive's source in pieces of [`INFLATE_INPUT_LEN`] into `buffer`.
pub(super) struct Input<'a> {
    /// Where to read more compressed bytes; `None` when the whole stream is `memory` (or
    /// comes from `stream`).
    reader: Option<&'a Reader<'a>>,
    memory: &'a [u8],
    buffer: Vec<u8>,
    /// Next file offset to read (equal to `end` once everything has been read).
    next: u64,
    end: u64,
    /// Position in the current input (`memory` or `buffer`).
    in_pos: usize,
    /// A sequential source instead (stream restore): the other fields are unused.
    stream: Option<&'a mut (dyn Feed + 'a)>,
    /// The sequential source had no more bytes.
    stream_ended: bool,
}

impl Input<'_> {
    /// The unread bytes at hand, read from the source first if none are left (empty at the
    /// end of the member).
    fn available(&mut self) -> Result<&[u8]> {
        if let Some(feed) = self.stream.as_mut() {
            let bytes = feed.fill()?;
            self.stream_ended = bytes.is_empty();
            return Ok(bytes);
        }
        if let Some(reader) = self.reader {
            if self.in_pos == self.buffer.len() && self.next < self.end {
                let n = (self.end - self.next).min(INFLATE_INPUT_LEN as u64) as usize;
                self.buffer.resize(n, 0);
                reader.read_at(&mut self.buffer, self.next)?;
                self.next += n as u64;
                self.in_pos = 0;
            }
            Ok(&self.buffer[self.in_pos..])
        } else {
            Ok(&self.memory[self.in_pos..])
        }
    }

    /// Whether every compressed byte has been used.
    fn exhausted(&self) -> bool {
        if self.stream.is_some() {
            return self.stream_ended;
        }
        let len = if self.reader.is_some() {
            self.buffer.len()
        } else {
            self.memory.len()
        };
        self.in_pos == len && self.next >= self.end
    }
}

impl Read for Input<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let bytes = self.fill_buf()?;
        let n = bytes.len().min(out.len());
        out[..n].copy_from_slice(&bytes[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Input<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.available().map_err(std::io::Error::other)
    }

    fn consume(&mut self, amt: usize) {
        match self.stream.as_mut() {
            Some(feed) => feed.consume(amt),
            None => self.in_pos += amt,
        }
    }
}

/// How a member's bytes are decoded.
enum Codec<'a> {
    /// Raw deflate through zlib-rs, fed from the input's buffer directly (boxed: the input is
    /// larger than the other variant).
    Deflate {
        input: Box<Input<'a>>,
        z: Decompress,
    },
    /// A decoder that reads its input itself (bzip2, LZMA, Deflate64).
    Stream {
        decoder: Box<dyn Read + 'a>,
        what: &'static str,
    },
}

/// Decoder of one compressed member over a byte range, writing straight into caller buffers.
pub(super) struct Inflater<'a> {
    codec: Codec<'a>,
    /// The stream has ended (no more output).
    ended: bool,
    /// The method's name, for messages.
    name: &'static str,
}

impl Inflater<'_> {
    /// Fills `out`; returns fewer bytes only if the stream ended first.
    pub(super) fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        match &mut self.codec {
            Codec::Deflate { input, z } => {
                let mut written = 0;
                while written < out.len() && !self.ended {
                    let bytes = input.available()?;
                    let (before_in, before_out) = (z.total_in(), z.total_out());
                    let status = z
                        .decompress(bytes, &mut out[written..], FlushDecompress::None)
                        .map_err(|e| Error::format(format!("corrupt deflate stream: {e}")))?;
                    let consumed = (z.total_in() - before_in) as usize;
                    let produced = (z.total_out() - before_out) as usize;
                    input.consume(consumed);
                    written += produced;
                    if status == Status::StreamEnd {
                        self.ended = true;
                    } else if consumed == 0 && produced == 0 {
                        return Err(Error::format(if input.exhausted() {
                            "truncated: the deflate stream ends early"
                        } else {
                            "corrupt deflate stream (no progress)"
                        }));
                    }
                }
                Ok(written)
            }
            Codec::Stream { decoder, what } => {
                let mut written = 0;
                while written < out.len() && !self.ended {
                    match decoder.read(&mut out[written..]) {
                        Ok(0) => self.ended = true,
                        Ok(n) => written += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(stream_error(e, what)),
                    }
                }
                Ok(written)
            }
        }
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
                "the member decodes to more than its declared size {size}"
            ))),
            Err(e) => Err(e),
        }
    }

    /// The method's name (`deflate`, `bzip2`, ...), for messages.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }
}
