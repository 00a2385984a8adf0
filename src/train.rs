//! `promptir train`: the training loop. Flat on purpose: config -> checks -> data -> model ->
//! epochs of (schedule, forward, loss, backward, AdamW) with validation, TensorBoard and
//! atomic checkpoints. Resuming continues the same run exactly (weights, AdamW moments, schedule
//! position and the loader's per-epoch order).

use crate::amp::GradScaler;
use crate::checkpoint::{self, TensorFile};
use crate::config::{Experiment, Precision};
use crate::data::{self, Loader, LoaderConfig, Store};
use crate::eval::{evaluate, EvalItem, EvalReport};
use crate::io::RgbImage;
use crate::loss::{Loss, LossTerms};
use crate::model::PromptIr;
use crate::optim::AdamW;
use crate::restore::Restore;
use crate::run::{model_differences, RunDir, TrainState};
use crate::schedule::Schedule;
use crate::tensorboard::{EventWriter, SummaryWriter};
pub use crate::visualize::panel;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

/// What `promptir train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// Experiment file; optional with `resume` (the run's own config.yaml is used).
    pub config: Option<PathBuf>,
    /// `key.path=value` overrides.
    pub sets: Vec<String>,
    /// Overrides `data.root`.
    pub data: Option<PathBuf>,
    /// Overrides `device`.
    pub device: Option<String>,
    /// Run name (default: the experiment's name).
    pub name: Option<String>,
    /// An existing run to continue.
    pub resume: Option<String>,
    pub logs_dir: PathBuf,
    pub weights_dir: PathBuf,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

impl Default for TrainArgs {
    fn default() -> Self {
        TrainArgs {
            config: None,
            sets: Vec::new(),
            data: None,
            device: None,
            name: None,
            resume: None,
            logs_dir: PathBuf::from("logs"),
            weights_dir: PathBuf::from("weights"),
            progress: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run: RunDir,
    pub state: TrainState,
    /// Stopped by Ctrl-C (the `last` checkpoint was saved).
    pub interrupted: bool,
}

/// Set by the Ctrl-C handler; the loop saves `last` and returns at the next step boundary.
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks a running `train` to stop cleanly (what Ctrl-C does).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Where a run's outputs go: a fresh run (created only once every check has passed) or an
/// existing one to continue.
enum Plan {
    New,
    Resume(RunDir),
}

/// Metadata keys of the resume file (see `save` in [`train`]).
const STATE_KEY: &str = "promptir.train_state";
const BATCHES_KEY: &str = "promptir.batches_per_epoch";

/// The experiment with CLI overrides, validated; writes nothing.
fn resolve_experiment(args: &TrainArgs) -> Result<(Experiment, Plan)> {
    let apply_cli = |mut e: Experiment| -> Result<Experiment> {
        if let Some(d) = &args.data {
            e.data.root = d.clone();
        }
        if let Some(d) = &args.device {
            e.device = d.clone();
        }
        if let Some(n) = &args.name {
            e.name = n.clone();
        }
        e.validate().map_err(|m| Error::config("command line", m))?;
        Ok(e)
    };
    match &args.resume {
        Some(name) => {
            let run = RunDir::open(name, &args.logs_dir, &args.weights_dir)?;
            let stored = run.read_config()?;
            let exp = match &args.config {
                Some(p) => Experiment::load(p, &args.sets)?,
                None => Experiment::load(&run.config_path(), &args.sets)?,
            };
            let mut exp = apply_cli(exp)?;
            exp.name = stored.name.clone();
            let diff = model_differences(&stored, &exp);
            if !diff.is_empty() {
                return Err(Error::Usage(format!(
                    "--resume {}: the model config differs from the run's ({}); start a new run instead",
                    run.name,
                    diff.join(", ")
                )));
            }
            for d in [&run.logs, &run.weights] {
                crate::io::check_output_folder(d)?;
            }
            Ok((exp, Plan::Resume(run)))
        }
        None => {
            let path = args.config.as_ref().ok_or_else(|| {
                Error::Usage("train needs --config EXPERIMENT.yaml (or --resume RUN)".into())
            })?;
            let exp = apply_cli(Experiment::load(path, &args.sets)?)?;
            for d in [&args.logs_dir, &args.weights_dir] {
                crate::io::check_output_folder(d)?;
            }
            Ok((exp, Plan::New))
        }
    }
}

/// Loads the resume file of `run` into `vs` and `opt`; returns the state it was saved with.
/// Everything is checked before anything is changed on disk.
fn load_resume_point(
    run: &RunDir,
    vs: &nn::VarStore,
    opt: &mut AdamW,
    batches_per_epoch: usize,
) -> Result<TrainState> {
    let path = run.optimizer_path();
    if !path.is_file() {
        return Err(Error::Usage(format!(
            "--resume {}: {} is missing, so the run stopped before its first checkpoint; start it again without --resume",
            run.name,
            path.display()
        )));
    }
    let file = TensorFile::open(&path)?;
    let meta = file.metadata();
    let state: TrainState =
        meta.get(STATE_KEY).and_then(|j| serde_json::from_str(j).ok()).ok_or_else(|| {
            Error::weights(
                &path,
                "has no training state in its metadata; it is not a resume file of this promptir",
            )
        })?;
    let saved_bpe = meta.get(BATCHES_KEY).and_then(|b| b.parse::<usize>().ok());
    if saved_bpe.is_some_and(|b| b != batches_per_epoch)
        || state.step < state.epoch * batches_per_epoch
        || state.step > (state.epoch + 1) * batches_per_epoch
    {
        return Err(Error::Usage(format!(
            "--resume {}: the run has {} batches per epoch and stopped at step {} (epoch {}), this config gives {batches_per_epoch}; resume with the run's train.batch_size and data",
            run.name,
            saved_bpe.map_or("?".to_string(), |b| b.to_string()),
            state.step,
            state.epoch
        )));
    }
    checkpoint::load_strict_skipping(vs, &file, &crate::optim::is_state_key)?;
    opt.load_state(&file)?;
    Ok(state)
}

/// Whether every weight is finite (one host sync; used at save points only).
fn weights_finite(vs: &nn::VarStore) -> bool {
    tch::no_grad(|| {
        let sums: Vec<Tensor> =
            vs.variables().values().map(|t| t.abs().sum(Kind::Double)).collect();
        if sums.is_empty() {
            return true;
        }
        f64::try_from(Tensor::stack(&sums, 0).sum(Kind::Double)).is_ok_and(f64::is_finite)
    })
}

/// Names the checkpoint a diverged run can go back to.
fn last_good(run: &RunDir) -> String {
    let last = run.checkpoint("last");
    if last.is_file() {
        format!("the last good checkpoint is {}", last.display())
    } else {
        "no checkpoint was saved yet".to_string()
    }
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if enabled && std::io::stderr().is_terminal() {
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:25} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
            )
            .expect("valid template"),
        );
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb
}

fn to_items(store: &Store, indices: &[usize]) -> Vec<EvalItem> {
    indices
        .iter()
        .map(|&i| {
            let s = store.get(i);
            let img =
                |hwc: &Vec<u8>| RgbImage { width: s.width, height: s.height, hwc: hwc.clone() };
            EvalItem {
                name: s.name.clone(),
                kind: s.kind.clone(),
                degraded: img(&s.degraded),
                clean: img(&s.clean),
            }
        })
        .collect()
}

/// Running sums of the loss terms, kept on the device between log points (no host sync).
struct Running {
    sums: BTreeMap<&'static str, Tensor>,
    count: usize,
    images: usize,
    wait: Duration,
    since: Instant,
}

impl Running {
    fn new() -> Self {
        Running {
            sums: BTreeMap::new(),
            count: 0,
            images: 0,
            wait: Duration::ZERO,
            since: Instant::now(),
        }
    }
    fn add(&mut self, t: &LossTerms, images: usize, wait: Duration) {
        let terms =
            [("loss", Some(&t.total)), ("loss_l1", t.l1.as_ref()), ("loss_ssim", t.ssim.as_ref())];
        let terms = terms.into_iter().chain([("loss_perceptual", t.perceptual.as_ref())]);
        for (k, v) in terms {
            if let Some(v) = v {
                let v = v.detach().to_kind(Kind::Double);
                let e = self.sums.entry(k).or_insert_with(|| v.zeros_like());
                *e += v;
            }
        }
        self.count += 1;
        self.images += images;
        self.wait += wait;
    }
    /// Means since the last drain (one host sync), then reset.
    fn drain(&mut self) -> (BTreeMap<&'static str, f64>, f64, f64) {
        let n = self.count.max(1) as f64;
        let means =
            self.sums.iter().map(|(k, v)| (*k, f64::try_from(v).unwrap_or(f64::NAN) / n)).collect();
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let ips = self.images as f64 / secs;
        let wait_frac = self.wait.as_secs_f64() / secs;
        *self = Running::new();
        (means, ips, wait_frac)
    }
}

fn nonfinite(t: &Tensor) -> bool {
    !f64::try_from(t.detach().to_kind(Kind::Double)).map(f64::is_finite).unwrap_or(false)
}

/// Trains (or resumes) a run. Everything a user can get wrong is checked before the first step.
pub fn train(args: &TrainArgs) -> Result<TrainSummary> {
    let (exp, plan) = resolve_experiment(args)?;
    let device = crate::device::parse_device(&exp.device)?;
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true); // fixed patch shapes: tune once per shape
    }
    if exp.train.precision == Precision::Fp16 && !device.is_cuda() {
        return Err(Error::config(
            "train.precision",
            "fp16 needs a CUDA device; use precision: fp32 on CPU",
        ));
    }
    // The loss first: a missing VGG file should stop us before minutes of decoding.
    let loss = Loss::new(&exp.loss, device)?;
    let pairs = data::scan_pairs(&exp.data.root)?;
    let store = Arc::new(Store::load(&pairs, exp.data.workers)?);
    let split = data::split(&store.kinds(), exp.data.val_fraction, exp.seed);
    let loader =
        Loader::new(store.clone(), split.train.clone(), LoaderConfig::from_experiment(&exp))?;
    let val_items = to_items(&store, &split.val);

    let vs = nn::VarStore::new(device);
    let model = PromptIr::seeded(&vs.root(), &exp.model, exp.seed);
    let mut opt = AdamW::from_config(&vs, &exp.train)?;
    // Only now, with every input checked, is anything written.
    let (run, mut state) = match plan {
        Plan::New => {
            (RunDir::create(&exp, &args.logs_dir, &args.weights_dir)?, TrainState::default())
        }
        Plan::Resume(run) => {
            let state = load_resume_point(&run, &vs, &mut opt, loader.batches_per_epoch())?;
            // Temp files of a process killed while saving are garbage now.
            crate::io::remove_stale_temps(&run.weights);
            crate::io::remove_stale_temps(&run.logs);
            crate::io::write_atomic_bytes(&run.config_path(), exp.to_yaml().as_bytes())?;
            (run, state)
        }
    };
    // A resumed fp16 run keeps its scale; switching precision on resume starts or drops it.
    state.scaler = match exp.train.precision {
        Precision::Fp32 => None,
        Precision::Fp16 => state.scaler.take().or_else(|| Some(GradScaler::default())),
    };
    let schedule = Schedule::from_config(&exp, loader.batches_per_epoch());
    let mut tb = EventWriter::create(&run.logs)?;
    let max_steps = exp.train.max_steps.unwrap_or(usize::MAX);
    let total_steps = (exp.train.epochs * loader.batches_per_epoch()).min(max_steps);
    let pb = progress_bar(args.progress, total_steps as u64);
    pb.set_position(state.step as u64);
    pb.set_prefix(run.name.clone());
    // Through the bar on a terminal (so it does not tear), plain stderr otherwise.
    let say = |s: String| if pb.is_hidden() { eprintln!("{s}") } else { pb.println(s) };
    say(format!(
        "run {}: {} train / {} val pairs, {} steps/epoch, {} parameters, {:?}; logs {}, weights {}",
        run.name,
        split.train.len(),
        split.val.len(),
        loader.batches_per_epoch(),
        vs.variables().values().map(|t| t.numel()).sum::<usize>(),
        device,
        run.logs.display(),
        run.weights.display()
    ));
    STOP.store(false, Ordering::SeqCst);
    // Only the first call in a process installs the handler (tests call train repeatedly).
    let _ = ctrlc::set_handler(request_stop);

    let save = |state: &TrainState,
                opt: &AdamW,
                extra_name: Option<String>,
                val_psnr: Option<f64>|
     -> Result<()> {
        // Never replace a good checkpoint with a diverged one (on GPU the loss is only checked
        // at log points).
        if !weights_finite(&vs) {
            return Err(Error::Usage(format!(
                "weights became NaN/inf by step {} (epoch {}) and were not saved; {}; lower train.lr or set train.grad_clip",
                state.step,
                state.epoch,
                last_good(&run)
            )));
        }
        let mut meta = BTreeMap::new();
        meta.insert("promptir.run".to_string(), run.name.clone());
        meta.insert("promptir.epoch".to_string(), state.epoch.to_string());
        meta.insert("promptir.step".to_string(), state.step.to_string());
        if let Some(p) = val_psnr {
            meta.insert("promptir.val_psnr".to_string(), format!("{p:.4}"));
        }
        // The resume point is one file (weights, AdamW moments and state), replaced atomically:
        // a kill at any moment leaves a matching set, where separate files could pair weights
        // and moments of different steps. `last`, `train_state.json` are copies for people.
        let mut resume_meta = meta.clone();
        resume_meta.insert(
            STATE_KEY.to_string(),
            serde_json::to_string(state).expect("TrainState serialises"),
        );
        resume_meta.insert(BATCHES_KEY.to_string(), loader.batches_per_epoch().to_string());
        let mut tensors = opt.state_tensors();
        tensors.extend(vs.variables());
        checkpoint::save_tensors(&run.optimizer_path(), &tensors, resume_meta)?;
        checkpoint::save_model(&vs, &exp.model, meta.clone(), &run.checkpoint("last"))?;
        if let Some(name) = extra_name {
            checkpoint::save_model(&vs, &exp.model, meta, &run.checkpoint(&name))?;
        }
        run.write_state(state)
    };

    let mut running = Running::new();
    let mut interrupted = false;
    let mut last_val: Option<EvalReport> = None;
    let epoch_start = state.epoch;
    for epoch in epoch_start..exp.train.epochs {
        // Resuming mid-epoch: the epoch's batch order is a function of (seed, epoch), so skipping
        // the batches already taken continues exactly where the run stopped.
        let skip = state.step.saturating_sub(epoch * loader.batches_per_epoch());
        let epoch_t0 = Instant::now();
        for (i, batch) in loader.epoch(epoch).enumerate().skip(skip) {
            if state.step >= max_steps || STOP.load(Ordering::SeqCst) {
                interrupted = STOP.load(Ordering::SeqCst);
                break;
            }
            let lr = schedule.lr_at(epoch, i);
            let x = batch.degraded.to_device(device);
            let y = batch.clean.to_device(device);
            opt.zero_grad()?;
            let log_now = (state.step + 1) % exp.train.log_every == 0;
            let terms = match &mut state.scaler {
                None => {
                    let terms = loss.compute(&model.restore(&x), &y);
                    terms.total.backward();
                    terms
                }
                Some(sc) => {
                    // fp16 forward; the loss is computed in fp32 on the upcast output.
                    let terms = loss.compute(&tch::autocast(true, || model.restore(&x)), &y);
                    (&terms.total * sc.scale()).backward();
                    let finite = sc.unscale(&opt);
                    sc.update(!finite);
                    if !finite {
                        // An overflow: skip this step (the scale was halved), as GradScaler does.
                        if sc.scale() < 1.0 {
                            return Err(Error::Usage(format!(
                                "fp16 gradients overflow at every step (step {}); use train.precision: fp32 or lower train.lr",
                                state.step + 1
                            )));
                        }
                        state.step += 1;
                        pb.inc(1);
                        continue;
                    }
                    terms
                }
            };
            let norm = exp.train.grad_clip.map(|c| opt.clip_grad_norm(c));
            // On CPU a check costs nothing; on GPU it is a sync, so only at log points (the
            // checkpoints below are written only after a check).
            if (device == Device::Cpu || log_now)
                && (nonfinite(&terms.total) || norm.as_ref().is_some_and(nonfinite))
            {
                return Err(Error::Usage(format!(
                    "loss or gradient became NaN/inf at step {} (epoch {epoch}); {}; lower train.lr or set train.grad_clip",
                    state.step + 1,
                    last_good(&run)
                )));
            }
            opt.step(lr);
            state.step += 1;
            running.add(&terms, batch.kinds.len(), batch.wait);
            pb.inc(1);
            if log_now {
                let (means, ips, wait) = running.drain();
                if means.values().any(|v| !v.is_finite()) {
                    return Err(Error::Usage(format!(
                        "loss became NaN/inf before step {}; {}; lower train.lr or set train.grad_clip",
                        state.step,
                        last_good(&run)
                    )));
                }
                for (k, v) in &means {
                    tb.scalar(&format!("train/{k}"), state.step as i64, *v)?;
                }
                tb.scalar("train/lr", state.step as i64, lr)?;
                tb.scalar("train/images_per_s", state.step as i64, ips)?;
                tb.scalar("train/data_wait_fraction", state.step as i64, wait)?;
                pb.set_message(format!(
                    "ep {} loss {:.4} lr {lr:.2e} {ips:.1} img/s data {:.0}%",
                    epoch + 1,
                    means["loss"],
                    wait * 100.0
                ));
            }
        }
        if interrupted {
            break; // Ctrl-C: no validation, `last` is saved below
        }
        let finished_epoch = state.step >= (epoch + 1) * loader.batches_per_epoch();
        if finished_epoch {
            state.epoch = epoch + 1;
        }
        let is_last = state.epoch == exp.train.epochs || state.step >= max_steps;
        // The final state is always validated, also when max_steps ends an epoch early.
        if (finished_epoch && state.epoch.is_multiple_of(exp.train.val_every)) || is_last {
            let report =
                validate(&model, &val_items, device, &loss, &exp, state.step, &mut tb, &pb)?;
            let psnr = report.mean_psnr();
            let improved = !val_items.is_empty() && state.best_psnr.is_none_or(|b| psnr > b);
            if improved {
                state.best_psnr = Some(psnr);
                state.best_epoch = Some(state.epoch);
            }
            run.append_metrics(&serde_json::json!({
                "epoch": state.epoch, "step": state.step,
                "lr": schedule.lr_at(epoch, loader.batches_per_epoch().saturating_sub(1)),
                "val": report.to_json_summary(),
                "epoch_seconds": epoch_t0.elapsed().as_secs_f64(),
            }))?;
            say(format!(
                "epoch {}/{} step {}: val psnr {:.3} dB ssim {:.4} ({}){}",
                state.epoch,
                exp.train.epochs,
                state.step,
                psnr,
                report.mean_ssim(),
                report.by_kind_line(),
                if improved { " [best]" } else { "" }
            ));
            let keep = (exp.train.save_every > 0
                && state.epoch.is_multiple_of(exp.train.save_every))
            .then(|| format!("epoch_{}", state.epoch));
            save(&state, &opt, keep, Some(psnr))?;
            if improved {
                checkpoint::save_model(
                    &vs,
                    &exp.model,
                    best_meta(&run, &state, psnr),
                    &run.checkpoint("best"),
                )?;
            }
            last_val = Some(report);
        } else if finished_epoch {
            save(&state, &opt, None, None)?;
        }
        tb.flush()?;
        if is_last {
            break;
        }
    }
    if state.step >= max_steps || state.epoch >= exp.train.epochs {
        state.finished = true;
    }
    // Whatever stopped the loop (Ctrl-C, max_steps mid-epoch), `last` holds the final weights.
    save(&state, &opt, None, last_val.as_ref().map(EvalReport::mean_psnr))?;
    if state.best_psnr.is_none() && !val_items.is_empty() {
        // A run stopped before its first validation still gets a `best` to predict with.
        checkpoint::save_model(
            &vs,
            &exp.model,
            best_meta(&run, &state, f64::NAN),
            &run.checkpoint("best"),
        )?;
    }
    tb.flush()?;
    pb.finish_and_clear();
    Ok(TrainSummary { run, state, interrupted })
}

fn best_meta(run: &RunDir, state: &TrainState, psnr: f64) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    meta.insert("promptir.run".to_string(), run.name.clone());
    meta.insert("promptir.epoch".to_string(), state.epoch.to_string());
    meta.insert("promptir.step".to_string(), state.step.to_string());
    meta.insert("promptir.val_psnr".to_string(), format!("{psnr:.4}"));
    meta
}

#[allow(clippy::too_many_arguments)]
fn validate(
    model: &PromptIr,
    items: &[EvalItem],
    device: Device,
    loss: &Loss,
    exp: &Experiment,
    step: usize,
    tb: &mut dyn SummaryWriter,
    pb: &ProgressBar,
) -> Result<EvalReport> {
    pb.set_message("validating");
    let report = evaluate(model, items, device, Some(loss), exp.train.val_images, |_| {});
    let s = step as i64;
    if let Some(l) = report.loss.mean() {
        tb.scalar("val/loss", s, l)?;
    }
    tb.scalar("val/psnr", s, report.mean_psnr())?;
    tb.scalar("val/ssim", s, report.mean_ssim())?;
    for (kind, m) in report.psnr.groups() {
        tb.scalar(&format!("val/psnr_{kind}"), s, m.mean().unwrap_or(f64::NAN))?;
    }
    for (kind, m) in report.ssim.groups() {
        tb.scalar(&format!("val/ssim_{kind}"), s, m.mean().unwrap_or(f64::NAN))?;
    }
    for (i, (item, out)) in items.iter().zip(&report.outputs).enumerate() {
        let restored = RgbImage::from_chw(out, item.clean.height, item.clean.width);
        let p = panel(&[&item.degraded, &restored, &item.clean]);
        tb.image(&format!("val/sample_{i}"), s, &p.hwc, p.height, p.width)?;
    }
    Ok(report)
}
