//! Scoring: PSNR/SSIM as the leaderboard computes them ([`metrics`]), [`evaluate`] (shared by
//! training validation and `promptir eval`), which pairs a split means, the eval table and its
//! JSON file, and `visualize`'s panels.

pub mod metrics;
mod score;
mod session;
mod split;
mod summary;
mod visualize;

pub use score::{evaluate, EvalItem, EvalReport, ImageScore, LossFn};
pub use session::{load_items, prepare, run_eval, score, EvalOptions, EvalRun, Prepared};
pub use split::{dataset_notice, split_pairs, split_params, SplitName, SplitParams};
pub use summary::{EvalFile, EvalSetup, EvalSummary};
pub use visualize::{panel_name, take_by_kind, visualize, VisualizeOptions, VisualizeSummary};
