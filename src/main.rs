//! The `promptir` command line: parses arguments and calls the library. User errors exit with
//! code 2 and one line; anything else is a bug and exits with 1.

use anyhow::Context;
use clap::{Parser, Subcommand};
use promptir::{checkpoint, device, synth};
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
    /// Write a synthetic rain/snow dataset in the course layout (no download needed).
    Synth {
        /// New or empty folder for the dataset.
        #[arg(long, short, required_unless_present = "sheet")]
        output: Option<PathBuf>,
        /// Training pairs, split evenly between rain and snow.
        #[arg(long, default_value_t = 200)]
        train: usize,
        /// Test images; their ground truth goes to test/clean, their types to test/types.json.
        #[arg(long, default_value_t = 20)]
        test: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Crop clean images from your own photos (png/jpg) instead of drawing landscapes.
        #[arg(long)]
        clean_dir: Option<PathBuf>,
        /// Write only a sample sheet PNG (4 rows of clean | rain | snow) to this path.
        #[arg(long, conflicts_with = "output")]
        sheet: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor => print!("{}", device::doctor_report()),
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
        Command::Synth { output, train, test, size, seed, clean_dir, sheet } => {
            let opts = synth::SynthOptions { train, test, size, seed, clean_dir };
            let start = std::time::Instant::now();
            if let Some(path) = sheet {
                synth::write_sheet(&path, 4, &opts)?;
                println!("wrote {}", path.display());
            } else if let Some(out) = output {
                let s = synth::generate(&out, &opts)?;
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "wrote {} ({}+{} train pairs, {} test images) in {secs:.1}s",
                    out.display(),
                    s.train_rain,
                    s.train_snow,
                    s.test
                );
            }
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
            eprintln!("error: {}", e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": "));
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}
