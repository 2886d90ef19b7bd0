//! Restoring: any `.npz` -> one 64-byte-aligned block with a view per array.
//!
//! Data flow: index the central directory (zip crate) -> in parallel, read each member's local
//! header and `.npy` header, validating everything against the file -> lay out the block ->
//! allocate it -> in parallel, `pread` stored members straight into the block in ~4 MiB chunks
//! and inflate deflated members straight into it -> combine chunk CRCs and compare them with the
//! central directory.
//!
//! Two block layouts: packed (each array at the next 64-aligned offset) for any file, and an
//! [`Image`] of the file's data region for files whose stored arrays are 64-aligned (every file
//! psv writes): there the block is allocated first and phase A reads small members straight into
//! their final place.
//!
//! Submodules: `source` (positional reads), `inspect` (phase A), `fill` (the fill tasks),
//! `inflate` (raw inflate).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Cursor};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crc32fast::Hasher;
use flate2::{Decompress, FlushDecompress, Status};
use rayon::prelude::*;

use crate::archive::{Archive, ArrayInfo};
use crate::block::{self, Block, FileMap, BLOCK_ALIGN};
use crate::dir_layout;
use crate::error::{Error, Result};
use crate::npy::header::{self, NpyHeader};
use crate::npz::index::{self, MemberInfo, Method};
use crate::options::{self, RestoreOptions};
use crate::pool;
use crate::progress::{self, ProgressFn};
use crate::save::{npz_path, CHUNK_LEN};

mod fill;
mod inflate;
mod inspect;
mod source;

use fill::*;
use inspect::*;
use source::*;

/// Restores the arrays of the `.npz` at `path` (`.npz` appended if missing), or of the
/// directory archive at `path`, into one block.
///
/// ```
/// # use psv::{restore, Dtype, RestoreOptions, SaveOptions, Saver};
/// # let dir = std::env::temp_dir().join(format!("psv-doc-restore-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let mut saver = Saver::new();
/// # saver.add("a", &[1, 2, 3], Dtype::U8, &[3])?;
/// # saver.add("b", &[0; 8], Dtype::F64, &[])?;
/// # let path = saver.save(dir.join("x"), &SaveOptions::default())?;
/// // List without reading data, then read only "a".
/// let listing = restore(&path, &RestoreOptions { metadata_only: true, ..Default::default() })?;
/// assert_eq!(listing.arrays()[1].shape, Vec::<u64>::new()); // b is 0-d
/// let only_a = RestoreOptions { keys: Some(vec!["a".into()]), ..Default::default() };
/// let a = restore(&path, &only_a)?;
/// assert_eq!(a.data(0), Some(&[1u8, 2, 3][..]));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), psv::Error>(())
/// ```
pub fn restore(path: impl AsRef<Path>, opts: &RestoreOptions) -> Result<Archive> {
    restore_file(path.as_ref(), opts, None)
}

/// [`restore`] with a progress callback `(done, total) -> continue?`, run on the calling thread.
pub fn restore_with_progress(
    path: impl AsRef<Path>,
    opts: &RestoreOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<Archive> {
    restore_file(path.as_ref(), opts, Some(progress))
}

/// Restores a `.npz` held in memory (e.g. downloaded) into one block. `opts.mmap` is ignored.
pub fn restore_from_memory(bytes: &[u8], opts: &RestoreOptions) -> Result<Archive> {
    restore_memory(bytes, opts, None)
}

/// [`restore_from_memory`] with a progress callback.
pub fn restore_from_memory_with_progress(
    bytes: &[u8],
    opts: &RestoreOptions,
    progress: &mut ProgressFn<'_>,
) -> Result<Archive> {
    restore_memory(bytes, opts, Some(progress))
}

fn restore_memory(
    bytes: &[u8],
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
) -> Result<Archive> {
    let shown = "<memory>";
    let index = index::read_index(Cursor::new(bytes), shown, opts.max_members)?;
    let memory = Memory(bytes);
    let reader = Reader {
        src: &memory,
        file_len: bytes.len() as u64,
        central_start: Some(index.central_start),
        shown,
        opts,
    };
    reader.restore(&index.members, None, None, progress)
}

fn restore_file(
    path: &Path,
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
) -> Result<Archive> {
    if path.is_dir() {
        return restore_dir(path, opts, progress);
    }
    let path = npz_path(path);
    let shown = path.display().to_string();
    let file = File::open(&path).map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?
        .len();
    let index = index::read_index(BufReader::new(&file), &shown, opts.max_members)?;
    let map = if opts.mmap && !opts.metadata_only {
        Some(FileMap::new(&file, file_len).map_err(|e| e.context(&shown))?)
    } else {
        None
    };
    let reader = Reader {
        src: &file,
        file_len,
        central_start: Some(index.central_start),
        shown: &shown,
        opts,
    };
    reader.restore(&index.members, map, None, progress)
}

/// Restores a directory archive (see [`crate::dir_layout`]) through the same layout, fill and
/// CRC machinery, each array read from its own file.
fn restore_dir(
    dir: &Path,
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
) -> Result<Archive> {
    let shown = dir.display().to_string();
    let entries = dir_layout::read_index(dir)?.ok_or_else(|| {
        Error::format(format!(
            "{shown} is a directory without {}: not a psv archive",
            dir_layout::INDEX_NAME
        ))
    })?;
    if entries.len() as u64 > opts.max_members {
        return Err(Error::limit(format!(
            "{shown}: {} arrays exceed the limit of {}",
            entries.len(),
            opts.max_members
        )));
    }
    let members: Vec<MemberInfo> = entries
        .iter()
        .map(|e| MemberInfo {
            raw_name: e.file.as_bytes().to_vec(),
            name: format!("{}.npy", e.key),
            header_offset: 0,
            compressed_size: e.size,
            size: e.size,
            crc32: e.crc32,
            method: Ok(Method::Stored),
            encrypted: false,
        })
        .collect();
    let nothing = Memory(&[]);
    let reader = Reader {
        src: &nothing,
        file_len: 0,
        central_start: None,
        shown: &shown,
        opts,
    };
    reader.restore(&members, None, Some(dir), progress)
}

impl Reader<'_> {
    /// The whole restore after the central directory is indexed.
    fn restore(
        &self,
        members: &[MemberInfo],
        map: Option<FileMap>,
        dir: Option<&Path>,
        mut progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<Archive> {
        let (shown, opts) = (self.shown, self.opts);
        let (candidates, mut skipped) = select_members(members, shown, opts)?;
        let pool = pool::get(opts.threads)?;
        let limit = opts
            .max_total_bytes
            .unwrap_or_else(options::physical_memory);
        let image = match (dir, &map) {
            (None, None) => self.plan_image(members, &candidates, limit),
            _ => None,
        };
        let mut image_block = image.map(|img| Block::new(img.len())).transpose()?;
        let inspected = match dir {
            Some(dir) => pool.install(|| {
                candidates
                    .par_iter()
                    .map(|&i| {
                        self.inspect_dir_file(dir, &members[i])
                            .map(Inspected::Array)
                            .map_err(|e| self.in_member(&members[i], e))
                    })
                    .collect::<Result<Vec<_>>>()
            })?,
            None => {
                let staging = match (&map, image, image_block.as_mut()) {
                    (Some(map), _, _) => Staging::Mapped(&map.as_slice()[..self.file_len as usize]),
                    (None, Some(img), Some(block)) => Staging::Image(img, block.as_mut_slice()),
                    _ => Staging::Regions,
                };
                self.inspect_all(&pool, members, &candidates, staging)?
            }
        };

        // Lay out the block: every array that is not mapped (or in place in the image) gets a
        // 64-aligned slot after the image.
        let mut arrays = Vec::with_capacity(candidates.len());
        let mut located = Vec::with_capacity(candidates.len());
        let mut end: usize = image.map_or(0, |img| img.len());
        if let Some(central_start) = self.central_start {
            self.check_overlaps(members, &candidates, &inspected, central_start)?;
        }
        for (&i, found) in candidates.iter().zip(inspected) {
            let m = &members[i];
            let mut loc = match found {
                Inspected::Array(loc) => loc,
                Inspected::NotArray { payload_start } => {
                    if opts.keys.is_some() {
                        return Err(Error::format(format!(
                            "{shown}: member {:?} is not a .npy array",
                            m.name
                        )));
                    }
                    // numpy returns such members as raw bytes, CRC-checked: a flipped bit in
                    // the magic must not make an array vanish silently.
                    if opts.verify_crc {
                        self.check_raw_member_crc(m, payload_start)
                            .map_err(|e| self.in_member(m, e))?;
                    }
                    skipped.push(i);
                    continue;
                }
            };
            let file_offset = (loc.method == Method::Stored)
                .then(|| loc.payload_start + loc.header.header_len as u64);
            // Mapped views are the file's bytes: members that must be byte-swapped are copied.
            let mapped = map.is_some()
                && file_offset.is_some_and(|o| o % 64 == 0)
                && loc.swap_units.is_empty();
            // In image mode, aligned stored data stays where phase A (or the fill) puts it.
            let in_image = image.zip(file_offset).and_then(|(img, o)| {
                let fits = o % BLOCK_ALIGN as u64 == 0
                    && o >= img.start
                    && o.checked_add(loc.header.nbytes as u64)
                        .is_some_and(|e| e <= img.end);
                fits.then(|| (o - img.start) as usize)
            });
            if in_image.is_none() {
                // Phase A only marks members whose data is aligned inside the image.
                debug_assert!(!loc.in_image);
                loc.in_image = false;
            }
            let offset = if mapped {
                file_offset.unwrap_or(0) as usize
            } else if let Some(offset) = in_image {
                offset
            } else {
                let offset =
                    block::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?;
                end = offset
                    .checked_add(loc.header.nbytes)
                    .filter(|&e| {
                        (e as u64 <= limit || opts.metadata_only) && e <= isize::MAX as usize
                    })
                    .ok_or_else(|| {
                        Error::limit(format!(
                            "{shown}: the arrays need more than the block limit of {limit} bytes"
                        ))
                    })?;
                offset
            };
            let descr = if opts.native_endian {
                // The header's descr stays: swapping reads its item size.
                loc.header.descr.to_native()
            } else {
                // Nothing reads the header's descr after this point without native_endian; an
                // empty record list is a placeholder that costs no allocation.
                std::mem::replace(
                    &mut loc.header.descr,
                    crate::descr::Descr::Record(Vec::new()),
                )
            };
            arrays.push(ArrayInfo {
                key: m.name[..m.name.len() - 4].to_owned(),
                descr_string: descr.to_descr_string(),
                dtype: descr.numeric(),
                descr,
                // Nothing reads the header's shape after this point.
                shape: std::mem::take(&mut loc.header.shape),
                fortran_order: loc.header.fortran_order,
                offset,
                nbytes: loc.header.nbytes,
                mapped,
                file_offset,
                compressed: loc.method == Method::Deflated,
            });
            located.push((i, loc));
        }
        let total = if opts.metadata_only {
            0
        } else {
            block::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?
        };
        let mut block = match image_block {
            Some(mut b) => {
                b.grow(total)?;
                b
            }
            None => Block::new(total)?,
        };

        if !opts.metadata_only {
            let mut tasks = fill_tasks(
                block.as_mut_slice(),
                &arrays,
                &located,
                members,
                opts.verify_crc,
            );
            if opts.native_endian {
                // Swapping happens inside each task, right after its bytes arrive.
                for t in &mut tasks {
                    t.swap = !located[t.slot].1.swap_units.is_empty();
                }
            }
            // Members already in memory first, so their regions are released before the large
            // arrays fill the block (peak memory: the block plus about a batch of regions).
            // The sort is stable: each member's pieces stay in order for the CRC.
            tasks.sort_by_key(|t| t.region.is_none());
            for (_, loc) in &mut located {
                loc.region = None;
            }
            // Image members that phase A read (and hashed) and that need no swap have no task
            // left: they count as done from the start, so the total is still every array byte.
            let in_place: u64 = located
                .iter()
                .zip(&arrays)
                .filter(|((_, loc), _)| loc.in_image && loc.swap_units.is_empty())
                .map(|(_, a)| a.nbytes as u64)
                .sum();
            let task_bytes: u64 = tasks.iter().map(FillTask::bytes).sum();
            let work_bytes = task_bytes + in_place;
            let batches = batch_tasks(tasks, task_bytes, pool.current_num_threads());
            let results: Vec<(usize, Option<Crc>)> =
                progress::run(&pool, work_bytes, progress.as_deref_mut(), |tracker| {
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
                                    .fill(t, &members[*mi], loc)
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
                self.check_crcs(members, &located, &arrays, results)?;
            }
            progress::finish(progress, work_bytes)?;
        }

        Ok(Archive {
            block,
            map,
            metadata_only: opts.metadata_only,
            arrays,
            index: OnceLock::new(),
            skipped: {
                // Central-directory order, whichever way a member was found not to be an array.
                skipped.sort_unstable();
                skipped
                    .into_iter()
                    .map(|i| members[i].name.clone())
                    .collect()
            },
        })
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

/// Splits the central directory into array candidates (by name, in the order to restore) and
/// skipped members; checks name collisions and requested keys.
fn select_members(
    members: &[MemberInfo],
    shown: &str,
    opts: &RestoreOptions,
) -> Result<(Vec<usize>, Vec<usize>)> {
    // Members "k" and "k.npy" would both claim the key "k". The other member of such a pair is
    // either not named *.npy (few, usually none) or, when the key itself ends in ".npy", named
    // *.npy: the set of every name is built only in that rare case (hashing 20000 names cost
    // ~1.4 ms, 7% of restoring 20000 small arrays).
    let plain: HashSet<&str> = members
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| !n.ends_with(".npy"))
        .collect();
    let all: Option<HashSet<&str>> = members
        .iter()
        .any(|m| m.name.ends_with(".npy.npy"))
        .then(|| members.iter().map(|m| m.name.as_str()).collect());
    let mut candidates = Vec::with_capacity(members.len());
    let mut skipped = Vec::new();
    for (i, m) in members.iter().enumerate() {
        match m.name.strip_suffix(".npy") {
            Some(key) => {
                if plain.contains(key) || all.as_ref().is_some_and(|all| all.contains(key)) {
                    return Err(Error::format(format!(
                        "{shown}: members {key:?} and {:?} both claim the key {key:?}",
                        m.name
                    )));
                }
                if key.contains('\0') {
                    return Err(Error::format(format!(
                        "{shown}: member name {:?} contains NUL",
                        m.name
                    )));
                }
                candidates.push(i);
            }
            None => skipped.push(i),
        }
    }
    let Some(keys) = &opts.keys else {
        return Ok((candidates, skipped));
    };
    let by_key: HashMap<&str, usize> = candidates
        .iter()
        .map(|&i| (&members[i].name[..members[i].name.len() - 4], i))
        .collect();
    let mut wanted = Vec::with_capacity(keys.len());
    let mut seen = HashSet::new();
    for k in keys {
        if !seen.insert(k.as_str()) {
            return Err(Error::invalid_arg(format!("key {k:?} is requested twice")));
        }
        let i = by_key
            .get(k.as_str())
            .ok_or_else(|| Error::not_found(format!("{shown}: no array named {k:?}")))?;
        wanted.push(*i);
    }
    Ok((wanted, Vec::new()))
}

struct Reader<'r> {
    src: &'r (dyn Source + 'r),
    file_len: u64,
    /// Where the central directory starts (zip archives): member data must end before it.
    central_start: Option<u64>,
    shown: &'r str,
    opts: &'r RestoreOptions,
}

impl Reader<'_> {
    fn in_member(&self, m: &MemberInfo, e: Error) -> Error {
        e.context(format!("{}: member {:?}", self.shown, m.name))
    }

    /// Reads exactly `buf.len()` bytes at `offset`; running past the end is a format error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        read_exact(self.src, buf, offset)
    }
}
