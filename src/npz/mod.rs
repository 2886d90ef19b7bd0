//! The `.npz` container: ZIP layout planning, record encoding, and the central-directory index.

pub mod index;
pub mod plan;
pub mod records;
