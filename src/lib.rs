//! promptir: PromptIR (Potlapalli et al., NeurIPS 2023) for all-in-one blind image restoration,
//! in Rust on libtorch through tch. It trains, evaluates and predicts with the official network,
//! whose parameter names equal the official PyTorch state_dict keys, and with the networks it is
//! compared with (Restormer, NAFNet, AdaIR), each as exact to its official code.
//!
//! The map, lower layers first (each folder depends only on the ones above it in this list,
//! the `promptir` binary's commands in `src/cli/` only on the library):
//! - [`device`], [`runtime`]: device selection and `doctor`; process-wide allocator settings;
//!   [`dist`]: torchrun launches, the c10d process group, bucketed gradient averaging;
//!   [`native`]: the libtorch calls tch does not bind (`csrc/native.cpp`: autocast dtypes, fused
//!   AdamW, AMP unscaling).
//! - [`model`]: the networks behind one seam ([`model::ModelConfig`], [`model::Network`]), a
//!   folder per arch, one struct per upstream block, fields named as in PyTorch.
//! - [`io`]: atomic writes, images, safetensors and checkpoints with their provenance,
//!   importing official weights, TensorBoard event files.
//! - [`config`]: the typed experiment YAML (`extends`, `--set`, validation).
//! - [`data`]: the dataset layout and its checks, the in-memory store, the seeded split, the
//!   background loader and paired augmentation.
//! - [`infer`]: the one forward path ([`infer::Restore`]) with padding, TTA, ensembles and
//!   tiling as wrappers; `predict` and `pred.npz`.
//! - [`eval`]: PSNR/SSIM as scored, [`eval::evaluate`] (shared with training validation),
//!   splits, the eval table and JSON, `visualize`.
//! - [`train`]: the [`train::Trainer`] around the one [`train::TrainStep`], losses, AdamW,
//!   schedule, fp16 scaling, run folders.
//! - [`tools`]: benchmarks, the synthetic data set, the ablation report and its charts.

pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod error;
pub mod eval;
pub mod infer;
pub mod io;
pub mod model;
pub mod native;
pub mod runtime;
pub mod tools;
pub mod train;

pub use error::{Error, Result};
