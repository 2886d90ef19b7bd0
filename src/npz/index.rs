//! The central directory of any `.npz`, as a list of members (the zip crate does the parsing).

use std::borrow::Cow;
use std::io::{Read, Seek, SeekFrom};

use zip::result::ZipError;
use zip::CompressionMethod;

use crate::error::{Error, Result};

/// How a member's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// ZIP method 0.
    Stored,
    /// ZIP method 8 (raw deflate), as `numpy.savez_compressed` writes.
    Deflated,
}

/// One central directory entry.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    /// The raw name bytes from the central directory.
    pub raw_name: Vec<u8>,
    /// The decoded name (UTF-8, or CP437 when the UTF-8 flag is clear).
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

/// Reads the central directory from `reader` (named `path` in messages), in directory order.
pub fn read_index<R: Read + Seek>(
    reader: R,
    path: &str,
    max_members: u64,
) -> Result<Vec<MemberInfo>> {
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
    let mut last_central = None;
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
            other => Err(other.to_string()),
        };
        last_central = last_central.max(Some(entry.central_header_start()));
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
    if let Some(last) = last_central {
        check_directory_end(archive.into_inner(), last, members.len())
            .map_err(|e| e.context(path))?;
    }
    Ok(members)
}

/// The zip crate walks the central directory by the end record's entry count; CPython walks it
/// by size. When the count is smaller than the directory, members would silently vanish:
/// check that the record after the last one read is not another central header.
fn check_directory_end<R: Read + Seek>(mut reader: R, last: u64, count: usize) -> Result<()> {
    let io = |e| Error::io("cannot read the central directory", e);
    let mut fixed = [0u8; 46];
    reader.seek(SeekFrom::Start(last)).map_err(io)?;
    reader.read_exact(&mut fixed).map_err(io)?;
    let len16 = |at: usize| u64::from(u16::from_le_bytes([fixed[at], fixed[at + 1]]));
    let next = last + 46 + len16(28) + len16(30) + len16(32);
    let mut sig = [0u8; 4];
    reader.seek(SeekFrom::Start(next)).map_err(io)?;
    if reader.read_exact(&mut sig).is_ok() && &sig == b"PK\x01\x02" {
        return Err(Error::format(format!(
            "the end record counts {count} members but the central directory holds more"
        )));
    }
    Ok(())
}
