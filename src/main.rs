//! The `promptir` command line: parses arguments and calls the library. User errors exit with
//! code 2 and one line; anything else is a bug and exits with 1.

use anyhow::Context;
use clap::{Parser, Subcommand};
use promptir::{checkpoint, device};
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
