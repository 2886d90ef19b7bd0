//! Memory the library maps itself: [`AnonMap`], the anonymous, huge-page-advised mapping that
//! becomes the restore's block (one mapping holding every array, each at a 64-aligned offset)
//! or a phase-A region; [`FileMap`], the file mapping of the mmap mode; and fallible buffers.
//!
//! An anonymous mapping costs no zeroing pass (the kernel hands out zero pages on first touch)
//! and, advised with MADV_HUGEPAGE, faults in 2 MiB at a time, several times faster to fill than
//! 4 KiB pages (README, "Performance notes").

use std::fs::File;

use memmap2::{MmapMut, MmapOptions};

use crate::error::{Error, Result};

/// Alignment of every array inside the block.
pub const BLOCK_ALIGN: usize = 64;

/// Rounds `n` up to the next multiple of [`BLOCK_ALIGN`], or `None` on overflow.
pub fn align_up(n: usize) -> Option<usize> {
    n.checked_add(BLOCK_ALIGN - 1)
        .map(|v| v & !(BLOCK_ALIGN - 1))
}

/// A zeroed byte buffer of `len` bytes, allocated fallibly: failure is
/// [`crate::ErrorKind::NoMem`], never an abort (buffer sizes can come from hostile files).
pub fn zeroed(len: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::nomem(format!("cannot allocate {len} bytes")))?;
    v.resize(len, 0);
    Ok(v)
}

/// Asks for transparent huge pages on a mapping of `len` bytes when it spans at least one huge
/// page. Advisory only: without transparent huge pages this changes nothing.
fn advise_huge_pages(map: &MmapMut, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= 2 << 20 {
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (map, len);
}

/// A page-aligned, writable, private anonymous mapping, unmapped on drop.
pub struct AnonMap {
    map: MmapMut,
    len: usize,
}

impl AnonMap {
    /// Allocates `len` bytes (fallibly: an allocation failure is [`crate::ErrorKind::NoMem`]).
    ///
    /// At least one page is mapped even for `len == 0`, so every array pointer (including those of
    /// empty arrays at the end) points into the mapping.
    pub fn new(len: usize) -> Result<AnonMap> {
        let map = MmapOptions::new()
            .len(len.max(BLOCK_ALIGN))
            .map_anon()
            .map_err(|e| Error::nomem(format!("cannot allocate {len} bytes: {e}")))?;
        advise_huge_pages(&map, len);
        Ok(AnonMap { map, len })
    }

    /// Reserves `capacity` bytes of address space without committing memory (MAP_NORESERVE:
    /// pages are backed only when first touched), for a block whose size is known only once
    /// it is filled (a stream restore). Its length starts at `capacity`; [`AnonMap::truncate`]
    /// sets the length used. The untouched rest stays reserved address space, never memory.
    pub fn reserve(capacity: usize) -> Result<AnonMap> {
        let map = MmapOptions::new()
            .len(capacity.max(BLOCK_ALIGN))
            .no_reserve_swap()
            .map_anon()
            .map_err(|e| {
                Error::nomem(format!(
                    "cannot reserve {capacity} bytes of address space: {e}"
                ))
            })?;
        advise_huge_pages(&map, capacity);
        Ok(AnonMap { map, len: capacity })
    }

    /// Shortens the length to `len` (no-op if longer); the mapping itself stays as it is.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map[..self.len]
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }

    /// Address of the first byte (page-aligned, never NULL).
    pub fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }
}

/// Memory a caller's allocator gave for a restore's block: `len` bytes at `ptr`, handed back
/// through `release` (once) when the archive is dropped.
pub struct CallerBlock {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl CallerBlock {
    /// Wraps `len` bytes at `ptr`; `release` runs exactly once, when the block is dropped.
    ///
    /// # Safety
    /// `ptr` points to `len` bytes that are valid for reads and writes, used by nothing else,
    /// until `release` runs; they may be used from any thread.
    #[allow(unsafe_code)]
    pub unsafe fn from_raw(
        ptr: std::ptr::NonNull<u8>,
        len: usize,
        release: Option<Box<dyn FnOnce() + Send + Sync>>,
    ) -> CallerBlock {
        CallerBlock { ptr, len, release }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty block.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of the first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `from_raw`'s contract: `len` valid bytes at `ptr`, ours until release.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), self.len)
        }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`; `&mut self` makes this the only reference.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len)
        }
    }
}

// SAFETY: `from_raw`'s contract lets the bytes be used from any thread, and `release` is
// `Send + Sync`.
#[allow(unsafe_code)]
unsafe impl Send for CallerBlock {}
// SAFETY: shared access only reads (`as_slice`); writes need `&mut self`.
#[allow(unsafe_code)]
unsafe impl Sync for CallerBlock {}

impl Drop for CallerBlock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// A private (copy-on-write) mapping of a whole file (the mmap restore mode): reads come from
/// the page cache; writes through it go to private copies of the pages, never to the file.
///
/// The mapping keeps the file's inode alive: replacing the file by rename (as every psv save
/// does) is safe while it is mapped. Truncating the file in place is not: touching a page past
/// the new end raises SIGBUS, as with any mapping.
pub struct FileMap {
    map: MmapMut,
}

impl FileMap {
    /// Maps `len` bytes of `file`, private and copy-on-write.
    pub fn new(file: &File, len: u64) -> Result<FileMap> {
        let len = usize::try_from(len).map_err(|_| Error::limit("file too large to map"))?;
        // SAFETY: a private copy-on-write mapping: writes never reach the file, and the library
        // itself never writes through it. Another process truncating the file while it is mapped
        // would make reads fault (SIGBUS): the mmap mode's documented contract forbids in-place
        // truncation of a mapped file (replacing it by rename, as psv saves do, is safe).
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().len(len.max(1)).map_copy(file) }
            .map_err(|e| Error::io("cannot map the file", e))?;
        Ok(FileMap { map })
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_and_aligns() {
        let mut b = AnonMap::new(5 << 20).unwrap();
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        b.as_mut_slice()[(5 << 20) - 1] = 7;
        assert_eq!(b.as_slice()[(5 << 20) - 1], 7);
        assert_eq!(AnonMap::new(0).unwrap().len(), 0);
        assert_eq!(align_up(65), Some(128));
        assert_eq!(align_up(usize::MAX), None);
    }
}
