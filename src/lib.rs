//! libpsv: save many NumPy-style arrays into one `.npz` in parallel, and restore any `.npz` into
//! one 64-byte-aligned block with a view per key.
//!
//! The same engine serves Rust callers (this API) and C callers (`include/psv.h`, see
//! [`ffi`]).
//!
//! ```
//! use psv::{restore, Dtype, RestoreOptions, SaveOptions, Saver};
//! # let dir = std::env::temp_dir().join(format!("psv-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let weights: Vec<f32> = (0..6).map(|i| i as f32).collect();
//! let bytes: Vec<u8> = weights.iter().flat_map(|v| v.to_ne_bytes()).collect();
//! let mut saver = Saver::new();
//! saver.add("weights", &bytes, Dtype::F32, &[2, 3])?;
//! let path = saver.save(dir.join("model"), &SaveOptions::default())?; // writes model.npz
//!
//! let archive = restore(&path, &RestoreOptions::default())?;
//! let i = archive.find("weights").unwrap();
//! assert_eq!(archive.data(i).unwrap(), &bytes[..]);
//! assert_eq!(archive.arrays()[i].shape, vec![2, 3]);
//! assert_eq!(archive.data_ptr(i).unwrap() as usize % 64, 0);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), psv::Error>(())
//! ```
#![deny(unsafe_code, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// Modules are private: the Rust API is what is re-exported below (safetensors' lib.rs is the
// model). `ffi` is public because it is the C ABI itself (its functions are what libpsv.so
// exports; Rust tests call them directly).
mod archive;
mod compress;
mod descr;
mod dest;
mod dtype;
mod error;
pub mod ffi;
mod memory;
mod npy;
mod npy_dir;
mod npz;
mod options;
mod pool;
mod progress;
mod pylit;
mod restore;
mod save;
mod shape;
mod version;

pub use archive::{Archive, ArrayInfo};
pub use descr::{Descr, Field, SimpleDescr};
pub use dtype::{Dtype, ALL_DTYPES};
pub use error::{Error, ErrorKind, Result};
pub use memory::CallerBlock;
pub use npz::index::Method;
pub use npz::npz_path;
pub use options::{
    physical_memory, Layout, RestoreOptions, SaveOptions, DEFAULT_MAX_HEADER_LEN,
    DEFAULT_MAX_MEMBERS,
};
pub use pool::MAX_THREADS;
pub use progress::ProgressFn;
pub use restore::{
    restore, restore_into, restore_stream, restore_stream_into, restore_stream_with_progress,
    restore_with_progress, Source,
};
pub use save::{Collective, JobTarget, Prepared, SaveJob, Saver, MAX_KEY_LEN, PLAN_ID_LEN};
pub use shape::MAX_NDIM;
pub use version::{abi_version, VERSION};

/// Entry points for the fuzz targets (`fuzz/`): the parsers of untrusted text and bytes. Not
/// part of the supported API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::descr::parse_descr_text;
    pub use crate::npy::header::parse as parse_npy_header;

    /// The collective save's manifest parsing and planning on hostile blobs: the first byte
    /// picks 1-4 ranks, the rest is cut into that many equal blobs (the last takes the
    /// remainder); every rank plans. Must return (Ok or Err inside), never panic.
    pub fn collective_manifests(data: &[u8]) {
        let Some((&n, rest)) = data.split_first() else {
            return;
        };
        let n = usize::from(n % 4) + 1;
        let step = rest.len() / n;
        let blobs: Vec<&[u8]> = (0..n)
            .map(|i| {
                let end = if i + 1 == n {
                    rest.len()
                } else {
                    (i + 1) * step
                };
                &rest[i * step..end]
            })
            .collect();
        for rank in 0..n {
            if let Ok(c) =
                crate::Collective::new("fuzz.npz", &blobs, rank, &crate::SaveOptions::default())
            {
                let _ = (c.plan_id(), c.len(), c.temp_path());
            }
        }
    }
}
