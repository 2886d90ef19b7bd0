//! The central directory of any `.npz`, as a list of members (the zip crate does the parsing).

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};

use zip::result::ZipError;
use zip::CompressionMethod;

use super::plan::CENTRAL_HEADER_LEN;
use super::records::{self, CentralFixed};
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
    /// Storage method, or the name of an unsupported one.
    pub method: std::result::Result<Method, String>,
    /// Whether the entry is encrypted.
    pub encrypted: bool,
}

/// What the zip crate's failure means, in words about the file: its own texts name its
/// internals (`Unexpected end of zip::format::blocks::Zip32CDEBlock`, `Could not find EOCD`),
/// which tell a user nothing. The file itself is looked at again ([`Probe`]) to say whether
/// it is truncated, not a zip at all, or damaged. The error kinds are unchanged: FORMAT for
/// files that are not readable archives, UNSUPPORTED for valid archives we cannot read, IO
/// for failures of the OS.
fn zip_error<R: Read + Seek>(path: &str, e: ZipError, reader: &mut R) -> Error {
    let what = match e {
        ZipError::Io(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
            return Error::io(path, io)
        }
        ZipError::UnsupportedArchive(what) => {
            return Error::unsupported(format!("{path}: unsupported zip archive: {what}"))
        }
        ZipError::InvalidArchive(text) => Some(text),
        _ => None,
    };
    let problem = match Probe::of(reader) {
        Ok(probe) => probe.problem(what.as_deref()),
        Err(io) => return Error::io(path, io),
    };
    Error::format(format!("{path}: {problem}"))
}

/// Facts about a file the zip crate could not read: its length, how it starts, and whether
/// an end-of-central-directory record (the record every zip archive ends with) is present.
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

    /// The problem in plain words; `zip_text` (the zip crate's message) only picks among
    /// them and is never shown.
    fn problem(&self, zip_text: Option<&str>) -> String {
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
        // The records are where they should be: the zip crate's complaint picks the words.
        let text = zip_text.unwrap_or("").to_ascii_lowercase();
        let what = if text.contains("multi-disk") {
            "a multi-part (split) zip archive; only single-file archives are read"
        } else if text.contains("eocd64") || text.contains("zip64") {
            "damaged: the ZIP64 end records (used by archives over 4 GiB or 65535 members) \
             are missing or inconsistent"
        } else if text.contains("unexpected end") || zip_text.is_none() {
            "truncated: a record of the zip directory runs past the end of the file"
        } else if text.contains("extra") {
            "damaged: a member's extra field in the central directory is malformed"
        } else if text.contains("comment") {
            "damaged: the archive comment runs past the end of the file"
        } else {
            "damaged: a record of the zip directory is malformed"
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

/// Reads the central directory from `reader` (named `path` in messages), in directory order.
pub fn read_index<R: Read + Seek>(mut reader: R, path: &str, max_members: u64) -> Result<Index> {
    let archive = match zip::ZipArchive::new(&mut reader) {
        Ok(archive) => archive,
        Err(e) => return Err(zip_error(path, e, &mut reader)),
    };
    if archive.has_duplicate_names() {
        return Err(Error::format(format!(
            "{path}: the central directory names the same member more than once"
        )));
    }
    if archive.len() as u64 > max_members {
        return Err(Error::limit(format!(
            "{path}: {} members exceed the limit of {max_members}",
            archive.len()
        )));
    }
    let mut members = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = match archive.by_index_data(i) {
            Ok(entry) => entry,
            Err(e) => {
                drop(archive);
                return Err(zip_error(path, e, &mut reader));
            }
        };
        let name = match entry.name() {
            Ok(Cow::Borrowed(n)) => n.to_owned(),
            Ok(Cow::Owned(n)) => n,
            Err(_) => String::from_utf8_lossy(entry.name_raw()).into_owned(),
        };
        let method = match entry.compression() {
            CompressionMethod::Stored => Ok(Method::Stored),
            CompressionMethod::Deflated => Ok(Method::Deflated),
            m if m == CompressionMethod::BZIP2 => Ok(Method::Bzip2),
            m if m == CompressionMethod::LZMA => Ok(Method::Lzma),
            m if m == CompressionMethod::DEFLATE64 => Ok(Method::Deflate64),
            other => Err(other.to_string()),
        };
        members.push(MemberInfo {
            raw_name: entry.name_raw().to_vec(),
            name,
            header_offset: entry.header_start(),
            compressed_size: entry.compressed_size(),
            size: entry.size(),
            crc32: entry.crc32(),
            method,
            encrypted: entry.encrypted(),
        });
    }
    let central_start = archive.central_directory_start();
    walk_central_directory(archive.into_inner(), central_start, &members)
        .map_err(|e| e.context(path))?;
    Ok(Index {
        members,
        central_start,
    })
}

/// Walks the central directory record by record, as CPython does, and checks what the zip
/// crate does not: that every record is where the previous one ended, that no record asks for
/// a newer ZIP version (> 6.3) or a feature we cannot honour, that the directory ends exactly
/// where an end record begins (the count did not hide members), and that the end record's
/// directory size is the real one.
fn walk_central_directory<R: Read + Seek>(
    reader: R,
    start: u64,
    members: &[MemberInfo],
) -> Result<()> {
    let io = |e| Error::io("cannot read the central directory", e);
    let mut r = std::io::BufReader::new(reader);
    r.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut pos = start;
    for m in members {
        let mut fixed = [0u8; CENTRAL_HEADER_LEN as usize];
        r.read_exact(&mut fixed).map_err(|_| {
            Error::format(format!(
                "the central directory is truncated at offset {pos}"
            ))
        })?;
        let Some(record) = CentralFixed::parse(&fixed) else {
            return Err(Error::format(format!(
                "no central directory record at offset {pos}"
            )));
        };
        let needed = record.version_needed;
        if needed > 63 {
            return Err(Error::unsupported(format!(
                "member {:?} needs ZIP version {}.{} (only up to 6.3 is supported)",
                m.name,
                needed / 10,
                needed % 10
            )));
        }
        if record.flags & records::UNSUPPORTED_FLAGS != 0 {
            return Err(Error::unsupported(format!(
                "member {:?} uses patched data or strong encryption (flags {:#06x})",
                m.name, record.flags
            )));
        }
        r.seek_relative(record.variable_len as i64).map_err(io)?;
        pos += CENTRAL_HEADER_LEN + record.variable_len;
    }
    let mut end = [0u8; 56];
    let got = read_up_to(&mut r, &mut end).map_err(io)?;
    let declared = match records::declared_central_size(&end[..got]) {
        Ok(declared) => declared,
        Err(Some(records::CENTRAL_SIG)) => {
            return Err(Error::format(format!(
                "the end record counts {} members but the central directory holds more",
                members.len()
            )))
        }
        Err(_) => {
            return Err(Error::format(format!(
                "the central directory is not followed by an end record (offset {pos})"
            )))
        }
    };
    if let Some(declared) = declared {
        if declared != pos - start {
            return Err(Error::format(format!(
                "the end record says the central directory has {declared} bytes; it has {}",
                pos - start
            )));
        }
    }
    Ok(())
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
    fn the_zip_crates_words_only_pick_among_plain_ones() {
        let mut dir = records::CENTRAL_SIG.to_le_bytes().to_vec();
        dir.resize(46, 0);
        let file = with_end_record(&dir, 46);
        let probe = Probe::of(&mut Cursor::new(&file)).unwrap();
        assert_eq!(probe.central, Some((0, true)));
        for (zip_text, want) in [
            (
                "Invalid EOCD64: inconsistent length",
                "damaged: the ZIP64 end records",
            ),
            (
                "Multi-disk ZIP files are not supported",
                "multi-part (split) zip archive",
            ),
            (
                "Unexpected end of zip::format::blocks::ZipCentralEntryBlock",
                "truncated:",
            ),
            (
                "Extra field content truncated",
                "extra field in the central directory",
            ),
            (
                "something new in a later zip crate",
                "damaged: a record of the zip directory",
            ),
        ] {
            let msg = probe.problem(Some(zip_text));
            assert!(
                msg.starts_with(want) || msg.contains(want),
                "{zip_text}: {msg}"
            );
            assert!(!msg.contains("zip::") && !msg.contains("EOCD"), "{msg}");
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

    #[test]
    fn io_failures_stay_io_errors() {
        let e = zip_error(
            "f.npz",
            ZipError::Io(std::io::Error::from_raw_os_error(libc::EIO)),
            &mut Cursor::new(Vec::new()),
        );
        assert_eq!(e.kind(), crate::ErrorKind::Io);
        assert_eq!(e.os_code(), Some(libc::EIO));
    }
}
