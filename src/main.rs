//! The `promptir` command line: parses arguments and calls the library. User errors exit with
//! code 2 and one line; anything else is a bug and exits with 1.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use promptir::{
    bench, bench_loader, checkpoint, device, eval, predict, report, synth, train, visualize,
};
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
        /// Also save the restored images as PNGs in this folder.
        #[arg(long)]
        png_dir: Option<PathBuf>,
        #[command(flatten)]
        fwd: ForwardArgs,
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
    /// Score checkpoints on paired data: PSNR/SSIM per degradation type next to the input's.
    Eval {
        #[command(flatten)]
        args: ScoreArgs,
        /// table or json (the JSON also has per-image scores and a "setup" object).
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Also write the JSON to this file.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Save degraded | restored | clean panels (PSNR in the file name) and an overview.png.
    Visualize {
        #[command(flatten)]
        args: ScoreArgs,
        /// Folder for the PNGs (created if missing).
        #[arg(long, short)]
        output: PathBuf,
        /// How many pairs, taking each degradation type in turn.
        #[arg(long, default_value_t = 8)]
        count: usize,
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
    /// Time training steps and inference, images/s and peak memory (each row in a fresh process).
    Bench(BenchArgs),
    /// Time the training loader alone: how long a step of --step-ms would wait for its batch.
    BenchLoader {
        /// Experiment YAML whose augment, data.workers, data.prefetch and seed are used
        /// [default: the built-in ones: 4 workers, prefetch 4, flips and rot90 at 0.5].
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        patch: usize,
        /// Side of the random in-memory pairs (the course images are 256).
        #[arg(long, default_value_t = 256)]
        image: usize,
        /// How many pairs (an epoch is pairs / batch batches).
        #[arg(long, default_value_t = 400)]
        pairs: usize,
        /// Simulated step lengths in ms, comma-separated (0: the loader's own rate).
        #[arg(long, value_delimiter = ',', default_value = "0,50,100")]
        step_ms: Vec<u64>,
        #[arg(long, default_value_t = 200)]
        batches: usize,
        #[arg(long)]
        json: bool,
    },
}

/// How images go through the network: shared by predict, eval and visualize.
#[derive(Args)]
struct ForwardArgs {
    /// 8-way flip/rotation test-time augmentation.
    #[arg(long)]
    tta: bool,
    /// Restore in overlapping tiles of this size (for images too large for memory).
    #[arg(long)]
    tile: Option<i64>,
    /// Overlap between tiles in pixels [default: tile / 4].
    #[arg(long, requires = "tile")]
    tile_overlap: Option<i64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
}

impl ForwardArgs {
    fn tile(&self) -> Option<(i64, i64)> {
        self.tile.map(|t| (t, self.tile_overlap.unwrap_or(t / 4)))
    }
}

/// What `eval` and `visualize` share: checkpoints, data, split and forward-path options.
#[derive(Args)]
struct ScoreArgs {
    /// A checkpoint; repeat to average several.
    #[arg(long, required = true)]
    weights: Vec<PathBuf>,
    /// Dataset root (train/degraded, train/clean, test/...).
    #[arg(long)]
    data: PathBuf,
    /// val: the pairs training held out; train: the rest; test: test/degraded vs test/clean.
    #[arg(long, default_value = "val")]
    split: eval::SplitName,
    /// Seed of the val/train split [default: the checkpoint's run config, else 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction held out for val [default: the checkpoint's run config, else 0.1].
    #[arg(long)]
    val_fraction: Option<f64>,
    /// Where training runs keep their logs (to read a checkpoint's run config).
    #[arg(long, default_value = "logs")]
    logs_dir: PathBuf,
    #[command(flatten)]
    fwd: ForwardArgs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl ScoreArgs {
    fn options(self) -> anyhow::Result<eval::EvalOptions> {
        Ok(eval::EvalOptions {
            tile: self.fwd.tile(),
            device: device::parse_device(&self.fwd.device)?,
            weights: self.weights,
            data: self.data,
            split: self.split,
            seed: self.seed,
            val_fraction: self.val_fraction,
            logs_dir: self.logs_dir,
            tta: self.fwd.tta,
            progress: !self.quiet,
        })
    }
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
        Command::Predict { weights, input, output, png_dir, fwd } => {
            let (tile, tta) = (fwd.tile(), fwd.tta);
            let device = device::parse_device(&fwd.device)?;
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
        Command::Eval { args, format, output } => {
            let run = eval::run_eval(&args.options()?, output.as_deref())?;
            if format == "json" {
                println!("{}", serde_json::to_string_pretty(&run.to_json())?);
            } else {
                print!("{}", run.table());
            }
        }
        Command::Visualize { args, output, count } => {
            let opts = visualize::VisualizeOptions { eval: args.options()?, output, count };
            let s = visualize::visualize(&opts)?;
            println!(
                "wrote {} panels and {} (mean PSNR {:.2} dB, input {:.2} dB)",
                s.panels.len(),
                s.overview.display(),
                s.run.report.mean_psnr(),
                s.run.report.psnr_input.overall().mean().unwrap_or(f64::NAN)
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
        Command::BenchLoader { config, batch, patch, image, pairs, step_ms, batches, json } => {
            let exp = match &config {
                Some(p) => promptir::config::Experiment::load(p, &[])?,
                None => promptir::config::Experiment::default(),
            };
            let step = |ms: u64| std::time::Duration::from_millis(ms);
            let rows = step_ms
                .iter()
                .map(|&ms| bench_loader::run(&exp, batch, patch, image, pairs, step(ms), batches))
                .collect::<promptir::Result<Vec<_>>>()?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                print!("{}", bench_loader::format_table(&rows));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    install_panic_hook();
    promptir::runtime::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Bad arguments are user errors too: one line (clap's usage hint joined in), exit 2.
            let text = e.to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            let mut msg = String::new();
            for l in lines {
                if !msg.is_empty() {
                    msg.push_str(if msg.ends_with(':') { " " } else { "; " });
                }
                msg.push_str(l);
            }
            eprintln!("{msg} (see --help)");
            return ExitCode::from(2);
        }
    };
    // A panic is a bug (the hook has printed it) and exits 1, except running out of memory,
    // which the user fixes with smaller settings: exit 2.
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(r) => r,
        Err(p) => {
            return ExitCode::from(if out_of_memory(&panic_text(&*p)).is_some() { 2 } else { 1 })
        }
    };
    match result {
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
            // One line, whatever a cause (a tool's output, a library) put in it.
            let msg: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("error: {}", msg.join("; "));
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// libtorch's allocation failures (tch unwraps them into panics inside ops): `Some(what it tried
/// to allocate)`, e.g. "88080384 bytes" (CPU) or "20.00 MiB" (CUDA).
fn out_of_memory(msg: &str) -> Option<String> {
    let oom = ["can't allocate memory", "not enough memory", "out of memory"];
    if !oom.iter().any(|m| msg.contains(m)) {
        return None;
    }
    let size = msg
        .find("ried to allocate ") // "you tried to" (CPU), "Tried to" (CUDA)
        .map(|i| &msg[i + "ried to allocate ".len()..])
        .and_then(|rest| rest.split(". ").next())
        .filter(|s| s.len() < 40);
    Some(size.unwrap_or("more memory").to_string())
}

/// Panics are bugs, reported in one line with where they happened; libtorch's C++ stack trace
/// (inside tch's unwrap messages) is cut. Running out of memory is said as such, with what to
/// lower. `RUST_BACKTRACE` set keeps Rust's full report.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = panic_text(info.payload());
        if let Some(size) = out_of_memory(&msg) {
            eprintln!(
                "error: out of memory (libtorch could not allocate {size}); lower train.batch_size or train.patch_size when training, use --tile (or smaller images) to restore, or free memory"
            );
            return;
        }
        // tch's messages hold the trace as real or as escaped ("\\n") newlines.
        let first = msg.split('\n').next().unwrap_or("").split("\\n").next().unwrap_or("");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!(
            "error: internal error{}: {first} (a bug in promptir; rerun with RUST_BACKTRACE=1 and report it)",
            at.unwrap_or_default()
        );
    }));
}
