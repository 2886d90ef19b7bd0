//! The central directory of any `.npz`, as a list of members (the zip crate does the parsing).

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};

use zip::result::ZipError;
use zip::CompressionMethod;

use super::plan::CENTRAL_HEADER_LEN;
use super::records::{self, CentralFixed};
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
    /// Storage method, or the name of an unsupported one.
    pub method: std::result::Result<Method, String>,
    /// Whether the entry is encrypted.
    pub encrypted: bool,
}

fn zip_error(path: &str, e: ZipError) -> Error {
    match e {
        ZipError::Io(io) => Error::io(path, io),
        ZipError::UnsupportedArchive(what) => {
            Error::unsupported(format!("{path}: unsupported zip archive: {what}"))
        }
        other => Error::format(format!("{path}: not a valid .npz (zip) file: {other}")),
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
pub fn read_index<R: Read + Seek>(reader: R, path: &str, max_members: u64) -> Result<Index> {
    let archive = zip::ZipArchive::new(reader).map_err(|e| zip_error(path, e))?;
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
        let entry = archive.by_index_data(i).map_err(|e| zip_error(path, e))?;
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

/// Central header flags we cannot honour: 5 (patched data), 6 (strong encryption),
/// 13 (encrypted central directory).
const UNSUPPORTED_FLAGS: u16 = (1 << 5) | (1 << 6) | (1 << 13);

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
        if record.flags & UNSUPPORTED_FLAGS != 0 {
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
