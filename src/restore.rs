//! Restoring: any `.npz` -> one 64-byte-aligned block with a view per array.
//!
//! Data flow: index the central directory (zip crate) -> in parallel, read each member's local
//! header and `.npy` header, validating everything against the file -> lay out the block ->
//! allocate it -> in parallel, `pread` stored members straight into the block in ~4 MiB chunks
//! and inflate deflated members straight into it -> combine chunk CRCs and compare them with the
//! central directory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crc32fast::Hasher;
use flate2::{Decompress, FlushDecompress, Status};
use rayon::prelude::*;

use crate::archive::{Archive, ArrayInfo};
use crate::block::{self, Block};
use crate::error::{Error, ErrorKind, Result};
use crate::npy::header::{self, NpyHeader};
use crate::npz::index::{self, MemberInfo, Method};
use crate::options::{self, RestoreOptions};
use crate::pool;
use crate::save::{npz_path, CHUNK_LEN};

/// Bytes read speculatively with each local header: usually enough for the name, the extra
/// field and the whole `.npy` header, so a member's metadata costs one `pread`.
const HEAD_READ_LEN: u64 = 1024;
/// Compressed bytes read per `pread` while inflating.
const INFLATE_INPUT_LEN: usize = 256 << 10;
const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";

/// Restores every array of the `.npz` at `path` (`.npz` appended if missing) into one block.
pub fn restore(path: impl AsRef<Path>, opts: &RestoreOptions) -> Result<Archive> {
    let path = npz_path(path.as_ref());
    let shown = path.display().to_string();
    let file = File::open(&path).map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?
        .len();
    let members = index::read_index(&file, &shown, opts.max_members)?;
    let reader = Reader {
        file: &file,
        file_len,
        shown: &shown,
        opts,
    };

    // Which members are arrays, by name.
    let names: HashSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let mut candidates = Vec::new();
    let mut skipped = Vec::new();
    for (i, m) in members.iter().enumerate() {
        match m.name.strip_suffix(".npy") {
            Some(key) => {
                if names.contains(key) {
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
            None => skipped.push(m.name.clone()),
        }
    }

    let pool = pool::get(opts.threads)?;
    let inspected: Vec<Option<Located>> = pool.install(|| {
        candidates
            .par_iter()
            .map(|&i| {
                reader
                    .inspect(&members[i])
                    .map_err(|e| reader.in_member(&members[i], e))
            })
            .collect::<Result<Vec<_>>>()
    })?;

    // Lay out the block.
    let limit = opts
        .max_total_bytes
        .unwrap_or_else(options::physical_memory);
    let mut arrays = Vec::new();
    let mut located = Vec::new();
    let mut end: usize = 0;
    for (&i, found) in candidates.iter().zip(inspected) {
        let m = &members[i];
        let Some(loc) = found else {
            skipped.push(m.name.clone());
            continue;
        };
        let offset = block::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?;
        end = offset
            .checked_add(loc.header.nbytes)
            .filter(|&e| e as u64 <= limit && e <= isize::MAX as usize)
            .ok_or_else(|| {
                Error::limit(format!(
                    "{shown}: the arrays need more than the block limit of {limit} bytes"
                ))
            })?;
        let key = m.name[..m.name.len() - 4].to_owned();
        arrays.push(ArrayInfo {
            key,
            descr_string: loc.header.descr.to_descr_string(),
            dtype: loc.header.descr.numeric(),
            descr: loc.header.descr.clone(),
            shape: loc.header.shape.clone(),
            fortran_order: loc.header.fortran_order,
            offset,
            nbytes: loc.header.nbytes,
        });
        located.push((i, loc));
    }
    let total = block::align_up(end).ok_or_else(|| Error::limit("block size overflows"))?;
    let mut block = Block::new(total)?;

    // Fill it.
    let tasks = fill_tasks(
        block.as_mut_slice(),
        &arrays,
        &located,
        &members,
        opts.verify_crc,
    );
    let results: Vec<(usize, Option<Hasher>)> = pool.install(|| {
        tasks
            .into_par_iter()
            .map(|t| {
                let member = t.slot;
                let (mi, _) = &located[member];
                reader
                    .fill(t, &members[*mi], &located[member].1)
                    .map(|h| (member, h))
                    .map_err(|e| reader.in_member(&members[*mi], e))
            })
            .collect::<Result<Vec<_>>>()
    })?;

    if opts.verify_crc {
        let mut crcs: Vec<Hasher> = located
            .iter()
            .map(|(_, loc)| {
                let mut h = Hasher::new();
                if loc.method == Method::Stored {
                    h.update(&loc.header_bytes);
                }
                h
            })
            .collect();
        for (slot, h) in results {
            if let Some(h) = h {
                crcs[slot].combine(&h);
            }
        }
        for ((mi, _), h) in located.iter().zip(crcs) {
            let m = &members[*mi];
            let got = h.finalize();
            if got != m.crc32 {
                return Err(Error::crc(format!(
                    "{shown}: member {:?}: CRC-32 mismatch (central directory says {:08x}, data gives {got:08x})",
                    m.name, m.crc32
                )));
            }
        }
    }

    let index: HashMap<String, usize> = arrays
        .iter()
        .enumerate()
        .map(|(i, a)| (a.key.clone(), i))
        .collect();
    Ok(Archive {
        block,
        arrays,
        index,
        skipped,
    })
}

/// A member that holds an array: where its payload is and what its header says.
struct Located {
    method: Method,
    /// File offset of the payload (the npy magic, possibly compressed).
    payload_start: u64,
    header: NpyHeader,
    /// The raw header bytes (magic through padding), for the CRC.
    header_bytes: Vec<u8>,
}

/// One unit of fill work.
struct FillTask<'b> {
    /// Index into `located`.
    slot: usize,
    kind: FillKind<'b>,
}

enum FillKind<'b> {
    /// `pread` stored array bytes at `file_offset` into `dest`.
    Stored {
        file_offset: u64,
        dest: &'b mut [u8],
    },
    /// Bytes after the array data in a stored member: read only for the CRC.
    StoredTail { file_offset: u64, len: u64 },
    /// Inflate a whole deflated member; the array part lands in `dest`.
    Deflated { dest: &'b mut [u8] },
}

fn fill_tasks<'b>(
    block: &'b mut [u8],
    arrays: &[ArrayInfo],
    located: &[(usize, Located)],
    members: &[MemberInfo],
    verify_crc: bool,
) -> Vec<FillTask<'b>> {
    let mut tasks = Vec::new();
    let mut rest = block;
    let mut cursor = 0;
    for (slot, (a, (mi, loc))) in arrays.iter().zip(located).enumerate() {
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut(a.offset - cursor);
        let (dest, tail) = tail.split_at_mut(a.nbytes);
        rest = tail;
        cursor = a.offset + a.nbytes;
        match loc.method {
            Method::Deflated => tasks.push(FillTask {
                slot,
                kind: FillKind::Deflated { dest },
            }),
            Method::Stored => {
                let data_start = loc.payload_start + loc.header.header_len as u64;
                for (k, chunk) in dest.chunks_mut(CHUNK_LEN).enumerate() {
                    tasks.push(FillTask {
                        slot,
                        kind: FillKind::Stored {
                            file_offset: data_start + (k * CHUNK_LEN) as u64,
                            dest: chunk,
                        },
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
    file: &'r File,
    file_len: u64,
    shown: &'r str,
    opts: &'r RestoreOptions,
}

impl Reader<'_> {
    fn in_member(&self, m: &MemberInfo, e: Error) -> Error {
        e.context(format!("{}: member {:?}", self.shown, m.name))
    }

    /// Reads exactly `buf.len()` bytes at `offset`; running past the end is a format error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
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

    /// Validates a member's local header and `.npy` header. `None`: not an array (numpy would
    /// return its raw bytes).
    fn inspect(&self, m: &MemberInfo) -> Result<Option<Located>> {
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
        let mut head = vec![0u8; want as usize];
        self.read_at(&mut head, offset)?;
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
        let payload_end = payload_start
            .checked_add(m.compressed_size)
            .filter(|&e| e <= self.file_len)
            .ok_or_else(|| {
                Error::format(format!(
                    "truncated: {} bytes of data at offset {payload_start} run past the end of the file ({} bytes)",
                    m.compressed_size, self.file_len
                ))
            })?;
        let _ = payload_end;
        let max_header = usize::try_from(self.opts.max_header_len).unwrap_or(usize::MAX);
        let header_bytes = match method {
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
                    return Ok(None);
                }
                let total = header::total_header_len(&prefix, max_header)?;
                if total as u64 > m.size {
                    return Err(Error::format(format!(
                        "truncated: the .npy header needs {total} bytes but the member holds {}",
                        m.size
                    )));
                }
                if held.len() >= total {
                    held[..total].to_vec()
                } else {
                    let mut bytes = vec![0u8; total];
                    self.read_at(&mut bytes, payload_start)?;
                    bytes
                }
            }
            Method::Deflated => {
                let mut inflater = Inflater::new(self, payload_start, m.compressed_size);
                let mut prefix = vec![0u8; (m.size as usize).min(header::PREFIX_LEN)];
                let got = inflater.read(&mut prefix)?;
                prefix.truncate(got);
                if !header::has_magic(&prefix) {
                    return Ok(None);
                }
                let total = header::total_header_len(&prefix, max_header)?;
                if total as u64 > m.size {
                    return Err(Error::format(format!(
                        "truncated: the .npy header needs {total} bytes but the member holds {}",
                        m.size
                    )));
                }
                let mut bytes = prefix;
                let have = bytes.len();
                bytes.resize(total, 0);
                if inflater.read(&mut bytes[have..])? != total - have {
                    return Err(Error::format(
                        "truncated: the deflate stream ends inside the .npy header",
                    ));
                }
                bytes
            }
        };
        let header = header::parse(&header_bytes, max_header)?;
        let used = (header.header_len as u64)
            .checked_add(header.nbytes as u64)
            .ok_or_else(|| Error::overflow("array size overflows"))?;
        if used > m.size {
            return Err(Error::format(format!(
                "truncated: header and data need {used} bytes but the member holds {}",
                m.size
            )));
        }
        Ok(Some(Located {
            method,
            payload_start,
            header,
            header_bytes,
        }))
    }

    /// Runs one fill task; returns the CRC state of the bytes it covered (when verifying).
    fn fill(&self, task: FillTask<'_>, m: &MemberInfo, loc: &Located) -> Result<Option<Hasher>> {
        let verify = self.opts.verify_crc;
        match task.kind {
            FillKind::Stored { file_offset, dest } => {
                self.read_at(dest, file_offset)?;
                Ok(verify.then(|| {
                    let mut h = Hasher::new();
                    h.update(dest);
                    h
                }))
            }
            FillKind::StoredTail { file_offset, len } => {
                let mut buf = vec![0u8; len as usize];
                self.read_at(&mut buf, file_offset)?;
                let mut h = Hasher::new();
                h.update(&buf);
                Ok(Some(h))
            }
            FillKind::Deflated { dest } => {
                let mut inflater = Inflater::new(self, loc.payload_start, m.compressed_size);
                let mut h = Hasher::new();
                let mut header = vec![0u8; loc.header.header_len];
                if inflater.read(&mut header)? != header.len() || header != loc.header_bytes {
                    return Err(Error::format("the deflate stream changed while reading"));
                }
                h.update(&header);
                if inflater.read(dest)? != dest.len() {
                    return Err(Error::format(
                        "truncated: the deflate stream ends inside the array data",
                    ));
                }
                if !verify {
                    return Ok(None);
                }
                h.update(dest);
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
                Ok(Some(h))
            }
        }
    }
}

/// Raw-deflate reader over a byte range of the file, inflating straight into caller buffers.
struct Inflater<'a, 'r> {
    reader: &'a Reader<'r>,
    next: u64,
    end: u64,
    input: Vec<u8>,
    in_pos: usize,
    z: Decompress,
    ended: bool,
}

impl<'a, 'r> Inflater<'a, 'r> {
    fn new(reader: &'a Reader<'r>, start: u64, len: u64) -> Self {
        Inflater {
            reader,
            next: start,
            end: start.saturating_add(len),
            input: Vec::new(),
            in_pos: 0,
            z: Decompress::new(false),
            ended: false,
        }
    }

    /// Fills `out`; returns fewer bytes only if the deflate stream ended first.
    fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        let mut written = 0;
        while written < out.len() && !self.ended {
            if self.in_pos == self.input.len() && self.next < self.end {
                let n = (self.end - self.next).min(INFLATE_INPUT_LEN as u64) as usize;
                self.input.resize(n, 0);
                self.reader.read_at(&mut self.input, self.next)?;
                self.next += n as u64;
                self.in_pos = 0;
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(
                    &self.input[self.in_pos..],
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
                let input_exhausted = self.in_pos == self.input.len() && self.next >= self.end;
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
            Err(e) if e.kind() == ErrorKind::Format => Err(e),
            Err(e) => Err(e),
        }
    }
}
