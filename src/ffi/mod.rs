//! The C ABI. Every function here: runs its body inside the panic boundary, checks every
//! pointer through `ptr`, calls the safe core, and writes out-parameters only at the end.
//!
//! One file per handle, as in rustls-ffi: `saver` (`psv_saver_*`), `save_options`
//! (`psv_save_options_*`), `restore` (`psv_restore*`), `restore_options`
//! (`psv_restore_options_*`), `archive` (`psv_archive_*`, `psv_free`), `collective`
//! (`psv_saver_manifest`, `psv_collective_*`), `status` (status codes,
//! their one table, `psv_status_str`), `job` (asynchronous saves, `psv_job_*`), `last_error`
//! (`psv_last_error_*`) and `version`.
//! `boundary` and `ptr` hold what they share; `types` the C-visible types. Every function is
//! re-exported here, so `psv::ffi::psv_saver_new` names it wherever it lives.
//!
//! Thread safety: a `psv_saver` or an options handle is used by one thread at a time (it may
//! move between threads). A `psv_archive` is immutable: its accessors may be called from many
//! threads at once, but `psv_free` must not race any other call on it. Different handles are
//! independent; saves and restores may run concurrently. Error messages are per thread.
#![allow(unsafe_code, non_camel_case_types)]
// These are C entry points, safe `extern "C" fn`s as in rustls-ffi: their pointer arguments'
// validity is the documented C contract, and every pointer is NULL-checked in `ptr`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod archive;
mod boundary;
mod collective;
mod errors;
mod job;
mod last_error;
mod ptr;
mod restore;
mod restore_options;
mod save_options;
mod save_to;
mod saver;
mod status;
pub mod types;
mod version;

pub use self::archive::*;
pub use self::collective::*;
pub use self::errors::*;
pub use self::job::*;
pub use self::restore::*;
pub use self::restore_options::*;
pub use self::save_options::*;
pub use self::save_to::*;
pub use self::saver::*;
pub use self::status::*;
pub use self::version::*;
