//! Save and restore settings, with their defaults.

/// The container a save writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// One `.npz` file (the default).
    #[default]
    Npz,
    /// A directory of `<key>.npy` files committed by an index (see [`crate::dir_layout`]).
    Dir,
}

/// Settings for [`crate::Saver::save`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Make the save durable: fsync the file before the rename and the directory after it.
    pub fsync: bool,
    /// Deflate level 1-9 for every member (as `numpy.savez_compressed`); 0 (default) stores.
    pub compression: u32,
    /// The container: one `.npz` (default) or a directory of `.npy` files.
    pub layout: Layout,
}

/// Default cap on a `.npy` header's length: admits numpy's own 72 KB v2.0 headers with room.
pub const DEFAULT_MAX_HEADER_LEN: u64 = 1 << 20;
/// Default cap on the number of members in an archive.
pub const DEFAULT_MAX_MEMBERS: u64 = 1 << 24;

/// Settings for [`crate::restore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Check every member's CRC-32 against the central directory (default true).
    pub verify_crc: bool,
    /// Largest accepted `.npy` HEADER_LEN, checked before the header is read.
    pub max_header_len: u64,
    /// Largest accepted block (sum of all arrays, each padded to 64; the image of a psv-written
    /// file, headers included, is used only when it fits); `None` means physical memory.
    pub max_total_bytes: Option<u64>,
    /// Largest accepted number of central directory entries.
    pub max_members: u64,
    /// Restore only these keys, in this order (`None`: every array). Unknown keys are
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    pub keys: Option<Vec<String>>,
    /// List arrays without reading their data: no block, data pointers absent.
    pub metadata_only: bool,
    /// Byte-swap non-native-order arrays in place and report their native descr.
    pub native_endian: bool,
    /// Map the file and point stored, 64-aligned members straight into the mapping (no copy,
    /// no read up front, no CRC check for them); other members (and those `native_endian` must
    /// swap) are copied as usual.
    pub mmap: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            threads: 0,
            verify_crc: true,
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            max_total_bytes: None,
            max_members: DEFAULT_MAX_MEMBERS,
            keys: None,
            metadata_only: false,
            native_endian: false,
            mmap: false,
        }
    }
}

/// The machine's physical memory in bytes (the default block-size cap), from /proc/meminfo;
/// `u64::MAX` (no cap) where that is unavailable.
pub fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(u64::MAX)
}
