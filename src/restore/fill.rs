//! Fill: the tasks that move each array's bytes into the block (pread, copy from a region,
//! inflate, or nothing but a byte swap for image members), run in parallel, and the CRC check.

use std::sync::Arc;

use crc32fast::Hasher;
use rayon::prelude::*;

use super::inspect::{Located, Region};
use super::plan::RestorePlan;
use super::source::{read_exact, Reader};
use super::CHUNK_LEN;
use crate::archive::ArrayInfo;
use crate::error::{Error, Result};
use crate::memory;
use crate::npz::index::{MemberInfo, Method};
use crate::progress::{self, ProgressFn};

impl Reader<'_> {
    /// Fills `block` (the plan's `block_len` bytes, or the staged image) with every array's
    /// bytes on `pool`, and checks the CRCs when the options ask.
    pub(super) fn fill(
        &self,
        pool: &rayon::ThreadPool,
        plan: &mut RestorePlan,
        members: &[MemberInfo],
        block: &mut [u8],
        mut progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<()> {
        let opts = self.opts;
        // The tasks get the only references to the phase-A regions, so each region is unmapped
        // as soon as its last member is filled.
        let regions: Vec<Option<Arc<Region>>> = plan
            .located
            .iter_mut()
            .map(|(_, loc)| loc.region.take())
            .collect();
        let (arrays, located) = (&plan.arrays, &plan.located);
        let mut tasks = fill_tasks(block, arrays, located, regions, members, opts.verify_crc);
        if opts.native_endian {
            // Swapping happens inside each task, right after its bytes arrive.
            for t in &mut tasks {
                t.swap = !located[t.slot].1.swap_units.is_empty();
            }
        }
        // Members already in memory first, so their regions are released before the large
        // arrays fill the block (peak memory: the block plus about a batch of regions). The
        // sort is stable: each member's pieces stay in order for the CRC.
        tasks.sort_by_key(|t| t.region.is_none());
        // Image members that phase A read (and hashed) and that need no swap have no task
        // left: they count as done from the start, so the total is still every array byte.
        let in_place: u64 = located
            .iter()
            .zip(arrays)
            .filter(|((_, loc), _)| loc.in_image && loc.swap_units.is_empty())
            .map(|(_, a)| a.nbytes as u64)
            .sum();
        let task_bytes: u64 = tasks.iter().map(FillTask::bytes).sum();
        let work_bytes = task_bytes + in_place;
        let batches = batch_tasks(tasks, task_bytes, pool.current_num_threads());
        let results: Vec<(usize, Option<Crc>)> =
            progress::run(pool, work_bytes, progress.as_deref_mut(), |tracker| {
                tracker.advance(in_place);
                let done = batches
                    .into_par_iter()
                    .with_max_len(1)
                    .map(|batch| {
                        let mut done = Vec::with_capacity(batch.len());
                        for t in batch {
                            tracker.check()?;
                            let slot = t.slot;
                            let (mi, loc) = &located[slot];
                            let bytes = t.bytes();
                            let crc = self
                                .fill_one(t, &members[*mi], loc)
                                .map_err(|e| self.in_member(&members[*mi], e))?;
                            tracker.advance(bytes);
                            done.push((slot, crc));
                        }
                        Ok(done)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(done.into_iter().flatten().collect())
            })?;
        if opts.verify_crc {
            self.check_crcs(members, located, arrays, results)?;
        }
        progress::finish(progress, work_bytes)
    }

    /// Compares each member's combined CRC with the central directory (mapped members, whose
    /// bytes were never read, are not checked).
    fn check_crcs(
        &self,
        members: &[MemberInfo],
        located: &[(usize, Located)],
        arrays: &[ArrayInfo],
        results: Vec<(usize, Option<Crc>)>,
    ) -> Result<()> {
        let mut whole: Vec<Option<u32>> = located.iter().map(|(_, loc)| loc.crc).collect();
        let mut pieces: Vec<Option<Hasher>> = vec![None; located.len()];
        for (slot, crc) in results {
            match crc {
                Some(Crc::Whole(v)) => whole[slot] = Some(v),
                Some(Crc::Piece(h)) => pieces[slot]
                    .get_or_insert_with(|| header_hasher(&located[slot].1))
                    .combine(&h),
                None => {}
            }
        }
        let crcs = whole
            .into_iter()
            .zip(pieces)
            .zip(located)
            .map(|((w, p), (_, loc))| {
                w.unwrap_or_else(|| p.unwrap_or_else(|| header_hasher(loc)).finalize())
            });
        for (((mi, _), got), a) in located.iter().zip(crcs).zip(arrays) {
            if a.mapped {
                continue;
            }
            let m = &members[*mi];
            if got != m.crc32 {
                return Err(Error::crc(format!(
                    "{}: member {:?}: CRC-32 mismatch (central directory says {:08x}, data gives {got:08x})",
                    self.shown, m.name, m.crc32
                )));
            }
        }
        Ok(())
    }
}

/// Groups fill tasks, in order, into batches of about equal work for the pool: one 4 MiB chunk
/// of a large array, or up to that many bytes of small arrays (fewer when the whole job is
/// small, so every worker gets some). Each batch is one rayon job. Why: with one job per task,
/// rayon split the task list by count, and a file of a few large arrays followed by thousands
/// of small ones left one worker with nearly all the bytes.
fn batch_tasks(tasks: Vec<FillTask<'_>>, total: u64, threads: usize) -> Vec<Vec<FillTask<'_>>> {
    let target = (total / (4 * threads.max(1) as u64)).clamp(64 << 10, CHUNK_LEN as u64);
    let mut batches: Vec<Vec<FillTask<'_>>> = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    for t in tasks {
        let bytes = t.bytes();
        if !current.is_empty() && current_bytes + bytes > target {
            batches.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.push(t);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// What a fill task learned of its member's CRC-32.
enum Crc {
    /// The whole payload (header included) was hashed by this one task: the final CRC-32.
    Whole(u32),
    /// The CRC state of this task's bytes, to combine in task order after the header's.
    Piece(Hasher),
}

/// A hasher that has seen a stored member's `.npy` header bytes (which phase A read), ready
/// for its data pieces; empty for compressed members, whose fill hashes everything itself.
fn header_hasher(loc: &Located) -> Hasher {
    let mut h = Hasher::new();
    if loc.method == Method::Stored {
        h.update(&loc.header_bytes);
    }
    h
}

/// One unit of fill work.
struct FillTask<'b> {
    /// Index into `located`.
    slot: usize,
    kind: FillKind<'b>,
    /// Byte-swap the array bytes to native order once they are in place.
    swap: bool,
    /// The phase-A region holding the member's bytes, if any: owned by the tasks alone during
    /// the fill, so each region is unmapped when its last member is done.
    region: Option<Arc<Region>>,
}

impl FillTask<'_> {
    /// Bytes this task moves (for progress).
    fn bytes(&self) -> u64 {
        match &self.kind {
            FillKind::Stored { dest, .. }
            | FillKind::Held { dest }
            | FillKind::Compressed { dest }
            | FillKind::InPlace { dest } => dest.len() as u64,
            FillKind::StoredTail { len, .. } => *len,
        }
    }
}

enum FillKind<'b> {
    /// `pread` stored array bytes at `file_offset` into `dest`.
    Stored {
        file_offset: u64,
        dest: &'b mut [u8],
    },
    /// Bytes after the array data in a stored member: read only for the CRC.
    StoredTail { file_offset: u64, len: u64 },
    /// Copy a stored member's array bytes from its phase-A region (and CRC its tail there).
    Held { dest: &'b mut [u8] },
    /// Decode a whole compressed member (deflate, bzip2, LZMA, Deflate64); the array part
    /// lands in `dest`.
    Compressed { dest: &'b mut [u8] },
    /// A stored member that phase A read into its place in the image (and hashed): only the
    /// byte swap of its array data is left.
    InPlace { dest: &'b mut [u8] },
}

fn fill_tasks<'b>(
    block: &'b mut [u8],
    arrays: &[ArrayInfo],
    located: &[(usize, Located)],
    mut regions: Vec<Option<Arc<Region>>>,
    members: &[MemberInfo],
    verify_crc: bool,
) -> Vec<FillTask<'b>> {
    // Each array's bytes in the block, in block order (an image keeps file order, which need
    // not be the central directory's).
    let mut spans: Vec<(usize, usize, usize)> = arrays
        .iter()
        .enumerate()
        .filter(|(_, a)| !a.mapped)
        .map(|(slot, a)| (a.offset, a.offset + a.nbytes, slot))
        .collect();
    spans.sort_unstable();
    let mut tasks = Vec::new();
    let mut rest = block;
    let mut cursor = 0;
    for (start, end, slot) in spans {
        let (a, (mi, loc)) = (&arrays[slot], &located[slot]);
        let gap = start
            .checked_sub(cursor)
            .expect("arrays never overlap in the block (check_overlaps)");
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(gap);
        let (dest, tail) = tail.split_at_mut(end - start);
        rest = tail;
        cursor = end;
        if loc.in_image {
            // Phase A hashed it already; only a byte swap may be left.
            if !loc.swap_units.is_empty() {
                tasks.push(FillTask {
                    slot,
                    kind: FillKind::InPlace { dest },
                    swap: false,
                    region: None,
                });
            }
            continue;
        }
        match loc.method {
            Method::Deflated | Method::Bzip2 | Method::Lzma | Method::Deflate64 => {
                tasks.push(FillTask {
                    slot,
                    kind: FillKind::Compressed { dest },
                    swap: false,
                    region: regions[slot].take(),
                })
            }
            Method::Stored if regions[slot].is_some() => tasks.push(FillTask {
                slot,
                kind: FillKind::Held { dest },
                swap: false,
                region: regions[slot].take(),
            }),
            Method::Stored => {
                let data_start = loc.payload_start + loc.header.header_len as u64;
                // Chunks hold whole elements, so each can be byte-swapped on its own.
                let item = a.descr.itemsize().max(1);
                let chunk_len = (CHUNK_LEN / item).max(1) * item;
                for (k, chunk) in dest.chunks_mut(chunk_len).enumerate() {
                    tasks.push(FillTask {
                        slot,
                        kind: FillKind::Stored {
                            file_offset: data_start + (k * chunk_len) as u64,
                            dest: chunk,
                        },
                        swap: false,
                        region: None,
                    });
                }
                let used = (loc.header.header_len + a.nbytes) as u64;
                let size = members[*mi].size;
                if verify_crc && size > used {
                    let mut off = 0;
                    while off < size - used {
                        let len = (size - used - off).min(CHUNK_LEN as u64);
                        tasks.push(FillTask {
                            slot,
                            kind: FillKind::StoredTail {
                                file_offset: data_start + a.nbytes as u64 + off,
                                len,
                            },
                            swap: false,
                            region: None,
                        });
                        off += len;
                    }
                }
            }
        }
    }
    tasks
}

impl Reader<'_> {
    /// Checks the CRC-32 of a member that is not an array, reading (or decoding) all of it.
    pub(super) fn check_raw_member_crc(&self, m: &MemberInfo, payload_start: u64) -> Result<()> {
        let mut h = Hasher::new();
        let mut buf = memory::zeroed((CHUNK_LEN as u64).min(m.size) as usize)?;
        match m.method {
            Ok(Method::Stored) => {
                let mut done = 0u64;
                while done < m.size {
                    let n = (m.size - done).min(buf.len() as u64) as usize;
                    self.read_at(&mut buf[..n], payload_start + done)?;
                    h.update(&buf[..n]);
                    done += n as u64;
                }
            }
            Ok(method) => {
                let mut inflater =
                    self.inflater(method, None, payload_start, m.compressed_size, m.size)?;
                let mut done = 0u64;
                while done < m.size {
                    let n = (m.size - done).min(buf.len() as u64) as usize;
                    if inflater.read(&mut buf[..n])? != n {
                        return Err(Error::format(format!(
                            "truncated: the {} stream ends early",
                            inflater.name()
                        )));
                    }
                    h.update(&buf[..n]);
                    done += n as u64;
                }
                inflater.expect_end(m.size)?;
            }
            Err(_) => return Ok(()),
        }
        let got = h.finalize();
        if got != m.crc32 {
            return Err(Error::crc(format!(
                "CRC-32 mismatch (central directory says {:08x}, data gives {got:08x})",
                m.crc32
            )));
        }
        Ok(())
    }

    /// Reads a member's bytes at `offset`: from its own file (directory container) or the source.
    fn read_member(&self, loc: &Located, buf: &mut [u8], offset: u64) -> Result<()> {
        match &loc.file {
            Some(f) => read_exact(f.as_ref(), buf, offset),
            None => self.read_at(buf, offset),
        }
    }

    /// Runs one fill task; returns the CRC state of the bytes it covered (when verifying).
    fn fill_one(&self, task: FillTask<'_>, m: &MemberInfo, loc: &Located) -> Result<Option<Crc>> {
        let verify = self.opts.verify_crc;
        match task.kind {
            FillKind::Stored { file_offset, dest } => {
                // The whole chunk in one pread, then its CRC. Why one read: from a cold page
                // cache, smaller reads (two threads taking alternate chunks) defeat readahead;
                // warm, CRC-ing smaller pieces while in cache measured no faster (README,
                // "Performance notes").
                self.read_member(loc, dest, file_offset)?;
                let crc = verify.then(|| {
                    let mut h = Hasher::new();
                    h.update(dest);
                    Crc::Piece(h)
                });
                if task.swap {
                    swap_in_place(dest, loc);
                }
                Ok(crc)
            }
            FillKind::Held { dest } => {
                let region = task.region.as_ref().expect("held members have a region");
                let payload = region
                    .get(loc.payload_start, m.size)
                    .expect("phase A checked that the region holds the payload");
                let data = &payload[loc.header.header_len..loc.header.header_len + dest.len()];
                dest.copy_from_slice(data);
                // The region holds the whole payload, header included: its CRC in one pass.
                let crc = verify.then(|| Crc::Whole(crc32fast::hash(payload)));
                if task.swap {
                    swap_in_place(dest, loc);
                }
                Ok(crc)
            }
            FillKind::InPlace { dest } => {
                if task.swap {
                    swap_in_place(dest, loc);
                }
                Ok(None)
            }
            FillKind::StoredTail { file_offset, len } => {
                let mut buf = memory::zeroed(len as usize)?;
                self.read_member(loc, &mut buf, file_offset)?;
                let mut h = Hasher::new();
                h.update(&buf);
                Ok(Some(Crc::Piece(h)))
            }
            FillKind::Compressed { dest } => {
                let held = task
                    .region
                    .as_ref()
                    .and_then(|r| r.get(loc.payload_start, m.compressed_size));
                let mut inflater = self.inflater(
                    loc.method,
                    held,
                    loc.payload_start,
                    m.compressed_size,
                    m.size,
                )?;
                let what = inflater.name();
                let mut h = Hasher::new();
                let mut header = memory::zeroed(loc.header.header_len)?;
                if inflater.read(&mut header)? != header.len() || header != loc.header_bytes {
                    return Err(Error::format(format!(
                        "the {what} stream changed while reading"
                    )));
                }
                h.update(&header);
                if inflater.read(dest)? != dest.len() {
                    return Err(Error::format(format!(
                        "truncated: the {what} stream ends inside the array data"
                    )));
                }
                if verify {
                    h.update(dest);
                }
                if !loc.swap_units.is_empty() {
                    swap_in_place(dest, loc);
                }
                if !verify {
                    return Ok(None);
                }
                let mut tail_left = m.size - (header.len() + dest.len()) as u64;
                let mut scratch = vec![0u8; 64 << 10];
                while tail_left > 0 {
                    let n = (tail_left as usize).min(scratch.len());
                    if inflater.read(&mut scratch[..n])? != n {
                        return Err(Error::format(format!(
                            "truncated: the {what} stream ends before the declared size {}",
                            m.size
                        )));
                    }
                    h.update(&scratch[..n]);
                    tail_left -= n as u64;
                }
                inflater.expect_end(m.size)?;
                Ok(Some(Crc::Whole(h.finalize())))
            }
        }
    }
}

/// Byte-swaps whole elements of `bytes` to native order.
fn swap_in_place(bytes: &mut [u8], loc: &Located) {
    let item = loc.header.descr.itemsize();
    if item == 0 {
        return;
    }
    for element in bytes.chunks_exact_mut(item) {
        for &(offset, width) in &loc.swap_units {
            element[offset..offset + width].reverse();
        }
    }
}
