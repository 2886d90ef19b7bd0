//! Saving: borrowed arrays -> one `.npz`, planned up front and written in parallel.
//!
//! A save is three steps, each with one owner:
//! 1. the plan ([`plan`]): pure, from the arrays' member names, `.npy` headers and sizes to every
//!    offset in the file ([`crate::npz::plan`]); the same ordered arrays give the same bytes;
//! 2. the writes, through a [`Destination`]: [`stored::write_members`] (or
//!    [`deflated::write_members`]) writes the members and returns their CRC-32s, and
//!    [`write_records`] writes the central directory and end records from those CRCs. Any
//!    process holding the plan can write any members; one writes the records;
//! 3. the commit, owned by the target ([`PathTarget`]: temporary file, rename).
//!
//! The directory container is saved by [`crate::npy_dir`]; N processes save one `.npz`
//! together through [`collective`] (the blobs they exchange: [`manifest`]).

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::descr::{self, ArrayType, Descr};
use crate::dest::{Destination, FileTarget, MemoryTarget, PathTarget, Target};
use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::npy::header;
use crate::npy_dir::{self, DirArray};
use crate::npz::{self, plan::Plan, records};
use crate::options::{Layout, SaveOptions};
use crate::pool;
use crate::progress::{self, ProgressFn};
use crate::shape;

mod collective;
pub(crate) mod deflated;
mod job;
mod manifest;
mod prepared;
mod staging;
pub(crate) mod stored;

pub use collective::Collective;
pub use job::{JobTarget, SaveJob};
pub use manifest::PLAN_ID_LEN;
pub use prepared::Prepared;

pub use crate::npz::npz_path;

/// Longest key accepted (the member name must fit a ZIP record with its extra fields).
pub const MAX_KEY_LEN: usize = 65_000;

/// What the plan knows of one array: its member name, `.npy` header and data length. No data:
/// a plan can be made from these alone (e.g. from another process's description).
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// `<key>.npy`, UTF-8.
    pub(crate) name: Vec<u8>,
    /// The numpy-identical `.npy` header (shared by arrays of the same type and shape).
    pub(crate) header: Arc<[u8]>,
    /// Bytes of array data.
    pub(crate) data_len: usize,
}

impl Member {
    /// The key this member holds.
    pub(crate) fn key(&self) -> &str {
        npz::key_of_member_bytes(&self.name)
    }

    /// Bytes of the member's uncompressed payload: `.npy` header and array data.
    pub(crate) fn payload_len(&self) -> u64 {
        (self.header.len() + self.data_len) as u64
    }
}

/// Collects borrowed arrays and writes them into one `.npz`.
///
/// The saver borrows every array's bytes for `'a`; nothing is copied until `save` writes them.
#[derive(Default)]
pub struct Saver<'a> {
    /// What the plan needs of each array, in add order.
    members: Vec<Member>,
    /// Each array's bytes, borrowed; `data[i]` belongs to `members[i]`.
    data: Vec<&'a [u8]>,
    /// The keys added so far, as indices into `members` (whose names hold the keys): duplicate
    /// keys are found without a second copy of every key (20000 small arrays: hashing and
    /// freeing those copies was a tenth of the native save).
    keys: hashbrown::HashTable<usize>,
    /// Hashes the keys of `keys`.
    hasher: hashbrown::DefaultHashBuilder,
    /// The last few distinct headers built, most recent first: thousands of small arrays
    /// usually repeat a few types and shapes, and formatting a header was most of an add's
    /// cost.
    recent_headers: Vec<RecentHeader>,
    /// Where snapshots of this saver's arrays are copied for asynchronous saves: at most one
    /// idle buffer, reused by the next snapshot that fits, plus one per running job.
    staging: Arc<staging::Staging>,
}

/// A built `.npy` header and what it was built from.
struct RecentHeader {
    descr: Descr,
    shape: Vec<u64>,
    fortran_order: bool,
    header: Arc<[u8]>,
}

/// How many distinct headers [`Saver`] remembers.
const RECENT_HEADERS: usize = 8;

impl<'a> Saver<'a> {
    /// An empty saver.
    pub fn new() -> Self {
        Saver::default()
    }

    /// Number of arrays added.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if no array was added.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Removes the arrays added after the first `len`, so a failed batch of adds leaves the
    /// saver as it was. `len` above [`Saver::len`] does nothing.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.members.len() {
            return;
        }
        self.data.truncate(len);
        self.members.truncate(len);
        self.keys.retain(|&mut i| i < len);
    }

    /// Adds a C-order array of a numeric `dtype` in native byte order.
    ///
    /// `data.len()` must equal `prod(shape) * dtype.itemsize()`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArg`] for an empty, NUL-holding, too long or duplicate key or a
    /// length that does not match the shape; [`ErrorKind::Overflow`] when the byte count
    /// overflows. The saver is unchanged on error.
    pub fn add(&mut self, key: &str, data: &'a [u8], dtype: Dtype, shape: &[u64]) -> Result<()> {
        self.add_ordered(key, data, dtype, shape, false)
    }

    /// Adds an array of a numeric `dtype` (native byte order) whose bytes are in Fortran
    /// (column-major) order when `fortran_order` is true, C order otherwise; numpy reads it back
    /// with the same shape and order. `data.len()` must equal `prod(shape) * dtype.itemsize()`.
    ///
    /// # Errors
    /// As [`Saver::add`].
    pub fn add_ordered(
        &mut self,
        key: &str,
        data: &'a [u8],
        dtype: Dtype,
        shape: &[u64],
        fortran_order: bool,
    ) -> Result<()> {
        self.push(
            key,
            data,
            numeric_descr(dtype),
            shape.to_vec(),
            fortran_order,
        )
    }

    /// Adds an array described by a numpy descr (`<f8`, `|S5`, `[('a', '<i4')]`, ...).
    ///
    /// Any descr numpy writes without pickling is accepted; object (`|O`) is refused.
    /// `data.len()` must equal `prod(shape) * itemsize`. `fortran_order` marks column-major data.
    ///
    /// ```
    /// # use psv::{ErrorKind, Saver};
    /// let records = [0u8; 2 * 12]; // two records of an int32 and a float64
    /// let names = *b"ab\0\0cd\0\0";   // two 4-byte strings
    /// let mut saver = Saver::new();
    /// saver.add_descr("points", &records, "[('id', '<i4'), ('x', '<f8')]", &[2], false)?;
    /// saver.add_descr("names", &names, "|S4", &[2], false)?;
    /// let refused = saver.add_descr("objects", &[0u8; 8], "|O", &[1], false).unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::BadDtype);
    /// # Ok::<(), psv::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Saver::add`], and [`ErrorKind::BadDtype`] for an unparsable or object descr.
    pub fn add_descr(
        &mut self,
        key: &str,
        data: &'a [u8],
        numpy_descr: &str,
        shape: &[u64],
        fortran_order: bool,
    ) -> Result<()> {
        let ArrayType { descr, sub_shape } = descr::parse_descr_text(numpy_descr)
            .map_err(|e| match e.kind() {
                ErrorKind::Format | ErrorKind::Unsupported => Error::bad_dtype(e.message()),
                _ => e,
            })
            .map_err(|e| e.context(format!("key {key:?}")))?;
        let mut full_shape = shape.to_vec();
        full_shape.extend_from_slice(&sub_shape);
        self.push(key, data, &descr, full_shape, fortran_order)
    }

    fn push(
        &mut self,
        key: &str,
        data: &'a [u8],
        descr: &Descr,
        shape: Vec<u64>,
        fortran_order: bool,
    ) -> Result<()> {
        validate_key(key)?;
        let hash = self.hasher.hash_one(key);
        let members = &self.members;
        if self.keys.find(hash, |&i| members[i].key() == key).is_some() {
            return Err(Error::invalid_arg(format!("duplicate key {key:?}")));
        }
        let nbytes = shape::byte_count(&shape, descr.itemsize())
            .map_err(|e| e.context(format!("key {key:?}")))?;
        if nbytes != data.len() {
            return Err(Error::invalid_arg(format!(
                "key {key:?}: shape {shape:?} of {} needs {nbytes} bytes, got {}",
                descr.to_descr_string(),
                data.len()
            )));
        }
        // numpy never writes 1-d (or 0-d) arrays as Fortran order.
        let fortran_order = fortran_order && shape.len() > 1;
        let header = self.header_for(descr, shape, fortran_order);
        self.members.push(Member {
            name: npz::member_name(key),
            header,
            data_len: data.len(),
        });
        self.data.push(data);
        let (members, hasher) = (&self.members, &self.hasher);
        self.keys.insert_unique(hash, members.len() - 1, |&i| {
            hasher.hash_one(members[i].key())
        });
        Ok(())
    }

    /// The `.npy` header for this type, shape and order: a remembered one, or a new one.
    fn header_for(&mut self, descr: &Descr, shape: Vec<u64>, fortran_order: bool) -> Arc<[u8]> {
        if !matches!(descr, Descr::Simple(_)) {
            // Record types are rare and costly to compare; only simple ones are remembered
            // (which also keeps every comparison between two `Descr::Simple`s).
            return header::format(descr, &shape, fortran_order).into();
        }
        let found = self.recent_headers.iter().position(|r| {
            r.fortran_order == fortran_order && r.shape == shape && r.descr == *descr
        });
        let recent = match found {
            Some(i) => self.recent_headers.remove(i),
            None => {
                let header = header::format(descr, &shape, fortran_order).into();
                self.recent_headers.truncate(RECENT_HEADERS - 1);
                RecentHeader {
                    descr: descr.clone(),
                    shape,
                    fortran_order,
                    header,
                }
            }
        };
        let header = Arc::clone(&recent.header);
        self.recent_headers.insert(0, recent);
        header
    }

    /// Writes every array into `path` (`.npz` appended if missing) and returns the path written.
    ///
    /// The file appears atomically: it is written under a temporary name in the same directory
    /// and renamed over `path` only when complete. On error the temporary file is removed and an
    /// existing file at `path` is untouched.
    ///
    /// ```
    /// # use psv::{Dtype, SaveOptions, Saver};
    /// # let dir = std::env::temp_dir().join(format!("psv-doc-save-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let counts: Vec<u8> = (0..=255).collect();
    /// let mut saver = Saver::new();
    /// saver.add("counts", &counts, Dtype::U8, &[16, 16])?;
    /// let opts = SaveOptions::default().compression(6); // like savez_compressed
    /// let path = saver.save(dir.join("counts"), &opts)?;
    /// assert!(path.ends_with("counts.npz"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), psv::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArg`] for a compression level above 9 (or any, with the directory
    /// layout) or a path without a file name; [`ErrorKind::Io`] when the OS refuses (the
    /// message names the path, [`crate::Error::os_code`] has the errno); [`ErrorKind::NoMem`];
    /// [`ErrorKind::Overflow`] for an archive beyond 64-bit sizes.
    pub fn save(&self, path: impl AsRef<Path>, opts: &SaveOptions) -> Result<PathBuf> {
        self.save_impl(path.as_ref(), opts, None)
    }

    /// [`Saver::save`] with a progress callback `(done, total) -> continue?` that runs on the
    /// calling thread; returning `false` cancels (the temporary file is removed, the target is
    /// untouched, the result is [`ErrorKind::Aborted`]).
    ///
    /// # Errors
    /// As [`Saver::save`], and [`ErrorKind::Aborted`] when the callback cancels.
    pub fn save_with_progress(
        &self,
        path: impl AsRef<Path>,
        opts: &SaveOptions,
        progress: &mut ProgressFn<'_>,
    ) -> Result<PathBuf> {
        self.save_impl(path.as_ref(), opts, Some(progress))
    }

    fn save_impl(
        &self,
        path: &Path,
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<PathBuf> {
        check_compression(opts.compression)?;
        match opts.layout {
            Layout::Dir => {
                self.save_dir(path, opts, progress)?;
                Ok(path.to_path_buf())
            }
            Layout::Npz => {
                let target = npz_path(path);
                let written = self.write_npz(opts, progress, |len| {
                    PathTarget::create(&target, len).map(|t| t.with_writeback(opts.fsync))
                })?;
                written.commit(opts.fsync)?;
                Ok(target)
            }
        }
    }

    /// The exact length in bytes of the stored `.npz` these arrays make (what
    /// [`Saver::save_to_buffer`] needs), computed from the plan alone.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArg`] for a compressed save (its length is known only once it is
    /// compressed: use [`Saver::prepare`] or [`Saver::to_vec`]) or the directory layout;
    /// [`ErrorKind::Overflow`] beyond 64-bit sizes.
    pub fn size(&self, opts: &SaveOptions) -> Result<u64> {
        check_compression(opts.compression)?;
        if opts.layout != Layout::Npz {
            return Err(Error::invalid_arg("only an .npz save has a size in bytes"));
        }
        if opts.compression > 0 {
            return Err(Error::invalid_arg(
                "the size of a compressed save is known only after compressing it \
                 (prepare the save, or save to a library-allocated buffer)",
            ));
        }
        Ok(plan(&self.members, opts.alignment)?.total_len)
    }

    /// Writes the `.npz` into the start of `buf` (in parallel, as a file save) and returns its
    /// length; the bytes are those [`Saver::save`] writes. `buf` must hold at least the
    /// archive ([`Saver::size`] for a stored save).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArg`] when `buf` is too small (the message names the size needed),
    /// as [`Saver::save`] otherwise.
    pub fn save_to_buffer(&self, buf: &mut [u8], opts: &SaveOptions) -> Result<usize> {
        self.save_to_buffer_with(buf, opts, None)
    }

    /// [`Saver::save_to_buffer`] with a progress callback (see [`Saver::save_with_progress`]).
    ///
    /// # Errors
    /// As [`Saver::save_to_buffer`], and [`ErrorKind::Aborted`].
    pub fn save_to_buffer_with(
        &self,
        buf: &mut [u8],
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<usize> {
        check_compression(opts.compression)?;
        if opts.layout != Layout::Npz {
            return Err(Error::invalid_arg("only an .npz save can go to memory"));
        }
        let written = self.write_npz(opts, progress, |len| MemoryTarget::new(buf, len))?;
        Ok(written.len())
    }

    /// The `.npz` as a new vector (the bytes [`Saver::save`] writes).
    ///
    /// # Errors
    /// As [`Saver::save_to_buffer`].
    pub fn to_vec(&self, opts: &SaveOptions) -> Result<Vec<u8>> {
        self.to_memory(opts, None, crate::memory::zeroed, |v| &mut v[..])
    }

    /// The `.npz` (stored or compressed) in memory that `alloc(len)` makes, written through
    /// `bytes`, with an optional progress callback.
    pub(crate) fn to_memory<B>(
        &self,
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
        alloc: impl FnOnce(usize) -> Result<B>,
        bytes: impl Fn(&mut B) -> &mut [u8],
    ) -> Result<B> {
        check_compression(opts.compression)?;
        if opts.compression == 0 {
            let len = usize::try_from(self.size(opts)?)
                .map_err(|_| Error::nomem("the archive does not fit in memory"))?;
            let mut buf = alloc(len)?;
            self.save_to_buffer_with(bytes(&mut buf), opts, progress)?;
            return Ok(buf);
        }
        if opts.layout != Layout::Npz {
            return Err(Error::invalid_arg("only an .npz save can go to memory"));
        }
        let prepared = match progress {
            Some(p) => self.prepare_with_progress(opts, p)?,
            None => self.prepare(opts)?,
        };
        let len = usize::try_from(prepared.len())
            .map_err(|_| Error::nomem("the archive does not fit in memory"))?;
        let mut buf = alloc(len)?;
        prepared.render(0, bytes(&mut buf))?;
        Ok(buf)
    }

    /// Writes the `.npz` into a caller's open file. A seekable file (regular file or block
    /// device) gets positional writes from its current offset on, in parallel, and its offset
    /// is left at the end of the archive; anything else (a pipe, a socket, a character device)
    /// gets the bytes in file order. The caller keeps the file: nothing is renamed, truncated
    /// or closed (bytes past the archive stay). Returns the archive's length.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] from the OS (a closed pipe is `EPIPE`, when the process ignores
    /// SIGPIPE), as [`Saver::save`] otherwise. A failed save may have written part of the
    /// archive: the caller's file is not atomic.
    pub fn save_to_file(
        &self,
        file: &std::fs::File,
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<u64> {
        check_compression(opts.compression)?;
        if opts.layout != Layout::Npz {
            return Err(Error::invalid_arg(
                "only an .npz save can go to a file descriptor",
            ));
        }
        let shown = crate::dest::fd_name(file);
        if crate::dest::is_seekable(file) {
            let written = self.write_npz(opts, progress, |len| {
                FileTarget::create(file, len, shown).map(|t| t.with_writeback(opts.fsync))
            })?;
            return written.commit(opts.fsync);
        }
        self.save_to_stream(
            &mut |bytes| {
                std::io::Write::write_all(&mut crate::dest::sequential::Sequential(file), bytes)
                    .map_err(|e| Error::io(format!("cannot write to {shown}"), e))
            },
            opts,
            progress,
        )
    }

    /// Writes the `.npz` into `writer` in file order (a pipe, a socket, a compressor, an
    /// upload stream: anything sequential) and returns its length. The CRCs are computed
    /// first, in parallel, so no data descriptors are needed and array data still starts at
    /// 64-byte offsets of the stream.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when `writer` fails (the stream stops there), as [`Saver::save`]
    /// otherwise.
    pub fn save_to_writer(
        &self,
        writer: &mut dyn std::io::Write,
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<u64> {
        self.save_to_stream(
            &mut |bytes| {
                writer
                    .write_all(bytes)
                    .map_err(|e| Error::io("cannot write the archive to the stream", e))
            },
            opts,
            progress,
        )
    }

    /// Hands the `.npz` to `write` in file order (the bytes [`Saver::save`] writes) and returns
    /// its length. A stored save hashes each member on the pool while the previous one is being
    /// written; a compressed one compresses everything first and holds it until written.
    ///
    /// # Errors
    /// Whatever `write` returns (the stream stops there), as [`Saver::save`] otherwise.
    pub fn save_to_stream(
        &self,
        write: &mut dyn FnMut(&[u8]) -> Result<()>,
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<u64> {
        check_compression(opts.compression)?;
        if opts.layout != Layout::Npz {
            return Err(Error::invalid_arg("only an .npz save can be streamed"));
        }
        if opts.compression == 0 {
            return prepared::stream_stored(self, opts, write, progress);
        }
        self.prepare(opts)?.write_to(write, progress)
    }

    /// Plans the `.npz` and computes every CRC-32 (compressing first, for a compressed save):
    /// the [`Prepared`] save then renders any byte range, from any thread, or streams the
    /// whole archive. Borrows the saver until it is dropped.
    ///
    /// # Errors
    /// As [`Saver::save`] (no I/O happens here).
    pub fn prepare(&self, opts: &SaveOptions) -> Result<Prepared<'_, 'a>> {
        Prepared::new(self, opts, None)
    }

    /// [`Saver::prepare`] with a progress callback over the bytes hashed (or compressed).
    ///
    /// # Errors
    /// As [`Saver::prepare`], and [`ErrorKind::Aborted`].
    pub fn prepare_with_progress(
        &self,
        opts: &SaveOptions,
        progress: &mut ProgressFn<'_>,
    ) -> Result<Prepared<'_, 'a>> {
        Prepared::new(self, opts, Some(progress))
    }

    /// Writes the whole `.npz` through the target that `open` makes once the archive's length
    /// is known, and returns that target, written but not committed.
    fn write_npz<T: Target>(
        &self,
        opts: &SaveOptions,
        mut progress: Option<&mut ProgressFn<'_>>,
        open: impl FnOnce(u64) -> Result<T>,
    ) -> Result<T> {
        let pool = pool::get(opts.threads)?;
        if opts.compression == 0 {
            let plan = plan(&self.members, opts.alignment)?;
            let target = open(plan.total_len)?;
            let dest = target.destination();
            let total = plan.total_len;
            progress::run(&pool, total, progress.as_deref_mut(), |tracker| {
                let crcs =
                    stored::write_members(&dest, &plan, &self.members, 0, &self.data, tracker)?;
                write_records(&dest, &plan, &self.members, &crcs)
            })?;
            progress::finish(progress, total)?;
            drop(dest);
            return Ok(target);
        }
        let deflated = deflated::compress(
            &pool,
            &self.members,
            &self.data,
            opts.compression,
            opts.alignment,
            progress.as_deref_mut(),
        )?;
        let target = open(deflated.plan.total_len)?;
        let dest = target.destination();
        deflated.write_members(&dest, &self.members, &pool)?;
        write_records(&dest, &deflated.plan, &self.members, &deflated.crcs)?;
        progress::finish(progress, deflated.input_len)?;
        drop(dest);
        Ok(target)
    }

    /// Saves into the directory container (see [`crate::npy_dir`]).
    fn save_dir(
        &self,
        dir: &Path,
        opts: &SaveOptions,
        progress: Option<&mut ProgressFn<'_>>,
    ) -> Result<()> {
        if opts.compression > 0 {
            return Err(Error::invalid_arg(
                "the directory layout stores .npy files uncompressed",
            ));
        }
        let arrays: Vec<DirArray<'_>> = self
            .members
            .iter()
            .zip(&self.data)
            .map(|(m, data)| DirArray {
                key: m.key(),
                header: &m.header[..],
                data,
            })
            .collect();
        let pool = pool::get(opts.threads)?;
        let total = arrays.iter().map(|a| a.data.len() as u64).sum();
        let mut progress = progress;
        npy_dir::save(&arrays, dir, opts.fsync, &pool, &mut || {
            progress::finish(progress.as_deref_mut(), total)
        })
    }
}

/// The stored archive's plan for `members`, in order, with large arrays' data aligned to
/// `align` (see [`SaveOptions::alignment`]): pure and deterministic.
pub(crate) fn plan(members: &[Member], align: u64) -> Result<Plan> {
    let specs: Vec<npz::plan::MemberSpec> = members
        .iter()
        .map(|m| npz::plan::MemberSpec {
            name_len: m.name.len(),
            payload_len: m.payload_len(),
            deflated_size: None,
            header_len: m.header.len() as u64,
        })
        .collect();
    npz::plan::plan(&specs, align)
}

/// Writes the central directory and the end records of `plan`, whose members are `members`
/// with CRC-32s `crcs` (from the member writes, in member order).
pub(crate) fn write_records(
    dest: &dyn Destination,
    plan: &Plan,
    members: &[Member],
    crcs: &[u32],
) -> Result<()> {
    debug_assert_eq!(crcs.len(), members.len());
    let mut central = Vec::new();
    central
        .try_reserve_exact(plan.central_size as usize + 98)
        .map_err(|_| Error::nomem("cannot allocate the central directory"))?;
    for ((m, at), crc) in members.iter().zip(&plan.members).zip(crcs) {
        records::central_header(&mut central, &m.name, at, *crc);
    }
    records::end_records(&mut central, plan);
    dest.write_at(&central, plan.central_offset)
}

fn check_compression(level: u32) -> Result<()> {
    if level > 9 {
        return Err(Error::invalid_arg(format!(
            "compression level {level} is not in 0..=9"
        )));
    }
    Ok(())
}

/// The descr of a numeric dtype, parsed once per process.
fn numeric_descr(dtype: Dtype) -> &'static Descr {
    static DESCRS: OnceLock<Vec<Descr>> = OnceLock::new();
    let all = DESCRS.get_or_init(|| {
        crate::dtype::ALL_DTYPES
            .iter()
            .map(|d| Descr::Simple(descr::parse_simple(&d.descr()).expect("numeric descrs parse")))
            .collect()
    });
    let i = crate::dtype::ALL_DTYPES
        .iter()
        .position(|&d| d == dtype)
        .expect("every Dtype is in ALL_DTYPES");
    &all[i]
}

fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_arg("key is empty"));
    }
    if key.contains('\0') {
        return Err(Error::invalid_arg(format!(
            "key {key:?} contains a NUL character"
        )));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid_arg(format!(
            "key of {} bytes exceeds the limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::progress;

    /// A destination in memory, for checking that the bytes do not depend on who writes them.
    struct MemoryDestination(Mutex<Vec<u8>>);

    impl Destination for MemoryDestination {
        fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
            let mut v = self.0.lock().unwrap();
            let end = offset as usize + bytes.len();
            v[offset as usize..end].copy_from_slice(bytes);
            Ok(())
        }
    }

    impl Target for MemoryDestination {
        type Dest<'t> = &'t MemoryDestination;
        fn destination(&self) -> Self::Dest<'_> {
            self
        }
    }

    #[test]
    fn duplicate_keys_are_refused_and_truncate_forgets_the_removed_ones() {
        let data = [1u8, 2, 3, 4];
        let mut s = Saver::new();
        for k in ["a", "b", "a.npy", "c"] {
            s.add(k, &data, Dtype::U8, &[4]).unwrap();
        }
        for k in ["a", "b", "a.npy", "c"] {
            let e = s.add(k, &data, Dtype::U8, &[4]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArg);
            assert!(e.message().contains("duplicate key"), "{e}");
        }
        assert_eq!(s.len(), 4);
        s.truncate(2);
        // The keys of the removed arrays are free again; the kept ones are still taken.
        s.add("c", &data, Dtype::U8, &[4]).unwrap();
        s.add("a.npy", &data, Dtype::U8, &[4]).unwrap();
        assert!(s.add("b", &data, Dtype::U8, &[4]).is_err());
        assert!(s.add("c", &data, Dtype::U8, &[4]).is_err());
        // Thousands of keys: every one found again.
        let mut big = Saver::new();
        let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        for k in &keys {
            big.add(k, &data, Dtype::U8, &[4]).unwrap();
        }
        assert!(keys
            .iter()
            .all(|k| big.add(k, &data, Dtype::U8, &[4]).is_err()));
        assert_eq!(big.len(), 5000);
    }

    fn arrays() -> Vec<Vec<u8>> {
        // Small ones packed together, large ones cut into pieces, an empty one.
        [100usize, 3 << 20, 0, 70_000, 5, (2 << 20) + 3]
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|k| (k * 31 + i) as u8).collect())
            .collect()
    }

    fn saver(data: &[Vec<u8>]) -> Saver<'_> {
        let mut s = Saver::new();
        for (i, d) in data.iter().enumerate() {
            s.add(&format!("a{i}"), d, Dtype::U8, &[d.len() as u64])
                .unwrap();
        }
        s
    }

    #[test]
    fn the_same_arrays_give_the_same_bytes_through_any_destination() {
        let data = arrays();
        let s = saver(&data);
        let dir = std::env::temp_dir().join(format!("psv-save-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for level in [0, 3] {
            let opts = SaveOptions::default().compression(level);
            let path = s.save(dir.join(format!("l{level}")), &opts).unwrap();
            let file = std::fs::read(&path).unwrap();
            let memory = s
                .write_npz(&opts, None, |len| {
                    Ok(MemoryDestination(Mutex::new(vec![0xEE; len as usize])))
                })
                .unwrap();
            assert!(file == memory.0.into_inner().unwrap(), "level {level}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn members_written_by_several_writers_and_records_by_one_give_the_same_file() {
        let data = arrays();
        let s = saver(&data);
        let plan = plan(&s.members, npz::plan::ALIGN).unwrap();
        let whole = MemoryDestination(Mutex::new(vec![0; plan.total_len as usize]));
        let pool = pool::get(2).unwrap();
        let crcs = progress::run(&pool, 0, None, |t| {
            stored::write_members(&whole, &plan, &s.members, 0, &s.data, t)
        })
        .unwrap();
        write_records(&whole, &plan, &s.members, &crcs).unwrap();

        // Two writers, each with its own members (as ranks of a collective save would), in
        // reverse order; one of them writes the records from both writers' CRCs.
        let split = MemoryDestination(Mutex::new(vec![0; plan.total_len as usize]));
        let k = 2;
        let late = progress::run(&pool, 0, None, |t| {
            stored::write_members(&split, &plan, &s.members, k, &s.data[k..], t)
        })
        .unwrap();
        let early = progress::run(&pool, 0, None, |t| {
            stored::write_members(&split, &plan, &s.members, 0, &s.data[..k], t)
        })
        .unwrap();
        assert_eq!([early, late.clone()].concat(), crcs);
        write_records(&split, &plan, &s.members, &[&crcs[..k], &late[..]].concat()).unwrap();
        assert!(whole.0.into_inner().unwrap() == split.0.into_inner().unwrap());
    }
}
