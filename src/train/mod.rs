//! Training: the [`Trainer`] (setup, epochs, validation, checkpoints) around the one
//! [`TrainStep`], with its losses (L1, SSIM, VGG16 perceptual), the resumable [`AdamW`], the
//! warmup + cosine [`Schedule`], fp16 loss scaling and the run's folders.

mod amp;
mod args;
mod builder;
mod checkpoints;
mod ema;
mod lock;
mod log;
mod loss;
mod optim;
mod plan;
mod resume;
mod run_dir;
mod schedule;
mod setup;
mod step;
mod trainer;
mod vgg;

pub use amp::GradScaler;
pub use args::{resolve, Start, TrainArgs};
pub use builder::TrainerBuilder;
pub use ema::Ema;
pub use lock::RunLock;
pub use loss::{gaussian_ssim, Distance, Loss, LossConfig, LossTerms, Source, Term, TERMS};
pub use optim::AdamW;
pub use plan::EpochPlan;
pub use run_dir::{read_metrics, MetricsLine, RunDir};
pub use schedule::Schedule;
pub use step::{StepOutcome, TrainStep};
pub use trainer::{StopHandle, TrainSummary, Trainer};
pub use vgg::Vgg16Features;

/// Trains (or resumes) a run to its end as `promptir train` does ([`Trainer::from_args`], then
/// [`Trainer::run`]).
pub fn train(args: &TrainArgs) -> crate::Result<TrainSummary> {
    Trainer::from_args(args)?.build()?.run()
}
