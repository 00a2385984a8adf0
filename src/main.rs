//! The `promptir` command line: parses arguments and calls the library. User errors exit with
//! code 2 and one line; anything else is a bug and exits with 1.

use anyhow::Context;
use clap::{Parser, Subcommand};
use promptir::{checkpoint, device, predict, report, train};
use std::path::PathBuf;
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
    Train {
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
    },
    /// Print libtorch, CUDA, cuDNN and thread information (run this first on a new machine).
    Doctor,
    /// Convert an official PromptIR checkpoint (.ckpt, .pth/.pt or .safetensors) to this project's format.
    Import {
        /// The official checkpoint.
        ckpt: PathBuf,
        /// Where to write the converted checkpoint (.safetensors).
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Show a checkpoint's model config, metadata and parameter count.
    Inspect {
        /// A checkpoint written by this project.
        weights: PathBuf,
    },
    /// Restore every image in a folder and write pred.npz (uint8 (3, H, W) per file name).
    Predict {
        /// A checkpoint; repeat to average several (they may differ in config).
        #[arg(long, required = true)]
        weights: Vec<PathBuf>,
        /// Folder of degraded .png/.jpg images.
        #[arg(long)]
        input: PathBuf,
        /// The .npz to write.
        #[arg(long, short, default_value = "pred.npz")]
        output: PathBuf,
        /// 8-way flip/rotation test-time augmentation.
        #[arg(long)]
        tta: bool,
        /// Also save the restored images as PNGs in this folder.
        #[arg(long)]
        png_dir: Option<PathBuf>,
        /// Restore in overlapping tiles of this size (for images too large for memory).
        #[arg(long)]
        tile: Option<i64>,
        /// Overlap between tiles in pixels [default: tile / 4].
        #[arg(long, requires = "tile")]
        tile_overlap: Option<i64>,
        /// auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Ablation table (ablation.md/.json) and validation curves (curves.png) from finished runs.
    Report {
        /// Run log folders (logs/<run>); eval_<split>[_tta].json in them fill the test columns.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        #[arg(long, short, default_value = "results")]
        output: PathBuf,
        /// Folder with ensemble*_<split>[_tta].json [default: --output].
        #[arg(long)]
        evals: Option<PathBuf>,
        /// Which eval files to read (eval_<split>.json): test or val.
        #[arg(long, default_value = "test", value_parser = ["test", "val"])]
        split: String,
        /// A line for the notes under the table (repeatable).
        #[arg(long = "note")]
        notes: Vec<String>,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor => print!("{}", device::doctor_report()),
        Command::Train {
            config,
            data,
            sets,
            device,
            name,
            resume,
            logs_dir,
            weights_dir,
            quiet,
        } => {
            let args = train::TrainArgs {
                config,
                sets,
                data,
                device,
                name,
                resume,
                logs_dir,
                weights_dir,
                progress: !quiet,
            };
            let s = train::train(&args).context("training")?;
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
        }
        Command::Import { ckpt, output } => {
            let r = checkpoint::import_official(&ckpt, &output)
                .with_context(|| format!("importing {}", ckpt.display()))?;
            println!(
                "wrote {} ({} tensors, {} parameters, dim {}, blocks {:?})",
                output.display(),
                r.tensors,
                r.parameters,
                r.config.dim,
                r.config.num_blocks
            );
            if !r.dropped.is_empty() {
                println!(
                    "dropped {} keys of modules the official code never runs: {}",
                    r.dropped.len(),
                    r.dropped.join(", ")
                );
            }
        }
        Command::Inspect { weights } => {
            let file = checkpoint::TensorFile::open(&weights)?;
            let cfg = file.model_config()?;
            let header = file.header();
            let params: i64 = header.values().map(|(_, s)| s.iter().product::<i64>()).sum();
            println!("{}: {} tensors, {} parameters", weights.display(), header.len(), params);
            println!("model: {}", serde_json::to_string(&cfg)?);
            for (k, v) in file.metadata() {
                if k != checkpoint::CONFIG_KEY {
                    println!("{k}: {v}");
                }
            }
        }
        Command::Predict { weights, input, output, tta, png_dir, tile, tile_overlap, device } => {
            let tile = tile.map(|t| (t, tile_overlap.unwrap_or(t / 4)));
            let device = device::parse_device(&device)?;
            let opts =
                predict::PredictOptions { weights, input, output, tta, png_dir, tile, device };
            let s = predict::predict(&opts)?;
            println!(
                "wrote {} ({} images, {} model(s), tta {}, {:.1} s)",
                opts.output.display(),
                s.images,
                s.models,
                if tta { "on" } else { "off" },
                s.seconds
            );
        }
        Command::Report { runs, output, evals, split, notes } => {
            let s = report::report(&report::ReportOptions { runs, output, evals, split, notes })?;
            let files: Vec<String> = s.files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "{} run(s), {} ensemble(s): wrote {}",
                s.ablation.runs.len(),
                s.ablation.ensembles.len(),
                files.join(", ")
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let user = e.chain().any(|c| c.downcast_ref::<promptir::Error>().is_some());
            // Our errors already print their source; skip causes the message so far contains.
            let mut msg = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if !msg.contains(&cause) {
                    msg = if msg.is_empty() { cause } else { format!("{msg}: {cause}") };
                }
            }
            eprintln!("error: {msg}");
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}
