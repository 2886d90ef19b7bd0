//! The directory container (`Layout::Dir`), the seed tool's first form: one `<key>.npy` per array (each
//! readable with `numpy.load`, array data 64-aligned in each file) and an index file that
//! names the arrays in order with their sizes and CRC-32s.
//!
//! The index is the commit point. A save never overwrites a file the current index refers to:
//! each array goes to `<key>.npy`, or to `<key>.<n>.npy` when the current index still uses that
//! name; files are written under temporary names and renamed into place, then the new index is
//! written the same way. A crash at any moment leaves the old index and its files intact; files
//! the new index no longer names are removed after the commit.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use crc32fast::Hasher;
use rayon::prelude::*;

use crate::dest::tempfile::{self, TempFile};
use crate::dest::{aligned_pieces, SMALL_ARRAY_LEN};
use crate::error::{Error, Result};
use crate::npz::index::{MemberInfo, Method};
use crate::npz::member_name;

/// The index file's name inside the directory.
pub const INDEX_NAME: &str = "psv-index.txt";
/// First line of every index.
const INDEX_MAGIC: &str = "psv-dir 1";
/// Largest index accepted (about a million arrays).
const MAX_INDEX_LEN: u64 = 256 << 20;

/// One array of a directory archive, as the index records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The key.
    pub key: String,
    /// The file name inside the directory.
    pub file: String,
    /// The file's size in bytes (header and data).
    pub size: u64,
    /// CRC-32 of the whole file.
    pub crc32: u32,
}

/// Keys must be safe, portable file names in this layout.
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid_arg(format!(
            "key {key:?} cannot be a file name in the directory layout: {why}"
        )))
    };
    if key.contains('/') {
        return bad("it contains '/'");
    }
    if key.starts_with('.') {
        return bad("it starts with '.'");
    }
    if key
        .chars()
        .any(|c| c == '\0' || c == '\n' || c == '\r' || c == '\t')
    {
        return bad("it contains NUL, a tab or a line break");
    }
    if key.len() > 240 {
        return bad("it is longer than 240 bytes");
    }
    Ok(())
}

fn parse_index(text: &str, shown: &str) -> Result<Vec<DirEntry>> {
    let bad = |line: usize, why: &str| Error::format(format!("{shown}: index line {line}: {why}"));
    let mut lines = text.lines();
    if lines.next() != Some(INDEX_MAGIC) {
        return Err(bad(1, "not a psv directory index"));
    }
    let mut entries = Vec::new();
    let mut keys = HashSet::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        let [crc, size, file, key] = fields[..] else {
            return Err(bad(n + 2, "expected crc, size, file and key"));
        };
        let crc32 = u32::from_str_radix(crc, 16).map_err(|_| bad(n + 2, "bad CRC"))?;
        let size = size.parse().map_err(|_| bad(n + 2, "bad size"))?;
        if file.contains('/') || file.starts_with('.') || file.is_empty() {
            return Err(bad(n + 2, "unsafe file name"));
        }
        if !keys.insert(key) {
            return Err(bad(n + 2, "duplicate key"));
        }
        entries.push(DirEntry {
            key: key.to_owned(),
            file: file.to_owned(),
            size,
            crc32,
        });
    }
    Ok(entries)
}

/// Reads the index of the directory archive at `dir`; `None` if there is no index file.
pub fn read_index(dir: &Path) -> Result<Option<Vec<DirEntry>>> {
    let path = dir.join(INDEX_NAME);
    let shown = path.display().to_string();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot open {shown}"), e)),
    };
    let len = file.metadata().map_err(|e| Error::io(&shown, e))?.len();
    if len > MAX_INDEX_LEN {
        return Err(Error::limit(format!(
            "{shown}: index of {len} bytes is too large"
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::format(format!("{shown}: cannot read the index as UTF-8 text: {e}")))?;
    parse_index(&text, &shown).map(Some)
}

/// The arrays of the directory archive at `dir` as the members restore reads, in index order:
/// each named `<key>.npy`, its payload the whole file (`header_offset` 0, stored), with the
/// index's size and CRC-32, and its file name as the raw name ([`member_file`] gives the
/// path). `None` without an index.
pub(crate) fn members(dir: &Path) -> Result<Option<Vec<MemberInfo>>> {
    let Some(entries) = read_index(dir)? else {
        return Ok(None);
    };
    Ok(Some(
        entries
            .into_iter()
            .map(|e| MemberInfo {
                name: String::from_utf8(member_name(&e.key)).unwrap_or_default(),
                raw_name: e.file.into_bytes(),
                header_offset: 0,
                compressed_size: e.size,
                size: e.size,
                crc32: e.crc32,
                method: Ok(Method::Stored),
                encrypted: false,
            })
            .collect(),
    ))
}

/// The path of a listed member's own file (see [`members`]).
pub(crate) fn member_file(dir: &Path, m: &MemberInfo) -> Result<std::path::PathBuf> {
    let name = std::str::from_utf8(&m.raw_name).map_err(|_| Error::format("bad file name"))?;
    Ok(dir.join(name))
}

fn format_index(entries: &[DirEntry]) -> String {
    let mut out = String::from(INDEX_MAGIC);
    out.push('\n');
    for e in entries {
        out.push_str(&format!(
            "{:08x}\t{}\t{}\t{}\n",
            e.crc32, e.size, e.file, e.key
        ));
    }
    out
}

/// One array to write: its key, its numpy-identical header and its bytes.
pub(crate) struct DirArray<'a> {
    pub key: &'a str,
    pub header: &'a [u8],
    pub data: &'a [u8],
}

/// Writes `arrays` into the directory `dir` (created if missing; its parent must exist) and
/// commits them with a new index. `before_commit` runs once every file is in place and may
/// still cancel (the new files are then removed and the old index stays).
pub(crate) fn save(
    arrays: &[DirArray<'_>],
    dir: &Path,
    fsync: bool,
    pool: &rayon::ThreadPool,
    before_commit: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    for a in arrays {
        validate_key(a.key)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot create directory {}", dir.display()),
                e,
            ))
        }
    }
    let old = read_index(dir)?.unwrap_or_default();
    let in_use: HashSet<&str> = old.iter().map(|e| e.file.as_str()).collect();
    let names: Vec<String> = arrays
        .iter()
        .map(|a| {
            let mut name = format!("{}.npy", a.key);
            let mut n = 1;
            while in_use.contains(name.as_str()) {
                name = format!("{}.{n}.npy", a.key);
                n += 1;
            }
            name
        })
        .collect();

    let written: Vec<(TempFile, u32)> = pool.install(|| {
        arrays
            .par_iter()
            .zip(&names)
            .map(|(a, name)| write_file(a, &dir.join(name)))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut entries = Vec::with_capacity(arrays.len());
    let mut placed = Vec::with_capacity(arrays.len());
    let result = (|| {
        for ((tmp, crc32), (a, name)) in written.into_iter().zip(arrays.iter().zip(&names)) {
            tmp.rename_into(&dir.join(name), fsync)?;
            placed.push(dir.join(name));
            entries.push(DirEntry {
                key: a.key.to_owned(),
                file: name.clone(),
                size: (a.header.len() + a.data.len()) as u64,
                crc32,
            });
        }
        if fsync {
            tempfile::fsync_dir(dir)?;
        }
        before_commit()
    })();
    if let Err(e) = result {
        // Not committed: the files placed so far are named by no index; remove them.
        for p in &placed {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    let index_path = dir.join(INDEX_NAME);
    let tmp = TempFile::create(&index_path)?;
    std::io::Write::write_all(&mut &tmp.file, format_index(&entries).as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", tmp.path.display()), e))?;
    tmp.commit(&index_path, fsync)?;
    // Committed. Files only the old index named are garbage now (best effort).
    let keep: HashSet<&str> = entries.iter().map(|e| e.file.as_str()).collect();
    for e in &old {
        if !keep.contains(e.file.as_str()) {
            let _ = std::fs::remove_file(dir.join(&e.file));
        }
    }
    Ok(())
}

/// Writes one `.npy` file under a temporary name; returns it (not yet renamed) and its CRC-32.
fn write_file(a: &DirArray<'_>, target: &Path) -> Result<(TempFile, u32)> {
    let tmp = TempFile::create(target)?;
    let io = |e| Error::io(format!("cannot write {}", tmp.path.display()), e);
    use std::os::unix::fs::FileExt;
    let mut crc = Hasher::new();
    crc.update(a.header);
    if a.data.len() <= SMALL_ARRAY_LEN {
        let mut buf = Vec::with_capacity(a.header.len() + a.data.len());
        buf.extend_from_slice(a.header);
        buf.extend_from_slice(a.data);
        crc.update(a.data);
        tmp.file.write_all_at(&buf, 0).map_err(io)?;
        return Ok((tmp, crc.finalize()));
    }
    tmp.file.write_all_at(a.header, 0).map_err(io)?;
    // One thread writes aligned pieces in order while another computes the CRC. (The .npz save
    // CRCs each 2 MiB piece just before writing it, on every worker; see crate::save::stored.
    // This path was not re-measured after that change.)
    let start = a.header.len() as u64;
    let (written, crc) = rayon::join(
        || {
            aligned_pieces(start, a.data.len()).try_for_each(|piece| {
                let offset = start + piece.start as u64;
                tmp.file.write_all_at(&a.data[piece], offset).map_err(io)
            })
        },
        || {
            crc.update(a.data);
            crc.finalize()
        },
    );
    written?;
    Ok((tmp, crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_rejects_garbage() {
        let entries = vec![
            DirEntry {
                key: "a b".into(),
                file: "a b.npy".into(),
                size: 128,
                crc32: 0xdead_beef,
            },
            DirEntry {
                key: "中".into(),
                file: "中.1.npy".into(),
                size: 0,
                crc32: 0,
            },
        ];
        assert_eq!(parse_index(&format_index(&entries), "x").unwrap(), entries);
        for bad in [
            "",
            "psv-dir 2\n",
            "psv-dir 1\nzz\t1\ta.npy\ta\n",
            "psv-dir 1\n0\t1\t../x\ta\n",
            "psv-dir 1\n0\t1\ta.npy\ta\n0\t1\tb.npy\ta\n",
            "psv-dir 1\n0\t1\ta.npy\n",
        ] {
            assert!(parse_index(bad, "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unsafe_keys_are_refused() {
        for bad in ["a/b", "..", ".hidden", "a\nb", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        validate_key("weights 1 (é)").unwrap();
    }
}
