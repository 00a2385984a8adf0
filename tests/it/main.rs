//! The integration tests, one module per area, in a single test binary so that libtorch is
//! linked once. Reference values come from the scripts in `scripts/reference/` (PyTorch,
//! scikit-image, TensorBoard's reader), run with the project's venv.

mod common;

mod ablation_script;
mod augment;
mod binary;
mod checkpoint;
mod dataset;
mod dist;
mod eval;
mod experiments;
mod gpu_check;
mod loss_metrics;
mod model;
mod optim;
mod parity;
mod predict;
mod profile;
mod reliability;
mod report;
mod run_lock;
mod runtime;
mod schedule;
mod synth;
mod tensorboard;
mod train;
mod train_tools;
mod zoo;
mod zoo_script;
