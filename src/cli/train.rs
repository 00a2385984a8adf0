//! `promptir train`.

use anyhow::Context;
use clap::Args;
use promptir::train::{StopHandle, TrainArgs, Trainer};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainCmd {
    /// Experiment file (experiments/*.yaml); optional with --resume.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Dataset root (overrides data.root).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Override any experiment key, e.g. --set train.lr=1e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// auto | cpu | cuda | cuda:N (overrides device).
    #[arg(long)]
    device: Option<String>,
    /// Run name (default: the experiment's name; a timestamp is added if it exists).
    #[arg(long)]
    name: Option<String>,
    /// Continue an existing run (a name under --logs-dir).
    #[arg(long, value_name = "RUN")]
    resume: Option<String>,
    #[arg(long, default_value = "logs")]
    logs_dir: PathBuf,
    #[arg(long, default_value = "weights")]
    weights_dir: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl TrainCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let args = TrainArgs {
            config: self.config,
            sets: self.sets,
            data: self.data,
            device: self.device,
            name: self.name,
            resume: self.resume,
            logs_dir: self.logs_dir,
            weights_dir: self.weights_dir,
            progress: !self.quiet,
        };
        let stop = StopHandle::new();
        let on_signal = stop.clone();
        // Ctrl-C, SIGTERM (torchrun passes Ctrl-C on as one; Slurm sends one before its time
        // limit) and SIGHUP: save `last` at the next step and return, instead of dying mid-step.
        ctrlc::set_handler(move || on_signal.stop()).context("installing the signal handler")?;
        let s = Trainer::from_args(&args)
            .and_then(|b| b.stop(stop).build()?.run())
            .context("training")?;
        if s.rank != 0 {
            return Ok(()); // rank 0 reports for the group
        }
        let best = s.state.best_psnr.map_or("-".to_string(), |p| {
            format!("{p:.3} dB (epoch {})", s.state.best_epoch.unwrap_or(0))
        });
        println!(
            "{} run {} after {} epochs / {} steps; best val PSNR {best}",
            if s.interrupted { "stopped" } else { "finished" },
            s.run.name,
            s.state.epoch,
            s.state.step
        );
        println!("weights: {}  logs: {}", s.run.weights.display(), s.run.logs.display());
        if s.interrupted || !s.state.finished {
            println!("resume with: promptir train --resume {}", s.run.name);
        }
        Ok(())
    }
}
