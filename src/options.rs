//! Save and restore settings, with their defaults.

/// The container a save writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// One `.npz` file (the default).
    #[default]
    Npz,
    /// A directory of `<key>.npy` files (each readable with `numpy.load`), committed by an
    /// index file: a crash leaves the previous contents intact; [`crate::restore`] reads it
    /// like an `.npz`.
    Dir,
}

/// Settings for [`crate::Saver::save`].
///
/// Outside this crate, build them from [`SaveOptions::default`] with the setters:
///
/// ```
/// use psv::{Layout, SaveOptions};
///
/// let opts = SaveOptions::default().threads(4).fsync(true).compression(6);
/// assert_eq!((opts.threads, opts.fsync, opts.compression), (4, true, 6));
/// let dir = SaveOptions::default().layout(Layout::Dir);
/// assert_eq!(dir.layout, Layout::Dir);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SaveOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Make the save durable: fsync the file before the rename and the directory after it.
    pub fsync: bool,
    /// Deflate level 1-9 for every member (as `numpy.savez_compressed`); 0 (default) stores.
    pub compression: u32,
    /// The container: one `.npz` (default) or a directory of `.npy` files.
    pub layout: Layout,
    /// Alignment in the file of the array data of every stored member that holds at least this
    /// many bytes: a power of two from 64 (the default) to 1 MiB; smaller members, and deflated
    /// ones, are 64-aligned. E.g. 4096 (a page: `O_DIRECT`, page-aligned mappings) or a
    /// parallel file system's stripe size. Ignored by the directory layout (each `.npy` file
    /// starts at 0).
    pub alignment: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            threads: 0,
            fsync: false,
            compression: 0,
            layout: Layout::Npz,
            alignment: crate::npz::plan::ALIGN,
        }
    }
}

impl SaveOptions {
    /// Sets `threads`: worker threads, 0 for one per available core.
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets `fsync`: make the save durable.
    #[must_use]
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Sets `compression`: deflate level 1-9, 0 to store.
    #[must_use]
    pub fn compression(mut self, level: u32) -> Self {
        self.compression = level;
        self
    }

    /// Sets `alignment`: where large arrays' data starts in the file (see
    /// [`SaveOptions::alignment`](#structfield.alignment)); checked when saving.
    #[must_use]
    pub fn alignment(mut self, alignment: u64) -> Self {
        self.alignment = alignment;
        self
    }

    /// Sets `layout`: the container the save writes.
    #[must_use]
    pub fn layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }
}

/// Default cap on a `.npy` header's length: admits numpy's own 72 KB v2.0 headers with room.
pub const DEFAULT_MAX_HEADER_LEN: u64 = 1 << 20;
/// Default cap on the number of members in an archive.
pub const DEFAULT_MAX_MEMBERS: u64 = 1 << 24;

/// Settings for [`crate::restore`].
///
/// Outside this crate, build them from [`RestoreOptions::default`] with the setters:
///
/// ```
/// use psv::RestoreOptions;
///
/// let opts = RestoreOptions::default()
///     .keys(["weights", "bias"])
///     .verify_crc(false)
///     .max_total_bytes(Some(1 << 30));
/// assert_eq!(opts.keys, Some(vec!["weights".to_string(), "bias".to_string()]));
/// assert_eq!(opts.max_total_bytes, Some(1 << 30));
/// // Back to every array:
/// assert_eq!(opts.all_keys().keys, None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreOptions {
    /// Worker threads; 0 means one per available core.
    pub threads: usize,
    /// Check every member's CRC-32 against the central directory (default true).
    pub verify_crc: bool,
    /// Largest accepted `.npy` HEADER_LEN, checked before the header is read.
    pub max_header_len: u64,
    /// Largest accepted block, in bytes: the sum of every restored array's size, each rounded up
    /// to a multiple of 64 (the last one too: that is the block allocated). For a psv-written
    /// file the block may instead be an image of the file's data region, headers included and
    /// likewise rounded up to 64; it is used only when it fits. `None` means physical memory.
    /// Exceeding it is [`ErrorKind::Limit`](crate::ErrorKind::Limit), before any allocation.
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

impl RestoreOptions {
    /// Sets `threads`: worker threads, 0 for one per available core.
    #[must_use]
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Sets `verify_crc`: check every member's CRC-32.
    #[must_use]
    pub fn verify_crc(mut self, verify: bool) -> Self {
        self.verify_crc = verify;
        self
    }

    /// Sets `max_header_len`: the largest accepted `.npy` HEADER_LEN.
    #[must_use]
    pub fn max_header_len(mut self, len: u64) -> Self {
        self.max_header_len = len;
        self
    }

    /// Sets `max_total_bytes`: the block cap, `None` for physical memory.
    #[must_use]
    pub fn max_total_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_total_bytes = bytes;
        self
    }

    /// Sets `max_members`: the largest accepted number of entries.
    #[must_use]
    pub fn max_members(mut self, members: u64) -> Self {
        self.max_members = members;
        self
    }

    /// Restores only these keys, in this order (sets `keys` to `Some`).
    #[must_use]
    pub fn keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.keys = Some(keys.into_iter().map(Into::into).collect());
        self
    }

    /// Restores every array (sets `keys` to `None`, the default).
    #[must_use]
    pub fn all_keys(mut self) -> Self {
        self.keys = None;
        self
    }

    /// Sets `metadata_only`: list arrays without reading their data.
    #[must_use]
    pub fn metadata_only(mut self, metadata_only: bool) -> Self {
        self.metadata_only = metadata_only;
        self
    }

    /// Sets `native_endian`: byte-swap to native order.
    #[must_use]
    pub fn native_endian(mut self, native_endian: bool) -> Self {
        self.native_endian = native_endian;
        self
    }

    /// Sets `mmap`: map the file and point aligned stored members into it.
    #[must_use]
    pub fn mmap(mut self, mmap: bool) -> Self {
        self.mmap = mmap;
        self
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
