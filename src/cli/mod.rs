//! The `promptir` command line: one module per command, each turning its flags into a call of
//! the library and printing the result. Commands depend on the library, never on each other;
//! what several share (the forward-path flags) is in `args.rs`, the exit-code policy in `exit.rs`.

mod args;
mod bench;
mod eval;
mod exit;
mod model_file;
mod predict;
mod report;
mod synth;
mod train;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "promptir", version, about = "PromptIR image restoration on libtorch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train PromptIR on a dataset in the course layout (or resume a run).
    Train(train::TrainCmd),
    /// Print libtorch, CUDA, cuDNN and thread information (run this first on a new machine).
    Doctor,
    /// Convert an official checkpoint of any network here (.ckpt, .pth/.pt or .safetensors) to this project's format.
    Import(model_file::ImportCmd),
    /// Show a checkpoint's model config, provenance and parameter count.
    Inspect(model_file::InspectCmd),
    /// Restore every image in a folder and write pred.npz (uint8 (3, H, W) per file name).
    Predict(predict::PredictCmd),
    /// Write a synthetic rain/snow dataset in the course layout (no download needed).
    Synth(synth::SynthCmd),
    /// Score checkpoints on paired data: PSNR/SSIM per degradation type next to the input's.
    Eval(eval::EvalCmd),
    /// Save degraded | restored | clean panels (PSNR in the file name) and an overview.png.
    Visualize(eval::VisualizeCmd),
    /// Ablation table (ablation.md/.json) and the three figures (fig1..3_*.png) from finished runs.
    Report(report::ReportCmd),
    /// Time training steps and inference, images/s and peak memory (each row in a fresh process).
    Bench(bench::BenchCmd),
    /// Time the training loader alone: how long a step of --step-ms would wait for its batch.
    BenchLoader(bench::BenchLoaderCmd),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(c) => c.run(),
        Command::Doctor => {
            print!("{}", promptir::device::doctor_report());
            Ok(())
        }
        Command::Import(c) => c.run(),
        Command::Inspect(c) => c.run(),
        Command::Predict(c) => c.run(),
        Command::Synth(c) => c.run(),
        Command::Eval(c) => c.run(),
        Command::Visualize(c) => c.run(),
        Command::Report(c) => c.run(),
        Command::Bench(c) => c.run(),
        Command::BenchLoader(c) => c.run(),
    }
}

/// Parses the command line, runs it, and maps the outcome to an exit code (see `exit.rs`).
pub fn main() -> ExitCode {
    exit::install_panic_hook();
    promptir::runtime::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return exit::usage_error(e),
    };
    exit::finish(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))))
}
