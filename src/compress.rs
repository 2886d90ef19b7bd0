//! Parallel deflate, as pigz does it: a payload is cut into segments that are compressed
//! independently; every segment but the last ends with a full flush (byte-aligned, no BFINAL),
//! so the segments concatenate into one valid raw deflate stream that any inflater reads.
//! ("Segment", not "block": the block is the restore's one memory region.)

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::error::{Error, Result};

/// Uncompressed bytes per independently compressed segment.
pub const SEGMENT_LEN: usize = 1 << 20;

/// Deflates `pieces` (concatenated) as one segment of a larger stream at `level` (1-9).
/// `last` ends the stream (BFINAL); otherwise the segment ends with a full flush.
pub fn deflate_segment(level: u32, pieces: &[&[u8]], last: bool) -> Result<Vec<u8>> {
    let mut z = Compress::new(Compression::new(level), false);
    let input_len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut out = Vec::new();
    out.try_reserve(input_len / 2 + 4096)
        .map_err(|_| Error::nomem("cannot allocate a compression buffer"))?;
    let grow = |out: &mut Vec<u8>| -> Result<()> {
        if out.capacity() - out.len() < 4096 {
            out.try_reserve(out.capacity().max(64 << 10))
                .map_err(|_| Error::nomem("cannot allocate a compression buffer"))?;
        }
        Ok(())
    };
    for piece in pieces {
        let start = z.total_in();
        while ((z.total_in() - start) as usize) < piece.len() {
            grow(&mut out)?;
            let done = (z.total_in() - start) as usize;
            z.compress_vec(&piece[done..], &mut out, FlushCompress::None)
                .map_err(|e| Error::format(format!("deflate failed: {e}")))?;
        }
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Full
    };
    loop {
        grow(&mut out)?;
        let status = z
            .compress_vec(&[], &mut out, flush)
            .map_err(|e| Error::format(format!("deflate failed: {e}")))?;
        let finished = if last {
            status == Status::StreamEnd
        } else {
            // As in zlib: a flush is complete when it returns with output space to spare.
            out.capacity() > out.len()
        };
        if finished {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    #[test]
    fn concatenated_segments_inflate_to_the_input() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let header = b"header bytes";
        let mut stream = deflate_segment(6, &[header, &data[..1_000_000]], false).unwrap();
        stream.extend(deflate_segment(6, &[&data[1_000_000..2_000_000]], false).unwrap());
        stream.extend(deflate_segment(6, &[&data[2_000_000..]], true).unwrap());
        let mut out = vec![0u8; header.len() + data.len() + 10];
        let mut z = Decompress::new(false);
        let status = z
            .decompress(&stream, &mut out, FlushDecompress::Finish)
            .unwrap();
        assert_eq!(status, Status::StreamEnd);
        assert_eq!(z.total_out() as usize, header.len() + data.len());
        assert_eq!(&out[..header.len()], header);
        assert_eq!(&out[header.len()..header.len() + data.len()], &data[..]);
        assert!(stream.len() < data.len() / 2);
    }

    #[test]
    fn empty_final_segment() {
        let s = deflate_segment(1, &[], true).unwrap();
        let mut out = [0u8; 4];
        let mut z = Decompress::new(false);
        assert_eq!(
            z.decompress(&s, &mut out, FlushDecompress::Finish).unwrap(),
            Status::StreamEnd
        );
        assert_eq!(z.total_out(), 0);
    }
}
