//! The `promptir` command line: parses arguments and calls the library. User errors exit with
//! code 2 and one line; anything else is a bug and exits with 1.

use anyhow::Context;
use clap::{Parser, Subcommand};
use promptir::{bench, checkpoint, device};
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
    /// Time training steps and inference, images/s and peak memory (each row in a fresh process).
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// paper, tiny or an experiment YAML (its model section).
    #[arg(long, default_value = "paper")]
    config: String,
    /// Square image sizes, comma-separated (multiples of 8).
    #[arg(long, default_value = "64,128,256")]
    size: String,
    #[arg(long, default_value_t = 1)]
    batch: i64,
    /// train, infer or both.
    #[arg(long, default_value = "both")]
    mode: String,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// libtorch intra-op threads (default: libtorch's, the number of cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Activation layout: auto (channels-last on CPU), channels-last or contiguous.
    #[arg(long, default_value = "auto")]
    layout: String,
    /// One JSON object per row (the schema scripts/bench_torch.py also writes).
    #[arg(long)]
    json: bool,
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
        Command::Bench(a) => {
            let spec = bench::BenchSpec {
                model: bench::parse_model(&a.config)?,
                config_name: a.config,
                sizes: bench::parse_sizes(&a.size)?,
                batch: a.batch,
                modes: bench::Mode::parse_list(&a.mode)?,
                device: a.device,
                iters: a.iters,
                warmup: a.warmup,
                threads: a.threads,
                layout: bench::parse_layout(&a.layout)?,
            };
            let rows = bench::run(&spec, &bench::current_exe()?)?;
            if a.json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                print!("{}", bench::format_table(&rows));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    promptir::runtime::tune_allocator();
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
