//! Scoring: PSNR/SSIM as the leaderboard computes them ([`metrics`]), [`evaluate`] (shared by
//! training validation and `promptir eval`), which pairs a split means, the eval table and its
//! JSON file, and `visualize`'s panels.

pub mod metrics;
mod run;
mod score;
mod session;
mod split;
mod summary;
mod visualize;

pub use metrics::Metric;
pub use run::run_eval;
pub use score::{evaluate, EvalItem, EvalReport, ImageScore, LossFn};
pub use session::{EvalOptions, EvalRun};
pub use split::{SplitName, SplitParams};
pub use summary::{EvalFile, EvalSetup, EvalSummary, TtaScore};
pub use visualize::{visualize, VisualizeOptions, VisualizeSummary};
