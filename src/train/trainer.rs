//! The [`Trainer`]: built from a resolved experiment ([`Trainer::builder`]) with every check done,
//! then epochs of [`TrainStep`]s with validation, TensorBoard and checkpoints ([`Trainer::run`]).
//! Resuming continues the same run exactly: weights, AdamW moments, schedule position, the
//! loader's per-epoch order and the fp16 loss scale.
//!
//! Launched by torchrun, every process trains a slice of each global batch and the gradients
//! are averaged; only rank 0 writes (TensorBoard, `metrics.jsonl`, checkpoints), validation is
//! sharded across the ranks and its sums reduced, so every number and the choice of `best`
//! equal a one-process run's on the same batches. All of it goes through one [`Collective`],
//! whose one-process implementation makes every exchange the identity.

use super::checkpoints::{Checkpoints, Snapshot};
use super::ema::Ema;
use super::lock::RunLock;
use super::log::{log_train, log_val, EpochLoss, Progress, Running};
use super::plan::EpochPlan;
use super::run_dir::{MetricsLine, RunDir};
use super::schedule::Schedule;
use super::step::TrainStep;
use crate::config::Experiment;
use crate::data::{Batch, Loader};
use crate::dist::Collective;
use crate::eval::{evaluate, EvalItem, EvalReport, Metric};
use crate::io::{EventWriter, SummaryWriter, TrainState, ValScores, STATE_PREFIX};
use crate::{Error, Result};
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
    pub(super) device: Device,
    pub(super) ranks: Rc<dyn Collective>,
    pub(super) step: TrainStep,
    /// The weights' moving average, when `train.ema` is on.
    pub(super) ema: Option<Ema>,
    /// One loader per stage of `plan` (one without progressive patches).
    pub(super) loaders: Vec<Loader>,
    pub(super) plan: EpochPlan,
    /// This rank's share of the validation pairs, and every type of the whole split.
    pub(super) val_items: Vec<EvalItem>,
    pub(super) val_kinds: Vec<String>,
    pub(super) schedule: Schedule,
    pub(super) state: TrainState,
    pub(super) checkpoints: Checkpoints,
    /// This process owns the run's folders while it holds this (the writer only).
    pub(super) _lock: Option<RunLock>,
    /// The writer only.
    pub(super) tb: Option<EventWriter<BufWriter<File>>>,
    pub(super) progress: Progress,
    pub(super) stop: StopHandle,
    /// The step count all ranks stop at, once one was asked to.
    pub(super) stop_after: Option<usize>,
    /// `train.max_steps` (unbounded without it).
    pub(super) max_steps: usize,
}

/// How an epoch's batches ended, when they were not interrupted.
struct EpochEnd {
    /// The learning rate of the last step taken.
    lr: f64,
    /// Mean training loss over the epoch's steps (over all ranks).
    train_loss: Option<f64>,
}

/// `t` on `device`; from page-locked memory the copy to a GPU queues behind its work, from
/// pageable memory it would wait for all of it (a sync per step).
fn to_device(t: &Tensor, device: Device) -> Tensor {
    match device {
        // (`_pin_memory`: `pin_memory` with a device warns of deprecation every call.)
        Device::Cuda(_) => t.internal_pin_memory(device).to_device_(device, t.kind(), true, false),
        _ => t.to_device(device),
    }
}

impl Trainer {
    /// Trains to the end (epochs or `max_steps`) or until stopped; `last` then holds the final
    /// weights.
    pub fn run(mut self) -> Result<TrainSummary> {
        let (start, mut saved_at, mut interrupted) = (self.state.step, None, false);
        for epoch in self.state.epoch..self.exp.train.epochs {
            if self.state.step >= self.max_steps {
                break; // a resumed run that had reached max_steps: nothing left to do
            }
            let t0 = Instant::now();
            let Some(end) = self.train_epoch(epoch)? else {
                interrupted = true;
                break; // no validation: `last` is saved below
            };
            let finished_epoch = self.state.step >= self.plan.steps_before(epoch + 1);
            if finished_epoch {
                self.state.epoch = epoch + 1;
            }
            let is_last =
                self.state.epoch == self.exp.train.epochs || self.state.step >= self.max_steps;
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
            self.flush()?;
            if is_last {
                break;
            }
        }
        if saved_at != Some(self.state.step) && self.state.step != start {
            // Stopped between validations: `last` holds the final weights, and a run stopped
            // before its first validation still gets a `best` to predict with.
            let first = self.state.best_psnr.is_none() && !self.val_kinds.is_empty();
            let copies = if first { vec!["best".to_string()] } else { Vec::new() };
            self.save(None, &copies)?;
        }
        self.flush()?;
        self.progress.finish();
        let rank = self.ranks.rank();
        let run = self.checkpoints.run.clone();
        Ok(TrainSummary { run, state: self.state, interrupted, rank })
    }

    fn flush(&mut self) -> Result<()> {
        match &mut self.tb {
            Some(tb) => tb.flush(),
            None => Ok(()),
        }
    }

    /// The batches of one epoch (from where a resumed run stopped); `None` when stopped.
    fn train_epoch(&mut self, epoch: usize) -> Result<Option<EpochEnd>> {
        let steps = self.plan.steps(epoch);
        // Stages change the steps of an epoch, and with them the step unit's fractions.
        self.schedule.steps_per_epoch = steps;
        // The epoch's batch order is a function of (seed, epoch), so starting after the batches
        // already taken continues exactly where a resumed run stopped.
        let done = self.state.step.saturating_sub(self.plan.steps_before(epoch));
        let acc = self.exp.train.accumulate;
        let loader = &self.loaders[self.plan.stage_index(epoch)];
        let mut batches = loader.epoch_from(epoch, done * acc);
        let (mut running, mut epoch_loss) = (Running::new(), EpochLoss::new());
        let mut lr = self.schedule.lr_at(epoch, done);
        for i in done..steps {
            if self.should_stop()? {
                return Ok(None);
            }
            if self.state.step >= self.max_steps {
                break;
            }
            lr = self.schedule.lr_at(epoch, i);
            let micro: Vec<Batch> = batches.by_ref().take(acc).collect();
            self.train_batch(&micro, lr, epoch, &mut running, &mut epoch_loss)?;
        }
        let (sum, n) = epoch_loss.sum_count();
        let v = self.ranks.sum_f64(&[sum, n as f64])?;
        let train_loss = (v[1] > 0.0).then(|| v[0] / v[1]).filter(|m| m.is_finite());
        Ok(Some(EpochEnd { lr, train_loss }))
    }

    /// One optimizer step on the micro-batches `micro`, with its checks, EMA and log point.
    fn train_batch(
        &mut self,
        micro: &[Batch],
        lr: f64,
        epoch: usize,
        running: &mut Running,
        epoch_loss: &mut EpochLoss,
    ) -> Result<()> {
        let pairs: Vec<(Tensor, Tensor)> = (micro.iter())
            .map(|b| (to_device(&b.degraded, self.device), to_device(&b.clean, self.device)))
            .collect();
        let log_now = (self.state.step + 1).is_multiple_of(self.exp.train.log_every);
        // On CPU a check costs nothing; on GPU it is a sync, so only at log points (the
        // checkpoints are written only after a check of the weights).
        let check = self.device == Device::Cpu || log_now;
        // The step's random draws (MoCE-IR's routing noise) are a function of the step.
        self.step.steps_taken = self.state.step as u64;
        let out = self.step.step_accumulated(&pairs, lr, check)?;
        self.state.step += 1;
        self.progress.inc();
        // A scale below 1 has been halved 17 times from 2^16: every step overflows. (The
        // fused optimizer skips on the device, so the scale is read at log points only.)
        if (out.skipped || log_now) && self.step.loss_scale().is_some_and(|s| s < 1.0) {
            return Err(Error::Diverged(format!(
                "fp16 gradients overflow at every step (step {}); use train.precision: bf16 or fp32, or lower train.lr",
                self.state.step
            )));
        }
        if out.skipped {
            return Ok(());
        }
        if out.nonfinite {
            let at = format!("at step {} (epoch {})", self.state.step, epoch + 1);
            return Err(self.checkpoints.diverged(format!("loss or gradient became NaN/inf {at}")));
        }
        if let Some(ema) = &self.ema {
            ema.update(self.state.step)?;
        }
        let images = micro.iter().map(|b| b.kinds.len()).sum();
        running.add(&out.terms, images, micro.iter().map(|b| b.wait).sum());
        epoch_loss.add(&out.terms.total);
        if log_now {
            self.log_point(running, epoch, lr)?;
        }
        Ok(())
    }

    /// The running means since the last log point, over all ranks, to TensorBoard and the bar.
    fn log_point(&mut self, running: &mut Running, epoch: usize, lr: f64) -> Result<()> {
        let d = running.drain().over(&*self.ranks)?;
        if d.means.values().any(|v| !v.is_finite()) {
            let at = format!("before step {}", self.state.step);
            return Err(self.checkpoints.diverged(format!("loss became NaN/inf {at}")));
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
        Ok(())
    }

    /// Whether to stop before the next step: at once with one process; with several, once the
    /// step they agreed on is done.
    fn should_stop(&mut self) -> Result<bool> {
        if self.stop_after.is_none() {
            self.stop_after = self.ranks.stop_at(self.stop.is_stopped(), self.state.step)?;
        }
        Ok(self.stop_after.is_some_and(|s| self.state.step >= s))
    }

    /// Scores the held-out pairs (none when the run has no validation split): each rank its
    /// share, then the sums are reduced, so every rank gets the whole split's means.
    fn validate(&mut self) -> Result<Option<EvalReport>> {
        if self.val_kinds.is_empty() {
            return Ok(None);
        }
        self.progress.message("validating".into());
        let keep = if self.ranks.writes() { self.exp.train.val_images } else { 0 };
        let loss = |y: &Tensor, t: &Tensor| self.step.loss.compute(y, t, None).total;
        // With train.ema the average is what gets scored, and so what `best` is chosen by.
        let model = self.ema.as_ref().map_or(&self.step.model, |e| &e.model);
        let report = evaluate(
            model,
            &self.val_items,
            self.device,
            Metric::Course,
            Some(&loss),
            keep,
            |_| {},
        );
        let sums = self.ranks.sum_f64(&report.sums(&self.val_kinds))?;
        let report = report.with_sums(&self.val_kinds, &sums);
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
        // Epochs are numbered from 1 in every line, also an epoch that max_steps cut short.
        let (done, bpe) = (self.state.step - self.plan.steps_before(epoch), self.plan.steps(epoch));
        let psnr = report.map(EvalReport::mean_psnr);
        let (improved, copies) =
            self.checkpoints.after_validation(&mut self.state, epoch, psnr, done == bpe);
        if self.ranks.writes() {
            self.checkpoints.run.append_metrics(&MetricsLine {
                epoch: epoch + 1,
                step: self.state.step,
                lr: end.lr,
                train_loss: end.train_loss,
                val: report.map(EvalReport::summary),
                epoch_seconds: t0.elapsed().as_secs_f64(),
            })?;
            let at = match done < bpe {
                true => {
                    format!("epoch {}/{} ({done} of {bpe} steps)", epoch + 1, self.exp.train.epochs)
                }
                false => format!("epoch {}/{}", epoch + 1, self.exp.train.epochs),
            };
            self.progress.say(super::log::epoch_line(
                &at,
                self.state.step,
                end.train_loss,
                report,
                improved,
            ));
        }
        let val = report.map(EvalReport::summary).map(|s| ValScores { psnr: s.psnr, ssim: s.ssim });
        self.save(val, &copies)?;
        self.checkpoints.prune(&self.state)
    }

    /// Saves `last` (and `copies`) with everything a resume needs.
    fn save(&mut self, val: Option<ValScores>, copies: &[String]) -> Result<()> {
        self.state.scaler = self.step.scaler.as_ref().map(|s| s.state());
        let snap = Snapshot {
            weights: self.step.vs.variables().into_iter().collect(),
            optimizer: self.step.opt.state_tensors(STATE_PREFIX),
            ema: self.ema.as_ref().map_or_else(Vec::new, Ema::tensors),
            state: &self.state,
            batches_per_epoch: self.plan.steps(self.state.epoch),
            world: self.plan.world(),
            val,
        };
        self.checkpoints.save(snap, copies)
    }
}
