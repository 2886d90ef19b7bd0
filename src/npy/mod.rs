//! The `.npy` member format: header parsing and numpy-identical header formatting.

pub mod header;
