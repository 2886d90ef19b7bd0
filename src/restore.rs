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

/// Bytes read speculatively with each local header: usually enough for the name, the extra
/// field and the whole `.npy` header, so a member's metadata costs one `pread`.
const HEAD_READ_LEN: u64 = 1024;
/// Compressed bytes read per `pread` while inflating.
const INFLATE_INPUT_LEN: usize = 256 << 10;
const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";

/// Where the archive's bytes come from: a file (positional reads) or a caller's buffer.
trait Source: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl Source for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.read_exact_at(buf, offset)
    }
}

/// Reads exactly `buf.len()` bytes at `offset` from `src`; running past the end is a format
/// error (the file is shorter than its records say), anything else an I/O error.
fn read_exact(src: &dyn Source, buf: &mut [u8], offset: u64) -> Result<()> {
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
struct Memory<'a>(&'a [u8]);

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
                image,
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
            let work_bytes: u64 = tasks.iter().map(FillTask::bytes).sum();
            let batches = batch_tasks(tasks, work_bytes, pool.current_num_threads());
            let results: Vec<(usize, Option<Crc>)> =
                progress::run(&pool, work_bytes, progress.as_deref_mut(), |tracker| {
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

/// What phase A found in a `.npy`-named member.
enum Inspected {
    /// An array.
    Array(Located),
    /// No npy magic: numpy would return the member's raw bytes.
    NotArray { payload_start: u64 },
}

impl Inspected {
    /// Where the member's data starts and ends in the file.
    fn span(&self, m: &MemberInfo) -> (u64, u64) {
        let start = match self {
            Inspected::Array(loc) => loc.payload_start,
            Inspected::NotArray { payload_start } => *payload_start,
        };
        (start, start.saturating_add(m.compressed_size))
    }
}

/// A member that holds an array: where its payload is and what its header says.
struct Located {
    method: Method,
    /// File offset of the payload (the npy magic, possibly compressed).
    payload_start: u64,
    header: NpyHeader,
    /// The raw header bytes (magic through padding), for a CRC that starts from them; empty
    /// when the fill hashes the whole payload from memory (`region` or `in_image`).
    header_bytes: Vec<u8>,
    /// Byte-swap units of one element when restoring to native order (empty: nothing to do).
    swap_units: Vec<(usize, usize)>,
    /// The bytes read in phase A, when they hold the whole payload (small members).
    region: Option<Arc<Region>>,
    /// Phase A read the whole payload into its place in the block (an [`Image`]); the layout
    /// clears this when it puts the array elsewhere.
    in_image: bool,
    /// The whole payload's CRC-32, computed in phase A right after its run was read, while
    /// the bytes were in cache (image members, when verifying).
    crc: Option<u32>,
    /// The member's own file (directory layout); `None`: the archive's source.
    file: Option<Arc<File>>,
}

/// A run of the file read in one `pread` during phase A: the local headers, `.npy` headers and
/// data of neighbouring small members. One read per run instead of two per member is what
/// makes thousands of tiny arrays cheap (each `pread` costs ~1-2 us here).
struct Region {
    start: u64,
    /// Its own mapping, so that the memory goes back to the system as soon as the last member
    /// using it is filled (a heap buffer freed by a worker may stay in that thread's arena).
    bytes: Block,
}

impl Region {
    /// `len` bytes at file offset `offset`, if this region holds them all.
    fn get(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.held().get(offset, len)
    }

    fn held(&self) -> Held<'_> {
        Held {
            start: self.start,
            bytes: self.bytes.as_slice(),
        }
    }
}

/// Bytes of the file that phase A read for a member, starting at file offset `start`: a
/// [`Region`], or a run of the block itself when the block is an [`Image`].
#[derive(Clone, Copy)]
struct Held<'a> {
    start: u64,
    bytes: &'a [u8],
}

/// What phase A holds of the file around a member.
#[derive(Clone, Copy)]
enum Holding<'a> {
    Nothing,
    /// A region of its own, which the fill keeps.
    Region(&'a Arc<Region>),
    /// A run of the block (an [`Image`]).
    Image(Held<'a>),
    /// The whole file, mapped (mmap mode).
    Mapped(Held<'a>),
}

/// Where phase A puts the bytes of small members it reads.
enum Staging<'a> {
    /// Runs are read into [`Region`]s of their own.
    Regions,
    /// Runs are read into their place in the image block.
    Image(Image, &'a mut [u8]),
    /// The file is mapped (mmap mode): nothing is read; headers are parsed from the mapping.
    /// Why: reading runs into regions cost a copy and fresh pages for bytes the mapping
    /// already shows: 20000 x 1 KiB, mmap restore 1.2-1.4 -> 0.9-1.1 us/array (C ABI loop).
    Mapped(&'a [u8]),
}

impl<'a> Holding<'a> {
    fn held(&self) -> Held<'a> {
        match self {
            Holding::Nothing => Held::NONE,
            Holding::Region(r) => r.held(),
            Holding::Image(h) | Holding::Mapped(h) => *h,
        }
    }
}

impl<'a> Held<'a> {
    const NONE: Held<'static> = Held {
        start: 0,
        bytes: &[],
    };

    /// `len` bytes at file offset `offset`, if held.
    fn get(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let to = from.checked_add(usize::try_from(len).ok()?)?;
        self.bytes.get(from..to)
    }

    /// Everything held from file offset `offset` on, if at least `len` bytes are.
    fn from(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        self.get(offset, len)?;
        Some(&self.bytes[(offset - self.start) as usize..])
    }
}

/// The block as an image of the file: when every array member is stored and its data is
/// 64-aligned in the file (every file psv writes), the block holds the file's bytes from
/// `start` (64-aligned) to the central directory, and each array's view is at its own file
/// offset minus `start`. Phase A then reads runs of small members straight into their final
/// place and the fill only checks their CRCs: one copy of each byte instead of two (a phase-A
/// region, then the block), and no region mappings to fault in and unmap. Measured on 20000
/// arrays of 1 KiB: see `Reader::plan_image`. Arrays that turn out not to be aligned are
/// placed after the image, as in the packed layout.
#[derive(Clone, Copy, Debug)]
struct Image {
    /// File offset of the block's first byte.
    start: u64,
    /// File offset just past the image (the central directory's start).
    end: u64,
}

impl Image {
    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// Phase-A work: candidate positions, and the file span to read for them up front (a run of
/// small members) or `None` (one large member, read piecewise).
type InspectJob = (Vec<usize>, Option<(u64, u64)>);

/// Phase-A jobs in image mode: the exact file span from each member to the next member (or the
/// central directory) is its place in the block, so runs of small members are read whole, in
/// place; a large member's job reads only its headers (the fill reads its data).
fn image_jobs(
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
            let head = (at + 30 + m.raw_name.len() as u64 + HEAD_READ_LEN).min(next);
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

/// Stored data is read, then CRC'd, in pieces of this size within a chunk, so the CRC pass
/// reads the CPU cache instead of memory.
const CACHE_PIECE_LEN: usize = 256 << 10;
/// Members up to this compressed size are read in runs (see [`Region`]).
const SMALL_MEMBER_LEN: u64 = 64 << 10;
/// Longest run read in one `pread`.
const REGION_SPAN: u64 = 1 << 20;
/// Room assumed for a small member's local extra field when sizing a run.
const EXTRA_SLACK: u64 = 256;

/// Groups fill tasks, in order, into batches of about equal work for the pool: one 4 MiB chunk
/// of a large array, or up to that many bytes of small arrays (fewer when the whole job is
/// small, so every worker gets some). Each batch is one rayon job. Why: with one job per task,
/// rayon split the task list by count, and a file of 4 large arrays followed by 2000 small
/// ones left one worker with nearly all the bytes (measured: 5.2 GB/s instead of ~8).
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
/// for its data pieces; empty for deflated members, whose fill hashes everything itself.
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
            | FillKind::Deflated { dest }
            | FillKind::InPlace { payload: dest } => dest.len() as u64,
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
    /// Inflate a whole deflated member; the array part lands in `dest`.
    Deflated { dest: &'b mut [u8] },
    /// A stored member that phase A read into its place in the image (and hashed): only the
    /// byte swap of its array data is left.
    InPlace { payload: &'b mut [u8] },
}

fn fill_tasks<'b>(
    block: &'b mut [u8],
    image: Option<Image>,
    arrays: &[ArrayInfo],
    located: &[(usize, Located)],
    members: &[MemberInfo],
    verify_crc: bool,
) -> Vec<FillTask<'b>> {
    // What each array's tasks own of the block, in block order: the array's bytes, or for a
    // payload already in place in the image, the whole payload (its CRC covers the header).
    let mut spans: Vec<(usize, usize, usize)> = arrays
        .iter()
        .zip(located)
        .enumerate()
        .filter(|(_, (a, _))| !a.mapped)
        .map(|(slot, (a, (mi, loc)))| match image {
            Some(img) if loc.in_image => {
                let start = (loc.payload_start - img.start) as usize;
                (start, start + members[*mi].size as usize, slot)
            }
            _ => (a.offset, a.offset + a.nbytes, slot),
        })
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
                    kind: FillKind::InPlace { payload: dest },
                    swap: false,
                    region: None,
                });
            }
            continue;
        }
        match loc.method {
            Method::Deflated => tasks.push(FillTask {
                slot,
                kind: FillKind::Deflated { dest },
                swap: false,
                region: loc.region.clone(),
            }),
            Method::Stored if loc.region.is_some() => tasks.push(FillTask {
                slot,
                kind: FillKind::Held { dest },
                swap: false,
                region: loc.region.clone(),
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

    /// Phase A for every candidate: small members in runs read with one `pread` each (into a
    /// [`Region`] of their own, or into their place in `image`'s block), large ones on their
    /// own; results in `candidates` order.
    fn inspect_all(
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
        let found: Vec<Vec<(usize, Inspected)>> = pool.install(|| {
            work.into_par_iter()
                .map(|((group, span), slice)| {
                    let first = &members[candidates[group[0]]];
                    let mut region = None;
                    let holding = match (span, slice) {
                        // mmap mode: everything is already in memory.
                        _ if mapped.is_some() => Holding::Mapped(mapped.unwrap_or(Held::NONE)),
                        (Some((start, _)), Some(bytes)) => {
                            self.read_at(bytes, start)
                                .map_err(|e| self.in_member(first, e))?;
                            Holding::Image(Held { start, bytes })
                        }
                        (Some((start, end)), None) => {
                            let mut bytes = Block::new((end - start) as usize)?;
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
    fn region_jobs(
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
            let end =
                (m.header_offset + 30 + m.raw_name.len() as u64 + EXTRA_SLACK + m.compressed_size)
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
    fn plan_image(
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
        if len > limit || len > isize::MAX as u64 || payload < len - len / 4 {
            return None;
        }
        let data = self.data_offset(first?)?;
        (data % BLOCK_ALIGN as u64 == 0).then_some(Image { start, end })
    }

    /// The file offset of a stored member's array data, from one read of its headers; `None`
    /// if they do not parse (phase A then reports why).
    fn data_offset(&self, m: &MemberInfo) -> Option<u64> {
        let want = (30 + m.raw_name.len() as u64 + HEAD_READ_LEN)
            .min(self.file_len.checked_sub(m.header_offset)?);
        let head = self.fetch(m.header_offset, want).ok()?;
        if head.len() < 30 || &head[..4] != LOCAL_SIG {
            return None;
        }
        let name_len = usize::from(u16::from_le_bytes([head[26], head[27]]));
        let extra_len = usize::from(u16::from_le_bytes([head[28], head[29]]));
        let payload = 30 + name_len + extra_len;
        let prefix = head.get(payload..payload + header::PREFIX_LEN)?;
        let max_header = usize::try_from(self.opts.max_header_len).unwrap_or(usize::MAX);
        let total = header::total_header_len(prefix, max_header).ok()?;
        Some(m.header_offset + (payload + total) as u64)
    }

    /// `len` bytes at `offset`, read from the source.
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf =
            block::zeroed(usize::try_from(len).map_err(|_| Error::limit("read too large"))?)?;
        self.read_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Phase A for one array of a directory archive: open its file, check its size against the
    /// index, parse its header (small files are read whole, once).
    fn inspect_dir_file(&self, dir: &Path, m: &MemberInfo) -> Result<Located> {
        let name = std::str::from_utf8(&m.raw_name).map_err(|_| Error::format("bad file name"))?;
        let path = dir.join(name);
        let file = File::open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
            .len();
        if len != m.size {
            return Err(Error::format(format!(
                "{} has {len} bytes but the index says {}",
                path.display(),
                m.size
            )));
        }
        let want = if len <= SMALL_MEMBER_LEN {
            len
        } else {
            len.min(HEAD_READ_LEN)
        };
        let mut head = block::zeroed(want as usize)?;
        read_exact(&file, &mut head, 0).map_err(|e| e.context(path.display()))?;
        let max_header = usize::try_from(self.opts.max_header_len).unwrap_or(usize::MAX);
        if !header::has_magic(&head) {
            return Err(Error::format(format!(
                "{} is not a .npy file",
                path.display()
            )));
        }
        let total = header::total_header_len(&head, max_header)?;
        if total as u64 > len {
            return Err(Error::format(format!(
                "truncated: {} is shorter than its header",
                path.display()
            )));
        }
        let header_bytes = if head.len() >= total {
            head[..total].to_vec()
        } else {
            let mut bytes = block::zeroed(total)?;
            read_exact(&file, &mut bytes, 0).map_err(|e| e.context(path.display()))?;
            bytes
        };
        let header = header::parse(&header_bytes, max_header)?;
        if (header.header_len as u64).saturating_add(header.nbytes as u64) > len {
            return Err(Error::format(format!(
                "truncated: {} is shorter than its array",
                path.display()
            )));
        }
        let mut swap_units = Vec::new();
        if self.opts.native_endian {
            header.descr.swap_units(0, &mut swap_units);
        }
        let region = if want == len {
            let mut bytes = Block::new(head.len())?;
            bytes.as_mut_slice().copy_from_slice(&head);
            Some(Arc::new(Region { start: 0, bytes }))
        } else {
            None
        };
        Ok(Located {
            method: Method::Stored,
            payload_start: 0,
            header,
            header_bytes,
            swap_units,
            region,
            in_image: false,
            crc: None,
            file: Some(Arc::new(file)),
        })
    }

    /// Members must not overlap each other or the central directory (CPython: "Overlapped
    /// entries"). Exact spans for inspected members; for the others (not arrays, or not
    /// requested) the smallest span their records allow.
    fn check_overlaps(
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
                let data = start.saturating_add(30 + m.raw_name.len() as u64);
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

    /// Checks the CRC-32 of a member that is not an array, reading (or inflating) all of it.
    fn check_raw_member_crc(&self, m: &MemberInfo, payload_start: u64) -> Result<()> {
        let mut h = Hasher::new();
        let mut buf = block::zeroed((CHUNK_LEN as u64).min(m.size) as usize)?;
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
            Ok(Method::Deflated) => {
                let mut inflater = self.inflater(None, payload_start, m.compressed_size);
                let mut done = 0u64;
                while done < m.size {
                    let n = (m.size - done).min(buf.len() as u64) as usize;
                    if inflater.read(&mut buf[..n])? != n {
                        return Err(Error::format("truncated: the deflate stream ends early"));
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

    /// Reads a member's bytes at `offset`: from its own file (directory layout) or the source.
    fn read_member(&self, loc: &Located, buf: &mut [u8], offset: u64) -> Result<()> {
        match &loc.file {
            Some(f) => read_exact(f.as_ref(), buf, offset),
            None => self.read_at(buf, offset),
        }
    }

    /// Validates a member's local header and `.npy` header. `None`: not an array (numpy would
    /// return its raw bytes). `holding` may hold the member's bytes.
    fn inspect(
        &self,
        m: &MemberInfo,
        holding: Holding<'_>,
        headers: &mut header::ParseCache,
    ) -> Result<Inspected> {
        let method = match &m.method {
            Ok(method) => *method,
            Err(name) => {
                return Err(Error::unsupported(format!(
                    "compression method {name} is not supported (only stored and deflated)"
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
        let want = (30 + m.raw_name.len() as u64 + HEAD_READ_LEN).min(self.file_len - offset);
        let held = holding.held();
        // A run that holds the fixed header and the name: take all it has from here on.
        let head: Cow<'_, [u8]> = match held.from(offset, 30 + m.raw_name.len() as u64) {
            Some(bytes) => Cow::Borrowed(bytes),
            None => Cow::Owned(self.fetch(offset, want)?),
        };
        if head.len() < 30 || &head[..4] != LOCAL_SIG {
            return Err(Error::format(format!(
                "no local file header at offset {offset}"
            )));
        }
        let name_len = usize::from(u16::from_le_bytes([head[26], head[27]]));
        let extra_len = u64::from(u16::from_le_bytes([head[28], head[29]]));
        if head.get(30..30 + name_len) != Some(&m.raw_name[..]) {
            return Err(Error::format(
                "the local header's name differs from the central directory's",
            ));
        }
        let payload_start = offset + 30 + name_len as u64 + extra_len;
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
                if !header::has_magic(&prefix) {
                    return Ok(Inspected::NotArray { payload_start });
                }
                let total = header::total_header_len(&prefix, max_header)?;
                if total as u64 > m.size {
                    return Err(Error::format(format!(
                        "truncated: the .npy header needs {total} bytes but the member holds {}",
                        m.size
                    )));
                }
                if held.len() >= total {
                    Cow::Borrowed(&held[..total])
                } else {
                    let mut bytes = block::zeroed(total)?;
                    self.read_at(&mut bytes, payload_start)?;
                    Cow::Owned(bytes)
                }
            }
            Method::Deflated => {
                let mut inflater = self.inflater(payload, payload_start, m.compressed_size);
                let mut prefix = vec![0u8; (m.size as usize).min(header::PREFIX_LEN)];
                let got = inflater.read(&mut prefix)?;
                prefix.truncate(got);
                if !header::has_magic(&prefix) {
                    return Ok(Inspected::NotArray { payload_start });
                }
                let total = header::total_header_len(&prefix, max_header)?;
                if total as u64 > m.size {
                    return Err(Error::format(format!(
                        "truncated: the .npy header needs {total} bytes but the member holds {}",
                        m.size
                    )));
                }
                let mut bytes = block::zeroed(total)?;
                // A header can be shorter than the prefix already inflated (HEADER_LEN 0 or 1:
                // found by cargo-fuzz); parsing then rejects it.
                let have = prefix.len().min(total);
                bytes[..have].copy_from_slice(&prefix[..have]);
                if inflater.read(&mut bytes[have..])? != total - have {
                    return Err(Error::format(
                        "truncated: the deflate stream ends inside the .npy header",
                    ));
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
        // Held in the image, where the layout keeps it: exactly when its data is 64-aligned.
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

    /// Runs one fill task; returns the CRC state of the bytes it covered (when verifying).
    fn fill(&self, task: FillTask<'_>, m: &MemberInfo, loc: &Located) -> Result<Option<Crc>> {
        let verify = self.opts.verify_crc;
        match task.kind {
            FillKind::Stored { file_offset, dest } => {
                // Read a cache-sized piece, then CRC it while it is still in cache.
                let mut h = Hasher::new();
                let mut offset = file_offset;
                for piece in dest.chunks_mut(CACHE_PIECE_LEN) {
                    self.read_member(loc, piece, offset)?;
                    if verify {
                        h.update(piece);
                    }
                    offset += piece.len() as u64;
                }
                let crc = verify.then_some(Crc::Piece(h));
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
            FillKind::InPlace { payload } => {
                if task.swap {
                    let data = loc.header.header_len..loc.header.header_len + loc.header.nbytes;
                    swap_in_place(&mut payload[data], loc);
                }
                Ok(None)
            }
            FillKind::StoredTail { file_offset, len } => {
                let mut buf = block::zeroed(len as usize)?;
                self.read_member(loc, &mut buf, file_offset)?;
                let mut h = Hasher::new();
                h.update(&buf);
                Ok(Some(Crc::Piece(h)))
            }
            FillKind::Deflated { dest } => {
                let held = task
                    .region
                    .as_ref()
                    .and_then(|r| r.get(loc.payload_start, m.compressed_size));
                let mut inflater = self.inflater(held, loc.payload_start, m.compressed_size);
                let mut h = Hasher::new();
                let mut header = block::zeroed(loc.header.header_len)?;
                if inflater.read(&mut header)? != header.len() || header != loc.header_bytes {
                    return Err(Error::format("the deflate stream changed while reading"));
                }
                h.update(&header);
                if inflater.read(dest)? != dest.len() {
                    return Err(Error::format(
                        "truncated: the deflate stream ends inside the array data",
                    ));
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
                            "truncated: the deflate stream ends before the declared size {}",
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

impl Reader<'_> {
    /// An inflater over a member's `len` compressed bytes at `start`: from `memory` when phase A
    /// holds them all, else from the source.
    fn inflater<'a>(&'a self, memory: Option<&'a [u8]>, start: u64, len: u64) -> Inflater<'a> {
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
struct Inflater<'a> {
    /// Where to read more compressed bytes; `None` when the whole stream is `memory`.
    reader: Option<&'a Reader<'a>>,
    memory: &'a [u8],
    buffer: Vec<u8>,
    /// Next file offset to read (equal to `end` once everything has been read).
    next: u64,
    end: u64,
    /// Position in the current input (`memory` or `buffer`).
    in_pos: usize,
    z: Decompress,
    ended: bool,
}

impl Inflater<'_> {
    /// Fills `out`; returns fewer bytes only if the deflate stream ended first.
    fn read(&mut self, out: &mut [u8]) -> Result<usize> {
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
    fn expect_end(&mut self, size: u64) -> Result<()> {
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
