//! Phase A: each array member's local header and `.npy` header, read (in runs for small
//! members, into regions or straight into an image block) and validated against the file.

use std::borrow::Cow;
use std::fs::File;
use std::sync::Arc;

use rayon::prelude::*;

use super::source::Reader;
use crate::error::{Error, Result};
use crate::memory::{self, AnonMap, BLOCK_ALIGN};
use crate::npy::header::{self, NpyHeader};
use crate::npz::index::{MemberInfo, Method};
use crate::npz::plan::LOCAL_HEADER_LEN;
use crate::npz::records::LocalHeader;

/// Bytes read speculatively with each local header: usually enough for the name, the extra
/// field and the whole `.npy` header, so a member's metadata costs one `pread`.
pub(super) const HEAD_READ_LEN: u64 = 1024;

/// What phase A found in a `.npy`-named member.
pub(super) enum Inspected {
    /// An array.
    Array(Located),
    /// No npy magic: numpy would return the member's raw bytes.
    NotArray { payload_start: u64 },
}

impl Inspected {
    /// Where the member's data starts and ends in the file.
    pub(super) fn span(&self, m: &MemberInfo) -> (u64, u64) {
        let start = match self {
            Inspected::Array(loc) => loc.payload_start,
            Inspected::NotArray { payload_start } => *payload_start,
        };
        (start, start.saturating_add(m.compressed_size))
    }
}

/// A member that holds an array: where its payload is and what its header says.
pub(super) struct Located {
    pub(super) method: Method,
    /// File offset of the payload (the npy magic, possibly compressed).
    pub(super) payload_start: u64,
    pub(super) header: NpyHeader,
    /// The raw header bytes (magic through padding), for a CRC that starts from them; empty
    /// when the fill hashes the whole payload from memory (`region` or `in_image`).
    pub(super) header_bytes: Vec<u8>,
    /// Byte-swap units of one element when restoring to native order (empty: nothing to do).
    pub(super) swap_units: Vec<(usize, usize)>,
    /// The bytes read in phase A, when they hold the whole payload (small members).
    pub(super) region: Option<Arc<Region>>,
    /// Phase A read the whole payload into its place in the block (an [`Image`]); the placement
    /// clears this when it puts the array elsewhere.
    pub(super) in_image: bool,
    /// The whole payload's CRC-32, computed in phase A right after its run was read, while
    /// the bytes were in cache (image members, when verifying).
    pub(super) crc: Option<u32>,
    /// The member's own file (directory container); `None`: the archive's source.
    pub(super) file: Option<Arc<File>>,
}

/// A run of the file read in one `pread` during phase A: the local headers, `.npy` headers and
/// data of neighbouring small members. One read per run instead of two per member is what
/// makes thousands of tiny arrays cheap (each `pread` costs about a microsecond or two).
pub(super) struct Region {
    pub(super) start: u64,
    /// Its own mapping, so that the memory goes back to the system as soon as the last member
    /// using it is filled (a heap buffer freed by a worker may stay in that thread's arena).
    pub(super) bytes: AnonMap,
}

impl Region {
    /// `len` bytes at file offset `offset`, if this region holds them all.
    pub(super) fn get(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.held().get(offset, len)
    }

    pub(super) fn held(&self) -> Held<'_> {
        Held {
            start: self.start,
            bytes: self.bytes.as_slice(),
        }
    }
}

/// Bytes of the file that phase A read for a member, starting at file offset `start`: a
/// [`Region`], or a run of the block itself when the block is an [`Image`].
#[derive(Clone, Copy)]
pub(super) struct Held<'a> {
    pub(super) start: u64,
    pub(super) bytes: &'a [u8],
}

/// What phase A holds of the file around a member.
#[derive(Clone, Copy)]
pub(super) enum Holding<'a> {
    Nothing,
    /// A region of its own, which the fill keeps.
    Region(&'a Arc<Region>),
    /// A run of the block (an [`Image`]).
    Image(Held<'a>),
    /// The whole file, mapped (mmap mode).
    Mapped(Held<'a>),
    /// A run read into a scratch buffer that is reused for the next run (a metadata-only
    /// listing: nothing is filled, so nothing keeps the bytes).
    Scratch(Held<'a>),
}

/// Where phase A puts the bytes of small members it reads.
pub(super) enum Staging<'a> {
    /// Runs are read into [`Region`]s of their own.
    Regions,
    /// Runs are read into their place in the image block.
    Image(Image, &'a mut [u8]),
    /// The file is mapped (mmap mode): nothing is read; headers are parsed from the mapping.
    /// Why: reading runs into regions cost a copy and fresh pages for bytes the mapping
    /// already shows (README, "Performance notes").
    Mapped(&'a [u8]),
}

impl<'a> Holding<'a> {
    pub(super) fn held(&self) -> Held<'a> {
        match self {
            Holding::Nothing => Held::NONE,
            Holding::Region(r) => r.held(),
            Holding::Image(h) | Holding::Mapped(h) | Holding::Scratch(h) => *h,
        }
    }
}

impl<'a> Held<'a> {
    const NONE: Held<'static> = Held {
        start: 0,
        bytes: &[],
    };

    /// `len` bytes at file offset `offset`, if held.
    pub(super) fn get(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let to = from.checked_add(usize::try_from(len).ok()?)?;
        self.bytes.get(from..to)
    }

    /// Everything held from file offset `offset` on, if at least `len` bytes are.
    pub(super) fn from(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        self.get(offset, len)?;
        Some(&self.bytes[(offset - self.start) as usize..])
    }
}

/// The block as an image of the file: when every array member is stored and its data is
/// 64-aligned in the file (every file psv writes), the block holds the file's bytes from
/// `start` (64-aligned) to the central directory, and each array's view is at its own file
/// offset minus `start`. Phase A then reads runs of small members straight into their final
/// place and hashes them there, while they are in cache: one copy of each byte instead of two
/// (a phase-A region, then the block), and no region mappings to fault in and unmap. A file
/// where an array turns out not to be aligned in place is planned again, packed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Image {
    /// File offset of the block's first byte.
    pub(super) start: u64,
    /// File offset just past the image (the central directory's start).
    pub(super) end: u64,
}

impl Image {
    pub(super) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// Phase-A work: candidate positions, and the file span to read for them up front (a run of
/// small members) or `None` (one large member, read piecewise).
pub(super) type InspectJob = (Vec<usize>, Option<(u64, u64)>);

/// The whole `.npy` header's length from its first [`header::PREFIX_LEN`] bytes; `None`
/// without the npy magic (numpy returns such a member's raw bytes). A header longer than the
/// member (`member_size` bytes) is a truncated file.
fn npy_header_len(prefix: &[u8], member_size: u64, max_header: usize) -> Result<Option<usize>> {
    if !header::has_magic(prefix) {
        return Ok(None);
    }
    let total = header::total_header_len(prefix, max_header)?;
    if total as u64 > member_size {
        return Err(Error::format(format!(
            "truncated: the .npy header needs {total} bytes but the member holds {member_size}"
        )));
    }
    Ok(Some(total))
}

/// Phase-A jobs in image mode: the exact file span from each member to the next member (or the
/// central directory) is its place in the block, so runs of small members are read whole, in
/// place; a large member's job reads only its headers (the fill reads its data).
pub(super) fn image_jobs(
    members: &[MemberInfo],
    candidates: &[usize],
    by_offset: Vec<usize>,
    image: Image,
) -> Vec<InspectJob> {
    let mut starts: Vec<u64> = members.iter().map(|m| m.header_offset).collect();
    starts.sort_unstable();
    let mut jobs: Vec<InspectJob> = Vec::new();
    let mut last_is_run = false;
    for c in by_offset {
        let m = &members[candidates[c]];
        let at = m.header_offset;
        if at < image.start || at >= image.end {
            jobs.push((vec![c], None));
            last_is_run = false;
            continue;
        }
        let next = starts[starts.partition_point(|&o| o <= at)..]
            .first()
            .map_or(image.end, |&o| o.min(image.end));
        if m.compressed_size > SMALL_MEMBER_LEN {
            let head =
                (at + LOCAL_HEADER_LEN + m.raw_name().len() as u64 + HEAD_READ_LEN).min(next);
            jobs.push((vec![c], Some((at, head))));
            last_is_run = false;
            continue;
        }
        match jobs.last_mut() {
            Some((group, Some((start, end))))
                if last_is_run && *end <= at && next - *start <= REGION_SPAN =>
            {
                group.push(c);
                *end = next;
            }
            _ => {
                jobs.push((vec![c], Some((at, next))));
                last_is_run = true;
            }
        }
    }
    jobs
}

/// Members up to this compressed size are read in runs (see [`Region`]).
pub(super) const SMALL_MEMBER_LEN: u64 = 64 << 10;
/// Longest run read in one `pread`.
pub(super) const REGION_SPAN: u64 = 1 << 20;
/// Room assumed for a small member's local extra field when sizing a run.
pub(super) const EXTRA_SLACK: u64 = 256;

impl Reader<'_> {
    /// Phase A for every candidate: small members in runs read with one `pread` each (into a
    /// [`Region`] of their own, or into their place in `image`'s block), large ones on their
    /// own; results in `candidates` order.
    pub(super) fn inspect_all(
        &self,
        pool: &rayon::ThreadPool,
        members: &[MemberInfo],
        candidates: &[usize],
        staging: Staging<'_>,
    ) -> Result<Vec<Inspected>> {
        let mut by_offset: Vec<usize> = (0..candidates.len()).collect();
        by_offset.sort_by_key(|&c| members[candidates[c]].header_offset);
        let (image, mapped) = match staging {
            Staging::Regions => (None, None),
            Staging::Image(img, block) => (Some((img, block)), None),
            Staging::Mapped(bytes) => (None, Some(Held { start: 0, bytes })),
        };
        let jobs = match &image {
            None => self.region_jobs(members, candidates, by_offset),
            Some((img, _)) => image_jobs(members, candidates, by_offset, *img),
        };
        // In image mode each job reads into its own slice of the block; a job whose span does
        // not fit between its neighbours' (only in a hostile file, whose members overlap)
        // reads for itself, and the overlap check rejects the file later.
        let mut work: Vec<(InspectJob, Option<&mut [u8]>)> = Vec::with_capacity(jobs.len());
        match image {
            None => work.extend(jobs.into_iter().map(|job| (job, None))),
            Some((img, block)) => {
                let (mut rest, mut cursor) = (block, img.start);
                for (group, span) in jobs {
                    match span {
                        Some((s, e)) if s >= cursor && e <= img.end => {
                            let tail = std::mem::take(&mut rest);
                            let (_, tail) = tail.split_at_mut((s - cursor) as usize);
                            let (mine, tail) = tail.split_at_mut((e - s) as usize);
                            (rest, cursor) = (tail, e);
                            work.push(((group, span), Some(mine)));
                        }
                        _ => work.push(((group, None), None)),
                    }
                }
            }
        }
        // A metadata-only listing keeps nothing it reads: its runs go through one scratch
        // buffer per rayon task instead of fresh mappings (whose page faults and unmapping
        // cost more than reading the run).
        let scratch_runs = self.opts.metadata_only;
        let found: Vec<Vec<(usize, Inspected)>> = pool.install(|| {
            work.into_par_iter()
                .map_init(Vec::new, |scratch: &mut Vec<u8>, ((group, span), slice)| {
                    let first = &members[candidates[group[0]]];
                    let mut region = None;
                    let holding = match (mapped, span, slice) {
                        // mmap mode: the whole file is already in memory; nothing to read.
                        (Some(file), _, _) => Holding::Mapped(file),
                        (None, Some((start, _)), Some(bytes)) => {
                            self.read_at(bytes, start)
                                .map_err(|e| self.in_member(first, e))?;
                            Holding::Image(Held { start, bytes })
                        }
                        (None, Some((start, end)), None) if scratch_runs => {
                            let len = (end - start) as usize;
                            scratch.clear();
                            scratch.try_reserve(len).map_err(|_| {
                                Error::nomem(format!("cannot allocate {len} bytes"))
                            })?;
                            scratch.resize(len, 0);
                            self.read_at(scratch, start)
                                .map_err(|e| self.in_member(first, e))?;
                            Holding::Scratch(Held {
                                start,
                                bytes: scratch,
                            })
                        }
                        (None, Some((start, end)), None) => {
                            let mut bytes = AnonMap::new((end - start) as usize)?;
                            self.read_at(bytes.as_mut_slice(), start)
                                .map_err(|e| self.in_member(first, e))?;
                            Holding::Region(region.insert(Arc::new(Region { start, bytes })))
                        }
                        _ => Holding::Nothing,
                    };
                    let mut headers = header::ParseCache::default();
                    group
                        .iter()
                        .map(|&c| {
                            let m = &members[candidates[c]];
                            self.inspect(m, holding, &mut headers)
                                .map(|loc| (c, loc))
                                .map_err(|e| self.in_member(m, e))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut out: Vec<Option<Inspected>> = (0..candidates.len()).map(|_| None).collect();
        for (c, loc) in found.into_iter().flatten() {
            out[c] = Some(loc);
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every candidate was inspected"))
            .collect())
    }

    /// Phase-A jobs without an image: runs of small members (estimated spans, each read into
    /// a region), and each large member alone.
    pub(super) fn region_jobs(
        &self,
        members: &[MemberInfo],
        candidates: &[usize],
        by_offset: Vec<usize>,
    ) -> Vec<InspectJob> {
        let mut jobs: Vec<InspectJob> = Vec::new();
        for c in by_offset {
            let m = &members[candidates[c]];
            if m.compressed_size > SMALL_MEMBER_LEN || m.header_offset >= self.file_len {
                jobs.push((vec![c], None));
                continue;
            }
            let end = (m.header_offset
                + LOCAL_HEADER_LEN
                + m.raw_name().len() as u64
                + EXTRA_SLACK
                + m.compressed_size)
                .min(self.file_len);
            match jobs.last_mut() {
                Some((group, Some((start, group_end)))) if end - *start <= REGION_SPAN => {
                    group.push(c);
                    *group_end = (*group_end).max(end);
                }
                _ => jobs.push((vec![c], Some((m.header_offset, end)))),
            }
        }
        jobs
    }

    /// Whether to restore into an [`Image`] of the file, and its span: only when every array
    /// is wanted and stored, the first array's data is 64-aligned in the file (files psv
    /// writes; numpy's are not), the image fits `limit`, and the bytes that are not array
    /// members (local headers, other members) are at most a quarter of it, so the block stays
    /// close to the arrays' size.
    pub(super) fn plan_image(
        &self,
        members: &[MemberInfo],
        candidates: &[usize],
        limit: u64,
    ) -> Option<Image> {
        let opts = self.opts;
        if opts.metadata_only || opts.keys.is_some() {
            return None;
        }
        let end = self.central_start.filter(|&e| e <= self.file_len)?;
        let mut payload = 0u64;
        let mut first: Option<&MemberInfo> = None;
        for &i in candidates {
            let m = &members[i];
            if m.method != Ok(Method::Stored) || m.encrypted {
                return None;
            }
            payload = payload.saturating_add(m.compressed_size);
            if first.is_none_or(|f| m.header_offset < f.header_offset) {
                first = Some(m);
            }
        }
        let start = members.iter().map(|m| m.header_offset).min()? & !(BLOCK_ALIGN as u64 - 1);
        let len = end.checked_sub(start).filter(|&l| l > 0)?;
        // The image becomes the block padded to 64, which must fit the limit.
        let padded = len.checked_next_multiple_of(BLOCK_ALIGN as u64)?;
        if padded > limit || padded > isize::MAX as u64 || payload < len - len / 4 {
            return None;
        }
        // Phase A's own check of the first array, one small read; an error here is reported
        // by phase A proper.
        let mut headers = header::ParseCache::default();
        let Ok(Inspected::Array(loc)) = self.inspect(first?, Holding::Nothing, &mut headers) else {
            return None;
        };
        let data = loc.payload_start + loc.header.header_len as u64;
        (data % BLOCK_ALIGN as u64 == 0).then_some(Image { start, end })
    }

    /// `len` bytes at `offset`, read from the source.
    pub(super) fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf =
            memory::zeroed(usize::try_from(len).map_err(|_| Error::limit("read too large"))?)?;
        self.read_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Members must not overlap each other or the central directory (CPython: "Overlapped
    /// entries"). Exact spans for inspected members; for the others (not arrays, or not
    /// requested) the smallest span their records allow.
    pub(super) fn check_overlaps(
        &self,
        members: &[MemberInfo],
        candidates: &[usize],
        inspected: &[Inspected],
        central_start: u64,
    ) -> Result<()> {
        let mut spans: Vec<(u64, u64, usize)> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let start = m.header_offset;
                let data = start.saturating_add(LOCAL_HEADER_LEN + m.raw_name().len() as u64);
                (start, data.saturating_add(m.compressed_size), i)
            })
            .collect();
        for (&i, found) in candidates.iter().zip(inspected) {
            spans[i].1 = found.span(&members[i]).1;
        }
        spans.sort_unstable();
        for (k, &(_, end, i)) in spans.iter().enumerate() {
            let next = spans.get(k + 1);
            let limit = next.map_or(central_start, |&(start, _, _)| start);
            if end > limit {
                let what = match next {
                    Some(&(_, _, j)) => format!("member {:?}", members[j].name),
                    None => "the central directory".to_string(),
                };
                return Err(Error::format(format!(
                    "{}: member {:?} (ending at offset {end}) overlaps {what} (at offset {limit})",
                    self.shown, members[i].name
                )));
            }
        }
        Ok(())
    }

    /// Validates a member's local header and `.npy` header. `None`: not an array (numpy would
    /// return its raw bytes). `holding` may hold the member's bytes.
    pub(super) fn inspect(
        &self,
        m: &MemberInfo,
        holding: Holding<'_>,
        headers: &mut header::ParseCache,
    ) -> Result<Inspected> {
        let method = match &m.method {
            Ok(method) => *method,
            Err(name) => {
                return Err(Error::unsupported(format!(
                    "compression method {name} is not supported (stored, deflate, bzip2, LZMA \
                     and Deflate64 are)"
                )))
            }
        };
        if m.encrypted {
            return Err(Error::unsupported("encrypted members are not supported"));
        }
        let offset = m.header_offset;
        if offset >= self.file_len {
            return Err(Error::format(format!(
                "local header offset {offset} is outside the file ({} bytes)",
                self.file_len
            )));
        }
        let name_end = LOCAL_HEADER_LEN + m.raw_name().len() as u64;
        let want = (name_end + HEAD_READ_LEN).min(self.file_len - offset);
        let held = holding.held();
        // A run that holds the fixed header and the name: take all it has from here on.
        let head: Cow<'_, [u8]> = match held.from(offset, name_end) {
            Some(bytes) => Cow::Borrowed(bytes),
            None => Cow::Owned(self.fetch(offset, want)?),
        };
        let local = LocalHeader::parse(&head)
            .ok_or_else(|| Error::format(format!("no local file header at offset {offset}")))?;
        if local.name(&head) != Some(m.raw_name()) {
            return Err(Error::format(
                "the local header's name differs from the central directory's",
            ));
        }
        let payload_start = offset + local.payload_offset();
        payload_start
            .checked_add(m.compressed_size)
            .filter(|&e| e <= self.file_len)
            .ok_or_else(|| {
                Error::format(format!(
                    "truncated: {} bytes of data at offset {payload_start} run past the end of the file ({} bytes)",
                    m.compressed_size, self.file_len
                ))
            })?;
        let payload = held.get(payload_start, m.compressed_size);
        let max_header = usize::try_from(self.opts.max_header_len).unwrap_or(usize::MAX);
        let header_bytes: Cow<'_, [u8]> = match method {
            Method::Stored => {
                if m.compressed_size != m.size {
                    return Err(Error::format(format!(
                        "stored member has compressed size {} but size {}",
                        m.compressed_size, m.size
                    )));
                }
                // Bytes of the payload we already hold.
                let held = head.get((payload_start - offset) as usize..).unwrap_or(&[]);
                let held = &held[..held.len().min(m.size as usize)];
                let prefix_len = (m.size as usize).min(header::PREFIX_LEN);
                let mut prefix = held[..held.len().min(prefix_len)].to_vec();
                if prefix.len() < prefix_len {
                    prefix.resize(prefix_len, 0);
                    self.read_at(&mut prefix, payload_start)?;
                }
                let Some(total) = npy_header_len(&prefix, m.size, max_header)? else {
                    return Ok(Inspected::NotArray { payload_start });
                };
                if held.len() >= total {
                    Cow::Borrowed(&held[..total])
                } else {
                    let mut bytes = memory::zeroed(total)?;
                    self.read_at(&mut bytes, payload_start)?;
                    Cow::Owned(bytes)
                }
            }
            Method::Deflated | Method::Bzip2 | Method::Lzma | Method::Deflate64 => {
                let mut inflater =
                    self.inflater(method, payload, payload_start, m.compressed_size, m.size)?;
                let mut prefix = vec![0u8; (m.size as usize).min(header::PREFIX_LEN)];
                let got = inflater.read(&mut prefix)?;
                prefix.truncate(got);
                let Some(total) = npy_header_len(&prefix, m.size, max_header)? else {
                    return Ok(Inspected::NotArray { payload_start });
                };
                let mut bytes = memory::zeroed(total)?;
                // A header can be shorter than the prefix already inflated (HEADER_LEN 0 or 1:
                // found by cargo-fuzz); parsing then rejects it.
                let have = prefix.len().min(total);
                bytes[..have].copy_from_slice(&prefix[..have]);
                if inflater.read(&mut bytes[have..])? != total - have {
                    return Err(Error::format(format!(
                        "truncated: the {} stream ends inside the .npy header",
                        inflater.name()
                    )));
                }
                Cow::Owned(bytes)
            }
        };
        let header = headers.parse(&header_bytes, max_header)?;
        let mut swap_units = Vec::new();
        if self.opts.native_endian {
            header.descr.swap_units(0, &mut swap_units);
        }
        let used = (header.header_len as u64)
            .checked_add(header.nbytes as u64)
            .ok_or_else(|| Error::overflow("array size overflows"))?;
        if used > m.size {
            return Err(Error::format(format!(
                "truncated: header and data need {used} bytes but the member holds {}",
                m.size
            )));
        }
        let region = match holding {
            Holding::Region(r) if payload.is_some() => Some(Arc::clone(r)),
            _ => None,
        };
        // Held in the image, where the placement keeps it: exactly when its data is 64-aligned.
        let in_image = payload.is_some()
            && matches!(holding, Holding::Image(_))
            && (payload_start + header.header_len as u64) % BLOCK_ALIGN as u64 == 0;
        // A stored member's fill hashes its whole payload when phase A holds it: the header
        // bytes are kept only for the members whose CRC starts from them.
        let whole_payload_crc = method == Method::Stored && (region.is_some() || in_image);
        let crc = payload
            .filter(|_| in_image && self.opts.verify_crc)
            .map(crc32fast::hash);
        Ok(Inspected::Array(Located {
            method,
            payload_start,
            header,
            header_bytes: if whole_payload_crc {
                Vec::new()
            } else {
                header_bytes.into_owned()
            },
            swap_units,
            region,
            in_image,
            crc,
            file: None,
        }))
    }
}
