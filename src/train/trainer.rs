//! The [`Trainer`]: a run set up with every check done ([`Trainer::setup`]), then epochs of
//! [`TrainStep`]s with validation, TensorBoard and checkpoints ([`Trainer::run`]). Resuming
//! continues the same run exactly: weights, AdamW moments, schedule position, the loader's
//! per-epoch order and the fp16 loss scale.
//!
//! Launched by torchrun (`WORLD_SIZE` set), every process trains a slice of each global batch
//! and the gradients are averaged ([`crate::dist`]); only rank 0 writes (TensorBoard,
//! `metrics.jsonl`, checkpoints), validation is sharded across the ranks and its sums reduced,
//! so every number and the choice of `best` equal a one-process run's on the same batches.

use super::args::{resolve, Plan, TrainArgs};
use super::ema::Ema;
use super::log::{log_train, log_val, EpochLoss, Progress, Running};
use super::persist::{git_commit, load_resume};
use super::plan::EpochPlan;
use super::run_dir::{MetricsLine, RunDir};
use super::schedule::Schedule;
use super::step::TrainStep;
use crate::config::{Experiment, LrScaling};
use crate::data::{self, fingerprint, Loader, LoaderConfig, Store};
use crate::dist::{self, Launch, ProcessGroup};
use crate::eval::{evaluate, EvalItem, EvalReport};
use crate::io::{
    remove_stale_temps, write_atomic_bytes, DatasetFingerprint, EventWriter, SummaryWriter,
    TrainState, ValScores,
};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

/// Asks a running [`Trainer`] to stop cleanly: it saves `last` at the next step boundary (with
/// several processes, after the step they agree on, at most one more) and returns. The CLI's
/// Ctrl-C / SIGTERM handler holds a clone.
#[derive(Debug, Clone, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run: RunDir,
    pub state: TrainState,
    /// Stopped by the [`StopHandle`] (the `last` checkpoint was saved).
    pub interrupted: bool,
    /// This process's rank (0 without torchrun); only rank 0 wrote anything.
    pub rank: usize,
}

/// A run ready to train.
pub struct Trainer {
    pub(super) exp: Experiment,
    device: Device,
    pub(super) run: RunDir,
    pub(super) state: TrainState,
    pub(super) step: TrainStep,
    /// One loader per stage of `plan` (one without progressive patches).
    loaders: Vec<Loader>,
    pub(super) plan: EpochPlan,
    /// The weights' moving average, when `train.ema` is on.
    pub(super) ema: Option<Ema>,
    /// This rank's share of the validation pairs (all of them without torchrun).
    val_items: Vec<EvalItem>,
    /// Every degradation type of the whole validation split (the layout of reduced sums).
    val_kinds: Vec<String>,
    schedule: Schedule,
    /// Rank 0 only.
    tb: Option<EventWriter<BufWriter<File>>>,
    pub(super) dataset: DatasetFingerprint,
    progress: Progress,
    stop: StopHandle,
    /// With several processes: the step count all ranks stop at, once one was asked to.
    stop_after: Option<usize>,
    group: Option<Rc<ProcessGroup>>,
}

/// How an epoch's batches ended.
struct EpochEnd {
    interrupted: bool,
    /// The learning rate of the last step taken.
    lr: f64,
    /// Mean training loss over the epoch's steps (over all ranks).
    train_loss: Option<f64>,
}

fn to_items(store: &Store, indices: &[usize]) -> Vec<EvalItem> {
    indices.iter().map(|&i| EvalItem::from(store.get(i).clone())).collect()
}

fn val_scores(r: &EvalReport) -> ValScores {
    let s = r.summary();
    ValScores { psnr: s.psnr, ssim: s.ssim }
}

/// What every rank of a data-parallel run must share: the experiment as resolved (less paths,
/// loader threads and labels), the device kind, the data, the start and the build.
fn rank_settings(
    exp: &Experiment,
    device: Device,
    dataset: &DatasetFingerprint,
    start: &Plan,
) -> BTreeMap<String, String> {
    let mut shared = exp.shared_settings();
    // As resolved: `auto` on one machine and `cuda` on another both mean its GPU.
    let kind = if device.is_cuda() { "cuda" } else { "cpu" };
    shared.insert("device".into(), kind.into());
    let files = format!("{} pairs, names and sizes crc32c {}", dataset.pairs, dataset.files_crc32c);
    shared.insert("dataset".into(), files);
    let start = match start {
        Plan::New => "a new run".to_string(),
        // The step too: a rank reading its own stale copy of the run would resume other
        // optimizer moments than rank 0 (only the weights are broadcast).
        Plan::Resume(run) => {
            let at = run.read_state().map_or("none".into(), |s| s.step.to_string());
            format!("--resume {} (its train_state.json at step {at})", run.name)
        }
    };
    shared.insert("start".into(), start);
    // Another build computes differently (nodes with their own checkouts).
    let commit = git_commit().unwrap_or_else(|| "no commit recorded".into());
    shared.insert("promptir".into(), format!("{} ({commit})", env!("CARGO_PKG_VERSION")));
    shared
}

/// Rank `rank`'s contiguous share of `n` items (rank 0 first, so it holds the panels' items).
fn shard(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    (n * rank / world)..(n * (rank + 1) / world)
}

impl Trainer {
    /// Resolves the experiment and checks everything a user can get wrong (config, launch, VGG
    /// file, data, patch size, resume point) before anything is written; then creates or
    /// reopens the run's folders (rank 0).
    pub fn setup(args: &TrainArgs, stop: StopHandle) -> Result<Trainer> {
        let (exp, start) = resolve(args)?;
        let launch = Launch::from_env()?;
        let mut device = crate::device::parse_device(&exp.device)?;
        if let (Some(l), Device::Cuda(_)) = (&launch, device) {
            // One GPU per process, as torchrun lays them out.
            device = crate::device::parse_device(&format!("cuda:{}", l.local_rank))?;
        }
        // Before anything touches CUDA; patches have fixed shapes.
        crate::device::prepare_fixed_shapes(device)?;
        // The loss first (inside TrainStep): a missing VGG file stops us before minutes of decoding.
        let mut step = TrainStep::new(&exp, device)?;
        let group = match &launch {
            Some(l) => Some(Rc::new(ProcessGroup::join(l, device, dist::timeout())?)),
            None => None,
        };
        let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank, g.world));
        let pairs = data::scan_pairs(&exp.data.root)?;
        let dataset = fingerprint(&exp.data.root, &pairs);
        if let Some(g) = &group {
            // Before minutes of decoding: every rank must train the same run on the same data.
            g.check_same_settings(&rank_settings(&exp, device, &dataset, &start))?;
        }
        let store = Arc::new(Store::load(&pairs, exp.data.workers)?);
        let split = data::split(&store.kinds(), exp.data.val_fraction, exp.seed);
        let cfg = LoaderConfig { rank, world, ..LoaderConfig::from_experiment(&exp) };
        let plan = EpochPlan::new(&exp.train, split.train.len(), world);
        let mut loaders = Vec::new();
        for (i, st) in plan.stages().iter().enumerate() {
            let (patch_size, batch_size) = (st.patch_size, st.batch_size);
            let key = if exp.train.stages.is_empty() {
                "train".into()
            } else {
                format!("train.stages[{i}]")
            };
            let cfg = LoaderConfig { key: key.clone(), patch_size, batch_size, ..cfg.clone() };
            loaders.push(Loader::new(store.clone(), split.train.clone(), cfg)?);
            let first = if i == 0 { 0 } else { plan.stages()[i - 1].until_epoch };
            let acc = exp.train.accumulate;
            if plan.steps(first) == 0 {
                let procs = if world > 1 { format!(" x {world} processes") } else { String::new() };
                return Err(Error::Usage(format!(
                    "train.accumulate is {acc} but an epoch has only {} batches of {key}.batch_size {batch_size}{procs}; lower train.accumulate or the batch size",
                    plan.batches(first)
                )));
            }
        }
        let mut val_kinds: Vec<String> =
            split.val.iter().map(|&i| store.get(i).kind.clone()).collect();
        val_kinds.sort();
        val_kinds.dedup();
        let val_items = to_items(&store, &split.val[shard(split.val.len(), rank, world)]);
        let spe = plan.steps(0);
        // Only now, with every input checked, is anything written (by rank 0 alone).
        let say = |s: String| {
            if rank == 0 {
                eprintln!("{s}")
            }
        };
        let (run, state, resumed) = match start {
            Plan::New if rank == 0 => {
                let run = RunDir::create(&exp, &args.logs_dir, &args.weights_dir)?;
                (run, TrainState::default(), None)
            }
            Plan::New => {
                let run = RunDir::named("", &args.logs_dir, &args.weights_dir);
                (run, TrainState::default(), None)
            }
            Plan::Resume(run) => {
                let (state, file) =
                    load_resume(&run, &mut step, &plan, exp.train.lr_scaling, &say)?;
                if rank == 0 {
                    // Temp files of a process killed while saving are garbage now.
                    remove_stale_temps(&run.weights);
                    remove_stale_temps(&run.logs);
                    write_atomic_bytes(&run.config_path(), exp.to_yaml().as_bytes())?;
                }
                (run, state, Some(file))
            }
        };
        let run = match &group {
            // The name rank 0 chose (a new run may have a timestamp appended).
            Some(g) => {
                RunDir::named(&g.share_string("run", &run.name)?, &args.logs_dir, &args.weights_dir)
            }
            None => run,
        };
        if let Some(g) = &group {
            step.join(g.clone(), exp.train.bucket_mb)?;
        }
        // After the join, so every rank starts from rank 0's weights.
        let ema = Ema::new(&exp.train.ema, &exp.model, &step.vs, device);
        if let (Some(ema), Some(file)) = (&ema, &resumed) {
            if !ema.load(file)? {
                say(format!(
                    "--resume {}: the resume point has no moving average (train.ema was off); it starts from the resumed weights",
                    run.name
                ));
            }
        }
        let schedule = Schedule::from_config(&exp, spe, world);
        let tb = if rank == 0 { Some(EventWriter::create(&run.logs)?) } else { None };
        let max_steps = exp.train.max_steps.unwrap_or(usize::MAX);
        let total_steps = plan.steps_before(exp.train.epochs).min(max_steps);
        let progress = Progress::new(
            args.progress && rank == 0,
            total_steps as u64,
            state.step as u64,
            &run.name,
        );
        let val = if split.val.is_empty() {
            "no validation split (data.val_fraction is 0)".to_string()
        } else {
            format!("{} val pairs", split.val.len())
        };
        let procs = if world > 1 {
            let lr = match exp.train.lr_scaling {
                LrScaling::None => String::new(),
                LrScaling::Linear => format!(", lr {:e} = {world} x train.lr", schedule.lr),
            };
            let batch = plan.stages()[0].batch_size * exp.train.accumulate * world;
            let first = if plan.stages().len() > 1 { " in the first stage" } else { "" };
            format!(" x {world} processes (global batch {batch}{first}{lr})")
        } else {
            String::new()
        };
        say(format!(
            "run {}: {} train pairs, {val}, {spe} steps/epoch{}, {} parameters, {device:?}{procs}; logs {}, weights {}",
            run.name,
            split.train.len(),
            if plan.stages().len() > 1 { " in the first stage" } else { "" },
            step.vs.variables().values().map(|t| t.numel()).sum::<usize>(),
            run.logs.display(),
            run.weights.display()
        ));
        Ok(Trainer {
            exp,
            device,
            run,
            state,
            step,
            loaders,
            plan,
            ema,
            val_items,
            val_kinds,
            schedule,
            tb,
            dataset,
            progress,
            stop,
            stop_after: None,
            group,
        })
    }

    /// Whether to stop before the next step: at once with one process; with several, once the
    /// step they agreed on through the store is done ([`ProcessGroup::propose_stop`]).
    fn should_stop(&mut self) -> Result<bool> {
        let Some(g) = &self.group else {
            return Ok(self.stop.is_stopped());
        };
        if self.stop_after.is_none() {
            self.stop_after = if self.stop.is_stopped() {
                Some(g.propose_stop(self.state.step + 1)?)
            } else {
                g.agreed_stop()?
            };
        }
        Ok(self.stop_after.is_some_and(|s| self.state.step >= s))
    }

    /// Whether this process writes the run's files.
    pub(super) fn writes(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.rank == 0)
    }

    /// Trains to the end (epochs or `max_steps`) or until stopped; `last` then holds the final
    /// weights.
    pub fn run(mut self) -> Result<TrainSummary> {
        let max_steps = self.exp.train.max_steps.unwrap_or(usize::MAX);
        let mut interrupted = false;
        let (start, mut saved_at) = (self.state.step, None);
        for epoch in self.state.epoch..self.exp.train.epochs {
            if self.state.step >= max_steps {
                break; // a resumed run that had reached max_steps: nothing left to do
            }
            let t0 = Instant::now();
            let end = self.train_epoch(epoch)?;
            if end.interrupted {
                interrupted = true;
                break; // no validation: `last` is saved below
            }
            let finished_epoch = self.state.step >= self.plan.steps_before(epoch + 1);
            if finished_epoch {
                self.state.epoch = epoch + 1;
            }
            let is_last = self.state.epoch == self.exp.train.epochs || self.state.step >= max_steps;
            self.state.finished = is_last;
            let due = finished_epoch && self.state.epoch.is_multiple_of(self.exp.train.val_every);
            // The final state is always validated, also when max_steps ends an epoch early.
            if due || is_last {
                let report = self.validate()?;
                self.end_validation(epoch, &end, report.as_ref(), t0)?;
                saved_at = Some(self.state.step);
            } else if finished_epoch {
                self.save(None, &[])?;
                saved_at = Some(self.state.step);
            }
            if let Some(tb) = &mut self.tb {
                tb.flush()?;
            }
            if is_last {
                break;
            }
        }
        if saved_at != Some(self.state.step) && self.state.step != start {
            // Stopped between validations: `last` holds the final weights, and a run stopped
            // before its first validation still gets a `best` to predict with.
            let first = self.state.best_psnr.is_none() && !self.val_kinds.is_empty();
            self.save(None, if first { &["best"] } else { &[] })?;
        }
        if let Some(tb) = &mut self.tb {
            tb.flush()?;
        }
        self.progress.finish();
        let rank = self.group.as_ref().map_or(0, |g| g.rank);
        Ok(TrainSummary { run: self.run, state: self.state, interrupted, rank })
    }

    /// The batches of one epoch (from where a resumed run stopped).
    fn train_epoch(&mut self, epoch: usize) -> Result<EpochEnd> {
        let steps = self.plan.steps(epoch);
        let max_steps = self.exp.train.max_steps.unwrap_or(usize::MAX);
        let (log_every, acc) = (self.exp.train.log_every, self.exp.train.accumulate);
        // Stages change the steps of an epoch, and with them the step unit's fractions.
        self.schedule.steps_per_epoch = steps;
        // The epoch's batch order is a function of (seed, epoch), so starting after the batches
        // already taken continues exactly where a resumed run stopped.
        let done = self.state.step.saturating_sub(self.plan.steps_before(epoch));
        let (mut running, mut epoch_loss) = (Running::new(), EpochLoss::new());
        let mut lr = self.schedule.lr_at(epoch, done);
        let loader = &self.loaders[self.plan.stage_index(epoch)];
        let mut batches = loader.epoch_from(epoch, done * acc);
        for i in done..steps {
            if self.should_stop()? {
                return Ok(EpochEnd { interrupted: true, lr, train_loss: epoch_loss.mean() });
            }
            if self.state.step >= max_steps {
                break;
            }
            lr = self.schedule.lr_at(epoch, i);
            let micro: Vec<_> = batches.by_ref().take(acc).collect();
            let dev = self.device;
            let copy = |t: &Tensor| match dev {
                // From page-locked memory the copy queues behind the GPU's work; from pageable
                // memory it would wait for all of it (a sync per step).
                // (`_pin_memory`: `pin_memory` with a device warns of deprecation every call.)
                Device::Cuda(_) => {
                    t.internal_pin_memory(dev).to_device_(dev, t.kind(), true, false)
                }
                _ => t.to_device(dev),
            };
            let pairs: Vec<(Tensor, Tensor)> =
                micro.iter().map(|b| (copy(&b.degraded), copy(&b.clean))).collect();
            let log_now = (self.state.step + 1).is_multiple_of(log_every);
            // On CPU a check costs nothing; on GPU it is a sync, so only at log points (the
            // checkpoints are written only after a check of the weights).
            let check = self.device == Device::Cpu || log_now;
            let out = self.step.step_accumulated(&pairs, lr, check)?;
            self.state.step += 1;
            self.progress.inc();
            // A scale below 1 has been halved 17 times from 2^16: every step overflows. (The
            // fused optimizer skips on the device, so the scale is read at log points only.)
            if (out.skipped || log_now && self.step.scaler.is_some())
                && self.step.loss_scale().is_some_and(|s| s < 1.0)
            {
                return Err(Error::Usage(format!(
                    "fp16 gradients overflow at every step (step {}); use train.precision: bf16 or fp32, or lower train.lr",
                    self.state.step
                )));
            }
            if out.skipped {
                continue;
            }
            if out.nonfinite {
                return Err(Error::Usage(format!(
                    "loss or gradient became NaN/inf at step {} (epoch {}); {}; lower train.lr or set train.grad_clip",
                    self.state.step,
                    epoch + 1,
                    self.last_good()
                )));
            }
            if let Some(ema) = &self.ema {
                ema.update(self.state.step)?;
            }
            let images = micro.iter().map(|b| b.kinds.len()).sum();
            running.add(&out.terms, images, micro.iter().map(|b| b.wait).sum());
            epoch_loss.add(&out.terms.total);
            if log_now {
                let mut d = running.drain();
                if let Some(g) = &self.group {
                    // Means over the ranks (each took as many steps), images over all of them.
                    let mut v: Vec<f64> = d.means.values().copied().collect();
                    v.extend([d.images_per_s, d.wait_fraction]);
                    let v = g.sum_f64(&v)?;
                    let w = g.world as f64;
                    for (m, s) in d.means.values_mut().zip(&v) {
                        *m = s / w;
                    }
                    let n = d.means.len();
                    (d.images_per_s, d.wait_fraction) = (v[n], v[n + 1] / w);
                }
                if d.means.values().any(|v| !v.is_finite()) {
                    return Err(Error::Usage(format!(
                        "loss became NaN/inf before step {}; {}; lower train.lr or set train.grad_clip",
                        self.state.step,
                        self.last_good()
                    )));
                }
                if let Some(tb) = &mut self.tb {
                    log_train(tb, self.state.step as i64, &d, lr)?;
                }
                self.progress.message(format!(
                    "ep {} loss {:.4} lr {lr:.2e} {:.1} img/s data {:.0}%",
                    epoch + 1,
                    d.means["loss"],
                    d.images_per_s,
                    d.wait_fraction * 100.0
                ));
            }
        }
        let train_loss = match &self.group {
            None => epoch_loss.mean(),
            Some(g) => {
                let (sum, n) = epoch_loss.sum_count();
                let v = g.sum_f64(&[sum, n as f64])?;
                (v[1] > 0.0).then(|| v[0] / v[1]).filter(|m| m.is_finite())
            }
        };
        Ok(EpochEnd { interrupted: false, lr, train_loss })
    }

    /// Scores the held-out pairs (none when the run has no validation split): each rank its
    /// share, then the sums are reduced, so every rank gets the whole split's means.
    fn validate(&mut self) -> Result<Option<EvalReport>> {
        if self.val_kinds.is_empty() {
            return Ok(None);
        }
        self.progress.message("validating".into());
        let keep = if self.writes() { self.exp.train.val_images } else { 0 };
        let loss = |y: &Tensor, t: &Tensor| self.step.loss.compute(y, t).total;
        // With train.ema the average is what gets scored, and so what `best` is chosen by.
        let model = self.ema.as_ref().map_or(&self.step.model, |e| &e.model);
        let mut report = evaluate(model, &self.val_items, self.device, Some(&loss), keep, |_| {});
        if let Some(g) = &self.group {
            let sums = g.sum_f64(&report.sums(&self.val_kinds))?;
            report = report.with_sums(&self.val_kinds, &sums);
        }
        if let Some(tb) = &mut self.tb {
            log_val(tb, self.state.step as i64, &report, &self.val_items)?;
        }
        Ok(Some(report))
    }

    /// After a validation point: best tracking, metrics.jsonl, the log line and the saves.
    fn end_validation(
        &mut self,
        epoch: usize,
        end: &EpochEnd,
        report: Option<&EvalReport>,
        t0: Instant,
    ) -> Result<()> {
        let (epochs, bpe) = (self.exp.train.epochs, self.plan.steps(epoch));
        // Epochs are numbered from 1 in every line, also an epoch that max_steps cut short.
        let done = self.state.step - self.plan.steps_before(epoch);
        let at = if done < bpe {
            format!("epoch {}/{epochs} ({done} of {bpe} steps)", epoch + 1)
        } else {
            format!("epoch {}/{epochs}", epoch + 1)
        };
        let improved =
            report.is_some_and(|r| self.state.best_psnr.is_none_or(|b| r.mean_psnr() > b));
        if let (true, Some(r)) = (improved, report) {
            self.state.best_psnr = Some(r.mean_psnr());
            self.state.best_epoch = Some(epoch + 1);
        }
        if self.writes() {
            self.run.append_metrics(&MetricsLine {
                epoch: epoch + 1,
                step: self.state.step,
                lr: end.lr,
                train_loss: end.train_loss,
                val: report.map(EvalReport::summary),
                epoch_seconds: t0.elapsed().as_secs_f64(),
            })?;
            let loss = end.train_loss.map_or("-".into(), |l| format!("{l:.4}"));
            self.progress.say(match report {
                Some(r) => format!(
                    "{at} step {}: train loss {loss}, val psnr {:.3} dB ssim {:.4} ({}){}",
                    self.state.step,
                    r.mean_psnr(),
                    r.mean_ssim(),
                    r.by_kind_line(),
                    if improved { " [best]" } else { "" }
                ),
                None => format!(
                    "{at} step {}: train loss {loss} (no validation split: data.val_fraction is 0)",
                    self.state.step
                ),
            });
        }
        let mut copies = Vec::new();
        if improved {
            copies.push("best".to_string());
        }
        let save_every = self.exp.train.save_every;
        if save_every > 0 && done == bpe && self.state.epoch.is_multiple_of(save_every) {
            copies.push(format!("epoch_{}", self.state.epoch));
        }
        if let Some(r) = report {
            self.rank_best(epoch + 1, r.mean_psnr(), &mut copies);
        }
        let copies: Vec<&str> = copies.iter().map(String::as_str).collect();
        self.save(report.map(val_scores).as_ref(), &copies)?;
        self.prune()
    }
}
