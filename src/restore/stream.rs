//! Restoring from a sequential stream (a pipe, a socket, a read callback): one pass, front to
//! back, no seeks.
//!
//! Members are read from their local headers: the method, CRC-32 and sizes come from there (or
//! the ZIP64 extra field), so psv's and numpy's files stream as they are. Each array's bytes
//! are read straight into their place in the block, packed at 64-byte-aligned offsets in
//! stream order; stored chunks are CRC'd on the pool while the next chunk is read. Compressed
//! members of known size up to 16 MiB are read whole (at most 48 MiB of them held at once) and
//! decoded straight into the block on the pool while the stream goes on; larger ones, and
//! those with a data descriptor, are decoded on the calling thread as their bytes arrive.
//!
//! Members with a data descriptor (flag bit 3: the CRC and sizes follow the data; Python's
//! `zipfile` writes these to unseekable streams, and so does `numpy.savez` into a pipe) are
//! read without the central directory when their end can be found: a deflated member ends
//! itself; a stored `.npy` member ends right after its header and array data (numpy writes
//! nothing else), which its `.npy` header tells. Any other stored member with a descriptor
//! cannot be delimited in one pass: `Unsupported`, naming the member.
//!
//! After the last member come the central directory and the end records; every one of their
//! facts is checked against what the stream held (names, offsets, methods, CRCs, sizes,
//! count, the directory's offset and size): a mismatch is `Format`. The stream is read up to
//! the end record's comment and no further: buffered reads never ask for more than the records
//! read so far say the archive holds (except while a deflated member with a data descriptor is
//! decoded: its end is found only by decoding it).
//!
//! The block's size is known only at the end: the library's own block is reserved as address
//! space up to the block limit (`max_total_bytes`, by default physical memory) and touched as
//! it fills; a caller's buffer works as given; a caller's allocator, which needs the size
//! first, is `Unsupported`. Memory beyond the block: a 256 KiB read buffer, at most 48 MiB of
//! compressed members waiting for the pool, the `.npy` headers, and the decoders' state.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crc32fast::Hasher;
use rayon::Scope;

use super::inflate::{Feed, Inflater};
use super::{BlockFrom, CHUNK_LEN};
use crate::archive::{Archive, ArrayInfo, Storage};
use crate::error::{Error, ErrorKind, Result};
use crate::memory::{self, AnonMap};
use crate::npy::header::{self, NpyHeader};
use crate::npz::index::Method;
use crate::npz::plan::{CENTRAL_HEADER_LEN, LOCAL_HEADER_LEN};
use crate::npz::records::{self, CentralFields, LocalFields};
use crate::npz::{self};
use crate::options::{self, RestoreOptions};
use crate::pool;
use crate::progress::{self, ProgressFn, REPORT_BYTES, REPORT_INTERVAL};

/// The read buffer: headers and small reads go through it; array data bypasses it.
const BUF_LEN: usize = 256 << 10;
/// Most bytes a member with a data descriptor may decode to past its `.npy` data (numpy writes
/// none): a bound on what a hostile stream can make us decode for nothing.
const MAX_DESCRIPTOR_TAIL: u64 = 64 << 20;
/// Most bytes of extensible data accepted in a ZIP64 end record.
const MAX_ZIP64_EXTENSIBLE: u64 = 64 << 10;
/// The smallest own block reserved when the full limit cannot be (strict overcommit).
const MIN_RESERVE: usize = 64 << 20;
/// Compressed members up to this size are read whole, then decoded on the pool while the
/// stream goes on; larger ones are decoded on the calling thread as their bytes arrive.
const SPILL_MEMBER_MAX: u64 = 16 << 20;
/// Most compressed bytes held at once for members decoded on the pool.
const SPILL_BUDGET: u64 = 48 << 20;

/// The compressed bytes held for decoding on the pool: at most [`SPILL_BUDGET`].
struct Spill {
    used: Mutex<u64>,
    freed: Condvar,
}

impl Spill {
    /// Waits until `n` more bytes fit the budget (or nothing else is held), then takes them.
    fn acquire(&self, n: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + n > SPILL_BUDGET {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += n;
    }

    fn release(&self, n: u64) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) -= n;
        self.freed.notify_all();
    }
}

/// A member's compressed bytes held in memory, as a decoder's input.
struct MemFeed<'m> {
    bytes: &'m [u8],
    pos: usize,
}

impl Feed for MemFeed<'_> {
    fn fill(&mut self) -> Result<&[u8]> {
        Ok(&self.bytes[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Restores the archive that `input` streams, named `shown` in messages.
pub(crate) fn restore_stream_from(
    input: &mut dyn Read,
    shown: &str,
    opts: &RestoreOptions,
    progress: Option<&mut ProgressFn<'_>>,
    memory: BlockFrom<'_>,
) -> Result<Archive> {
    let pool = pool::get(opts.threads)?;
    if matches!(memory, BlockFrom::Allocator(_)) && !opts.metadata_only {
        return Err(Error::unsupported(format!(
            "{shown}: a caller's allocator needs the block size before the first byte, and a \
             stream tells it only at its end: restore the stream into caller memory (of \
             required_bytes, from a metadata-only restore of the same archive) or into the \
             library's block"
        )));
    }
    if let Some(keys) = &opts.keys {
        let mut seen = HashSet::new();
        if let Some(k) = keys.iter().find(|k| !seen.insert(k.as_str())) {
            return Err(Error::invalid_arg(format!("key {k:?} is requested twice")));
        }
    }
    let limit = opts
        .max_total_bytes
        .unwrap_or_else(options::physical_memory);
    // The memory the arrays go to.
    let caller = matches!(memory, BlockFrom::Caller(_));
    let mut own = None;
    let block: &mut [u8] = if opts.metadata_only {
        &mut []
    } else {
        match memory {
            BlockFrom::Own => own.insert(reserve(limit)?).as_mut_slice(),
            BlockFrom::Caller(buf) => {
                if buf.as_ptr() as usize % memory::BLOCK_ALIGN != 0 {
                    return Err(Error::invalid_arg(format!(
                        "the buffer at {:p} is not 64-byte aligned",
                        buf.as_ptr()
                    )));
                }
                buf
            }
            BlockFrom::Allocator(_) => unreachable!("refused above"),
        }
    };
    let (addr, room) = (block.as_ptr() as usize, block.len());
    let results = Mutex::new(Vec::new());
    let failed = Mutex::new(None);
    let spill = Spill {
        used: Mutex::new(0),
        freed: Condvar::new(),
    };
    let mut run = Run {
        s: StreamIn {
            inner: input,
            buf: vec![0u8; BUF_LEN],
            pos: 0,
            filled: 0,
            offset: 0,
            read_total: 0,
            shown,
            progress,
            reported: (0, Instant::now()),
            // The smallest archive is an end record of 22 bytes.
            horizon: 22,
        },
        opts,
        shown,
        members: Vec::new(),
        names: HashSet::new(),
        skipped: Vec::new(),
        out: Out {
            arrays: Vec::new(),
            end: 0,
            rest: block,
            rest_at: 0,
            room,
            caller,
            overflow: false,
            limit,
            metadata_only: opts.metadata_only,
            native_endian: opts.native_endian,
            shown: shown.to_owned(),
        },
        headers: header::ParseCache::default(),
        results: &results,
        failed: &failed,
        spill: &spill,
    };
    let order = pool.in_place_scope(|scope| run.read_all(scope));
    // A member decoded on the pool failed: its error first (the reading may have stopped
    // because of it).
    if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let order = order?;
    let Run {
        s,
        mut members,
        skipped,
        out,
        ..
    } = run;
    let Out {
        arrays,
        end,
        overflow,
        ..
    } = out;
    let mut parts = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let progress = s.progress;
    let read_total = s.read_total;
    check_keys_collide(&members, shown)?;
    check_crcs(&mut members, &mut parts, shown)?;
    let required = memory::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?;
    // Arrays in the order other restores give: requested keys, or central-directory order.
    let mut arrays = arrays;
    let mut rank = vec![0usize; members.len()];
    for (pos, &m) in order.iter().enumerate() {
        rank[m] = pos;
    }
    arrays.sort_by_key(|(m, _)| rank[*m]);
    let arrays: Vec<ArrayInfo> = match &opts.keys {
        None => arrays.into_iter().map(|(_, a)| a).collect(),
        Some(keys) => {
            let mut by_key: HashMap<String, ArrayInfo> = arrays
                .into_iter()
                .map(|(_, a)| (a.key.clone(), a))
                .collect();
            keys.iter()
                .map(|k| {
                    by_key
                        .remove(k)
                        .ok_or_else(|| Error::not_found(format!("{shown}: no array named {k:?}")))
                })
                .collect::<Result<_>>()?
        }
    };
    let mut skipped = skipped;
    skipped.sort_by_key(|&m| rank[m]);
    let skipped = skipped
        .into_iter()
        .map(|m| members[m].name.clone())
        .collect();
    let storage = if opts.metadata_only {
        Storage::listing()?
    } else if let Some(mut block) = own {
        block.truncate(required);
        Storage::Block(block)
    } else {
        if overflow || required > room {
            return Err(Error::invalid_arg(format!(
                "the buffer holds {room} bytes; the arrays need {required} (see required_bytes)"
            )));
        }
        Storage::Borrowed {
            addr,
            len: required,
        }
    };
    progress::finish(progress, read_total)?;
    Ok(Archive::new(storage, arrays, skipped, required))
}

/// Address space for the library's own block: up to `limit` bytes, reserved (not committed);
/// less when the system refuses that much (strict overcommit), down to [`MIN_RESERVE`].
fn reserve(limit: u64) -> Result<AnonMap> {
    // Never more than the address space a process can have (47 bits on x86-64 Linux).
    let mut want = usize::try_from(limit.min(1 << 46)).unwrap_or(1 << 46);
    loop {
        match AnonMap::reserve(want) {
            Ok(map) => return Ok(map),
            Err(e) if want <= MIN_RESERVE => return Err(e),
            Err(_) => want /= 2,
        }
    }
}

/// The stream, buffered, with its position and the progress reports.
struct StreamIn<'r, 'p> {
    inner: &'r mut dyn Read,
    buf: Vec<u8>,
    /// Unread bytes are `buf[pos..filled]`.
    pos: usize,
    filled: usize,
    /// Stream offset of `buf[pos]`: bytes consumed so far.
    offset: u64,
    /// Bytes read from the stream so far (progress).
    read_total: u64,
    shown: &'r str,
    progress: Option<&'r mut ProgressFn<'p>>,
    /// Bytes and time of the last progress report.
    reported: (u64, Instant),
    /// Stream offset up to which the bytes are known to belong to the archive (the records
    /// read so far say so): buffered reads ask for no more. `u64::MAX` while a deflated member
    /// of unknown size (data descriptor) is decoded.
    horizon: u64,
}

impl StreamIn<'_, '_> {
    /// One `read` of the stream into `dest` (retried when interrupted); 0 at its end.
    fn read_some(inner: &mut dyn Read, shown: &str, dest: &mut [u8]) -> Result<usize> {
        loop {
            match inner.read(dest) {
                Ok(n) => return Ok(n.min(dest.len())),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(ours) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) {
                        return Err(ours.clone());
                    }
                    return Err(Error::io(format!("cannot read {shown}"), e));
                }
            }
        }
    }

    /// Counts `n` more bytes read and reports progress when due (total 0: not known).
    fn tick(&mut self, n: usize) -> Result<()> {
        self.read_total += n as u64;
        if let Some(p) = self.progress.as_mut() {
            let (bytes, at) = self.reported;
            if self.read_total - bytes >= REPORT_BYTES || at.elapsed() >= REPORT_INTERVAL {
                self.reported = (self.read_total, Instant::now());
                if !p(self.read_total, 0) {
                    return Err(Error::new(
                        ErrorKind::Aborted,
                        "cancelled by the progress callback",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The buffered bytes, read from the stream first when none are (empty at its end).
    fn fill(&mut self) -> Result<&[u8]> {
        self.fill_need(1)
    }

    /// [`StreamIn::fill`] for a caller that needs `need` bytes: a read asks for at least that
    /// many (when none are buffered) and otherwise for no more than the archive is known to
    /// hold from here (`horizon`), so that nothing after the archive is taken from the stream.
    fn fill_need(&mut self, need: usize) -> Result<&[u8]> {
        if self.pos == self.filled {
            let room = usize::try_from(self.horizon.saturating_sub(self.offset)).unwrap_or(BUF_LEN);
            let ask = room.max(need).clamp(1, BUF_LEN);
            let n = Self::read_some(self.inner, self.shown, &mut self.buf[..ask])?;
            self.tick(n)?;
            (self.pos, self.filled) = (0, n);
        }
        Ok(&self.buf[self.pos..self.filled])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.offset += n as u64;
    }

    /// The error for a stream that ends inside `what`.
    fn truncated(&self, what: &str) -> Error {
        Error::format(format!(
            "truncated: {} ends at byte {} inside {what}",
            self.shown, self.offset
        ))
    }

    /// Fills `dest` from the stream: buffered bytes first, then large reads straight into
    /// `dest`. The stream ending first is a format error naming `what`.
    fn read_exact(&mut self, dest: &mut [u8], what: &str) -> Result<()> {
        let have = (self.filled - self.pos).min(dest.len());
        dest[..have].copy_from_slice(&self.buf[self.pos..self.pos + have]);
        self.consume(have);
        let mut done = have;
        while done < dest.len() {
            if dest.len() - done >= BUF_LEN / 2 {
                let n = Self::read_some(self.inner, self.shown, &mut dest[done..])?;
                if n == 0 {
                    return Err(self.truncated(what));
                }
                self.tick(n)?;
                self.offset += n as u64;
                done += n;
            } else {
                let got = self.fill_need(dest.len() - done)?;
                if got.is_empty() {
                    return Err(self.truncated(what));
                }
                let n = got.len().min(dest.len() - done);
                dest[done..done + n].copy_from_slice(&got[..n]);
                self.consume(n);
                done += n;
            }
        }
        Ok(())
    }

    /// `N` bytes.
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        self.read_exact(&mut out, what)?;
        Ok(out)
    }

    /// Reads past `n` bytes, hashing them into `hasher` when given.
    fn skip(&mut self, n: u64, mut hasher: Option<&mut Hasher>, what: &str) -> Result<()> {
        let mut left = n;
        while left > 0 {
            let got = self.fill_need(usize::try_from(left).unwrap_or(BUF_LEN).min(BUF_LEN))?;
            if got.is_empty() {
                return Err(self.truncated(what));
            }
            let k = got.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&got[..k]);
            }
            self.consume(k);
            left -= k as u64;
        }
        Ok(())
    }
}

/// A member's compressed bytes in the stream: at most `left` more (`u64::MAX`: unknown, the
/// decoder finds the end).
struct Limited<'s, 'r, 'p> {
    s: &'s mut StreamIn<'r, 'p>,
    left: u64,
}

impl Feed for Limited<'_, '_, '_> {
    fn fill(&mut self) -> Result<&[u8]> {
        if self.left == 0 {
            return Ok(&[]);
        }
        let left = self.left;
        let got = self.s.fill()?;
        Ok(&got[..got.len().min(usize::try_from(left).unwrap_or(usize::MAX))])
    }

    fn consume(&mut self, n: usize) {
        self.left -= n as u64;
        self.s.consume(n);
    }
}

/// A member as its local header (and data descriptor) described it, and what was read of it.
struct Seen {
    /// Stream offset of its local header.
    offset: u64,
    raw_name: Vec<u8>,
    name: String,
    method: u16,
    /// The CRC-32 the local header (or the data descriptor) declares.
    crc32: u32,
    compressed_size: u64,
    size: u64,
    /// Its CRC was computed (in parts collected in `Run::results`).
    hashed: bool,
}

/// A CRC part: (member, position in the member, the CRC state of those bytes).
type Part = (usize, usize, Hasher);

/// Byte-swap units of one element (empty: no swap).
type Units = Arc<Vec<(usize, usize)>>;

/// Where arrays go: the block, filled in increasing order, and the arrays placed so far.
struct Out<'b> {
    /// Restored arrays and their member.
    arrays: Vec<(usize, ArrayInfo)>,
    /// End of the last array in the block.
    end: usize,
    /// The block from `rest_at` on.
    rest: &'b mut [u8],
    rest_at: usize,
    /// Bytes of block memory there are.
    room: usize,
    /// The memory is a caller's buffer (else the library's reserved block).
    caller: bool,
    /// A caller's buffer turned out too small: the rest is only measured.
    overflow: bool,
    limit: u64,
    metadata_only: bool,
    native_endian: bool,
    shown: String,
}

impl<'b> Out<'b> {
    /// Places the array of member `slot` (`key`, header `npy`) at the next 64-aligned offset;
    /// returns its bytes in the block (and its swap units) unless nothing is to be read into
    /// it (metadata only, or a caller's buffer that is too small).
    fn place(
        &mut self,
        slot: usize,
        key: &str,
        npy: NpyHeader,
        file_offset: Option<u64>,
        method: Method,
    ) -> Result<Option<(&'b mut [u8], Units)>> {
        let offset =
            memory::align_up(self.end).ok_or_else(|| Error::limit("block size overflows"))?;
        let nbytes = npy.nbytes;
        let end = offset
            .checked_add(nbytes)
            .filter(|&e| {
                (memory::align_up(e).is_some_and(|padded| padded as u64 <= self.limit)
                    || self.metadata_only)
                    && e <= isize::MAX as usize
            })
            .ok_or_else(|| {
                Error::limit(format!(
                    "{}: the arrays need more than the block limit of {} bytes",
                    self.shown, self.limit
                ))
            })?;
        let mut units = Vec::new();
        if self.native_endian {
            npy.descr.swap_units(0, &mut units);
        }
        let descr = if self.native_endian {
            npy.descr.to_native()
        } else {
            npy.descr
        };
        self.arrays.push((
            slot,
            ArrayInfo {
                key: key.to_owned(),
                descr_string: descr.to_descr_string(),
                dtype: descr.numeric(),
                descr,
                shape: npy.shape,
                fortran_order: npy.fortran_order,
                offset,
                nbytes,
                mapped: false,
                file_offset,
                compressed: file_offset.is_none(),
                method,
            },
        ));
        self.end = end;
        if self.metadata_only || self.overflow {
            return Ok(None);
        }
        if end > self.room {
            if !self.caller {
                return Err(Error::limit(format!(
                    "{}: the arrays need more than the {} bytes of address space reserved for \
                     the block",
                    self.shown, self.room
                )));
            }
            self.overflow = true;
            return Ok(None);
        }
        let (_, tail) = std::mem::take(&mut self.rest).split_at_mut(offset - self.rest_at);
        let (dest, tail) = tail.split_at_mut(nbytes);
        (self.rest, self.rest_at) = (tail, end);
        Ok(Some((dest, Arc::new(units))))
    }
}

/// One stream restore's state.
struct Run<'b, 'r, 'p> {
    s: StreamIn<'r, 'p>,
    opts: &'r RestoreOptions,
    shown: &'r str,
    members: Vec<Seen>,
    names: HashSet<Vec<u8>>,
    /// Members that are not arrays.
    skipped: Vec<usize>,
    out: Out<'b>,
    headers: header::ParseCache,
    results: &'b Mutex<Vec<Part>>,
    /// The first error of a member decoded on the pool.
    failed: &'b Mutex<Option<Error>>,
    spill: &'b Spill,
}

/// What a member is to this restore.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A `.npy` member to restore.
    Wanted,
    /// A `.npy` member the keys leave out.
    Unwanted,
    /// Not named `*.npy`.
    Raw,
}

/// A member's local header, decoded.
struct Local {
    fields: LocalFields,
    method: std::result::Result<Method, String>,
    /// Sizes (compressed, uncompressed), unless a data descriptor gives them.
    sizes: Option<(u64, u64)>,
    /// The local header has a ZIP64 extra field (so a descriptor's sizes are 8 bytes).
    zip64: bool,
}

impl<'b> Run<'b, '_, '_> {
    /// Reads every member, then the central directory and end records; returns the members in
    /// central-directory order.
    fn read_all<'s>(&mut self, scope: &Scope<'s>) -> Result<Vec<usize>>
    where
        'b: 's,
    {
        let first = self.s.fill_need(4)?.to_vec();
        if first.is_empty() {
            return Err(Error::format(format!(
                "{}: not a zip/.npz stream: it is empty",
                self.shown
            )));
        }
        if first.starts_with(header::MAGIC) {
            return Err(Error::format(format!(
                "{}: not a zip/.npz stream: it is a single .npy array (numpy.load reads it; psv \
                 restores .npz archives)",
                self.shown
            )));
        }
        loop {
            let at = self.s.offset;
            let sig = u32::from_le_bytes(self.s.array::<4>("the next zip record")?);
            match sig {
                records::LOCAL_SIG => self.member(scope, at)?,
                records::CENTRAL_SIG
                | records::END_SIG
                | records::ZIP64_END_SIG
                | records::DIGITAL_SIG => return self.directory(sig, at),
                _ if at == 0 => {
                    let shown: String = first
                        .iter()
                        .take(8)
                        .map(|&b| match b {
                            b' '..=b'~' => (b as char).to_string(),
                            _ => format!("\\x{b:02x}"),
                        })
                        .collect();
                    return Err(Error::format(format!(
                        "{}: not a zip/.npz stream (it starts with \"{shown}\")",
                        self.shown
                    )));
                }
                _ => {
                    return Err(Error::format(format!(
                        "{}: no zip record at byte {at} (signature {sig:#010x}) after member {:?}",
                        self.shown,
                        self.members.last().map_or("", |m| m.name.as_str())
                    )))
                }
            }
        }
    }

    /// Decodes a local header (its signature already read) and the name after it.
    fn local_header(&mut self) -> Result<(Local, Vec<u8>)> {
        let what = "a local file header";
        let mut fixed = [0u8; LOCAL_HEADER_LEN as usize];
        fixed[..4].copy_from_slice(&records::LOCAL_SIG.to_le_bytes());
        self.s.read_exact(&mut fixed[4..], what)?;
        let fields = LocalFields::parse(&fixed).expect("the signature was checked");
        let payload_start =
            self.s.offset + u64::from(fields.name_len) + u64::from(fields.extra_len);
        self.s.horizon = payload_start;
        let mut raw_name = vec![0u8; usize::from(fields.name_len)];
        self.s.read_exact(&mut raw_name, what)?;
        let mut extra = vec![0u8; usize::from(fields.extra_len)];
        self.s.read_exact(&mut extra, what)?;
        let name = records::decode_name(&raw_name);
        let bad = |msg: &str| Error::format(format!("{}: member {name:?}: {msg}", self.shown));
        let zip64 = records::zip64_extra(&extra).map_err(bad)?;
        let descriptor = fields.flags & records::FLAG_DESCRIPTOR != 0;
        let (mut csize, mut size) = (u64::from(fields.compressed_size), u64::from(fields.size));
        if fields.size == u32::MAX || fields.compressed_size == u32::MAX {
            match zip64 {
                // The local ZIP64 field holds both sizes (APPNOTE 4.5.3).
                Some(data) if data.len() >= 16 => {
                    size = records::get64(data, 0);
                    csize = records::get64(data, 8);
                }
                Some(_) if descriptor => {}
                Some(_) => return Err(bad("its ZIP64 extra field is too short")),
                None if descriptor => {}
                None => return Err(bad("its sizes are ZIP64 sentinels without a ZIP64 field")),
            }
        }
        // The version needed is checked in the central directory (as other restores do:
        // writers put anything in the local one).
        if fields.flags & records::UNSUPPORTED_FLAGS != 0 {
            return Err(Error::unsupported(format!(
                "{}: member {name:?} uses patched data or strong encryption (flags {:#06x})",
                self.shown, fields.flags
            )));
        }
        // The next record (a local header, or a central one of 46 bytes) takes at least 30.
        self.s.horizon = match (descriptor, fields.method) {
            (false, _) => payload_start.saturating_add(csize).saturating_add(30),
            // A stored member with a data descriptor: its .npy prefix first (see `stored`).
            (true, 0) => payload_start + header::PREFIX_LEN as u64,
            // A deflated one ends where its stream does.
            (true, _) => u64::MAX,
        };
        let method = match fields.method {
            0 => Ok(Method::Stored),
            8 => Ok(Method::Deflated),
            9 => Ok(Method::Deflate64),
            12 => Ok(Method::Bzip2),
            14 => Ok(Method::Lzma),
            other => Err(format!("{other}")),
        };
        Ok((
            Local {
                fields,
                method,
                sizes: (!descriptor).then_some((csize, size)),
                zip64: zip64.is_some(),
            },
            raw_name,
        ))
    }

    /// One member: its local header (signature read at `at`), its data, its descriptor.
    fn member<'s>(&mut self, scope: &Scope<'s>, at: u64) -> Result<()>
    where
        'b: 's,
    {
        if self.members.len() as u64 >= self.opts.max_members {
            return Err(Error::limit(format!(
                "{}: more than {} members (the limit)",
                self.shown, self.opts.max_members
            )));
        }
        if let Some(e) = self.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        let (local, raw_name) = self.local_header()?;
        let name = records::decode_name(&raw_name);
        if !self.names.insert(raw_name.clone()) {
            return Err(Error::format(format!(
                "{}: the stream holds member {name:?} more than once",
                self.shown
            )));
        }
        let wanted = |key: &str| {
            self.opts
                .keys
                .as_ref()
                .is_none_or(|k| k.iter().any(|k| k == key))
        };
        let role = match npz::key_of(&name) {
            Some(key) if key.contains('\0') => {
                return Err(Error::format(format!(
                    "{}: member name {name:?} contains NUL",
                    self.shown
                )))
            }
            Some(key) if wanted(key) => Role::Wanted,
            Some(_) => Role::Unwanted,
            None => Role::Raw,
        };
        let slot = self.members.len();
        self.members.push(Seen {
            offset: at,
            raw_name,
            name,
            method: local.fields.method,
            crc32: local.fields.crc32,
            compressed_size: local.sizes.map_or(0, |s| s.0),
            size: local.sizes.map_or(0, |s| s.1),
            hashed: false,
        });
        let result = match (role, local.sizes) {
            (Role::Unwanted, Some((csize, size))) => self
                .s
                .skip(csize, None, "member data")
                .map(|()| (csize, size)),
            _ => self.payload(scope, slot, &local, role),
        };
        let result = result.and_then(|measured| {
            if local.fields.flags & records::FLAG_DESCRIPTOR != 0 {
                self.descriptor(slot, &local, measured)?;
            }
            Ok(())
        });
        result.map_err(|e| {
            if e.message().starts_with(self.shown) {
                e
            } else {
                e.context(format!(
                    "{}: member {:?}",
                    self.shown, self.members[slot].name
                ))
            }
        })
    }

    /// Reads a member's data descriptor and checks its sizes against what was read.
    fn descriptor(&mut self, slot: usize, local: &Local, measured: (u64, u64)) -> Result<()> {
        let what = "a data descriptor";
        let first = u32::from_le_bytes(self.s.array::<4>(what)?);
        let crc = if first == records::DESCRIPTOR_SIG {
            u32::from_le_bytes(self.s.array::<4>(what)?)
        } else {
            first
        };
        let (csize, size) = if local.zip64 {
            let b = self.s.array::<16>(what)?;
            (records::get64(&b, 0), records::get64(&b, 8))
        } else {
            let b = self.s.array::<8>(what)?;
            let word =
                |at: usize| u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]));
            (word(0), word(4))
        };
        if (csize, size) != measured {
            if local.method == Ok(Method::Stored) {
                return Err(Error::unsupported(format!(
                    "stored with a data descriptor, and the descriptor is not right after its \
                     .npy header and array data (byte {}): its end cannot be found in one \
                     pass; restore it from a file or memory",
                    self.s.offset
                )));
            }
            return Err(Error::format(format!(
                "its data descriptor gives sizes {csize}/{size}, the data holds {}/{}",
                measured.0, measured.1
            )));
        }
        let m = &mut self.members[slot];
        (m.crc32, m.compressed_size, m.size) = (crc, csize, size);
        Ok(())
    }

    /// Records a CRC part computed on this thread.
    fn part(&self, slot: usize, k: usize, h: Hasher) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((slot, k, h));
    }

    /// Reads past a member that is not restored and not checked.
    fn pass(&mut self, slot: usize, sizes: (u64, u64)) -> Result<(u64, u64)> {
        self.skipped.push(slot);
        self.s.skip(sizes.0, None, "member data")?;
        Ok(sizes)
    }

    /// Reads a member's data (stored or compressed): an array into the block, anything else
    /// past (hashing it when checked). Returns the (compressed, uncompressed) sizes read.
    fn payload<'s>(
        &mut self,
        scope: &Scope<'s>,
        slot: usize,
        local: &Local,
        role: Role,
    ) -> Result<(u64, u64)>
    where
        'b: 's,
    {
        let encrypted = local.fields.flags & records::FLAG_ENCRYPTED != 0;
        if role == Role::Raw && (local.method.is_err() || encrypted) {
            // Other restores list such members without reading them.
            if let Some(sizes) = local.sizes {
                return self.pass(slot, sizes);
            }
        }
        let method = match &local.method {
            Ok(m) => *m,
            Err(name) => {
                return Err(Error::unsupported(format!(
                    "compression method {name} is not supported (stored, deflate, bzip2, LZMA \
                     and Deflate64 are)"
                )))
            }
        };
        if encrypted {
            return Err(Error::unsupported("encrypted members are not supported"));
        }
        if local.sizes.is_none() && !matches!(method, Method::Stored | Method::Deflated) {
            return Err(Error::unsupported(format!(
                "a {} member with a data descriptor cannot be delimited in a stream; restore \
                 it from a file or memory",
                method.name()
            )));
        }
        match (method, local.sizes) {
            (Method::Stored, _) => self.stored(scope, slot, local, role),
            (_, Some((csize, size)))
                if role == Role::Wanted
                    && !self.opts.metadata_only
                    && !self.out.overflow
                    && csize <= SPILL_MEMBER_MAX =>
            {
                self.compressed_on_pool(scope, slot, method, (csize, size))
            }
            _ => self.compressed(slot, local, role, method),
        }
    }

    /// Whether a raw member's CRC is checked (as other restores do: every member when no keys
    /// are asked for).
    fn check_raw(&self) -> bool {
        self.opts.verify_crc && self.opts.keys.is_none() && !self.opts.metadata_only
    }

    /// The `.npy` header length cap.
    fn max_header(&self) -> usize {
        usize::try_from(self.opts.max_header_len).unwrap_or(usize::MAX)
    }

    /// A `.npy`-named member without the npy magic: numpy hands such members back as raw
    /// bytes; a requested key must be an array.
    fn not_an_array(&mut self, slot: usize, role: Role) -> Result<()> {
        if self.opts.keys.is_some() {
            if role == Role::Wanted {
                return Err(Error::format("is not a .npy array"));
            }
        } else {
            self.skipped.push(slot);
        }
        Ok(())
    }

    /// The whole `.npy` header's length from its prefix; a header longer than the member
    /// (when its size is known) is a truncated file.
    fn header_len(&self, prefix: &[u8], size: Option<u64>) -> Result<usize> {
        let total = header::total_header_len(prefix, self.max_header())?;
        if let Some(size) = size.filter(|&s| total as u64 > s) {
            return Err(Error::format(format!(
                "truncated: the .npy header needs {total} bytes but the member holds {size}"
            )));
        }
        Ok(total)
    }

    /// A stored member.
    fn stored<'s>(
        &mut self,
        scope: &Scope<'s>,
        slot: usize,
        local: &Local,
        role: Role,
    ) -> Result<(u64, u64)>
    where
        'b: 's,
    {
        if let Some((csize, size)) = local.sizes {
            if csize != size {
                return Err(Error::format(format!(
                    "stored member has compressed size {csize} but size {size}"
                )));
            }
        }
        let known = local.sizes.map(|s| s.1);
        if role == Role::Raw {
            let size = known.ok_or_else(descriptor_unsupported)?;
            self.skipped.push(slot);
            let check = self.check_raw();
            let mut h = Hasher::new();
            self.s.skip(size, check.then_some(&mut h), "member data")?;
            if check {
                self.part(slot, 0, h);
                self.members[slot].hashed = true;
            }
            return Ok((size, size));
        }
        let prefix_len = known.map_or(header::PREFIX_LEN, |s| {
            s.min(header::PREFIX_LEN as u64) as usize
        });
        let mut head = vec![0u8; prefix_len];
        self.s.read_exact(&mut head, "the .npy header")?;
        if !header::has_magic(&head) {
            let size = known.ok_or_else(descriptor_unsupported)?;
            self.not_an_array(slot, role)?;
            let check = self.check_raw();
            let mut h = Hasher::new();
            h.update(&head);
            let rest = size - head.len() as u64;
            self.s.skip(rest, check.then_some(&mut h), "member data")?;
            if check {
                self.part(slot, 0, h);
                self.members[slot].hashed = true;
            }
            return Ok((size, size));
        }
        let total = self.header_len(&head, known)?;
        if known.is_none() {
            self.s.horizon = self.s.offset - head.len() as u64 + total as u64;
        }
        if head.len() < total {
            let have = head.len();
            head.resize(total, 0);
            self.s.read_exact(&mut head[have..], "the .npy header")?;
        }
        // A prefix longer than the header (HEADER_LEN 0 or 1) is refused by the parser.
        let npy = self.headers.parse(&head, self.max_header())?;
        let used = (npy.header_len as u64)
            .checked_add(npy.nbytes as u64)
            .ok_or_else(|| Error::overflow("array size overflows"))?;
        if let Some(size) = known.filter(|&s| used > s) {
            return Err(Error::format(format!(
                "truncated: header and data need {used} bytes but the member holds {size}"
            )));
        }
        let size = known.unwrap_or(used);
        if known.is_none() {
            // The data, then the data descriptor (at most 24 bytes), then a record.
            self.s.horizon = self.s.offset + npy.nbytes as u64 + 24 + 30;
        }
        let verify = self.opts.verify_crc && role == Role::Wanted && !self.opts.metadata_only;
        let mut part = 0;
        if verify {
            let mut h = Hasher::new();
            h.update(&head);
            self.part(slot, part, h);
            part += 1;
        }
        let (nbytes, item) = (npy.nbytes as u64, npy.descr.itemsize().max(1));
        let data_offset = self.s.offset;
        let placed = match role {
            Role::Wanted => {
                let key = npz::key_of(&self.members[slot].name).unwrap_or_default();
                let key = key.to_owned();
                self.out
                    .place(slot, &key, npy, Some(data_offset), Method::Stored)?
            }
            _ => None,
        };
        match placed {
            Some((dest, units)) => {
                // Whole elements per chunk, so each can be byte-swapped on its own.
                let chunk_len = (CHUNK_LEN / item).max(1) * item;
                let mut rest = dest;
                while !rest.is_empty() {
                    let n = chunk_len.min(rest.len());
                    let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(n);
                    rest = tail;
                    self.s.read_exact(chunk, "the array data")?;
                    if verify || !units.is_empty() {
                        // Hashed (and swapped) on the pool while the next chunk is read.
                        let (results, units, k) = (self.results, Arc::clone(&units), part);
                        scope.spawn(move |_| {
                            let h = verify.then(|| {
                                let mut h = Hasher::new();
                                h.update(chunk);
                                h
                            });
                            swap_in_place(chunk, &units, item);
                            if let Some(h) = h {
                                results
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .push((slot, k, h));
                            }
                        });
                        part += 1;
                    }
                }
            }
            None => {
                let mut h = Hasher::new();
                self.s
                    .skip(nbytes, verify.then_some(&mut h), "the array data")?;
                if verify {
                    self.part(slot, part, h);
                    part += 1;
                }
            }
        }
        let mut h = Hasher::new();
        self.s.skip(
            size - used,
            verify.then_some(&mut h),
            "the member's trailing bytes",
        )?;
        if verify {
            self.part(slot, part, h);
            self.members[slot].hashed = true;
        }
        Ok((size, size))
    }

    /// A wanted compressed member of known size: its bytes are read whole (within the spill
    /// budget), its `.npy` header decoded here to place the array, and the rest decoded
    /// straight into the block on the pool while the stream goes on.
    fn compressed_on_pool<'s>(
        &mut self,
        scope: &Scope<'s>,
        slot: usize,
        method: Method,
        (csize, size): (u64, u64),
    ) -> Result<(u64, u64)>
    where
        'b: 's,
    {
        let spill = self.spill;
        spill.acquire(csize);
        // Held until the decoding task (or this function, on every early return) ends.
        struct Held<'a>(&'a Spill, u64);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.release(self.1);
            }
        }
        let held = Held(spill, csize);
        let mut bytes = memory::zeroed(csize as usize)?;
        self.s.read_exact(&mut bytes, "member data")?;
        let max_header = self.max_header();
        let verify = self.opts.verify_crc;
        // The header, decoded here: the array's place depends on it.
        let mut feed = MemFeed {
            bytes: &bytes,
            pos: 0,
        };
        let mut inflater = Inflater::over_feed(method, &mut feed, size)?;
        let what = inflater.name();
        let mut prefix = vec![0u8; size.min(header::PREFIX_LEN as u64) as usize];
        let got = inflater.read(&mut prefix)?;
        prefix.truncate(got);
        if !header::has_magic(&prefix) {
            self.not_an_array(slot, Role::Wanted)?;
            if self.check_raw() {
                let mut h = Hasher::new();
                h.update(&prefix);
                let rest = drain(&mut inflater, &mut h, true, size - got as u64)?;
                if got as u64 + rest != size {
                    return Err(Error::format(format!(
                        "truncated: the {what} stream ends before the declared size {size}"
                    )));
                }
                inflater.expect_end(size)?;
                self.part(slot, 0, h);
                self.members[slot].hashed = true;
            }
            return Ok((csize, size));
        }
        let total = self.header_len(&prefix, Some(size))?;
        let mut header_bytes = memory::zeroed(total)?;
        let have = prefix.len().min(total);
        header_bytes[..have].copy_from_slice(&prefix[..have]);
        if inflater.read(&mut header_bytes[have..])? != total - have {
            return Err(Error::format(format!(
                "truncated: the {what} stream ends inside the .npy header"
            )));
        }
        drop(inflater);
        let npy = self.headers.parse(&header_bytes, max_header)?;
        let used = (npy.header_len as u64)
            .checked_add(npy.nbytes as u64)
            .ok_or_else(|| Error::overflow("array size overflows"))?;
        if used > size {
            return Err(Error::format(format!(
                "truncated: header and data need {used} bytes but the member holds {size}"
            )));
        }
        let item = npy.descr.itemsize().max(1);
        let key = npz::key_of(&self.members[slot].name)
            .unwrap_or_default()
            .to_owned();
        let Some((dest, units)) = self.out.place(slot, &key, npy, None, method)? else {
            // A caller's buffer turned out too small: the restore fails at the end.
            return Ok((csize, size));
        };
        if verify {
            self.members[slot].hashed = true;
        }
        let (results, failed) = (self.results, self.failed);
        let context = format!("{}: member {:?}", self.shown, self.members[slot].name);
        scope.spawn(move |_| {
            let _held = held;
            let decoded = (|| -> Result<Option<Hasher>> {
                let mut feed = MemFeed {
                    bytes: &bytes,
                    pos: 0,
                };
                let mut inflater = Inflater::over_feed(method, &mut feed, size)?;
                let mut again = vec![0u8; header_bytes.len()];
                if inflater.read(&mut again)? != again.len() || again != header_bytes {
                    return Err(Error::format(format!(
                        "the {what} stream changed while reading"
                    )));
                }
                if inflater.read(dest)? != dest.len() {
                    return Err(Error::format(format!(
                        "truncated: the {what} stream ends inside the array data"
                    )));
                }
                let mut h = Hasher::new();
                if verify {
                    h.update(&header_bytes);
                    h.update(dest);
                }
                swap_in_place(dest, &units, item);
                if !verify {
                    return Ok(None);
                }
                let tail = size - used;
                if drain(&mut inflater, &mut h, true, tail)? != tail {
                    return Err(Error::format(format!(
                        "truncated: the {what} stream ends before the declared size {size}"
                    )));
                }
                inflater.expect_end(size)?;
                Ok(Some(h))
            })();
            match decoded {
                Ok(Some(h)) => results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((slot, 0, h)),
                Ok(None) => {}
                Err(e) => {
                    failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e.context(context));
                }
            }
        });
        Ok((csize, size))
    }

    /// A compressed member, decoded on this thread as its bytes arrive.
    fn compressed(
        &mut self,
        slot: usize,
        local: &Local,
        role: Role,
        method: Method,
    ) -> Result<(u64, u64)> {
        let known = local.sizes;
        let check_raw = self.check_raw();
        if let (Some(sizes), Role::Raw, false) = (known, role, check_raw) {
            return self.pass(slot, sizes);
        }
        let opts = self.opts;
        let hash = match role {
            Role::Wanted => opts.verify_crc && !opts.metadata_only,
            Role::Raw => check_raw,
            Role::Unwanted => false,
        };
        let max_header = self.max_header();
        let key = npz::key_of(&self.members[slot].name)
            .unwrap_or_default()
            .to_owned();
        let size_bound = known.map_or(u64::MAX, |s| s.1);
        let mut lim = Limited {
            s: &mut self.s,
            left: known.map_or(u64::MAX, |s| s.0),
        };
        let mut inflater = Inflater::over_feed(method, &mut lim, size_bound)?;
        let what = inflater.name();
        let mut h = Hasher::new();
        let mut decoded = 0u64;
        let mut is_array = false;
        // Whether the rest must be decoded: to check the CRC, or to find the end.
        let mut decode_rest = hash || known.is_none();
        if role == Role::Raw {
            self.skipped.push(slot);
        } else {
            let mut prefix = vec![0u8; size_bound.min(header::PREFIX_LEN as u64) as usize];
            let got = inflater.read(&mut prefix)?;
            prefix.truncate(got);
            decoded += got as u64;
            if header::has_magic(&prefix) {
                is_array = true;
                let total = header::total_header_len(&prefix, max_header)?;
                if total as u64 > size_bound {
                    return Err(Error::format(format!(
                        "truncated: the .npy header needs {total} bytes but the member holds \
                         {size_bound}"
                    )));
                }
                let mut bytes = memory::zeroed(total)?;
                let have = prefix.len().min(total);
                bytes[..have].copy_from_slice(&prefix[..have]);
                if inflater.read(&mut bytes[have..])? != total - have {
                    return Err(Error::format(format!(
                        "truncated: the {what} stream ends inside the .npy header"
                    )));
                }
                decoded = total as u64;
                let npy = self.headers.parse(&bytes, max_header)?;
                h.update(&bytes);
                let used = (npy.header_len as u64)
                    .checked_add(npy.nbytes as u64)
                    .ok_or_else(|| Error::overflow("array size overflows"))?;
                if used > size_bound {
                    return Err(Error::format(format!(
                        "truncated: header and data need {used} bytes but the member holds \
                         {size_bound}"
                    )));
                }
                let (nbytes, item) = (npy.nbytes as u64, npy.descr.itemsize().max(1));
                let placed = match role {
                    Role::Wanted => self.out.place(slot, &key, npy, None, method)?,
                    _ => None,
                };
                match placed {
                    Some((dest, units)) => {
                        if inflater.read(dest)? != dest.len() {
                            return Err(Error::format(format!(
                                "truncated: the {what} stream ends inside the array data"
                            )));
                        }
                        if hash {
                            h.update(dest);
                        }
                        swap_in_place(dest, &units, item);
                        decoded += nbytes;
                    }
                    None if !decode_rest => {}
                    None => {
                        let got = drain(&mut inflater, &mut h, hash, nbytes)?;
                        if got != nbytes {
                            return Err(Error::format(format!(
                                "truncated: the {what} stream ends inside the array data"
                            )));
                        }
                        decoded += nbytes;
                    }
                }
                // The array's bytes arrived: the rest matters only for the CRC or the end.
                decode_rest = hash || known.is_none();
            } else {
                // Not an array (as `not_an_array`, which would borrow the stream too).
                if self.opts.keys.is_some() {
                    if role == Role::Wanted {
                        return Err(Error::format("is not a .npy array"));
                    }
                } else {
                    self.skipped.push(slot);
                }
                h.update(&prefix);
            }
        }
        if decode_rest {
            let max = match known {
                Some((_, size)) => size - decoded,
                None if is_array => MAX_DESCRIPTOR_TAIL,
                None => self.out.limit,
            };
            let got = drain(&mut inflater, &mut h, hash, max)?;
            decoded += got;
            match known {
                Some((_, size)) => {
                    if decoded != size {
                        return Err(Error::format(format!(
                            "truncated: the {what} stream ends before the declared size {size}"
                        )));
                    }
                    inflater.expect_end(size)?;
                }
                None if got == max => {
                    let mut probe = [0u8; 1];
                    if inflater.read(&mut probe)? != 0 {
                        return Err(Error::limit(format!(
                            "with a data descriptor, it decodes to more than {max} bytes past \
                             its .npy data (the limit)"
                        )));
                    }
                }
                None => {}
            }
        }
        drop(inflater);
        let left = lim.left;
        let csize = match known {
            Some((csize, _)) => {
                // Bytes after the end of the compressed stream, up to the declared size.
                lim.s.skip(left, None, "member data")?;
                csize
            }
            None => u64::MAX - left,
        };
        if hash {
            self.part(slot, 0, h);
            self.members[slot].hashed = true;
        }
        Ok((csize, known.map_or(decoded, |s| s.1)))
    }

    /// The central directory (its first signature `sig` read at `at`) and the end records,
    /// each fact checked against the members the stream held; returns the members in
    /// directory order. The stream is read up to the end record's comment, no further.
    fn directory(&mut self, mut sig: u32, at: u64) -> Result<Vec<usize>> {
        let shown = self.shown;
        let bad = |msg: String| Error::format(format!("{shown}: {msg}"));
        let by_offset: HashMap<u64, usize> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.offset, i))
            .collect();
        let mut order = Vec::with_capacity(self.members.len());
        let mut listed = vec![false; self.members.len()];
        let what = "the central directory";
        while sig == records::CENTRAL_SIG {
            let record_at = self.s.offset - 4;
            if order.len() == self.members.len() {
                return Err(bad(format!(
                    "the central directory lists more members than the {} the stream held",
                    self.members.len()
                )));
            }
            let mut fixed = [0u8; CENTRAL_HEADER_LEN as usize];
            fixed[..4].copy_from_slice(&records::CENTRAL_SIG.to_le_bytes());
            self.s.horizon = record_at + CENTRAL_HEADER_LEN;
            self.s.read_exact(&mut fixed[4..], what)?;
            let c = CentralFields::parse(&fixed).expect("the signature was checked");
            // The name, extra field and comment, then a record of at least 22 bytes.
            self.s.horizon = self.s.offset
                + u64::from(c.name_len)
                + u64::from(c.extra_len)
                + u64::from(c.comment_len)
                + 22;
            let mut raw_name = vec![0u8; usize::from(c.name_len)];
            self.s.read_exact(&mut raw_name, what)?;
            let mut extra = vec![0u8; usize::from(c.extra_len)];
            self.s.read_exact(&mut extra, what)?;
            self.s.skip(u64::from(c.comment_len), None, what)?;
            let name = records::decode_name(&raw_name);
            let present = [
                c.size == u32::MAX,
                c.compressed_size == u32::MAX,
                c.header_offset == u32::MAX,
            ];
            let mut values = [None; 3];
            if present.iter().any(|&p| p) {
                let data = records::zip64_extra(&extra)
                    .map_err(|e| bad(format!("member {name:?}: central directory: {e}")))?
                    .ok_or_else(|| {
                        bad(format!(
                            "member {name:?}: the central directory's sizes or offset are ZIP64 \
                             sentinels without a ZIP64 field"
                        ))
                    })?;
                values = records::zip64_values(data, present).ok_or_else(|| {
                    bad(format!(
                        "member {name:?}: the central directory's ZIP64 field is too short"
                    ))
                })?;
            }
            let size = values[0].unwrap_or(u64::from(c.size));
            let csize = values[1].unwrap_or(u64::from(c.compressed_size));
            let offset = values[2].unwrap_or(u64::from(c.header_offset));
            if c.version_needed > 63 {
                return Err(Error::unsupported(format!(
                    "{shown}: member {name:?} needs ZIP version {}.{} (only up to 6.3 is \
                     supported)",
                    c.version_needed / 10,
                    c.version_needed % 10
                )));
            }
            if c.flags & records::UNSUPPORTED_FLAGS != 0 {
                return Err(Error::unsupported(format!(
                    "{shown}: member {name:?} uses patched data or strong encryption (flags \
                     {:#06x})",
                    c.flags
                )));
            }
            let i = *by_offset.get(&offset).ok_or_else(|| {
                bad(format!(
                    "the central directory (record at byte {record_at}) places member \
                     {name:?} at byte {offset}, where the stream holds no member"
                ))
            })?;
            if std::mem::replace(&mut listed[i], true) {
                return Err(bad(format!(
                    "the central directory lists the member at byte {offset} twice"
                )));
            }
            let is_array = npz::key_of(&name).is_some();
            let known_method = matches!(c.method, 0 | 8 | 9 | 12 | 14);
            if is_array && !known_method {
                return Err(Error::unsupported(format!(
                    "{shown}: member {name:?}: compression method {} is not supported (stored, \
                     deflate, bzip2, LZMA and Deflate64 are)",
                    c.method
                )));
            }
            if is_array && c.flags & records::FLAG_ENCRYPTED != 0 {
                return Err(Error::unsupported(format!(
                    "{shown}: member {name:?}: encrypted members are not supported"
                )));
            }
            let m = &self.members[i];
            let differs = |field: &str, central: String, local: String| {
                bad(format!(
                    "member {:?}: the central directory's {field} ({central}) differs from the \
                     local header's ({local})",
                    m.name
                ))
            };
            if raw_name != m.raw_name {
                return Err(differs(
                    "name",
                    format!("{name:?}"),
                    format!("{:?}", m.name),
                ));
            }
            // Members that are not arrays are listed, never decoded: their method matters
            // only when known.
            if c.method != m.method && (is_array || known_method) {
                return Err(differs(
                    "method",
                    c.method.to_string(),
                    m.method.to_string(),
                ));
            }
            if c.crc32 != m.crc32 {
                return Err(differs(
                    "CRC-32",
                    format!("{:08x}", c.crc32),
                    format!("{:08x}", m.crc32),
                ));
            }
            if (csize, size) != (m.compressed_size, m.size) {
                return Err(differs(
                    "sizes",
                    format!("{csize}/{size}"),
                    format!("{}/{}", m.compressed_size, m.size),
                ));
            }
            order.push(i);
            sig = u32::from_le_bytes(self.s.array::<4>(what)?);
        }
        let dir_size = self.s.offset - 4 - at;
        let what = "the end records";
        if sig == records::DIGITAL_SIG {
            self.s.horizon = self.s.offset + 2;
            let len = u16::from_le_bytes(self.s.array::<2>(what)?);
            self.s.horizon = self.s.offset + u64::from(len) + 22;
            self.s.skip(u64::from(len), None, what)?;
            sig = u32::from_le_bytes(self.s.array::<4>(what)?);
        }
        let mut zip64 = None;
        if sig == records::ZIP64_END_SIG {
            let record_at = self.s.offset - 4;
            self.s.horizon = record_at + 56;
            let b = self.s.array::<52>(what)?;
            // Offsets in `b` are the record's minus the 4 signature bytes.
            let rest = records::get64(&b, 0);
            if rest < 44 || rest - 44 > MAX_ZIP64_EXTENSIBLE {
                return Err(bad(format!(
                    "the ZIP64 end record declares {rest} bytes after its size field"
                )));
            }
            let (disk, dir_disk) = (
                u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
                u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            );
            if disk != 0 || dir_disk != 0 {
                return Err(bad(
                    "a multi-part (split) zip archive; only single-file archives are read".into(),
                ));
            }
            zip64 = Some((
                records::get64(&b, 28),
                records::get64(&b, 36),
                records::get64(&b, 44),
            ));
            // The extensible data, the locator (20 bytes), the end record (22).
            self.s.horizon = self.s.offset + (rest - 44) + 20 + 22;
            self.s.skip(rest - 44, None, what)?;
            if u32::from_le_bytes(self.s.array::<4>(what)?) != records::ZIP64_LOCATOR_SIG {
                return Err(bad(format!(
                    "no ZIP64 end locator after the ZIP64 end record (byte {})",
                    self.s.offset - 4
                )));
            }
            let l = self.s.array::<16>(what)?;
            if records::get64(&l, 4) != record_at {
                return Err(bad(format!(
                    "the ZIP64 end locator places the ZIP64 end record at byte {}; it is at {record_at}",
                    records::get64(&l, 4)
                )));
            }
            sig = u32::from_le_bytes(self.s.array::<4>(what)?);
        }
        if sig != records::END_SIG {
            return Err(bad(format!(
                "no end record after the central directory (byte {}, signature {sig:#010x})",
                self.s.offset - 4
            )));
        }
        self.s.horizon = self.s.offset + 18;
        let e = self.s.array::<18>(what)?;
        let word = |at: usize| u16::from_le_bytes([e[at], e[at + 1]]);
        let dword = |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
        if word(0) != 0 || word(2) != 0 {
            return Err(bad(
                "a multi-part (split) zip archive; only single-file archives are read".into(),
            ));
        }
        let count16 = word(6);
        let count = match zip64 {
            Some((n, _, _)) if count16 == u16::MAX => n,
            _ => u64::from(count16),
        };
        let n = self.members.len() as u64;
        if count != n || order.len() as u64 != n {
            return Err(bad(format!(
                "the stream held {n} members; the central directory lists {} and the end \
                 record counts {count}",
                order.len()
            )));
        }
        let declared_size = match (dword(8), zip64) {
            (u32::MAX, Some((_, size, _))) => size,
            (size, _) => u64::from(size),
        };
        let declared_offset = match (dword(12), zip64) {
            (u32::MAX, Some((_, _, offset))) => offset,
            (offset, _) => u64::from(offset),
        };
        if (declared_offset, declared_size) != (at, dir_size) {
            return Err(bad(format!(
                "the end record places the central directory at byte {declared_offset} with \
                 {declared_size} bytes; it is at byte {at} with {dir_size}"
            )));
        }
        self.s.horizon = self.s.offset + u64::from(word(16));
        self.s
            .skip(u64::from(word(16)), None, "the archive comment")?;
        Ok(order)
    }
}

/// Decodes up to `max` more bytes (fewer if the stream ends), hashing them when `hash`;
/// returns how many.
fn drain(inflater: &mut Inflater<'_>, h: &mut Hasher, hash: bool, max: u64) -> Result<u64> {
    let mut scratch = memory::zeroed((64 << 10).min(max) as usize)?;
    let mut got = 0u64;
    while got < max {
        let n = (max - got).min(scratch.len() as u64) as usize;
        let k = inflater.read(&mut scratch[..n])?;
        if hash {
            h.update(&scratch[..k]);
        }
        got += k as u64;
        if k < n {
            break;
        }
    }
    Ok(got)
}

/// Byte-swaps whole `item`-byte elements of `bytes` by `units` (nothing when empty).
fn swap_in_place(bytes: &mut [u8], units: &[(usize, usize)], item: usize) {
    if units.is_empty() || item == 0 {
        return;
    }
    for element in bytes.chunks_exact_mut(item) {
        for &(offset, width) in units {
            element[offset..offset + width].reverse();
        }
    }
}

fn descriptor_unsupported() -> Error {
    Error::unsupported(
        "stored with a data descriptor and not a .npy array: its end cannot be found in one \
         pass; restore it from a file or memory",
    )
}

/// Members "k" and "k.npy" would both claim the key "k" (as other restores refuse).
fn check_keys_collide(members: &[Seen], shown: &str) -> Result<()> {
    let names: HashSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    for m in members {
        if let Some(key) = npz::key_of(&m.name).filter(|k| names.contains(k)) {
            return Err(Error::format(format!(
                "{shown}: members {key:?} and {:?} both claim the key {key:?}",
                m.name
            )));
        }
    }
    Ok(())
}

/// Combines each hashed member's CRC parts in order and compares the result with the CRC-32
/// its records declare (the local header's or the data descriptor's, which the central
/// directory repeats).
fn check_crcs(members: &mut [Seen], parts: &mut [Part], shown: &str) -> Result<()> {
    parts.sort_unstable_by_key(|&(m, k, _)| (m, k));
    let mut combined: Vec<Option<Hasher>> = vec![None; members.len()];
    for (m, _, h) in parts.iter() {
        match &mut combined[*m] {
            Some(acc) => acc.combine(h),
            slot => *slot = Some(h.clone()),
        }
    }
    for (m, acc) in members.iter().zip(combined) {
        if !m.hashed {
            continue;
        }
        let got = acc.unwrap_or_default().finalize();
        if got != m.crc32 {
            return Err(Error::crc(format!(
                "{shown}: member {:?}: CRC-32 mismatch (its records say {:08x}, data gives \
                 {got:08x})",
                m.name, m.crc32
            )));
        }
    }
    Ok(())
}
