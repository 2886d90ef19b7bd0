//! A restored archive: one block of memory and a view description per array.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::block::{Block, FileMap};
use crate::descr::Descr;
use crate::dtype::Dtype;

/// One restored array: where its bytes are in the block and how numpy describes them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ArrayInfo {
    /// The key (member name without one `.npy` suffix).
    pub key: String,
    /// The element type as numpy described it.
    pub descr: Descr,
    /// `descr` as text: `<f4`, or the record list literal.
    pub descr_string: String,
    /// The numeric dtype, when the element type has one in native byte order.
    pub dtype: Option<Dtype>,
    /// Shape (`[]` for 0-d).
    pub shape: Vec<u64>,
    /// True if the bytes are in Fortran order (as stored; never transposed).
    pub fortran_order: bool,
    /// Offset of the data in the block, or in the file mapping when `mapped`; a multiple of 64.
    pub offset: usize,
    /// Bytes of data.
    pub nbytes: usize,
    /// True if the data lives in the file mapping (mmap mode) rather than the block.
    pub mapped: bool,
    /// File offset of the array data, for stored members (`None` when deflated).
    pub file_offset: Option<u64>,
    /// True if the member was deflated in the file.
    pub compressed: bool,
}

/// A restored `.npz`: every array in one 64-byte-aligned block, in central-directory order.
///
/// Immutable once built; `&Archive` may be shared between threads.
pub struct Archive {
    pub(crate) block: Block,
    pub(crate) map: Option<FileMap>,
    pub(crate) metadata_only: bool,
    pub(crate) arrays: Vec<ArrayInfo>,
    /// Key -> position, built by the first [`Archive::find`] (hosts that list every array never
    /// pay for it: ~0.1 us per array).
    pub(crate) index: OnceLock<HashMap<String, usize>>,
    pub(crate) skipped: Vec<String>,
}

impl Archive {
    /// Number of arrays.
    pub fn len(&self) -> usize {
        self.arrays.len()
    }

    /// True if there are no arrays.
    pub fn is_empty(&self) -> bool {
        self.arrays.is_empty()
    }

    /// The arrays' descriptions, in order.
    pub fn arrays(&self) -> &[ArrayInfo] {
        &self.arrays
    }

    /// Index of the array named `key`.
    pub fn find(&self, key: &str) -> Option<usize> {
        self.index
            .get_or_init(|| {
                self.arrays
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.key.clone(), i))
                    .collect()
            })
            .get(key)
            .copied()
    }

    /// The bytes of array `i` (64-byte aligned); `None` if `i` is out of range or the archive
    /// was restored metadata-only.
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        let a = self.arrays.get(i)?;
        let base = self.storage_of(a)?;
        base.get(a.offset..a.offset + a.nbytes)
    }

    /// Address of array `i`'s first byte (inside its storage even for empty arrays); `None` if
    /// out of range or metadata-only.
    pub fn data_ptr(&self, i: usize) -> Option<*const u8> {
        let a = self.arrays.get(i)?;
        Some(self.storage_of(a)?.as_ptr().wrapping_add(a.offset))
    }

    fn storage_of(&self, a: &ArrayInfo) -> Option<&[u8]> {
        if self.metadata_only {
            None
        } else if a.mapped {
            self.map.as_ref().map(FileMap::as_slice)
        } else {
            Some(self.block.as_slice())
        }
    }

    /// True if this archive was restored metadata-only (no data).
    pub fn is_metadata_only(&self) -> bool {
        self.metadata_only
    }

    /// The block holding every copied array (in mmap mode, the arrays that could not be mapped).
    pub fn block(&self) -> &[u8] {
        self.block.as_slice()
    }

    /// Address of the block (page-aligned, never NULL).
    pub fn block_ptr(&self) -> *const u8 {
        self.block.as_ptr()
    }

    /// The file mapping, in mmap mode.
    pub fn mapping(&self) -> Option<&[u8]> {
        self.map.as_ref().map(FileMap::as_slice)
    }

    /// Names of members that are not arrays (not `*.npy`, or without the npy magic); numpy
    /// would hand these back as raw bytes.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}
