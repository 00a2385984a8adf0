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
//! - [`metrics`]: PSNR/SSIM as scored; [`loss`]: training losses; [`vgg`]: frozen VGG16 features.
//! - [`schedule`], [`optim`], [`tensorboard`]: the LR schedule, a resumable AdamW and the
//!   tfevents writer of the training loop.
//! - [`data`]: dataset scan and checks, in-memory store, split, background batch loader;
//!   [`augment`]: paired crops and augmentation on raw buffers.
//! - [`synth`]: a synthetic rain/snow dataset in the course layout (`promptir synth`).
//! - [`bench`], [`bench_loader`]: speed of the network against PyTorch, and of the loader alone.
//! - [`eval`]: scoring (shared with training validation) and `promptir eval`;
//!   [`visualize`]: side-by-side panels.

pub mod amp;
pub mod augment;
pub mod bench;
pub mod bench_loader;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod dihedral;
pub mod error;
pub mod eval;
pub mod io;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod npz;
pub mod optim;
pub mod plot;
pub mod predict;
pub mod report;
pub mod restore;
pub mod run;
pub mod runtime;
pub mod schedule;
pub mod synth;
pub mod tensorboard;
pub mod tile;
pub mod train;
pub mod vgg;
pub mod visualize;

pub use error::{Error, Result};
