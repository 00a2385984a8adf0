//! `promptir bench` and `promptir bench-loader`.

use clap::Args;
use promptir::config::{Experiment, OptimizerKind, Precision};
use promptir::model::Layout;
use promptir::tools::bench::{self, BenchSpec, Mode};
use promptir::tools::bench_loader;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct BenchCmd {
    /// paper, tiny or an experiment YAML (its model section).
    #[arg(long, default_value = "paper")]
    config: String,
    /// Square image sizes, comma-separated (multiples of 8).
    #[arg(long, value_delimiter = ',', default_value = "64,128,256")]
    size: Vec<i64>,
    #[arg(long, default_value_t = 1)]
    batch: i64,
    /// train (the training step `train` runs), infer, optim (the AdamW step alone), or several
    /// comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "train,infer")]
    mode: Vec<Mode>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 10)]
    iters: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// libtorch intra-op threads (default: libtorch's, the number of cores).
    #[arg(long)]
    threads: Option<i32>,
    /// Activation layout (auto: channels-last on CPU).
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    layout: Layout,
    /// The forward pass's precision (autocast for bf16 and fp16, as train.precision).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
    /// The AdamW implementation of train and optim rows.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Fused)]
    optimizer: OptimizerKind,
    /// One JSON object per row (the schema scripts/bench_torch.py also writes).
    #[arg(long)]
    json: bool,
    /// Record the timed iterations with libtorch's profiler (as torch.profiler) and write them
    /// as a Chrome trace (JSON); one row only. The row's times then include the profiler's
    /// overhead. `scripts/profile_table.py FILE --iters N` sums it by op.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
}

impl BenchCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let spec = BenchSpec {
            model: bench::parse_model(&self.config)?,
            config_name: self.config,
            sizes: self.size,
            batch: self.batch,
            modes: self.mode,
            device: self.device,
            iters: self.iters,
            warmup: self.warmup,
            threads: self.threads,
            layout: self.layout,
            precision: self.precision,
            optimizer: self.optimizer,
            profile: self.profile,
        };
        let rows = bench::run(&spec, &bench::current_exe()?)?;
        if self.json {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            print!("{}", bench::format_table(&rows));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct BenchLoaderCmd {
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
}

impl BenchLoaderCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let exp = match &self.config {
            Some(p) => Experiment::load(p, &[])?,
            None => Experiment::default(),
        };
        let rows = self
            .step_ms
            .iter()
            .map(|&ms| {
                let step = Duration::from_millis(ms);
                bench_loader::run(
                    &exp,
                    self.batch,
                    self.patch,
                    self.image,
                    self.pairs,
                    step,
                    self.batches,
                )
            })
            .collect::<promptir::Result<Vec<_>>>()?;
        if self.json {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        } else {
            print!("{}", bench_loader::format_table(&rows));
        }
        Ok(())
    }
}
