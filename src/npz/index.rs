//! The central directory of any `.npz`, as a list of members: read with one positional read
//! and parsed in one walk.
//!
//! Why by hand (STYLE.md prefers well-kept crates for ZIP parsing): psv used the `zip` crate
//! here, and restoring an archive of many small members spent a quarter of its time on it.
//! `ZipArchive::new` reads the directory in small pieces and builds, per member, a large
//! `ZipFileData` (boxed name, parsed extra fields, a date) and an `IndexMap` entry; psv then
//! copied every name again and read the whole directory a second time to make the checks the
//! crate does not make (record contiguity, the declared count and size, version needed,
//! unsupported flags). Here the end records are found in the file's last 64 KiB + 22 bytes, the
//! directory is read with one read (its size bounded by the file, its count by `max_members`,
//! before anything is allocated for it), and one walk over that buffer makes every check both
//! made. [`records`] already decodes these records for the stream restore's final check. What
//! the crate accepted and refused is kept (the tests and the hostile corpus pin it): prefix
//! data before the archive, ZIP64 end records with extensible data, the sentinel rule of ZIP64
//! extra fields, Info-ZIP Unicode Path names, CP437 names, the names of unsupported methods.
//!
//! Failures that mean "this is not a readable archive" are put in plain words by [`Probe`],
//! which looks at the file again (only then) to say whether it is empty, not a zip at all, cut
//! short, or damaged.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use super::plan::{CENTRAL_HEADER_LEN, END_LEN};
use super::records::{
    self, CentralFields, EndRecord, Zip64EndRecord, Zip64Locator, ZIP64_END_FIXED_LEN,
    ZIP64_LOCATOR_LEN,
};
use crate::error::{Error, Result};

/// How a member's bytes are stored. Non-exhaustive: methods may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// ZIP method 0.
    Stored,
    /// ZIP method 8 (raw deflate), as `numpy.savez_compressed` writes.
    Deflated,
    /// ZIP method 12: a bzip2 stream (Info-ZIP `zip -Z bzip2`, Python's `zipfile`, 7-Zip).
    Bzip2,
    /// ZIP method 14: LZMA with a 4-byte version/size header and 5 properties bytes (Python's
    /// `zipfile`, 7-Zip).
    Lzma,
    /// ZIP method 9: Deflate64, deflate with a 64 KiB window (7-Zip; numpy cannot read it).
    Deflate64,
}

impl Method {
    /// The method's name in messages: `stored`, `deflate`, `bzip2`, `LZMA`, `Deflate64`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Stored => "stored",
            Method::Deflated => "deflate",
            Method::Bzip2 => "bzip2",
            Method::Lzma => "LZMA",
            Method::Deflate64 => "Deflate64",
        }
    }
}

/// One central directory entry.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    /// The raw name bytes from the central directory when they differ from `name`'s UTF-8
    /// (a CP437 name); `None` for the usual UTF-8 name, which is then stored once (see
    /// [`MemberInfo::raw_name`]).
    raw: Option<Box<[u8]>>,
    /// The decoded name: UTF-8 when the UTF-8 flag is set or the bytes are valid UTF-8, else
    /// CP437 (Python's `zipfile`, and so `numpy.load`, uses CP437 whenever the flag is clear:
    /// Info-ZIP writes UTF-8 names without it, and they mean UTF-8).
    pub name: String,
    /// Offset of the local file header (prefix data already accounted for).
    pub header_offset: u64,
    /// Compressed size from the central directory.
    pub compressed_size: u64,
    /// Uncompressed size from the central directory.
    pub size: u64,
    /// CRC-32 from the central directory.
    pub crc32: u32,
    /// Storage method, or the name of an unsupported one (see [`records::method_name`]).
    pub method: std::result::Result<Method, String>,
    /// Whether the entry is encrypted.
    pub encrypted: bool,
}

impl MemberInfo {
    /// A member named `raw` in the archive, `name` decoded.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: &[u8],
        name: String,
        header_offset: u64,
        compressed_size: u64,
        size: u64,
        crc32: u32,
        method: std::result::Result<Method, String>,
        encrypted: bool,
    ) -> MemberInfo {
        MemberInfo {
            raw: (raw != name.as_bytes()).then(|| raw.into()),
            name,
            header_offset,
            compressed_size,
            size,
            crc32,
            method,
            encrypted,
        }
    }

    /// The raw name bytes from the central directory (or the directory archive's file name).
    pub fn raw_name(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.name.as_bytes())
    }
}

/// Which kind of damage a walk found; [`Probe::problem`] turns it, with what the file looks
/// like, into plain words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    /// A multi-part (split) archive.
    MultiDisk,
    /// The ZIP64 end records are missing, malformed or inconsistent.
    Zip64,
    /// A record runs past the end of the file.
    Truncated,
    /// A central record's extra field is malformed.
    Extra,
    /// The archive comment runs past the end of the file.
    Comment,
    /// Any other malformed or misplaced record.
    Record,
}

/// Why the directory could not be read, before the file's name is put in front.
#[derive(Debug)]
enum Fail {
    /// The records are damaged: [`Probe`] says how.
    Damaged(Damage),
    /// A malformed archive, in its own words.
    Format(String),
    /// A valid archive psv does not read, in its own words.
    Unsupported(String),
    /// More members than the caller allows.
    Limit(String),
    /// Memory for the directory could not be had.
    NoMem(String),
    /// The OS failed a read.
    Io(std::io::Error),
}

impl From<std::io::Error> for Fail {
    fn from(e: std::io::Error) -> Fail {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // The file ended before a record it holds the start of (it shrank meanwhile).
            Fail::Damaged(Damage::Truncated)
        } else {
            Fail::Io(e)
        }
    }
}

/// Facts about a file whose directory could not be read: its length, how it starts, and
/// whether an end-of-central-directory record (the record every zip archive ends with) is
/// present.
#[derive(Debug)]
struct Probe {
    /// The file's length in bytes.
    len: u64,
    /// Its first bytes (up to 8).
    head: Vec<u8>,
    /// The end record, when one is found in the last 64 KiB + 22 bytes: (offset, 22 bytes).
    end: Option<(u64, [u8; 22])>,
    /// Where the central directory must start by the end record (its size before the end
    /// record; not for ZIP64 archives), and whether a central record's signature is there.
    central: Option<(u64, bool)>,
    /// Whether the end record defers to ZIP64 end records (a sentinel, or a locator before
    /// it): its own directory size and offset then say nothing certain.
    zip64: bool,
}

/// The longest an end record plus its comment can be.
const END_SEARCH: u64 = 22 + 0xFFFF;

impl Probe {
    /// Reads the first bytes and looks for the end record from the end, as zip readers do.
    fn of<R: Read + Seek>(r: &mut R) -> std::io::Result<Probe> {
        let len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        let mut head = vec![0u8; len.min(8) as usize];
        r.read_exact(&mut head)?;
        let tail_start = len.saturating_sub(END_SEARCH);
        r.seek(SeekFrom::Start(tail_start))?;
        let mut tail = Vec::with_capacity((len - tail_start) as usize);
        r.take(END_SEARCH).read_to_end(&mut tail)?;
        let sig = records::END_SIG.to_le_bytes();
        let end = (0..tail.len().saturating_sub(21))
            .rev()
            .find(|&i| tail[i..i + 4] == sig)
            .map(|i| {
                let mut rec = [0u8; 22];
                rec.copy_from_slice(&tail[i..i + 22]);
                (tail_start + i as u64, rec)
            });
        let mut central = None;
        let mut zip64 = false;
        if let Some((end_at, rec)) = end {
            let dir_size = u32::from_le_bytes([rec[12], rec[13], rec[14], rec[15]]);
            let dir_offset = u32::from_le_bytes([rec[16], rec[17], rec[18], rec[19]]);
            // ZIP64 end records between the directory and the end record move where it ends.
            let mut locator = [0u8; 4];
            if let Some(at) = end_at.checked_sub(ZIP64_LOCATOR_LEN) {
                r.seek(SeekFrom::Start(at))?;
                zip64 = read_up_to(r, &mut locator)? == 4
                    && locator == records::ZIP64_LOCATOR_SIG.to_le_bytes();
            }
            zip64 |= dir_size == u32::MAX || dir_offset == u32::MAX;
            if !zip64 && u64::from(dir_size) <= end_at {
                let at = end_at - u64::from(dir_size);
                let mut sig = [0u8; 4];
                r.seek(SeekFrom::Start(at))?;
                let found =
                    read_up_to(r, &mut sig)? == 4 && sig == records::CENTRAL_SIG.to_le_bytes();
                central = Some((at, found));
            }
        }
        Ok(Probe {
            len,
            zip64,
            head,
            end,
            central,
        })
    }

    /// The problem in plain words: the file's own facts first, then `damage` (what the walk
    /// found) picks the words.
    fn problem(&self, damage: Damage) -> String {
        let Some((end_at, rec)) = self.end else {
            return self.no_end_record();
        };
        let u32_at = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
        let (dir_size, dir_offset) = (u32_at(12), u32_at(16));
        let zip64 = self.zip64;
        if !zip64 && u64::from(dir_offset) + u64::from(dir_size) > end_at {
            return format!(
                "truncated or damaged: the end record places the central directory at bytes \
                 {}..{}, past the end record at {end_at} (the start of the file is missing, or \
                 the record is corrupt)",
                dir_offset,
                u64::from(dir_offset) + u64::from(dir_size)
            );
        }
        if !zip64 && u64::from(dir_size) > end_at {
            return format!(
                "truncated or damaged: the end record gives the central directory {dir_size} \
                 bytes, but only {end_at} bytes precede it"
            );
        }
        if let Some((at, false)) = self.central {
            return format!(
                "damaged: no central directory record at offset {at}, where the end record \
                 says the directory starts"
            );
        }
        let what = match damage {
            Damage::MultiDisk => {
                "a multi-part (split) zip archive; only single-file archives are read"
            }
            Damage::Zip64 => {
                "damaged: the ZIP64 end records (used by archives over 4 GiB or 65535 members) \
                 are missing or inconsistent"
            }
            Damage::Truncated => {
                "truncated: a record of the zip directory runs past the end of the file"
            }
            Damage::Extra => {
                "damaged: a member's extra field in the central directory is malformed"
            }
            Damage::Comment => "damaged: the archive comment runs past the end of the file",
            Damage::Record => "damaged: a record of the zip directory is malformed",
        };
        what.to_string()
    }

    /// The problem when no end record exists: an empty file, a zip cut short, a `.npy`
    /// instead of a `.npz`, or something else entirely.
    fn no_end_record(&self) -> String {
        let h = &self.head[..];
        if self.len == 0 {
            "not a zip/.npz file: the file is empty".to_string()
        } else if h.starts_with(&records::LOCAL_SIG.to_le_bytes()) {
            format!(
                "truncated: the end of the archive is missing (the file is {} bytes and starts \
                 like a zip archive, but the directory that ends every zip archive is not there)",
                self.len
            )
        } else if h.starts_with(b"\x93NUMPY") {
            "not a zip/.npz file: it is a single .npy array (numpy.load reads it; psv \
             restores .npz archives)"
                .to_string()
        } else {
            let shown: String = h
                .iter()
                .map(|&b| match b {
                    b' '..=b'~' => (b as char).to_string(),
                    _ => format!("\\x{b:02x}"),
                })
                .collect();
            format!("not a zip/.npz file (it starts with \"{shown}\" and has no zip directory)")
        }
    }
}

/// The central directory of an archive: its members in directory order, and where the
/// directory starts (members' data must end before it).
#[derive(Clone, Debug)]
pub struct Index {
    /// Members in directory order.
    pub members: Vec<MemberInfo>,
    /// File offset of the central directory.
    pub central_start: u64,
}

/// The most end record candidates tried (each costs a read of its directory), so that a
/// comment full of signatures cannot make a restore read the directory over and over.
const MAX_END_CANDIDATES: usize = 4;

/// Reads the central directory from `reader` (named `path` in messages), in directory order.
pub fn read_index<R: Read + Seek>(mut reader: R, path: &str, max_members: u64) -> Result<Index> {
    let fail = match read_directory(&mut reader, max_members) {
        Ok(index) => return Ok(index),
        Err(fail) => fail,
    };
    Err(match fail {
        Fail::Damaged(damage) => match Probe::of(&mut reader) {
            Ok(probe) => Error::format(format!("{path}: {}", probe.problem(damage))),
            Err(io) => Error::io(path, io),
        },
        Fail::Format(msg) => Error::format(format!("{path}: {msg}")),
        Fail::Unsupported(msg) => Error::unsupported(format!("{path}: {msg}")),
        Fail::Limit(msg) => Error::limit(format!("{path}: {msg}")),
        Fail::NoMem(msg) => Error::nomem(format!("{path}: {msg}")),
        Fail::Io(io) => Error::io(path, io),
    })
}

/// The file: its length, its last bytes (where the end records are), and reads elsewhere.
struct Input<'r, R> {
    reader: &'r mut R,
    len: u64,
    tail_start: u64,
    tail: Vec<u8>,
}

impl<R: Read + Seek> Input<'_, R> {
    /// Fills `buf` from offset `at`: from the tail when it holds those bytes, else by a read.
    fn read_into(&mut self, at: u64, buf: &mut [u8]) -> std::result::Result<(), Fail> {
        let end = at.checked_add(buf.len() as u64).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(Fail::Damaged(Damage::Truncated));
        };
        if at >= self.tail_start && end - self.tail_start <= self.tail.len() as u64 {
            let from = (at - self.tail_start) as usize;
            buf.copy_from_slice(&self.tail[from..from + buf.len()]);
            return Ok(());
        }
        self.reader.seek(SeekFrom::Start(at))?;
        self.reader.read_exact(buf)?;
        Ok(())
    }

    /// The `len` bytes at `at`, in one read (or from the tail), in memory reserved fallibly.
    fn read_vec(&mut self, at: u64, len: u64) -> std::result::Result<Vec<u8>, Fail> {
        if at.checked_add(len).is_none_or(|e| e > self.len) {
            return Err(Fail::Damaged(Damage::Truncated));
        }
        let n = usize::try_from(len).map_err(|_| Fail::NoMem(too_large(len)))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(n)
            .map_err(|_| Fail::NoMem(too_large(len)))?;
        if at >= self.tail_start {
            let from = (at - self.tail_start) as usize;
            if let Some(bytes) = self.tail.get(from..from + n) {
                buf.extend_from_slice(bytes);
                return Ok(buf);
            }
        }
        self.reader.seek(SeekFrom::Start(at))?;
        (&mut *self.reader).take(len).read_to_end(&mut buf)?;
        if buf.len() != n {
            return Err(Fail::Damaged(Damage::Truncated));
        }
        Ok(buf)
    }
}

/// The message when a directory of `len` bytes cannot be held in memory.
fn too_large(len: u64) -> String {
    format!("cannot allocate {len} bytes for the central directory")
}

/// Finds the end record and reads the directory it describes.
fn read_directory<R: Read + Seek>(
    reader: &mut R,
    max_members: u64,
) -> std::result::Result<Index, Fail> {
    let len = reader.seek(SeekFrom::End(0))?;
    let tail_start = len.saturating_sub(END_SEARCH);
    reader.seek(SeekFrom::Start(tail_start))?;
    let mut tail = Vec::with_capacity((len - tail_start) as usize);
    (&mut *reader).take(END_SEARCH).read_to_end(&mut tail)?;
    let mut input = Input {
        reader,
        len,
        tail_start,
        tail,
    };
    // End records worth trying, best first: those whose comment ends exactly at the end of
    // the file (the last first: a comment may hold the signature), else the last one whose
    // comment fits (writers such as Python's `zipfile` may leave bytes after it).
    let sig = records::END_SIG.to_le_bytes();
    let (mut first, mut tried, mut fitting, mut seen) = (None, 0, None, false);
    let mut i = input.tail.len().saturating_sub(END_LEN as usize - 1);
    while i > 0 && tried < MAX_END_CANDIDATES {
        i -= 1;
        if input.tail[i..i + 4] != sig {
            continue;
        }
        seen = true;
        let at = tail_start + i as u64;
        let comment_len = u64::from(u16::from_le_bytes([input.tail[i + 20], input.tail[i + 21]]));
        let end = at + END_LEN + comment_len;
        if end < len && fitting.is_none() {
            fitting = Some(at);
        }
        if end == len {
            tried += 1;
            match try_end_record(&mut input, at, max_members, &mut first) {
                Some(result) => return result,
                None => continue,
            }
        }
    }
    if tried == 0 {
        if let Some(at) = fitting {
            if let Some(result) = try_end_record(&mut input, at, max_members, &mut first) {
                return result;
            }
        }
    }
    Err(first.unwrap_or(Fail::Damaged(if seen {
        // A signature whose comment runs past the end of the file.
        Damage::Comment
    } else {
        // No end record at all (the probe says what the file is instead).
        Damage::Record
    })))
}

/// Reads the archive whose end record may be at `at`: `Some` result to return, or `None`
/// when a damaged candidate (perhaps a signature inside a comment) leaves earlier ones to
/// try; the first such failure is kept in `first`.
fn try_end_record<R: Read + Seek>(
    input: &mut Input<'_, R>,
    at: u64,
    max_members: u64,
    first: &mut Option<Fail>,
) -> Option<std::result::Result<Index, Fail>> {
    match from_end_record(input, at, max_members) {
        Err(fail @ (Fail::Damaged(_) | Fail::Format(_))) => {
            first.get_or_insert(fail);
            None
        }
        Err(fail) => Some(Err(first.take().unwrap_or(fail))),
        Ok(index) => Some(Ok(index)),
    }
}

/// Where the central directory is, by the end records.
struct Directory {
    /// Members it declares.
    count: u64,
    /// Its declared size.
    size: u64,
    /// Its declared offset (before prefix data).
    offset: u64,
    /// Where it must end: where the (ZIP64) end record is.
    end: u64,
    /// Whether the values came from the ZIP64 end record.
    zip64: bool,
}

/// Reads the archive whose end record is at `at`.
fn from_end_record<R: Read + Seek>(
    input: &mut Input<'_, R>,
    at: u64,
    max_members: u64,
) -> std::result::Result<Index, Fail> {
    let mut fixed = [0u8; END_LEN as usize];
    input.read_into(at, &mut fixed)?;
    let end = EndRecord::parse(&fixed).ok_or(Fail::Damaged(Damage::Record))?;
    let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
    let locator_at = at.checked_sub(ZIP64_LOCATOR_LEN);
    let zip64 = match locator_at {
        Some(locator_at) => {
            input.read_into(locator_at, &mut locator)?;
            Zip64Locator::parse(&locator).map(|l| zip64_directory(input, locator_at, &l))
        }
        None => None,
    };
    // As the zip crate (and so psv before) did: the ZIP64 end record's values are used when
    // the plain one defers to them by a sentinel; otherwise the plain values stand, and ZIP64
    // end records present anyway (Python's `zipfile` writes them from 2 GiB) only move where
    // the directory ends.
    let dir = match zip64 {
        Some(Ok(dir)) if end.may_be_zip64() => dir,
        Some(Err(fail)) if end.may_be_zip64() => return Err(fail),
        zip64 => {
            if end.disk != 0 || end.central_disk != 0 || end.count_here != end.count {
                return Err(Fail::Damaged(Damage::MultiDisk));
            }
            Directory {
                count: u64::from(end.count),
                size: u64::from(end.central_size),
                offset: u64::from(end.central_offset),
                end: match zip64 {
                    Some(Ok(dir)) => dir.end,
                    _ => at,
                },
                zip64: false,
            }
        }
    };
    let misplaced = Fail::Damaged(if dir.zip64 {
        Damage::Zip64
    } else {
        Damage::Record
    });
    // The directory ends where the end records begin; bytes before where it says it starts
    // are prefix data (a self-extractor stub), by which every offset is shifted.
    let Some(start) = dir.end.checked_sub(dir.size) else {
        return Err(misplaced);
    };
    let Some(shift) = start.checked_sub(dir.offset) else {
        return Err(misplaced);
    };
    if dir.count > dir.size / CENTRAL_HEADER_LEN {
        // Every record takes at least 46 bytes: the count cannot be true.
        return Err(Fail::Format(format!(
            "damaged: the {}end record counts {} members, more than its {}-byte central \
             directory can hold",
            if dir.zip64 { "ZIP64 " } else { "" },
            dir.count,
            dir.size
        )));
    }
    if dir.count > max_members {
        return Err(Fail::Limit(format!(
            "{} members exceed the limit of {max_members}",
            dir.count
        )));
    }
    let bytes = input.read_vec(start, dir.size)?;
    walk(&bytes, start, shift, dir.count)
}

/// The directory the ZIP64 end records describe (the locator is at `locator_at`).
fn zip64_directory<R: Read + Seek>(
    input: &mut Input<'_, R>,
    locator_at: u64,
    locator: &Zip64Locator,
) -> std::result::Result<Directory, Fail> {
    if locator.end_offset >= locator_at {
        return Err(Fail::Damaged(Damage::Zip64));
    }
    if locator.disks > 1 {
        return Err(Fail::Damaged(Damage::MultiDisk));
    }
    let record_at = find_zip64_end(input, locator_at, locator.end_offset)?
        .ok_or(Fail::Damaged(Damage::Zip64))?;
    let mut fixed = [0u8; ZIP64_END_FIXED_LEN as usize];
    input.read_into(record_at, &mut fixed)?;
    let rec = Zip64EndRecord::parse(&fixed).ok_or(Fail::Damaged(Damage::Zip64))?;
    if rec.central_disk != locator.end_disk {
        return Err(Fail::Damaged(Damage::Zip64));
    }
    if rec.disk != 0 || rec.count_here != rec.count {
        return Err(Fail::Damaged(Damage::MultiDisk));
    }
    if rec.disk != rec.central_disk {
        return Err(Fail::Unsupported(
            "unsupported zip archive: Support for multi-disk files is not implemented".to_string(),
        ));
    }
    // The shift by prefix data that the locator implies must be the directory's.
    let directory_shift = record_at
        .checked_sub(rec.central_size)
        .and_then(|start| start.checked_sub(rec.central_offset));
    if directory_shift != Some(record_at - locator.end_offset) {
        return Err(Fail::Damaged(Damage::Zip64));
    }
    Ok(Directory {
        count: rec.count,
        size: rec.central_size,
        offset: rec.central_offset,
        end: record_at,
        zip64: true,
    })
}

/// Where the ZIP64 end record is: a record whose declared length ends it exactly at the
/// locator, at the locator's offset (no prefix data), right before the locator (no extensible
/// data), or anywhere after the locator's offset in the tail (prefix data and extensible data).
fn find_zip64_end<R: Read + Seek>(
    input: &mut Input<'_, R>,
    locator_at: u64,
    declared: u64,
) -> std::result::Result<Option<u64>, Fail> {
    let ends_at_locator = |input: &mut Input<'_, R>, at: u64| {
        let mut head = [0u8; 12];
        if at
            .checked_add(ZIP64_END_FIXED_LEN)
            .is_none_or(|e| e > locator_at)
        {
            return Ok(false);
        }
        input.read_into(at, &mut head)?;
        let rest = records::get64(&head, 4);
        Ok::<_, Fail>(
            records::signature(&head) == Some(records::ZIP64_END_SIG)
                && rest >= ZIP64_END_FIXED_LEN - 12
                && at.checked_add(12).and_then(|e| e.checked_add(rest)) == Some(locator_at),
        )
    };
    if ends_at_locator(input, declared)? {
        return Ok(Some(declared));
    }
    if let Some(at) = locator_at.checked_sub(ZIP64_END_FIXED_LEN) {
        if at > declared && ends_at_locator(input, at)? {
            return Ok(Some(at));
        }
    }
    let sig = records::ZIP64_END_SIG.to_le_bytes();
    let lowest = declared.max(input.tail_start);
    let mut at = locator_at.saturating_sub(ZIP64_END_FIXED_LEN);
    while at > lowest {
        at -= 1;
        let i = (at - input.tail_start) as usize;
        if input.tail[i..i + 4] == sig && ends_at_locator(input, at)? {
            return Ok(Some(at));
        }
    }
    Ok(None)
}

/// Walks the `count` records of the directory in `bytes` (which starts at file offset
/// `start`; local header offsets are shifted by `shift`) and checks what a reader must:
/// every record where the previous one ended and within the directory, the count neither
/// hiding records nor inventing them, ZIP64 extra fields holding what the sentinels ask for,
/// no duplicate names, no version above 6.3 and no flag psv cannot honour.
fn walk(bytes: &[u8], start: u64, shift: u64, count: u64) -> std::result::Result<Index, Fail> {
    // `count` <= bytes.len() / 46 (checked): the capacity is bounded by the file.
    let mut members = Vec::with_capacity(count as usize);
    let mut seen = HashSet::with_capacity(count as usize);
    let mut duplicate = false;
    let mut refusal = None;
    let mut at = 0usize;
    for i in 0..count {
        let Some(fixed) = bytes.get(at..at + CENTRAL_HEADER_LEN as usize) else {
            return Err(Fail::Format(format!(
                "damaged: the central directory holds only {i} of the {count} members its end \
                 record counts"
            )));
        };
        let fixed = CentralFields::parse(fixed.try_into().expect("46 bytes"))
            .ok_or(Fail::Damaged(Damage::Record))?;
        let name_at = at + CENTRAL_HEADER_LEN as usize;
        let extra_at = name_at + usize::from(fixed.name_len);
        let next = extra_at + usize::from(fixed.extra_len) + usize::from(fixed.comment_len);
        if next > bytes.len() {
            // The end record is there, so the file is whole: this record is malformed.
            return Err(Fail::Damaged(Damage::Record));
        }
        let mut name = &bytes[name_at..extra_at];
        let extra = &bytes[extra_at..extra_at + usize::from(fixed.extra_len)];
        let mut size = u64::from(fixed.size);
        let mut compressed_size = u64::from(fixed.compressed_size);
        let mut header_offset = u64::from(fixed.header_offset);
        let mut name_crc = None;
        for record in records::extra_records(extra) {
            let record = record.map_err(|()| Fail::Damaged(Damage::Extra))?;
            match record.id {
                records::ZIP64_EXTRA_ID => {
                    let present = [
                        fixed.size == u32::MAX,
                        fixed.compressed_size == u32::MAX,
                        fixed.header_offset == u32::MAX,
                    ];
                    let [s, c, o] =
                        records::zip64_values(record.data, present).ok_or_else(|| {
                            Fail::Format(format!(
                                "damaged: the ZIP64 extra field of member {:?} lacks the sizes \
                                 or offset its central record defers to it",
                                records::decode_name(&bytes[name_at..extra_at])
                            ))
                        })?;
                    size = s.unwrap_or(size);
                    compressed_size = c.unwrap_or(compressed_size);
                    header_offset = o.unwrap_or(header_offset);
                }
                records::UNICODE_PATH_EXTRA_ID => {
                    // Version (1 byte), CRC-32 of the header's name, the UTF-8 name: used only
                    // when the CRC matches and the name is UTF-8 (APPNOTE 4.6.9).
                    if record.data.len() < 5 {
                        return Err(Fail::Damaged(Damage::Extra));
                    }
                    let crc = records::get32(record.data, 1);
                    let header_name = &bytes[name_at..extra_at];
                    let want = *name_crc.get_or_insert_with(|| crc32fast::hash(header_name));
                    let unicode = &record.data[5..];
                    if crc == want && std::str::from_utf8(unicode).is_ok() {
                        name = unicode;
                    }
                }
                records::ALIGN_EXTRA_ID | 0xd935 if record.data.len() < 2 => {
                    return Err(Fail::Damaged(Damage::Extra));
                }
                _ => {}
            }
        }
        let decoded = records::decode_name(name);
        if refusal.is_none() {
            refusal = refuse(&fixed, &decoded);
        }
        let header_offset = header_offset
            .checked_add(shift)
            .ok_or(Fail::Damaged(Damage::Record))?;
        members.push(MemberInfo::new(
            name,
            decoded,
            header_offset,
            compressed_size,
            size,
            fixed.crc32,
            method_of(fixed.method),
            fixed.flags & records::FLAG_ENCRYPTED != 0,
        ));
        duplicate |= !seen.insert(name);
        at = next;
    }
    if duplicate {
        return Err(Fail::Format(
            "the central directory names the same member more than once".to_string(),
        ));
    }
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let rest = &bytes[at..];
    let digital_signature = records::signature(rest) == Some(records::DIGITAL_SIG)
        && rest.len() >= 6
        && rest.len() == 6 + usize::from(u16::from_le_bytes([rest[4], rest[5]]));
    if !rest.is_empty() && !digital_signature {
        return Err(Fail::Format(
            if records::signature(rest) == Some(records::CENTRAL_SIG) {
                format!(
                    "the end record counts {count} members but the central directory holds more"
                )
            } else {
                format!(
                    "the central directory is not followed by an end record (offset {})",
                    start + at as u64
                )
            },
        ));
    }
    Ok(Index {
        members,
        central_start: start,
    })
}

/// Why a member cannot be read even though its record is sound: a ZIP version above 6.3, or
/// a flag psv cannot honour.
fn refuse(fixed: &CentralFields, name: &str) -> Option<Fail> {
    let needed = fixed.version_needed;
    if needed > 63 {
        return Some(Fail::Unsupported(format!(
            "member {name:?} needs ZIP version {}.{} (only up to 6.3 is supported)",
            needed / 10,
            needed % 10
        )));
    }
    if fixed.flags & records::UNSUPPORTED_FLAGS != 0 {
        return Some(Fail::Unsupported(format!(
            "member {name:?} uses patched data or strong encryption (flags {:#06x})",
            fixed.flags
        )));
    }
    None
}

/// The method a central record's code names.
fn method_of(code: u16) -> std::result::Result<Method, String> {
    match code {
        0 => Ok(Method::Stored),
        8 => Ok(Method::Deflated),
        9 => Ok(Method::Deflate64),
        12 => Ok(Method::Bzip2),
        14 => Ok(Method::Lzma),
        other => Err(records::method_name(other).to_string()),
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npz::plan::{plan, MemberSpec, ALIGN};
    use crate::ErrorKind;
    use std::io::Cursor;

    /// An archive of stored members named `names` (payloads of `payload_len` zero bytes) as
    /// psv writes it, from the plan and the record encoders; `prefix` bytes come first.
    fn archive(names: &[Vec<u8>], payload_len: u64, prefix: &[u8]) -> Vec<u8> {
        let specs: Vec<MemberSpec> = names
            .iter()
            .map(|n| MemberSpec {
                name_len: n.len(),
                payload_len,
                deflated_size: None,
                header_len: 64.min(payload_len),
            })
            .collect();
        let p = plan(&specs, ALIGN).unwrap();
        let mut file = vec![0u8; p.central_offset as usize];
        for ((name, m), i) in names.iter().zip(&p.members).zip(0u32..) {
            let mut local = Vec::new();
            records::local_header(&mut local, name, m, i);
            let at = m.header_offset as usize;
            file[at..at + local.len()].copy_from_slice(&local);
        }
        for ((name, m), i) in names.iter().zip(&p.members).zip(0u32..) {
            records::central_header(&mut file, name, m, i);
        }
        records::end_records(&mut file, &p);
        assert_eq!(file.len() as u64, p.total_len);
        let mut out = prefix.to_vec();
        out.extend_from_slice(&file);
        out
    }

    fn names(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("a{i}.npy").into_bytes()).collect()
    }

    fn index_of(bytes: &[u8]) -> Result<Index> {
        read_index(Cursor::new(bytes), "t.npz", 1 << 20)
    }

    /// The offset of the (last) plain end record.
    fn end_at(bytes: &[u8]) -> usize {
        bytes.len() - 22
    }

    fn put32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put16(bytes: &mut [u8], at: usize, v: u16) {
        bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// The error of `r`, which must fail (an index is not printed: it may be huge).
    fn err_of(r: Result<Index>, what: &str) -> Error {
        match r {
            Ok(index) => panic!("{what}: read {} members", index.members.len()),
            Err(e) => e,
        }
    }

    fn assert_err(r: Result<Index>, kind: ErrorKind, want: &str) {
        let e = err_of(r, want);
        assert_eq!(e.kind(), kind, "{}", e.message());
        assert!(
            e.message().contains(want),
            "{:?} lacks {want:?}",
            e.message()
        );
        assert!(e.message().starts_with("t.npz: "), "{}", e.message());
    }

    #[test]
    fn members_come_back_as_the_records_say() {
        let bytes = archive(&names(3), 200, b"");
        let index = index_of(&bytes).unwrap();
        let p = plan(
            &[MemberSpec {
                name_len: 6,
                payload_len: 200,
                deflated_size: None,
                header_len: 64,
            }; 3],
            ALIGN,
        )
        .unwrap();
        assert_eq!(index.central_start, p.central_offset);
        assert_eq!(index.members.len(), 3);
        for (i, (m, want)) in index.members.iter().zip(&p.members).enumerate() {
            assert_eq!(m.name, format!("a{i}.npy"));
            assert_eq!(m.raw_name(), m.name.as_bytes());
            assert_eq!(m.header_offset, want.header_offset);
            assert_eq!((m.size, m.compressed_size), (200, 200));
            assert_eq!(m.crc32, i as u32);
            assert_eq!(m.method, Ok(Method::Stored));
            assert!(!m.encrypted);
        }
        // The same from a file, through the zip crate for comparison.
        let mut z = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        for (i, m) in index.members.iter().enumerate() {
            let e = z.by_index_raw(i).unwrap();
            assert_eq!(e.name().unwrap(), m.name);
            assert_eq!(e.header_start(), m.header_offset);
            assert_eq!(e.crc32(), m.crc32);
        }
    }

    #[test]
    fn every_cut_of_the_tail_is_a_format_error() {
        let bytes = archive(&names(3), 100, b"");
        let dir_start = index_of(&bytes).unwrap().central_start as usize;
        for cut in (dir_start - 10)..bytes.len() {
            let e = err_of(index_of(&bytes[..cut]), "a cut archive");
            assert_eq!(e.kind(), ErrorKind::Format, "cut {cut}: {}", e.message());
            assert!(
                e.message()
                    .contains("truncated: the end of the archive is missing"),
                "cut {cut}: {}",
                e.message()
            );
        }
    }

    #[test]
    fn a_count_that_lies_is_caught_both_ways() {
        let bytes = archive(&names(3), 100, b"");
        let end = end_at(&bytes);
        // Fewer than there are: the rest of the directory would hide members.
        let mut fewer = bytes.clone();
        put16(&mut fewer, end + 8, 2);
        put16(&mut fewer, end + 10, 2);
        assert_err(
            index_of(&fewer),
            ErrorKind::Format,
            "the end record counts 2 members but the central directory holds more",
        );
        let mut none = bytes.clone();
        put16(&mut none, end + 8, 0);
        put16(&mut none, end + 10, 0);
        assert_err(
            index_of(&none),
            ErrorKind::Format,
            "counts 0 members but the central directory holds more",
        );
        // More than there are: within what the directory's size allows (long names), then
        // beyond it.
        let long: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("a_long_member_name_{i}.npy").into_bytes())
            .collect();
        let mut more = archive(&long, 100, b"");
        let end = end_at(&more);
        put16(&mut more, end + 8, 4);
        put16(&mut more, end + 10, 4);
        assert_err(
            index_of(&more),
            ErrorKind::Format,
            "holds only 3 of the 4 members its end record counts",
        );
        let end = end_at(&bytes);
        let mut many = bytes.clone();
        put16(&mut many, end + 8, 1000);
        put16(&mut many, end + 10, 1000);
        assert_err(
            index_of(&many),
            ErrorKind::Format,
            "the end record counts 1000 members, more than its",
        );
        // Only a true count meets the limit: a lie is a format error, the truth a limit.
        assert_err(
            read_index(Cursor::new(&many), "t.npz", 2),
            ErrorKind::Format,
            "more than its",
        );
        assert_err(
            read_index(Cursor::new(&bytes), "t.npz", 2),
            ErrorKind::Limit,
            "3 members exceed the limit of 2",
        );
    }

    #[test]
    fn zip64_archives_of_many_members_are_read() {
        let n = 65536 + 3;
        let bytes = archive(&names(n), 1, b"");
        let end = end_at(&bytes);
        assert_eq!(&bytes[end - 20..end - 16], b"PK\x06\x07", "a ZIP64 locator");
        assert_eq!(
            u16::from_le_bytes([bytes[end + 10], bytes[end + 11]]),
            0xFFFF
        );
        let index = index_of(&bytes).unwrap();
        assert_eq!(index.members.len(), n);
        assert_eq!(index.members[n - 1].name, format!("a{}.npy", n - 1));
        // With prefix data too: every offset moves by its length.
        let shifted = archive(&names(n), 1, &[7u8; 100]);
        let moved = index_of(&shifted).unwrap();
        assert_eq!(moved.central_start, index.central_start + 100);
        assert_eq!(
            moved.members[n - 1].header_offset,
            index.members[n - 1].header_offset + 100
        );
        // A ZIP64 count that lies, either way.
        let z64 = end - 20 - 56;
        let mut fewer = bytes.clone();
        fewer[z64 + 24..z64 + 40].copy_from_slice(&[(n as u64 - 1).to_le_bytes(); 2].concat());
        assert_err(
            index_of(&fewer),
            ErrorKind::Format,
            "but the central directory holds more",
        );
        let mut more = bytes.clone();
        more[z64 + 24..z64 + 40].copy_from_slice(&[(u64::MAX).to_le_bytes(); 2].concat());
        assert_err(
            index_of(&more),
            ErrorKind::Format,
            "the ZIP64 end record counts 18446744073709551615 members",
        );
        // The locator or the ZIP64 end record placing things elsewhere than they are.
        for (at, what) in [
            (end - 20 + 8, "locator offset"),
            (z64 + 48, "directory offset"),
        ] {
            let mut moved = bytes.clone();
            moved[at + 2] ^= 0x01;
            let e = err_of(index_of(&moved), what);
            assert_eq!(e.kind(), ErrorKind::Format, "{what}: {}", e.message());
            assert!(
                e.message().contains("the ZIP64 end records"),
                "{what}: {}",
                e.message()
            );
        }
        // A record running past the directory is named as such, not as a misplaced directory
        // (the plain end record's size and offset are no sentinels here).
        let mut long = bytes.clone();
        let last_comment_len = z64 - 46 - b"a65538.npy".len() + 32;
        put16(&mut long, last_comment_len, 1);
        assert_err(
            index_of(&long),
            ErrorKind::Format,
            "a record of the zip directory is malformed",
        );
        // A plain end record that does not defer to the ZIP64 one is taken at its word.
        let mut plain = bytes.clone();
        put16(&mut plain, end + 10, 0x00FF);
        assert_err(
            index_of(&plain),
            ErrorKind::Format,
            "multi-part (split) zip archive",
        );
        put16(&mut plain, end + 8, 0x00FF);
        assert_err(
            index_of(&plain),
            ErrorKind::Format,
            "the end record counts 255 members but the central directory holds more",
        );
        // Its locator gone: the plain end record's 0xFFFF count cannot be followed.
        let mut lost = bytes.clone();
        lost[end - 20] ^= 0xff;
        assert_err(index_of(&lost), ErrorKind::Format, "damaged:");
    }

    #[test]
    fn zip64_end_records_with_extensible_data_and_a_prefix_are_found() {
        let bytes = archive(&names(65536), 1, b"");
        let end = end_at(&bytes);
        let z64 = end - 20 - 56;
        // 8 bytes of extensible data in the ZIP64 end record; the locator still points at it.
        let mut ext = bytes[..z64 + 56].to_vec();
        let rest = records::get64(&ext, z64 + 4) + 8;
        ext[z64 + 4..z64 + 12].copy_from_slice(&rest.to_le_bytes());
        ext.extend_from_slice(b"EXTENDED");
        ext.extend_from_slice(&bytes[z64 + 56..]);
        assert_eq!(index_of(&ext).unwrap().members.len(), 65536);
        let mut prefixed = vec![b'#'; 33];
        prefixed.extend_from_slice(&ext);
        let index = index_of(&prefixed).unwrap();
        assert_eq!(index.members[0].header_offset, 33);
    }

    #[test]
    fn zip64_end_records_that_no_sentinel_asks_for_only_move_the_directory_end() {
        // Python's zipfile writes them once the directory starts past 2 GiB, with the real
        // values (below 4 GiB) in the plain end record.
        let bytes = archive(&names(3), 10, b"");
        let end = end_at(&bytes);
        let size = u32::from_le_bytes(bytes[end + 12..end + 16].try_into().unwrap());
        let offset = u32::from_le_bytes(bytes[end + 16..end + 20].try_into().unwrap());
        let mut out = bytes[..end].to_vec();
        out.extend_from_slice(&records::ZIP64_END_SIG.to_le_bytes());
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for v in [3u64, 3, u64::from(size), u64::from(offset)] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&records::ZIP64_LOCATOR_SIG.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(end as u64).to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&bytes[end..]);
        let index = index_of(&out).unwrap();
        assert_eq!(index.members.len(), 3);
        assert_eq!(index.central_start, u64::from(offset));
    }

    #[test]
    fn prefix_data_shifts_every_offset() {
        let plain = index_of(&archive(&names(2), 10, b"")).unwrap();
        let stub = b"#!/bin/sh\nexec python -m zipapp \"$0\"\n";
        let bytes = archive(&names(2), 10, stub);
        let index = index_of(&bytes).unwrap();
        let shift = stub.len() as u64;
        assert_eq!(index.central_start, plain.central_start + shift);
        for (m, p) in index.members.iter().zip(&plain.members) {
            assert_eq!(m.header_offset, p.header_offset + shift);
        }
        // The zip crate, which psv used before, computes the same shift.
        let z = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        assert_eq!(z.offset(), shift);
        // Prefix data *removed* (offsets point past the end record): a clean error.
        let headless = &archive(&names(2), 10, b"")[40..];
        assert_err(
            index_of(headless),
            ErrorKind::Format,
            "the end record places the central directory at bytes",
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let bytes = archive(
            &[b"a.npy".to_vec(), b"b.npy".to_vec(), b"a.npy".to_vec()],
            10,
            b"",
        );
        assert_err(
            index_of(&bytes),
            ErrorKind::Format,
            "the central directory names the same member more than once",
        );
    }

    #[test]
    fn names_are_utf8_when_they_are_else_cp437() {
        let bytes = archive(
            &[b"caf\x82.npy".to_vec(), "π.npy".as_bytes().to_vec()],
            10,
            b"",
        );
        let index = index_of(&bytes).unwrap();
        assert_eq!(index.members[0].name, "café.npy");
        assert_eq!(index.members[0].raw_name(), b"caf\x82.npy");
        assert_eq!(index.members[1].name, "π.npy");
        // As the zip crate (and so psv before) decoded them.
        let mut z = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        assert_eq!(z.by_index_raw(0).unwrap().name().unwrap(), "café.npy");
    }

    /// `bytes` with `extra` appended to the first central record's extra field (sizes and
    /// offsets of the end record adjusted).
    fn with_central_extra(bytes: &[u8], extra: &[u8]) -> Vec<u8> {
        let index = index_of(bytes).unwrap();
        let start = index.central_start as usize;
        let old_len = u16::from_le_bytes([bytes[start + 30], bytes[start + 31]]) as usize;
        let name_len = index.members[0].raw_name().len();
        let insert_at = start + 46 + name_len + old_len;
        let mut out = bytes[..insert_at].to_vec();
        out.extend_from_slice(extra);
        out.extend_from_slice(&bytes[insert_at..]);
        put16(&mut out, start + 30, (old_len + extra.len()) as u16);
        let end = end_at(&out);
        let size = u32::from_le_bytes(out[end + 12..end + 16].try_into().unwrap());
        put32(&mut out, end + 12, size + extra.len() as u32);
        out
    }

    #[test]
    fn a_record_running_past_the_directory_is_malformed() {
        let bytes = archive(&names(2), 10, b"");
        let start = index_of(&bytes).unwrap().central_start as usize;
        for field in [28, 30, 32] {
            for grow in [1u16, 40, 0xFFFF] {
                let mut bad = bytes.clone();
                // The last record's name, extra or comment length grows past the directory.
                let last = start + 46 + 6;
                let v = u16::from_le_bytes([bad[last + field], bad[last + field + 1]]);
                put16(&mut bad, last + field, v.saturating_add(grow));
                let e = err_of(index_of(&bad), "a long record");
                assert_eq!(e.kind(), ErrorKind::Format, "{}", e.message());
                assert!(
                    e.message()
                        .contains("damaged: a record of the zip directory is malformed"),
                    "field {field} +{grow}: {}",
                    e.message()
                );
            }
        }
        // An extra field record that runs past its extra field.
        assert_err(
            index_of(&with_central_extra(&bytes, &[0x99, 0x99, 9, 0, 1])),
            ErrorKind::Format,
            "a member's extra field in the central directory is malformed",
        );
        // Trailing padding too short for a record header is not an error.
        assert!(index_of(&with_central_extra(&bytes, &[0x99, 0x99, 9])).is_ok());
    }

    #[test]
    fn zip64_extra_fields_hold_exactly_what_the_sentinels_ask_for() {
        let bytes = archive(&names(1), 10, b"");
        let start = index_of(&bytes).unwrap().central_start as usize;
        let mut sentinel = bytes.clone();
        put32(&mut sentinel, start + 20, u32::MAX); // compressed size
        let mut extra = vec![1, 0, 8, 0];
        extra.extend_from_slice(&10u64.to_le_bytes());
        let ok = with_central_extra(&sentinel, &extra);
        let m = &index_of(&ok).unwrap().members[0];
        assert_eq!((m.compressed_size, m.size), (10, 10));
        // The sentinel without its value.
        assert_err(
            index_of(&with_central_extra(&sentinel, &[1, 0, 0, 0])),
            ErrorKind::Format,
            "the ZIP64 extra field of member \"a0.npy\" lacks the sizes or offset",
        );
        // A header offset sentinel takes the value after the sizes that are sentinels.
        let mut offset = bytes.clone();
        put32(&mut offset, start + 42, u32::MAX);
        let mut extra = vec![1, 0, 8, 0];
        extra.extend_from_slice(&77u64.to_le_bytes());
        let m = &index_of(&with_central_extra(&offset, &extra))
            .unwrap()
            .members[0];
        assert_eq!(m.header_offset, 77);
    }

    #[test]
    fn a_unicode_path_field_names_the_member_when_its_crc_matches() {
        let bytes = archive(&[b"cafX.npy".to_vec()], 10, b"");
        let unicode = "café.npy".as_bytes();
        let field = |crc: u32| {
            let mut f = vec![0x75, 0x70];
            f.extend_from_slice(&(5 + unicode.len() as u16).to_le_bytes());
            f.push(1);
            f.extend_from_slice(&crc.to_le_bytes());
            f.extend_from_slice(unicode);
            f
        };
        let good = with_central_extra(&bytes, &field(crc32fast::hash(b"cafX.npy")));
        let m = &index_of(&good).unwrap().members[0];
        assert_eq!((m.name.as_str(), m.raw_name()), ("café.npy", unicode));
        let stale = with_central_extra(&bytes, &field(1));
        assert_eq!(index_of(&stale).unwrap().members[0].name, "cafX.npy");
        // The zip crate (psv before) named it the same way.
        let mut z = zip::ZipArchive::new(Cursor::new(&good)).unwrap();
        assert_eq!(z.by_index_raw(0).unwrap().name().unwrap(), "café.npy");
    }

    #[test]
    fn versions_flags_disks_and_methods_are_judged_as_before() {
        let bytes = archive(&names(2), 10, b"");
        let start = index_of(&bytes).unwrap().central_start as usize;
        let mut newer = bytes.clone();
        put16(&mut newer, start + 6, 64);
        assert_err(
            index_of(&newer),
            ErrorKind::Unsupported,
            "member \"a0.npy\" needs ZIP version 6.4 (only up to 6.3 is supported)",
        );
        let mut patched = bytes.clone();
        put16(&mut patched, start + 8, 1 << 5);
        assert_err(
            index_of(&patched),
            ErrorKind::Unsupported,
            "patched data or strong",
        );
        let mut multi = bytes.clone();
        let end = end_at(&multi);
        put16(&mut multi, end + 4, 1);
        assert_err(
            index_of(&multi),
            ErrorKind::Format,
            "multi-part (split) zip archive",
        );
        let mut methods = bytes.clone();
        put16(&mut methods, start + 8, records::FLAG_ENCRYPTED);
        put16(&mut methods, start + 10, 99);
        put16(&mut methods, start + 46 + 6 + 10, 12);
        let index = index_of(&methods).unwrap();
        assert!(index.members[0].encrypted);
        assert_eq!(index.members[0].method, Err("Aes".to_string()));
        assert_eq!(index.members[1].method, Ok(Method::Bzip2));
    }

    #[test]
    fn the_end_record_is_found_past_comments_and_trailing_bytes() {
        let bytes = archive(&names(2), 10, b"");
        let end = end_at(&bytes);
        let want = index_of(&bytes).unwrap().members;
        // A comment that holds an end record signature (CPython and numpy fail here).
        let mut commented = bytes.clone();
        let mut comment = b"see PK\x05\x06 and more".to_vec();
        comment.resize(40, b'.');
        put16(&mut commented, end + 20, comment.len() as u16);
        commented.extend_from_slice(&comment);
        assert_eq!(index_of(&commented).unwrap().members.len(), want.len());
        // Bytes after the end record that no comment covers (Python's zipfile reads these).
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"trailing garbage");
        assert_eq!(index_of(&trailing).unwrap().members.len(), want.len());
        // A comment longer than what follows.
        let mut cut = bytes.clone();
        put16(&mut cut, end + 20, 10);
        assert_err(
            index_of(&cut),
            ErrorKind::Format,
            "damaged: the archive comment runs past the end of the file",
        );
        // A digital signature record may end the directory.
        let mut signed = bytes[..end].to_vec();
        signed.extend_from_slice(&records::DIGITAL_SIG.to_le_bytes());
        signed.extend_from_slice(&[3, 0, 1, 2, 3]);
        signed.extend_from_slice(&bytes[end..]);
        let e = end_at(&signed);
        let size = u32::from_le_bytes(signed[e + 12..e + 16].try_into().unwrap());
        put32(&mut signed, e + 12, size + 9);
        assert_eq!(index_of(&signed).unwrap().members.len(), want.len());
    }

    /// A file of `prefix` bytes followed by an end record for a `dir_size`-byte directory
    /// starting right after the prefix.
    fn with_end_record(prefix: &[u8], dir_size: u32) -> Vec<u8> {
        let mut f = prefix.to_vec();
        f.extend_from_slice(&records::END_SIG.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&dir_size.to_le_bytes());
        f.extend_from_slice(&(prefix.len() as u32 - dir_size).to_le_bytes());
        f.extend_from_slice(&[0; 2]);
        f
    }

    #[test]
    fn the_damage_only_picks_among_plain_words() {
        let mut dir = records::CENTRAL_SIG.to_le_bytes().to_vec();
        dir.resize(46, 0);
        let file = with_end_record(&dir, 46);
        let probe = Probe::of(&mut Cursor::new(&file)).unwrap();
        assert_eq!(probe.central, Some((0, true)));
        for (damage, want) in [
            (Damage::Zip64, "damaged: the ZIP64 end records"),
            (Damage::MultiDisk, "multi-part (split) zip archive"),
            (
                Damage::Truncated,
                "truncated: a record of the zip directory runs past",
            ),
            (Damage::Extra, "extra field in the central directory"),
            (Damage::Comment, "archive comment runs past the end"),
            (
                Damage::Record,
                "damaged: a record of the zip directory is malformed",
            ),
        ] {
            let msg = probe.problem(damage);
            assert!(msg.contains(want), "{damage:?}: {msg}");
        }
    }

    #[test]
    fn a_missing_central_record_is_named_by_its_offset() {
        let file = with_end_record(&[7u8; 100], 40);
        let probe = Probe::of(&mut Cursor::new(&file)).unwrap();
        assert_eq!(probe.central, Some((60, false)));
        let msg = probe.problem(Damage::Record);
        assert!(
            msg.starts_with("damaged: no central directory record at offset 60"),
            "{msg}"
        );
    }

    /// A reader whose every read fails with EIO.
    struct Failing;

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        }
    }

    impl Seek for Failing {
        fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
            Ok(1000)
        }
    }

    #[test]
    fn io_failures_stay_io_errors() {
        let e = read_index(Failing, "f.npz", 10).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Io);
        assert_eq!(e.os_code(), Some(libc::EIO));
        assert!(e.message().starts_with("f.npz: "), "{}", e.message());
    }
}
