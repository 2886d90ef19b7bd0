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

pub mod archive;
pub mod compress;
pub mod descr;
mod dest;
pub mod dtype;
pub mod error;
pub mod ffi;
pub mod memory;
pub mod npy;
pub mod npy_dir;
pub mod npz;
pub mod options;
pub mod pool;
pub mod progress;
pub mod pylit;
pub mod restore;
pub mod save;
pub mod shape;
pub mod version;

pub use archive::{Archive, ArrayInfo};
pub use dtype::Dtype;
pub use error::{Error, ErrorKind, Result};
pub use npz::npz_path;
pub use options::{Layout, RestoreOptions, SaveOptions};
pub use restore::{restore, restore_with_progress, Source};
pub use save::Saver;
