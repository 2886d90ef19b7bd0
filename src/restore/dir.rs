//! Phase A for a directory archive's members (see [`crate::npy_dir`]): each array is a whole
//! `.npy` file of its own, checked against the index and read through the same fill.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::inspect::{Located, Region, HEAD_READ_LEN, SMALL_MEMBER_LEN};
use super::source::{read_exact, Reader};
use crate::error::{Error, Result};
use crate::memory::{self, AnonMap};
use crate::npy::header;
use crate::npy_dir;
use crate::npz::index::{MemberInfo, Method};

impl Reader<'_> {
    /// Phase A for one array of a directory archive: open its file, check its size against the
    /// index, parse its header (small files are read whole, once).
    pub(super) fn inspect_dir_file(&self, dir: &Path, m: &MemberInfo) -> Result<Located> {
        let path = npy_dir::member_file(dir, m)?;
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
        let mut head = memory::zeroed(want as usize)?;
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
            let mut bytes = memory::zeroed(total)?;
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
            let mut bytes = AnonMap::new(head.len())?;
            bytes.as_mut_slice().copy_from_slice(&head);
            Some(Arc::new(Region { start: 0, bytes }))
        } else {
            None
        };
        // A file read whole is closed now: the fill copies it from the region, and it was read
        // before `read_consistently` checks the index, as any file it opens. (Holding every
        // small file open until the fill needed one descriptor per array: EMFILE beyond
        // `ulimit -n`.) Larger files stay open for the fill.
        let file = if region.is_some() {
            None
        } else {
            Some(Arc::new(file))
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
            file,
        })
    }
}
