//! `promptir bench`: time per training step and per inference, images/s and peak memory, in the
//! JSON-lines schema that `scripts/bench_torch.py` also writes, so that `scripts/bench.sh` can
//! put the Rust port and PyTorch eager (same libtorch) side by side.
//!
//! Peak memory is a process-lifetime number (VmHWM, and the CUDA caching allocator never gives
//! memory back), so a run of several rows measures each row in a fresh child process.

use crate::config::{Experiment, OptimizerKind, Precision};
use crate::io::atomic::check_output_file;
use crate::model::{with_global_rng, Layout, ModelConfig};
use crate::native::Profiler;
use crate::train::TrainStep;
use crate::{Error, Result};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Learning rate of the timed AdamW steps (PromptIR's); it does not change the cost of a step.
const LR: f64 = 2e-4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The training step `train` runs: forward, L1 loss, backward, AdamW step
    Train,
    /// forward without autograd
    Infer,
    /// The AdamW step alone, on gradients of one training step
    Optim,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Infer => "infer",
            Mode::Optim => "optim",
        }
    }
}

/// `paper | tiny | FILE.yaml` (an experiment file: its `model` section is used).
pub fn parse_model(spec: &str) -> Result<ModelConfig> {
    match spec {
        "paper" => Ok(ModelConfig::paper()),
        "tiny" => Ok(ModelConfig::tiny()),
        file => Ok(Experiment::load(Path::new(file), &[])?.model),
    }
}

/// Checks `--size` values: positive multiples of 8 (the network downsamples three times).
pub fn check_sizes(sizes: &[i64]) -> Result<()> {
    if sizes.is_empty() {
        return Err(Error::Usage("--size: give at least one size".into()));
    }
    match sizes.iter().find(|&&v| v <= 0 || v % 8 != 0) {
        Some(v) => Err(Error::Usage(format!("--size {v}: sizes must be positive multiples of 8"))),
        None => Ok(()),
    }
}

/// What to measure. One row per (size, mode).
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// What `--config` said (`paper`, `tiny` or a path), repeated in each row.
    pub config_name: String,
    pub model: ModelConfig,
    pub sizes: Vec<i64>,
    pub batch: i64,
    pub modes: Vec<Mode>,
    /// As given on the command line (`cpu`, `cuda`, ...); children get the same string.
    pub device: String,
    pub iters: usize,
    pub warmup: usize,
    /// libtorch intra-op threads; `None` keeps libtorch's default (the number of cores).
    pub threads: Option<i32>,
    /// Activation layout inside the network (`auto` is what every other command uses).
    pub layout: Layout,
    /// The forward pass's precision (autocast for bf16/fp16, as `train.precision`).
    pub precision: Precision,
    pub optimizer: OptimizerKind,
    /// Where to write a profiler trace of the timed iterations (one row only).
    pub profile: Option<PathBuf>,
}

/// One measured row; the same fields as `scripts/bench_torch.py` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// `rust` or `pytorch`.
    pub implementation: String,
    pub config: String,
    pub params: i64,
    pub mode: Mode,
    pub size: i64,
    pub batch: i64,
    pub device: String,
    pub threads: i32,
    /// `channels-last` or `contiguous` (PyTorch eager: always `contiguous`).
    pub layout: String,
    /// `fp32`, `bf16` or `fp16` (rows of older versions: fp32).
    #[serde(default = "fp32")]
    pub precision: Precision,
    /// The AdamW implementation: `fused` or `reference` (Rust); `fused` or `default` (PyTorch's
    /// `torch.optim.AdamW` as a user writes it).
    #[serde(default)]
    pub optimizer: String,
    pub iters: usize,
    pub warmup: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub images_per_s: f64,
    /// Every timed iteration, in order.
    pub times_ms: Vec<f64>,
    /// CPU time of all threads per timed iteration (includes OpenMP spin-waiting): less
    /// sensitive than wall time to other processes on a shared machine when threads = 1.
    pub cpu_ms_per_iter: f64,
    /// Minor page faults per timed iteration: memory the kernel had to map and zero afresh.
    pub page_faults_per_iter: f64,
    /// VmHWM of the process after the row (includes the loaded libraries and the model).
    pub peak_rss_mib: f64,
    /// VmRSS once the model and inputs exist, before the first timed iteration.
    pub base_rss_mib: f64,
    /// CUDA: device memory in use after the row minus before the model was built, i.e. what
    /// the caching allocator reserved at its peak (it frees nothing back). Null on CPU.
    pub cuda_reserved_mib: Option<f64>,
    /// The network measured, so the PyTorch side can build the same one.
    pub model: ModelConfig,
}

fn fp32() -> Precision {
    Precision::Fp32
}

/// Runs every row; several rows each run in a fresh `exe bench ...` child so that peak memory
/// belongs to that row alone. `exe` is this binary (`std::env::current_exe()`).
pub fn run(spec: &BenchSpec, exe: &Path) -> Result<Vec<BenchRow>> {
    let rows: Vec<(i64, Mode)> =
        spec.sizes.iter().flat_map(|&s| spec.modes.iter().map(move |&m| (s, m))).collect();
    if let [(size, mode)] = rows[..] {
        return Ok(vec![run_row(spec, mode, size)?]);
    }
    if spec.profile.is_some() {
        return Err(Error::Usage(
            "--profile records one row: give one --size and one --mode".into(),
        ));
    }
    rows.iter().map(|&(size, mode)| run_child(spec, exe, mode, size)).collect()
}

fn run_child(spec: &BenchSpec, exe: &Path, mode: Mode, size: i64) -> Result<BenchRow> {
    // The flags of `promptir bench` (src/cli/bench.rs).
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .args(["--config", &spec.config_name])
        .args(["--size", &size.to_string()])
        .args(["--batch", &spec.batch.to_string()])
        .args(["--mode", mode.name()])
        .args(["--device", &spec.device])
        .args(["--iters", &spec.iters.to_string()])
        .args(["--warmup", &spec.warmup.to_string()])
        .args(["--layout", &layout_name(spec.layout)])
        .args(["--precision", &value_name(spec.precision)])
        .args(["--optimizer", &value_name(spec.optimizer)])
        .arg("--json");
    if let Some(t) = spec.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    let out = cmd.output().map_err(|e| Error::io(exe, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "bench row {} {size}x{size} failed: {}",
            mode.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| Error::Internal(format!("bench child printed no row ({e}): {stdout}")))
}

/// Measures one row in this process.
pub fn run_row(spec: &BenchSpec, mode: Mode, size: i64) -> Result<BenchRow> {
    spec.model.validate().map_err(|m| Error::config(&spec.config_name, m))?;
    check_sizes(&spec.sizes)?;
    if spec.iters == 0 || spec.batch < 1 {
        return Err(Error::Usage("--iters and --batch must be >= 1".into()));
    }
    let device = crate::device::parse_device(&spec.device)?;
    // As `train` runs (and as the PyTorch side: scripts/bench_torch.py).
    crate::device::prepare_fixed_shapes(device)?;
    if let Some(path) = &spec.profile {
        check_output_file(path)?;
    }
    if let Some(t) = spec.threads {
        tch::set_num_threads(t);
    }
    let cuda_before = cuda_used_mib(device);
    // The training step of an L1 experiment on this network: what `train` runs.
    let mut exp = Experiment { seed: 0, ..Experiment::default() };
    exp.model = spec.model.clone();
    exp.train.precision = spec.precision;
    exp.train.optimizer = spec.optimizer;
    let mut step = TrainStep::new(&exp, device)?;
    step.model.set_layout(spec.layout);
    let params: i64 = step.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    let shape = [spec.batch, spec.model.channels(), size, size];
    let (x, target) = with_global_rng(|| {
        (Tensor::rand(shape, (Kind::Float, device)), Tensor::rand(shape, (Kind::Float, device)))
    });
    let base_rss_mib = proc_status_mib("VmRSS:").unwrap_or(f64::NAN);

    let mut timer =
        Timer { times: Vec::with_capacity(spec.iters), faults: 0, cpu_ms: 0.0, profiler: None };
    match mode {
        Mode::Infer => {
            let _guard = tch::no_grad_guard();
            timer.run(spec, device, || step.forward(&x).map(drop))?;
        }
        Mode::Train => timer.run(spec, device, || step.step(&x, &target, LR, false).map(drop))?,
        Mode::Optim => {
            // Gradients of one training step stay in place; the step alone is timed.
            step.step(&x, &target, LR, false)?;
            timer.run(spec, device, || step.opt.step(LR, None))?;
        }
    }
    let times = timer.times;
    let page_faults_per_iter = (minor_faults() - timer.faults) as f64 / spec.iters as f64;
    let cpu_ms_per_iter = (cpu_ms() - timer.cpu_ms) / spec.iters as f64;
    let peak_rss_mib = proc_status_mib("VmHWM:").unwrap_or(f64::NAN);
    // Written after the row's own measures, which the trace's writing must not count in.
    if let (Some(profiler), Some(path)) = (timer.profiler, &spec.profile) {
        profiler.save(path)?;
    }
    let cuda_reserved_mib = match (cuda_before, cuda_used_mib(device)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let (median_ms, min_ms, max_ms) = summary(&times);
    Ok(BenchRow {
        implementation: "rust".into(),
        config: spec.config_name.clone(),
        params,
        mode,
        size,
        batch: spec.batch,
        device: device_name(device),
        threads: tch::get_num_threads(),
        layout: if spec.layout.channels_last_on(device) { "channels-last" } else { "contiguous" }
            .into(),
        precision: spec.precision,
        optimizer: value_name(spec.optimizer),
        iters: spec.iters,
        warmup: spec.warmup,
        median_ms,
        min_ms,
        max_ms,
        images_per_s: spec.batch as f64 * 1e3 / median_ms,
        times_ms: times,
        cpu_ms_per_iter,
        page_faults_per_iter,
        peak_rss_mib,
        base_rss_mib,
        cuda_reserved_mib,
        model: spec.model.clone(),
    })
}

/// (median, min, max) of a non-empty sample; the median of an even count is the mean of the
/// middle two, as Python's `statistics.median`.
pub fn summary(times: &[f64]) -> (f64, f64, f64) {
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let n = t.len();
    let median = if n % 2 == 1 { t[n / 2] } else { (t[n / 2 - 1] + t[n / 2]) / 2.0 };
    (median, t[0], t[n - 1])
}

/// Timed iterations after warm-up ones, with the process's page faults and CPU time counted
/// from the first timed one.
struct Timer {
    times: Vec<f64>,
    faults: u64,
    cpu_ms: f64,
    /// Started with the first timed iteration when the spec asks for a trace.
    profiler: Option<Profiler>,
}

impl Timer {
    fn run(
        &mut self,
        spec: &BenchSpec,
        device: Device,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<()> {
        for i in 0..spec.warmup + spec.iters {
            if i == spec.warmup {
                (self.faults, self.cpu_ms) = (minor_faults(), cpu_ms());
                if spec.profile.is_some() {
                    self.profiler = Some(Profiler::start(device)?);
                }
            }
            let t0 = Instant::now();
            f()?;
            sync(device);
            if i >= spec.warmup {
                self.times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(())
    }
}

/// A CLI choice's name, as `--help` shows it (`channels-last`, `bf16`, `fused`).
fn value_name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value().expect("no skipped variants").get_name().to_string()
}

fn layout_name(layout: Layout) -> String {
    value_name(layout)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// A `VmHWM:`/`VmRSS:` line of /proc/self/status in MiB (Linux only; None elsewhere).
pub fn proc_status_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Minor page faults of this process so far (field 10 of /proc/self/stat; 0 if unreadable).
pub fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the parenthesised command name start at field 3.
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    rest.split_whitespace().nth(7).and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// CPU time of all threads of this process so far, in ms (from each thread's schedstat).
pub fn cpu_ms() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return f64::NAN };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e6
}

/// Device memory in use (total - free) on a CUDA device, from the CUDA runtime that
/// libtorch_cuda already loaded. tch exposes neither `cudaMemGetInfo` nor the caching
/// allocator's statistics, so this looks the symbol up at run time; None on CPU or if absent.
fn cuda_used_mib(device: Device) -> Option<f64> {
    let Device::Cuda(i) = device else { return None };
    // Creates the context first, so that it is counted in both readings and cancels out.
    let _ = Tensor::zeros([1], (Kind::Float, device));
    tch::Cuda::synchronize(i as i64);
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    extern "C" {
        fn dlsym(
            handle: *mut std::ffi::c_void,
            name: *const std::ffi::c_char,
        ) -> *mut std::ffi::c_void;
    }
    // SAFETY: dlsym with RTLD_DEFAULT (null on glibc) only looks a symbol up; the CUDA runtime's
    // `cudaMemGetInfo(size_t*, size_t*)` has this C signature, and it reports on the device
    // current to this thread, which `run_row` made device i.
    unsafe {
        let f = dlsym(std::ptr::null_mut(), c"cudaMemGetInfo".as_ptr());
        if f.is_null() {
            return None;
        }
        let f: MemGetInfo = std::mem::transmute(f);
        let (mut free, mut total) = (0usize, 0usize);
        (f(&mut free, &mut total) == 0).then(|| (total - free) as f64 / (1024.0 * 1024.0))
    }
}

/// The human-readable table `promptir bench` prints without `--json`.
pub fn format_table(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<6} {:>9} {:>5} {:>7} {:>4} {:>11} {:>10} {:>10} {:>10} {:>10}\n",
        "mode",
        "size",
        "batch",
        "device",
        "thr",
        "median ms",
        "min ms",
        "img/s",
        "peak RSS",
        "CUDA res."
    );
    for r in rows {
        let cuda = r.cuda_reserved_mib.map_or("-".into(), |m| format!("{m:.0} MiB"));
        out.push_str(&format!(
            "{:<6} {:>9} {:>5} {:>7} {:>4} {:>11.1} {:>10.1} {:>10.2} {:>6.0} MiB {:>10}\n",
            r.mode.name(),
            format!("{}x{}", r.size, r.size),
            r.batch,
            r.device,
            r.threads,
            r.median_ms,
            r.min_ms,
            r.images_per_s,
            r.peak_rss_mib,
            cuda
        ));
    }
    out
}

/// The path of this binary, for the per-row children.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_parsing() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        check_sizes(&[64, 128]).unwrap();
        assert!(check_sizes(&[60]).unwrap_err().to_string().contains("multiples of 8"));
        assert_eq!(layout_name(Layout::ChannelsLast), "channels-last");
        assert_eq!(parse_model("tiny").unwrap(), ModelConfig::tiny());
        assert!(proc_status_mib("VmHWM:").unwrap() > 1.0);
    }

    #[test]
    fn one_tiny_row_in_process() {
        let spec = BenchSpec {
            config_name: "tiny".into(),
            model: ModelConfig::tiny(),
            sizes: vec![16],
            batch: 2,
            modes: vec![Mode::Train],
            device: "cpu".into(),
            iters: 2,
            warmup: 1,
            threads: Some(1),
            layout: Layout::Auto,
            precision: Precision::Bf16,
            optimizer: OptimizerKind::Fused,
            profile: None,
        };
        let row = run_row(&spec, Mode::Train, 16).unwrap();
        assert_eq!((row.size, row.batch, row.threads, row.mode), (16, 2, 1, Mode::Train));
        assert_eq!((row.precision, row.optimizer.as_str()), (Precision::Bf16, "fused"));
        assert_eq!(row.layout, "channels-last");
        assert!(row.min_ms > 0.0 && row.min_ms <= row.median_ms && row.median_ms <= row.max_ms);
        assert!((row.images_per_s - 2e3 / row.median_ms).abs() < 1e-9);
        assert!(row.peak_rss_mib >= row.base_rss_mib && row.cuda_reserved_mib.is_none());
        assert!(row.cpu_ms_per_iter > 0.0 && row.times_ms.len() == 2);
        // The JSON line parses back (serde_json's float printing may round the last digit).
        let back: BenchRow = serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        assert!((back.median_ms - row.median_ms).abs() < 1e-9 && back.model == row.model);
    }
}
