//! The [`Trainer`]: a run set up with every check done ([`Trainer::setup`]), then epochs of
//! [`TrainStep`]s with validation, TensorBoard and checkpoints ([`Trainer::run`]). Resuming
//! continues the same run exactly: weights, AdamW moments, schedule position, the loader's
//! per-epoch order and the fp16 loss scale.

use super::args::{resolve, Plan, TrainArgs};
use super::log::{log_train, log_val, EpochLoss, Progress, Running};
use super::run_dir::{MetricsLine, RunDir};
use super::schedule::Schedule;
use super::step::TrainStep;
use crate::config::Experiment;
use crate::data::{self, fingerprint, Loader, LoaderConfig, Store};
use crate::eval::{evaluate, EvalItem, EvalReport};
use crate::io::{
    load_strict, remove_stale_temps, save_checkpoint, write_atomic_bytes, CheckpointMeta,
    DatasetFingerprint, EventWriter, Provenance, Resume, SummaryWriter, TensorFile, TrainState,
    ValScores, STATE_PREFIX,
};
use crate::{Error, Result};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Asks a running [`Trainer`] to stop cleanly: it saves `last` at the next step boundary and
/// returns. The CLI's Ctrl-C handler holds a clone.
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
}

/// A run ready to train.
pub struct Trainer {
    exp: Experiment,
    device: Device,
    run: RunDir,
    state: TrainState,
    step: TrainStep,
    loader: Loader,
    val_items: Vec<EvalItem>,
    schedule: Schedule,
    tb: EventWriter<BufWriter<File>>,
    dataset: DatasetFingerprint,
    progress: Progress,
    stop: StopHandle,
}

/// How an epoch's batches ended.
struct EpochEnd {
    interrupted: bool,
    /// The learning rate of the last step taken.
    lr: f64,
    train_loss: Option<f64>,
}

/// The git commit the binary was built from (`build.rs`), if it was built from a checkout.
fn git_commit() -> Option<String> {
    option_env!("PROMPTIR_GIT_COMMIT").filter(|c| !c.is_empty()).map(String::from)
}

fn to_items(store: &Store, indices: &[usize]) -> Vec<EvalItem> {
    indices.iter().map(|&i| EvalItem::from(store.get(i).clone())).collect()
}

/// Whether every weight is finite (one host sync; used at save points only).
fn weights_finite(vars: &[(String, Tensor)]) -> bool {
    tch::no_grad(|| {
        let sums: Vec<Tensor> = vars.iter().map(|(_, t)| t.abs().sum(Kind::Double)).collect();
        sums.is_empty()
            || f64::try_from(Tensor::stack(&sums, 0).sum(Kind::Double)).is_ok_and(f64::is_finite)
    })
}

fn val_scores(r: &EvalReport) -> ValScores {
    let s = r.summary();
    ValScores { psnr: s.psnr, ssim: s.ssim }
}

impl Trainer {
    /// Resolves the experiment and checks everything a user can get wrong (config, VGG file,
    /// data, patch size, resume point) before anything is written; then creates or reopens the
    /// run's folders.
    pub fn setup(args: &TrainArgs, stop: StopHandle) -> Result<Trainer> {
        let (exp, plan) = resolve(args)?;
        let device = crate::device::parse_device(&exp.device)?;
        if device.is_cuda() {
            tch::Cuda::cudnn_set_benchmark(true); // fixed patch shapes: tune once per shape
        }
        // The loss first (inside TrainStep): a missing VGG file stops us before minutes of decoding.
        let mut step = TrainStep::new(&exp, device)?;
        let pairs = data::scan_pairs(&exp.data.root)?;
        let dataset = fingerprint(&exp.data.root, &pairs);
        let store = Arc::new(Store::load(&pairs, exp.data.workers)?);
        let split = data::split(&store.kinds(), exp.data.val_fraction, exp.seed);
        let loader =
            Loader::new(store.clone(), split.train.clone(), LoaderConfig::from_experiment(&exp))?;
        let val_items = to_items(&store, &split.val);
        let bpe = loader.batches_per_epoch();
        // Only now, with every input checked, is anything written.
        let (run, state) = match plan {
            Plan::New => {
                (RunDir::create(&exp, &args.logs_dir, &args.weights_dir)?, TrainState::default())
            }
            Plan::Resume(run) => {
                let state = load_resume(&run, &mut step, bpe)?;
                // Temp files of a process killed while saving are garbage now.
                remove_stale_temps(&run.weights);
                remove_stale_temps(&run.logs);
                write_atomic_bytes(&run.config_path(), exp.to_yaml().as_bytes())?;
                (run, state)
            }
        };
        let schedule = Schedule::from_config(&exp, bpe);
        let tb = EventWriter::create(&run.logs)?;
        let max_steps = exp.train.max_steps.unwrap_or(usize::MAX);
        let total_steps = (exp.train.epochs * bpe).min(max_steps);
        let progress =
            Progress::new(args.progress, total_steps as u64, state.step as u64, &run.name);
        let val = if split.val.is_empty() {
            "no validation split (data.val_fraction is 0)".to_string()
        } else {
            format!("{} val pairs", split.val.len())
        };
        progress.say(format!(
            "run {}: {} train pairs, {val}, {bpe} steps/epoch, {} parameters, {:?}; logs {}, weights {}",
            run.name,
            split.train.len(),
            step.vs.variables().values().map(|t| t.numel()).sum::<usize>(),
            device,
            run.logs.display(),
            run.weights.display()
        ));
        Ok(Trainer {
            exp,
            device,
            run,
            state,
            step,
            loader,
            val_items,
            schedule,
            tb,
            dataset,
            progress,
            stop,
        })
    }

    /// Trains to the end (epochs or `max_steps`) or until stopped; `last` then holds the final
    /// weights.
    pub fn run(mut self) -> Result<TrainSummary> {
        let bpe = self.loader.batches_per_epoch();
        let max_steps = self.exp.train.max_steps.unwrap_or(usize::MAX);
        let mut interrupted = false;
        let mut saved_at = None;
        for epoch in self.state.epoch..self.exp.train.epochs {
            let t0 = Instant::now();
            let end = self.train_epoch(epoch)?;
            if end.interrupted {
                interrupted = true;
                break; // no validation: `last` is saved below
            }
            let finished_epoch = self.state.step >= (epoch + 1) * bpe;
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
            self.tb.flush()?;
            if is_last {
                break;
            }
        }
        if saved_at != Some(self.state.step) {
            // Stopped between validations: `last` holds the final weights, and a run stopped
            // before its first validation still gets a `best` to predict with.
            let first = self.state.best_psnr.is_none() && !self.val_items.is_empty();
            self.save(None, if first { &["best"] } else { &[] })?;
        }
        self.tb.flush()?;
        self.progress.finish();
        Ok(TrainSummary { run: self.run, state: self.state, interrupted })
    }

    /// The batches of one epoch (from where a resumed run stopped).
    fn train_epoch(&mut self, epoch: usize) -> Result<EpochEnd> {
        let bpe = self.loader.batches_per_epoch();
        let max_steps = self.exp.train.max_steps.unwrap_or(usize::MAX);
        let log_every = self.exp.train.log_every;
        // The epoch's batch order is a function of (seed, epoch), so skipping the batches
        // already taken continues exactly where a resumed run stopped.
        let skip = self.state.step.saturating_sub(epoch * bpe);
        let (mut running, mut epoch_loss) = (Running::new(), EpochLoss::new());
        let mut lr = self.schedule.lr_at(epoch, skip);
        for (i, batch) in self.loader.epoch(epoch).enumerate().skip(skip) {
            if self.stop.is_stopped() {
                return Ok(EpochEnd { interrupted: true, lr, train_loss: epoch_loss.mean() });
            }
            if self.state.step >= max_steps {
                break;
            }
            lr = self.schedule.lr_at(epoch, i);
            let x = batch.degraded.to_device(self.device);
            let y = batch.clean.to_device(self.device);
            let log_now = (self.state.step + 1).is_multiple_of(log_every);
            // On CPU a check costs nothing; on GPU it is a sync, so only at log points (the
            // checkpoints are written only after a check of the weights).
            let check = self.device == Device::Cpu || log_now;
            let out = self.step.step(&x, &y, lr, check)?;
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
            running.add(&out.terms, batch.kinds.len(), batch.wait);
            epoch_loss.add(&out.terms.total);
            if log_now {
                let d = running.drain();
                if d.means.values().any(|v| !v.is_finite()) {
                    return Err(Error::Usage(format!(
                        "loss became NaN/inf before step {}; {}; lower train.lr or set train.grad_clip",
                        self.state.step,
                        self.last_good()
                    )));
                }
                log_train(&mut self.tb, self.state.step as i64, &d, lr)?;
                self.progress.message(format!(
                    "ep {} loss {:.4} lr {lr:.2e} {:.1} img/s data {:.0}%",
                    epoch + 1,
                    d.means["loss"],
                    d.images_per_s,
                    d.wait_fraction * 100.0
                ));
            }
        }
        Ok(EpochEnd { interrupted: false, lr, train_loss: epoch_loss.mean() })
    }

    /// Scores the held-out pairs (none when the run has no validation split).
    fn validate(&mut self) -> Result<Option<EvalReport>> {
        if self.val_items.is_empty() {
            return Ok(None);
        }
        self.progress.message("validating".into());
        let keep = self.exp.train.val_images;
        let loss = |y: &Tensor, t: &Tensor| self.step.loss.compute(y, t).total;
        let report =
            evaluate(&self.step.model, &self.val_items, self.device, Some(&loss), keep, |_| {});
        log_val(&mut self.tb, self.state.step as i64, &report, &self.val_items)?;
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
        let (epochs, bpe) = (self.exp.train.epochs, self.loader.batches_per_epoch());
        // Epochs are numbered from 1 in every line, also an epoch that max_steps cut short.
        let done = self.state.step - epoch * bpe;
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
        let mut copies = Vec::new();
        if improved {
            copies.push("best".to_string());
        }
        let save_every = self.exp.train.save_every;
        if save_every > 0 && done == bpe && self.state.epoch.is_multiple_of(save_every) {
            copies.push(format!("epoch_{}", self.state.epoch));
        }
        let copies: Vec<&str> = copies.iter().map(String::as_str).collect();
        self.save(report.map(val_scores).as_ref(), &copies)
    }

    /// Names the checkpoint a diverged run can go back to.
    fn last_good(&self) -> String {
        let last = self.run.checkpoint("last");
        if last.is_file() {
            format!("the last good checkpoint is {}", last.display())
        } else {
            "no checkpoint was saved yet".to_string()
        }
    }

    fn provenance(&self, val: Option<&ValScores>) -> Provenance {
        Provenance {
            run: self.run.name.clone(),
            experiment: self.exp.to_yaml(),
            seed: self.exp.seed,
            val_fraction: self.exp.data.val_fraction,
            epoch: self.state.epoch,
            step: self.state.step,
            val: val.cloned(),
            git_commit: git_commit(),
            dataset: self.dataset.clone(),
        }
    }

    /// The one place where checkpoints are written. `last.safetensors` is the resume point:
    /// weights, optimizer state and training state in one file, replaced atomically, so a kill
    /// at any moment leaves a matching set. `copies` (`best`, `epoch_N`) get the weights alone,
    /// written once and hard-linked. Weights that became NaN/inf are never saved over good ones.
    fn save(&mut self, val: Option<&ValScores>, copies: &[&str]) -> Result<()> {
        let weights: Vec<(String, Tensor)> = self.step.vs.variables().into_iter().collect();
        if !weights_finite(&weights) {
            return Err(Error::Usage(format!(
                "weights became NaN/inf by step {} and were not saved; {}; lower train.lr or set train.grad_clip",
                self.state.step,
                self.last_good()
            )));
        }
        self.state.scaler = self.step.scaler.as_ref().map(|s| s.state());
        let plain = CheckpointMeta {
            provenance: Some(self.provenance(val)),
            ..CheckpointMeta::new(self.exp.model.clone())
        };
        let resume = CheckpointMeta {
            resume: Some(Resume {
                state: self.state.clone(),
                batches_per_epoch: self.loader.batches_per_epoch(),
            }),
            ..plain.clone()
        };
        let moments = self.step.opt.state_tensors(STATE_PREFIX);
        save_checkpoint(&self.run.checkpoint("last"), &weights, &moments, &resume)?;
        if let Some((first, rest)) = copies.split_first() {
            let first = self.run.checkpoint(first);
            save_checkpoint(&first, &weights, &[], &plain)?;
            for name in rest {
                link_or_copy(&first, &self.run.checkpoint(name))?;
            }
        }
        self.run.write_state(&self.state)
    }
}

/// `to` becomes the same file as `from` (a hard link; a copy where links are not supported),
/// replacing it atomically.
fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension(format!("link-tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(|e| Error::io(to, e))?;
    }
    std::fs::rename(&tmp, to).map_err(|e| Error::io(to, e))
}

/// Loads the resume point of `run` into `step`; returns the state it was saved with.
/// Everything is checked before anything is changed on disk.
fn load_resume(run: &RunDir, step: &mut TrainStep, batches_per_epoch: usize) -> Result<TrainState> {
    let (path, legacy) = (run.checkpoint("last"), run.legacy_resume_path());
    let current = if path.is_file() { Some(TensorFile::open(&path)?) } else { None };
    let current_resume = match &current {
        Some(f) => CheckpointMeta::read(f)?.resume,
        None => None,
    };
    let (file, resume, prefix) = match (current, current_resume) {
        (Some(file), Some(resume)) => (file, resume, STATE_PREFIX),
        // Runs saved before `last` held the resume point kept it in last.optim.safetensors,
        // optimizer entries unprefixed beside the weights.
        _ if legacy.is_file() => {
            let file = TensorFile::open(&legacy)?;
            let resume = Resume::read_legacy(&file)?;
            (file, resume, "")
        }
        (Some(_), None) => {
            return Err(Error::weights(
                &path,
                "has no training state in its metadata; it is not a resume point of this promptir",
            ))
        }
        (None, _) => {
            return Err(Error::Usage(format!(
                "--resume {}: {} is missing, so the run stopped before its first checkpoint; start it again without --resume",
                run.name,
                path.display()
            )))
        }
    };
    let state = resume.state;
    if resume.batches_per_epoch != batches_per_epoch
        || state.step < state.epoch * batches_per_epoch
        || state.step > (state.epoch + 1) * batches_per_epoch
    {
        return Err(Error::Usage(format!(
            "--resume {}: the run has {} batches per epoch and stopped at step {} (epoch {}), this config gives {batches_per_epoch}; resume with the run's train.batch_size and data",
            run.name, resume.batches_per_epoch, state.step, state.epoch
        )));
    }
    load_strict(&step.vs, &file, &|k| k.strip_prefix(prefix).is_some_and(is_optimizer_entry))?;
    step.opt.load_state(&file, prefix)?;
    step.resume_scaler(state.scaler.clone());
    Ok(state)
}

/// An AdamW entry name without its prefix: `exp_avg.<p>`, `exp_avg_sq.<p>` or `step.<p>`.
fn is_optimizer_entry(name: &str) -> bool {
    ["exp_avg.", "exp_avg_sq.", "step."].iter().any(|p| name.starts_with(p))
}
