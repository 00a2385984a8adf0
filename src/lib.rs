//! promptir: PromptIR (Potlapalli et al., NeurIPS 2023) for all-in-one blind image restoration,
//! in Rust on libtorch through tch. It trains, evaluates and predicts with the official network,
//! whose parameter names equal the official PyTorch state_dict keys.
//!
//! Where things live:
//! - [`model`]: the network, one struct per upstream block; [`checkpoint`]: strict safetensors I/O
//!   and importing official weights.
//! - [`restore`]: the single forward path, with padding, TTA and ensembles as wrappers.
//! - [`io`]: atomic writes and image decode/encode (the one place that quantises to u8).
//! - [`device`]: device selection and `promptir doctor`.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod dihedral;
pub mod error;
pub mod io;
pub mod model;
pub mod restore;
pub mod runtime;

pub use error::{Error, Result};
