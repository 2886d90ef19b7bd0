//! A restored archive: one block of memory and a view description per array.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::descr::Descr;
use crate::dtype::Dtype;
use crate::memory::{AnonMap, CallerBlock, FileMap};
use crate::npz::index::Method;

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
    /// File offset of the array data, for stored members (`None` when compressed).
    pub file_offset: Option<u64>,
    /// True if the member was compressed in the file (deflate, bzip2, LZMA or Deflate64).
    pub compressed: bool,
    /// How the member was stored in the file (`compressed` is `method != Method::Stored`).
    pub method: Method,
}

/// A restored `.npz`: every array in one 64-byte-aligned block, in central-directory order.
///
/// Immutable once built; `&Archive` may be shared between threads.
pub struct Archive {
    storage: Storage,
    arrays: Vec<ArrayInfo>,
    /// Key -> position, built by the first [`Archive::find`] (hosts that list every array never
    /// pay for it).
    index: OnceLock<HashMap<String, usize>>,
    skipped: Vec<String>,
    /// Bytes of block the arrays need (see [`Archive::required_bytes`]).
    required: usize,
}

/// The memory an archive's arrays live in.
pub(crate) enum Storage {
    /// Listed without data (metadata only): no array has bytes; the block is empty.
    Listing(AnonMap),
    /// The library's own block holds every array.
    Block(AnonMap),
    /// mmap mode: `mapped` arrays are views into the file mapping, the others are in the block.
    Mapped {
        /// The private mapping of the whole file.
        map: FileMap,
        /// The arrays that could not be mapped.
        block: AnonMap,
    },
    /// A caller's memory, borrowed for the restore only (its address, never read through).
    Borrowed {
        /// Address of the caller's block.
        addr: usize,
        /// Bytes of it the arrays use.
        len: usize,
    },
    /// Memory from a caller's allocator, released when the archive is dropped.
    Allocated(CallerBlock),
}

impl Storage {
    /// Storage for an archive listed without data.
    pub(crate) fn listing() -> crate::error::Result<Storage> {
        Ok(Storage::Listing(AnonMap::new(0)?))
    }

    /// The block's bytes, when the archive may read them.
    fn block(&self) -> Option<&[u8]> {
        match self {
            Storage::Listing(b) | Storage::Block(b) | Storage::Mapped { block: b, .. } => {
                Some(b.as_slice())
            }
            Storage::Allocated(b) => Some(b.as_slice()),
            Storage::Borrowed { .. } => None,
        }
    }

    /// The block's address (never NULL).
    fn block_ptr(&self) -> *const u8 {
        match self {
            Storage::Listing(b) | Storage::Block(b) | Storage::Mapped { block: b, .. } => {
                b.as_ptr()
            }
            Storage::Allocated(b) => b.as_ptr(),
            Storage::Borrowed { addr, .. } => *addr as *const u8,
        }
    }

    /// The block's length.
    fn block_len(&self) -> usize {
        match self {
            Storage::Listing(b) | Storage::Block(b) | Storage::Mapped { block: b, .. } => b.len(),
            Storage::Allocated(b) => b.len(),
            Storage::Borrowed { len, .. } => *len,
        }
    }

    fn map(&self) -> Option<&FileMap> {
        match self {
            Storage::Mapped { map, .. } => Some(map),
            _ => None,
        }
    }
}

impl Archive {
    /// An archive of `arrays` (offsets into `storage`) and the names of the `skipped` members.
    pub(crate) fn new(
        storage: Storage,
        arrays: Vec<ArrayInfo>,
        skipped: Vec<String>,
        required: usize,
    ) -> Archive {
        Archive {
            storage,
            arrays,
            index: OnceLock::new(),
            skipped,
            required,
        }
    }

    /// Bytes of block these arrays need: what caller memory for [`crate::restore_into`] (or a
    /// caller's allocator) must hold, as a metadata-only restore tells it before any data is
    /// read. Each array starts at a multiple of 64 in it.
    pub fn required_bytes(&self) -> usize {
        self.required
    }

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

    /// Address of array `i`'s first byte (inside its storage even for empty arrays; in the
    /// caller's buffer after [`crate::restore_into`]); `None` if out of range or metadata-only.
    pub fn data_ptr(&self, i: usize) -> Option<*const u8> {
        let a = self.arrays.get(i)?;
        let base = match &self.storage {
            Storage::Listing(_) => return None,
            Storage::Mapped { map, .. } if a.mapped => map.as_slice().as_ptr(),
            storage => storage.block_ptr(),
        };
        Some(base.wrapping_add(a.offset))
    }

    /// The memory array `a` lives in, when the archive may read it (not after
    /// [`crate::restore_into`]: those bytes are the caller's).
    fn storage_of(&self, a: &ArrayInfo) -> Option<&[u8]> {
        match &self.storage {
            Storage::Listing(_) => None,
            Storage::Mapped { map, .. } if a.mapped => Some(map.as_slice()),
            storage => storage.block(),
        }
    }

    /// True if this archive was restored metadata-only (no data).
    pub fn is_metadata_only(&self) -> bool {
        matches!(self.storage, Storage::Listing(_))
    }

    /// The block holding every copied array (in mmap mode, the arrays that could not be mapped).
    /// (Empty after [`crate::restore_into`]: the block is the caller's buffer, see
    /// [`Archive::block_ptr`] and [`Archive::block_len`].)
    pub fn block(&self) -> &[u8] {
        self.storage.block().unwrap_or_default()
    }

    /// Address of the block (page-aligned for the library's own block, the caller's address
    /// for caller memory; never NULL).
    pub fn block_ptr(&self) -> *const u8 {
        self.storage.block_ptr()
    }

    /// Length of the block in bytes (the arrays, each 64-aligned; for a psv file restored as
    /// an image, the headers between them too).
    pub fn block_len(&self) -> usize {
        self.storage.block_len()
    }

    /// The file mapping, in mmap mode.
    pub fn mapping(&self) -> Option<&[u8]> {
        self.storage.map().map(FileMap::as_slice)
    }

    /// Names of members that are not arrays (not `*.npy`, or without the npy magic); numpy
    /// would hand these back as raw bytes.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}
