//! `promptir eval` and `promptir visualize`: both score checkpoints on a split of a dataset.

use super::args::ForwardArgs;
use clap::{Args, ValueEnum};
use promptir::eval::{run_eval, visualize, EvalOptions, Metric, SplitName, VisualizeOptions};
use std::path::PathBuf;

/// Checkpoints, data, split and forward path: what `eval` and `visualize` both take.
#[derive(Args)]
pub struct ScoreArgs {
    /// A checkpoint; repeat to average several.
    #[arg(long, required = true)]
    weights: Vec<PathBuf>,
    /// Dataset root (train/degraded, train/clean, test/...).
    #[arg(long)]
    data: PathBuf,
    /// val: the pairs training held out; train: the rest; test: test/degraded vs test/clean.
    #[arg(long, value_enum, default_value_t = SplitName::Val)]
    split: SplitName,
    /// Seed of the val/train split [default: the checkpoint's, else 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction held out for val [default: the checkpoint's, else 0.1].
    #[arg(long)]
    val_fraction: Option<f64>,
    #[command(flatten)]
    fwd: ForwardArgs,
    /// How PSNR and SSIM are computed: course (rounded 8-bit RGB, the leaderboard's), rgb
    /// (clipped float RGB, data range 1: PromptIR's test.py) or y (luma, Restormer's).
    #[arg(long, value_enum, default_value_t = Metric::Course)]
    metric: Metric,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl ScoreArgs {
    fn options(self) -> anyhow::Result<EvalOptions> {
        Ok(EvalOptions {
            tile: self.fwd.tile(),
            device: self.fwd.device()?,
            weights: self.weights,
            data: self.data,
            split: self.split,
            seed: self.seed,
            val_fraction: self.val_fraction,
            tta: self.fwd.tta,
            ema: self.fwd.ema,
            progress: !self.quiet,
            metric: self.metric,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    /// Also per-image scores and a "setup" object.
    Json,
}

#[derive(Args)]
pub struct EvalCmd {
    #[command(flatten)]
    args: ScoreArgs,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also write the JSON to this file.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also score TTA off, flips, 8 and auto (when it differs) on the same images: PSNR per
    /// degradation type with the gain over off (a table, and `tta_compare` in the JSON).
    #[arg(long)]
    tta_compare: bool,
}

impl EvalCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let run = run_eval(&self.args.options()?, self.tta_compare, self.output.as_deref())?;
        match self.format {
            Format::Json => print!("{}", run.file().to_json()),
            Format::Table => print!("{}", run.table()),
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct VisualizeCmd {
    #[command(flatten)]
    args: ScoreArgs,
    /// Folder for the PNGs (created if missing).
    #[arg(long, short)]
    output: PathBuf,
    /// How many pairs, taking each degradation type in turn.
    #[arg(long, default_value_t = 8)]
    count: usize,
}

impl VisualizeCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let opts =
            VisualizeOptions { eval: self.args.options()?, output: self.output, count: self.count };
        let s = visualize(&opts)?;
        if let Some(n) = &s.run.setup.tta_notice {
            eprintln!("note: {n}");
        }
        println!(
            "wrote {} panels and {} (TTA {}, mean PSNR {:.2} dB, input {:.2} dB)",
            s.panels.len(),
            s.overview.display(),
            s.run.setup.tta_text(),
            s.run.report.mean_psnr(),
            s.run.report.psnr_input.overall().mean().unwrap_or(f64::NAN)
        );
        Ok(())
    }
}
