//! A prepared save: the plan and every CRC-32 computed up front (in parallel), so that the
//! archive's bytes can be produced in any order without a file: any byte range on its own
//! (object-store multipart uploads: parts in any order, from any thread), or the whole archive
//! in file order (pipes, sockets, write callbacks). The bytes are exactly those of the path
//! save of the same arrays and options.

use std::time::{Duration, Instant};

use crc32fast::Hasher;
use rayon::prelude::*;

use super::deflated;
use super::{Member, Saver};
use crate::dest::WRITE_PIECE_LEN;
use crate::error::{Error, ErrorKind, Result};
use crate::npz::plan::{MemberPlan, Plan};
use crate::npz::records;
use crate::options::{Layout, SaveOptions};
use crate::pool;
use crate::progress::{self, ProgressFn};

/// Pieces up to this size are gathered into one write when streaming.
const GATHER_LEN: usize = 1 << 20;

/// A save whose plan and CRCs are known: renders any byte range of the archive, or streams
/// it whole. Borrows the saver (and so the arrays) for its lifetime.
pub struct Prepared<'s, 'a> {
    saver: &'s Saver<'a>,
    plan: Plan,
    crcs: Vec<u32>,
    /// Each member's deflate segments, in order (compressed saves).
    segments: Option<Vec<Vec<Vec<u8>>>>,
    /// The central directory and end records.
    records: Vec<u8>,
}

/// One run of the archive's bytes, in file order.
enum Piece<'p> {
    /// Bytes that live elsewhere (the caller's arrays, `.npy` headers, segments, records).
    Borrowed(&'p [u8]),
    /// A local header, built on demand.
    Built(Vec<u8>),
}

impl Piece<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Borrowed(b) => b,
            Piece::Built(v) => v,
        }
    }
}

impl<'s, 'a> Prepared<'s, 'a> {
    /// Plans the save of `saver`'s arrays with `opts` and computes every CRC-32 (compressed
    /// saves also compress every member); `progress` sees the bytes hashed or compressed.
    pub(super) fn new(
        saver: &'s Saver<'a>,
        opts: &SaveOptions,
        mut progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<Self> {
        if opts.layout != Layout::Npz {
            return Err(Error::invalid_arg(
                "only the .npz layout can be prepared, streamed or saved to memory",
            ));
        }
        super::check_compression(opts.compression)?;
        let pool = pool::get(opts.threads)?;
        let (plan, crcs, segments) = if opts.compression == 0 {
            let plan = super::plan(&saver.members, opts.alignment)?;
            let total: u64 = saver.members.iter().map(Member::payload_len).sum();
            let crcs = progress::run(&pool, total, progress.as_deref_mut(), |tracker| {
                stored_crcs(&saver.members, &saver.data, &|n| {
                    tracker.check()?;
                    tracker.advance(n);
                    Ok(())
                })
            })?;
            (plan, crcs, None)
        } else {
            let d = deflated::compress(
                &pool,
                &saver.members,
                &saver.data,
                opts.compression,
                opts.alignment,
                progress,
            )?;
            let (plan, crcs, segments) = d.into_parts();
            (plan, crcs, Some(segments))
        };
        let mut records = Vec::new();
        records
            .try_reserve_exact((plan.total_len - plan.central_offset) as usize)
            .map_err(|_| Error::nomem("cannot allocate the central directory"))?;
        for ((m, at), crc) in saver.members.iter().zip(&plan.members).zip(&crcs) {
            records::central_header(&mut records, &m.name, at, *crc);
        }
        records::end_records(&mut records, &plan);
        debug_assert_eq!(records.len() as u64, plan.total_len - plan.central_offset);
        Ok(Prepared {
            saver,
            plan,
            crcs,
            segments,
            records,
        })
    }

    /// The archive's length in bytes.
    pub fn len(&self) -> u64 {
        self.plan.total_len
    }

    /// True for an archive without arrays (it still has its end record: never zero bytes).
    pub fn is_empty(&self) -> bool {
        self.plan.members.is_empty()
    }

    /// Each member's CRC-32, in add order.
    pub fn crcs(&self) -> &[u32] {
        &self.crcs
    }

    /// Fills `out` with the archive's bytes from `offset` on. Any range inside the archive may
    /// be rendered, from any thread, in any order; concatenated they are the whole archive.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArg`] when `offset .. offset + out.len()` runs past [`Self::len`].
    pub fn render(&self, offset: u64, out: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&e| e <= self.plan.total_len)
            .ok_or_else(|| {
                Error::invalid_arg(format!(
                    "the range of {} bytes at offset {offset} runs past the archive's {} bytes",
                    out.len(),
                    self.plan.total_len
                ))
            })?;
        self.pieces(offset, end, &mut |at, piece| {
            let bytes = piece.bytes();
            // The overlap of this piece (at file offset `at`) with the range.
            let from = offset.max(at);
            let to = end.min(at + bytes.len() as u64);
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
            }
            Ok(())
        })
    }

    /// Hands the whole archive to `write`, in file order, in pieces: small ones gathered into
    /// writes of about 1 MiB, large arrays as slices of at most 2 MiB of the caller's memory.
    /// `progress` runs on this thread between writes. Returns the archive's length.
    ///
    /// # Errors
    /// Whatever `write` returns (the stream stops at once), or [`ErrorKind::Aborted`].
    pub fn write_to(
        &self,
        write: &mut dyn FnMut(&[u8]) -> Result<()>,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<u64> {
        let total = self.plan.total_len;
        let mut out = Gather::new(write, total, progress);
        self.pieces(0, total, &mut |_, piece| out.piece(piece.bytes()))?;
        out.finish()
    }

    /// Calls `emit(file offset, piece)` for every piece that overlaps `from .. to`, in file
    /// order (pieces before `from` are skipped without being built).
    fn pieces(
        &self,
        from: u64,
        to: u64,
        emit: &mut dyn FnMut(u64, Piece<'_>) -> Result<()>,
    ) -> Result<()> {
        let planned = &self.plan.members;
        // The first member that ends after `from`.
        let first = planned.partition_point(|p| p.payload_offset + p.payload_len <= from);
        for (i, at) in planned.iter().enumerate().skip(first) {
            if at.start() >= to {
                return Ok(());
            }
            self.member_pieces(i, at, from, to, emit)?;
        }
        if to > self.plan.central_offset {
            emit(self.plan.central_offset, Piece::Borrowed(&self.records))?;
        }
        Ok(())
    }

    /// The pieces of member `i`: its local header, then its payload.
    fn member_pieces(
        &self,
        i: usize,
        at: &MemberPlan,
        from: u64,
        to: u64,
        emit: &mut dyn FnMut(u64, Piece<'_>) -> Result<()>,
    ) -> Result<()> {
        let m = &self.saver.members[i];
        if from < at.header_offset && at.gap_len > 0 {
            emit(at.start(), Piece::Built(zeros(at.gap_len)?))?;
        }
        if from < at.payload_offset {
            let mut head = Vec::with_capacity((at.payload_offset - at.header_offset) as usize);
            records::local_header(&mut head, &m.name, at, self.crcs[i]);
            emit(at.header_offset, Piece::Built(head))?;
        }
        let mut offset = at.payload_offset;
        let parts: Vec<&[u8]> = match &self.segments {
            Some(segments) => segments[i].iter().map(Vec::as_slice).collect(),
            None => vec![&m.header[..], self.saver.data[i]],
        };
        for part in parts {
            let end = offset + part.len() as u64;
            if end > from && offset < to && !part.is_empty() {
                emit(offset, Piece::Borrowed(part))?;
            }
            offset = end;
        }
        Ok(())
    }
}

/// Writes pieces of an archive in file order to a sequential writer: small pieces gathered into
/// writes of about 1 MiB, large ones in slices of at most [`WRITE_PIECE_LEN`]; reports progress
/// between writes (on the calling thread).
struct Gather<'w, 'p, 'q> {
    write: &'w mut dyn FnMut(&[u8]) -> Result<()>,
    gathered: Vec<u8>,
    done: u64,
    total: u64,
    progress: Option<&'p mut ProgressFn<'q>>,
    last_report: Instant,
}

impl<'w, 'p, 'q> Gather<'w, 'p, 'q> {
    fn new(
        write: &'w mut dyn FnMut(&[u8]) -> Result<()>,
        total: u64,
        progress: Option<&'p mut ProgressFn<'q>>,
    ) -> Self {
        Gather {
            write,
            gathered: Vec::new(),
            done: 0,
            total,
            progress,
            last_report: Instant::now(),
        }
    }

    /// Calls the progress callback at most every 100 ms (always when `force`).
    fn report(&mut self, force: bool) -> Result<()> {
        if let Some(p) = self.progress.as_deref_mut() {
            if force || self.last_report.elapsed() >= Duration::from_millis(100) {
                self.last_report = Instant::now();
                if !p(self.done, self.total) {
                    return Err(Error::new(
                        ErrorKind::Aborted,
                        "cancelled by the progress callback",
                    ));
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.gathered.is_empty() {
            (self.write)(&self.gathered)?;
            self.done += self.gathered.len() as u64;
            self.gathered.clear();
            self.report(false)?;
        }
        Ok(())
    }

    /// The next piece of the archive.
    fn piece(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() < GATHER_LEN / 4 {
            if self.gathered.len() + bytes.len() > GATHER_LEN {
                self.flush()?;
            }
            self.gathered.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush()?;
        for chunk in bytes.chunks(WRITE_PIECE_LEN) {
            (self.write)(chunk)?;
            self.done += chunk.len() as u64;
            self.report(false)?;
        }
        Ok(())
    }

    /// Writes what is gathered; returns the bytes written (the archive's length).
    fn finish(mut self) -> Result<u64> {
        self.flush()?;
        debug_assert_eq!(self.done, self.total);
        self.report(true)?;
        Ok(self.done)
    }
}

/// Streams a stored save in file order without computing every CRC first: the pool computes
/// the members' CRC-32s in order (each one in parallel pieces) while the calling thread writes
/// each member as soon as its CRC is known, so hashing overlaps the writes instead of preceding
/// them. The bytes are exactly those of the path save.
pub(super) fn stream_stored(
    saver: &Saver<'_>,
    opts: &SaveOptions,
    write: &mut dyn FnMut(&[u8]) -> Result<()>,
    progress: Option<&mut ProgressFn<'_>>,
) -> Result<u64> {
    let plan = super::plan(&saver.members, opts.alignment)?;
    let pool = pool::get(opts.threads)?;
    let (members, data) = (&saver.members, &saver.data);
    let (tx, rx) = crossbeam_channel::unbounded::<u32>();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut result: Result<u64> = Ok(0);
    pool.in_place_scope(|scope| {
        let stop = &stop;
        scope.spawn(move |_| {
            for (m, bytes) in members.iter().zip(data) {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let crc = member_crc(m, bytes);
                if tx.send(crc).is_err() {
                    return;
                }
            }
        });
        result = (|| {
            let mut out = Gather::new(write, plan.total_len, progress);
            let mut crcs = Vec::with_capacity(members.len());
            for ((m, bytes), at) in members.iter().zip(data).zip(&plan.members) {
                let crc = rx
                    .recv()
                    .map_err(|_| Error::new(ErrorKind::Panic, "the CRC worker stopped"))?;
                if at.gap_len > 0 {
                    out.piece(&zeros(at.gap_len)?)?;
                }
                let mut head = Vec::with_capacity((at.payload_offset - at.header_offset) as usize);
                records::local_header(&mut head, &m.name, at, crc);
                out.piece(&head)?;
                out.piece(&m.header)?;
                if !bytes.is_empty() {
                    out.piece(bytes)?;
                }
                crcs.push(crc);
            }
            let mut records = Vec::new();
            for ((m, at), crc) in members.iter().zip(&plan.members).zip(&crcs) {
                records::central_header(&mut records, &m.name, at, *crc);
            }
            records::end_records(&mut records, &plan);
            out.piece(&records)?;
            out.finish()
        })();
        // On an error the worker stops at its next member.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(rx);
    });
    result
}

/// `len` zero bytes: the alignment gap before a local header (at most 1 MiB).
fn zeros(len: u64) -> Result<Vec<u8>> {
    crate::memory::zeroed(
        usize::try_from(len).map_err(|_| Error::nomem("alignment gap too large"))?,
    )
}

/// One stored member's CRC-32 (its `.npy` header, then its data), hashed in parallel pieces on
/// the current pool and combined.
fn member_crc(m: &Member, data: &[u8]) -> u32 {
    let mut h = Hasher::new();
    h.update(&m.header);
    let pieces: Vec<Hasher> = data
        .par_chunks(WRITE_PIECE_LEN)
        .map(|piece| {
            let mut p = Hasher::new();
            p.update(piece);
            p
        })
        .collect();
    for p in pieces {
        h.combine(&p);
    }
    h.finalize()
}

/// Each stored member's CRC-32 (of its `.npy` header and data), computed in parallel on the
/// current pool (members side by side, a large member in pieces: see [`member_crc`]);
/// `advance` sees each member's bytes.
fn stored_crcs(
    members: &[Member],
    data: &[&[u8]],
    advance: &(dyn Fn(u64) -> Result<()> + Sync),
) -> Result<Vec<u32>> {
    members
        .par_iter()
        .zip(data)
        .map(|(m, bytes)| {
            let crc = member_crc(m, bytes);
            advance(m.payload_len())?;
            Ok(crc)
        })
        .collect()
}
