//! Writing stored members: every byte of array data goes from the caller's memory to its
//! planned offset, in parallel, with its CRC-32 computed while it is in cache.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crc32fast::Hasher;
use rayon::prelude::*;

use super::Member;
use crate::dest::{aligned_pieces, Destination, SMALL_ARRAY_LEN};
use crate::error::{Error, Result};
use crate::npz::plan::Plan;
use crate::npz::records;
use crate::progress::Tracker;

/// Target size of one packed write of small members.
const PACKED_RUN_LEN: u64 = 1 << 20;

/// A unit of the pool's work, in file order. Member numbers are positions in `data`.
enum Job {
    /// CRC one piece of a large member's array data, then write it (it is still in cache).
    Piece { member: usize, range: Range<usize> },
    /// Write consecutive small members whole (local header, npy header, data) in one write.
    Packed(Range<usize>),
}

/// What a [`Job`] gives back.
enum JobDone {
    /// The CRC state of one piece of a large member, in member and offset order.
    Crc { member: usize, crc: Hasher },
    /// The CRC-32 of each packed member (already written into its local header).
    Packed {
        members: Range<usize>,
        crcs: Vec<u32>,
    },
}

/// Writes the stored members `first .. first + data.len()` of `plan` (whose members are
/// `members`; `data[k]` is member `first + k`'s array bytes): local headers, `.npy` headers and
/// data, and returns their CRC-32s in order. The central directory is not written (see
/// [`super::write_records`]): several writers may each write their own members of one plan.
///
/// Runs on the current rayon pool. Every worker takes the next job in file order (one shared
/// cursor): it CRCs a 2 MiB piece of a large array, which brings it into cache, then writes it
/// from there; or it writes a run of small members, packed. The large members' local headers,
/// which need their CRCs, are written last. Buffered writes to one file take turns on its inode
/// lock, so while one worker writes, the other computes its next piece's CRC (README,
/// "Performance notes", has the measurements behind this shape).
pub(crate) fn write_members(
    dest: &dyn Destination,
    plan: &Plan,
    members: &[Member],
    first: usize,
    data: &[&[u8]],
    tracker: &Tracker,
) -> Result<Vec<u32>> {
    let writer = Writer {
        dest,
        members: &members[first..first + data.len()],
        planned: &plan.members[first..first + data.len()],
        data,
    };
    writer.write(tracker)
}

/// The members one call writes, with their slices of the plan.
struct Writer<'w> {
    dest: &'w dyn Destination,
    members: &'w [Member],
    planned: &'w [crate::npz::plan::MemberPlan],
    data: &'w [&'w [u8]],
}

impl Writer<'_> {
    /// The jobs in file order: runs of small members and pieces of large ones.
    fn jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut run_start: Option<usize> = None;
        let mut run_len: u64 = 0;
        for (i, data) in self.data.iter().enumerate() {
            if data.len() <= SMALL_ARRAY_LEN {
                run_start.get_or_insert(i);
                run_len += self.planned[i].payload_len;
                if run_len >= PACKED_RUN_LEN {
                    jobs.push(Job::Packed(run_start.take().unwrap_or(i)..i + 1));
                    run_len = 0;
                }
                continue;
            }
            if let Some(start) = run_start.take() {
                jobs.push(Job::Packed(start..i));
                run_len = 0;
            }
            jobs.extend(
                aligned_pieces(self.data_offset(i), data.len())
                    .map(|range| Job::Piece { member: i, range }),
            );
        }
        if let Some(start) = run_start {
            jobs.push(Job::Packed(start..self.data.len()));
        }
        jobs
    }

    /// Runs every job on the pool's workers, each taking the next one in file order; then
    /// writes the large members' local headers. Returns every member's CRC-32.
    fn write(&self, tracker: &Tracker) -> Result<Vec<u32>> {
        let jobs = self.jobs();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let workers = rayon::current_num_threads().clamp(1, jobs.len().max(1));
        // One loop per worker; a cursor (not rayon's halving split) keeps the writes in file
        // order, so the two workers' writes are neighbours, not two distant streams.
        let per_worker = (0..workers)
            .into_par_iter()
            .with_max_len(1)
            .map(|_| {
                let mut done = Vec::new();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    match self.run(job, tracker) {
                        Ok(d) => done.push((i, d)),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                }
                Ok(done)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut done: Vec<(usize, JobDone)> = per_worker.into_iter().flatten().collect();
        done.sort_unstable_by_key(|(i, _)| *i);
        let mut crcs = vec![0u32; self.data.len()];
        let mut large_crcs: Vec<Option<Hasher>> = vec![None; self.data.len()];
        for (_, d) in done {
            match d {
                JobDone::Packed { members, crcs: c } => crcs[members].copy_from_slice(&c),
                JobDone::Crc { member, crc } => large_crcs[member]
                    .get_or_insert_with(|| {
                        let mut h = Hasher::new();
                        h.update(&self.members[member].header);
                        h
                    })
                    .combine(&crc),
            }
        }
        for (i, hasher) in large_crcs.into_iter().enumerate() {
            if let Some(h) = hasher {
                let (m, at) = (&self.members[i], &self.planned[i]);
                crcs[i] = h.finalize();
                let mut head = Vec::new();
                head.try_reserve_exact((at.payload_offset - at.start()) as usize + m.header.len())
                    .map_err(|_| Error::nomem("cannot allocate a local header"))?;
                // The alignment gap, if any, is written (as zeros) with the header: every byte
                // of the archive is written once, whatever the destination held.
                head.resize(at.gap_len as usize, 0);
                records::local_header(&mut head, &m.name, at, crcs[i]);
                head.extend_from_slice(&m.header);
                self.dest.write_at(&head, at.start())?;
            }
        }
        Ok(crcs)
    }

    /// The file offset of member `i`'s array data (after its local and `.npy` headers).
    fn data_offset(&self, i: usize) -> u64 {
        self.planned[i].payload_offset + self.members[i].header.len() as u64
    }

    /// Runs one job.
    fn run(&self, job: &Job, tracker: &Tracker) -> Result<JobDone> {
        tracker.check()?;
        match job {
            Job::Piece { member, range } => {
                let piece = &self.data[*member][range.clone()];
                let mut crc = Hasher::new();
                self.dest.write_hashed(
                    piece,
                    self.data_offset(*member) + range.start as u64,
                    &mut crc,
                )?;
                tracker.advance(piece.len() as u64);
                Ok(JobDone::Crc {
                    member: *member,
                    crc,
                })
            }
            Job::Packed(members) => Ok(JobDone::Packed {
                members: members.clone(),
                crcs: self.write_packed(members, tracker)?,
            }),
        }
    }

    /// Writes small members whole, headers and all, in one write; returns their CRCs.
    fn write_packed(&self, members: &Range<usize>, tracker: &Tracker) -> Result<Vec<u32>> {
        let first = &self.planned[members.start];
        let last = &self.planned[members.end - 1];
        let len = (last.payload_offset + last.payload_len - first.start()) as usize;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len)
            .map_err(|_| Error::nomem("cannot allocate a write buffer"))?;
        let mut crcs = Vec::with_capacity(members.len());
        for i in members.clone() {
            let (m, data) = (&self.members[i], self.data[i]);
            let mut crc = Hasher::new();
            crc.update(&m.header);
            crc.update(data);
            let crc = crc.finalize();
            buf.resize(buf.len() + self.planned[i].gap_len as usize, 0);
            records::local_header(&mut buf, &m.name, &self.planned[i], crc);
            buf.extend_from_slice(&m.header);
            buf.extend_from_slice(data);
            crcs.push(crc);
        }
        debug_assert_eq!(buf.len(), len);
        self.dest.write_at(&buf, first.start())?;
        tracker.advance(len as u64);
        Ok(crcs)
    }
}
