//! The compressed save: payloads are cut into segments deflated in parallel (see
//! [`crate::compress`]); once every compressed size is known the archive is planned and the
//! segments are written at their offsets.

use crc32fast::Hasher;
use rayon::prelude::*;

use super::Member;
use crate::compress;
use crate::dest::{Destination, SMALL_ARRAY_LEN};
use crate::error::Result;
use crate::npz::plan::{self, MemberSpec, Plan};
use crate::npz::records;
use crate::progress::{self, ProgressFn};

/// Every member compressed, and the plan of the archive that holds them.
pub(crate) struct Deflated {
    /// The archive's plan (with the compressed sizes).
    pub(crate) plan: Plan,
    /// Each member's CRC-32 (of its uncompressed payload).
    pub(crate) crcs: Vec<u32>,
    /// Each member's deflate stream: its segments in order.
    segments: Vec<Vec<Vec<u8>>>,
    /// Bytes of uncompressed payload (the progress total).
    pub(crate) input_len: u64,
}

/// Compresses every member's payload (`.npy` header and `data[i]`) at `level` on `pool`, in
/// segments of [`compress::SEGMENT_LEN`], and plans the archive (`align` is the save's
/// alignment: it is checked, but deflated payloads are 64-aligned whatever it is).
pub(crate) fn compress(
    pool: &rayon::ThreadPool,
    members: &[Member],
    data: &[&[u8]],
    level: u32,
    align: u64,
    progress: Option<&mut ProgressFn<'_>>,
) -> Result<Deflated> {
    let mut jobs = Vec::new();
    for (member, bytes) in data.iter().enumerate() {
        let mut start = 0;
        loop {
            let end = (start + compress::SEGMENT_LEN).min(bytes.len());
            jobs.push((member, start..end));
            if end == bytes.len() {
                break;
            }
            start = end;
        }
    }
    let input_len: u64 = members.iter().map(Member::payload_len).sum();
    let compressed: Vec<(Vec<u8>, Hasher)> = progress::run(pool, input_len, progress, |tracker| {
        jobs.par_iter()
            .map(|(member, range)| {
                tracker.check()?;
                let (m, bytes) = (&members[*member], data[*member]);
                let part = &bytes[range.clone()];
                let pieces: &[&[u8]] = if range.start == 0 {
                    &[&m.header, part]
                } else {
                    &[part]
                };
                let last = range.end == bytes.len();
                let out = compress::deflate_segment(level, pieces, last)?;
                let mut crc = Hasher::new();
                pieces.iter().for_each(|p| crc.update(p));
                tracker.advance(pieces.iter().map(|p| p.len() as u64).sum());
                Ok((out, crc))
            })
            .collect::<Result<Vec<_>>>()
    })?;

    let mut segments: Vec<Vec<Vec<u8>>> = vec![Vec::new(); members.len()];
    let mut lens = vec![0u64; members.len()];
    let mut hashers = vec![Hasher::new(); members.len()];
    for ((member, _), (bytes, crc)) in jobs.iter().zip(compressed) {
        lens[*member] += bytes.len() as u64;
        hashers[*member].combine(&crc);
        segments[*member].push(bytes);
    }
    let specs: Vec<MemberSpec> = members
        .iter()
        .zip(&lens)
        .map(|(m, &len)| MemberSpec {
            name_len: m.name.len(),
            payload_len: len,
            deflated_size: Some(m.payload_len()),
            header_len: 0,
        })
        .collect();
    Ok(Deflated {
        plan: plan::plan(&specs, align)?,
        crcs: hashers.into_iter().map(Hasher::finalize).collect(),
        segments,
        input_len,
    })
}

impl Deflated {
    /// The plan, the CRCs and the segments, taken apart (for a prepared save, which keeps
    /// each once).
    pub(crate) fn into_parts(self) -> (Plan, Vec<u32>, Vec<Vec<Vec<u8>>>) {
        (self.plan, self.crcs, self.segments)
    }

    /// Writes every member (local header and deflate stream) at its planned offset, in
    /// parallel on `pool`; the central directory is [`super::write_records`]'s.
    pub(crate) fn write_members(
        &self,
        dest: &dyn Destination,
        members: &[Member],
        pool: &rayon::ThreadPool,
    ) -> Result<()> {
        pool.install(|| {
            (0..members.len()).into_par_iter().try_for_each(|i| {
                let at = &self.plan.members[i];
                let mut head = Vec::with_capacity(128 + members[i].name.len());
                // Deflated payloads are 64-aligned: their padding always fits the extra field.
                debug_assert_eq!(at.gap_len, 0);
                records::local_header(&mut head, &members[i].name, at, self.crcs[i]);
                // Small members go out in one write; large ones segment by segment, uncopied.
                if at.payload_len <= SMALL_ARRAY_LEN as u64 {
                    self.segments[i]
                        .iter()
                        .for_each(|b| head.extend_from_slice(b));
                    return dest.write_at(&head, at.header_offset);
                }
                dest.write_at(&head, at.header_offset)?;
                let mut offset = at.payload_offset;
                for segment in &self.segments[i] {
                    dest.write_at(segment, offset)?;
                    offset += segment.len() as u64;
                }
                Ok(())
            })
        })
    }
}
