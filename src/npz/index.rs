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

/// How a member's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// The raw name bytes from the central directory.
    pub raw_name: Vec<u8>,
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
        if let Some((end_at, rec)) = end {
            let dir_size = u32::from_le_bytes([rec[12], rec[13], rec[14], rec[15]]);
            if dir_size != u32::MAX && u64::from(dir_size) <= end_at {
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
        let zip64 = dir_size == u32::MAX || dir_offset == u32::MAX;
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
    let dir = match zip64 {
        Some(Ok(dir)) => dir,
        // ZIP64 records the end record does not need are only a coincidence of bytes.
        Some(Err(fail)) if end.may_be_zip64() => return Err(fail),
        _ => {
            if end.disk != 0 || end.central_disk != 0 || end.count_here != end.count {
                return Err(Fail::Damaged(Damage::MultiDisk));
            }
            Directory {
                count: u64::from(end.count),
                size: u64::from(end.central_size),
                offset: u64::from(end.central_offset),
                end: at,
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
        members.push(MemberInfo {
            raw_name: name.to_vec(),
            name: decoded,
            header_offset,
            compressed_size,
            size,
            crc32: fixed.crc32,
            method: method_of(fixed.method),
            encrypted: fixed.flags & records::FLAG_ENCRYPTED != 0,
        });
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
    use std::io::Cursor;

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
            assert!(msg.starts_with(want), "{damage:?}: {msg}");
        }
    }

    #[test]
    fn a_missing_central_record_is_named_by_its_offset() {
        let file = with_end_record(&[7u8; 100], 40);
        let probe = Probe::of(&mut Cursor::new(&file)).unwrap();
        assert_eq!(probe.central, Some((60, false)));
        let msg = probe.problem(None);
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
