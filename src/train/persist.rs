//! Where a run's state goes and comes back from: the checkpoints (`last` as the resume point,
//! `best`, `epoch_N`) with their provenance, and loading a resume point (also one saved by
//! another number of processes).

use super::plan::EpochPlan;
use super::run_dir::RunDir;
use super::step::TrainStep;
use super::trainer::Trainer;
use crate::config::LrScaling;
use crate::io::{
    load_strict, save_checkpoint, CheckpointMeta, Provenance, Resume, TensorFile, TrainState,
    ValScores, EMA_PREFIX, STATE_PREFIX,
};
use crate::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// Whether every weight is finite (one host sync; used at save points only).
fn weights_finite(vars: &[(String, Tensor)]) -> bool {
    tch::no_grad(|| {
        let sums: Vec<Tensor> = vars.iter().map(|(_, t)| t.abs().sum(Kind::Double)).collect();
        sums.is_empty()
            || f64::try_from(Tensor::stack(&sums, 0).sum(Kind::Double)).is_ok_and(f64::is_finite)
    })
}

/// The git commit the binary was built from (`build.rs`), if it was built from a checkout.
pub(super) fn git_commit() -> Option<String> {
    option_env!("PROMPTIR_GIT_COMMIT").filter(|c| !c.is_empty()).map(String::from)
}

impl Trainer {
    /// Names the checkpoint a diverged run can go back to.
    pub(super) fn last_good(&self) -> String {
        let last = self.run.checkpoint("last");
        if last.is_file() {
            format!("the last good checkpoint is {}", last.display())
        } else {
            "no checkpoint was saved yet".to_string()
        }
    }

    pub(super) fn provenance(&self, val: Option<&ValScores>) -> Provenance {
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
    /// at any moment leaves a matching set. `copies` (`best`, `epoch_N`, `best_epoch_N`) get
    /// the weights alone (and their moving average, with `train.ema`), written once and
    /// hard-linked. Weights that became NaN/inf are never saved over good ones.
    pub(super) fn save(&mut self, val: Option<&ValScores>, copies: &[&str]) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
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
                batches_per_epoch: self.plan.steps(self.state.epoch),
                world: self.plan.world(),
            }),
            ..plain.clone()
        };
        let ema = self.ema.as_ref().map_or_else(Vec::new, |e| e.tensors());
        let mut extra = self.step.opt.state_tensors(STATE_PREFIX);
        extra.extend(ema.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
        save_checkpoint(&self.run.checkpoint("last"), &weights, &extra, &resume)?;
        if let Some((first, rest)) = copies.split_first() {
            let first = self.run.checkpoint(first);
            save_checkpoint(&first, &weights, &ema, &plain)?;
            for name in rest {
                link_or_copy(&first, &self.run.checkpoint(name))?;
            }
        }
        self.run.write_state(&self.state)
    }
}

impl Trainer {
    /// `train.keep_best`: when validation PSNR `psnr` of `epoch` (1-based) is among the best
    /// kept, adds its `best_epoch_N` to `copies` ([`Self::prune`] removes what left the list).
    pub(super) fn rank_best(&mut self, epoch: usize, psnr: f64, copies: &mut Vec<String>) {
        let keep = self.exp.train.keep_best;
        let kept = &mut self.state.kept_best;
        kept.retain(|&(e, _)| e != epoch); // an epoch redone after a resume
        if keep == 0 || (kept.len() >= keep && kept.last().is_some_and(|&(_, p)| psnr <= p)) {
            kept.truncate(keep);
            return;
        }
        copies.push(format!("best_epoch_{epoch}"));
        kept.push((epoch, psnr));
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        kept.truncate(keep);
    }

    /// Checkpoint retention, after a save: every `best_epoch_N` not among the best
    /// `train.keep_best` (when it is on), and all but the newest `train.keep_last` `epoch_N`
    /// (0: keep all). Decided from the folder, so a run killed between a save and its prune,
    /// or resumed with a smaller `keep_best`, still ends with what the keys say.
    pub(super) fn prune(&self) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        let dir = &self.run.weights;
        let names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        let numbered = |prefix: &str| -> Vec<usize> {
            let stems =
                names.iter().filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(".safetensors"));
            let mut v: Vec<usize> = stems.filter_map(|e| e.parse().ok()).collect();
            v.sort_unstable();
            v
        };
        let mut gone = Vec::new();
        if self.exp.train.keep_best > 0 {
            let kept: Vec<usize> = self.state.kept_best.iter().map(|k| k.0).collect();
            let stale = numbered("best_epoch_").into_iter().filter(|e| !kept.contains(e));
            gone.extend(stale.map(|e| self.run.checkpoint(&format!("best_epoch_{e}"))));
        }
        let keep = self.exp.train.keep_last;
        if keep > 0 {
            let epochs = numbered("epoch_");
            let old = &epochs[..epochs.len().saturating_sub(keep)];
            gone.extend(old.iter().map(|e| self.run.checkpoint(&format!("epoch_{e}"))));
        }
        for p in gone {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => {}
            }
        }
        Ok(())
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

/// Loads the resume point of `run` into `step` (every rank reads it: the run's folder must be
/// shared); returns the state to continue from, and the file (its moving average is the
/// trainer's to load). With the run's number of processes, that is
/// exactly where it stopped; with another (`world`), the global batch changes, so the position
/// in the epoch is converted to the same number of pairs seen and `say` tells what changed.
/// Everything is checked before anything is changed on disk.
pub(super) fn load_resume(
    run: &RunDir,
    step: &mut TrainStep,
    plan: &EpochPlan,
    scaling: LrScaling,
    say: &dyn Fn(String),
) -> Result<(TrainState, TensorFile)> {
    let world = plan.world();
    let path = run.checkpoint("last");
    if !path.is_file() {
        return Err(Error::Usage(format!(
            "--resume {}: {} is missing, so the run stopped before its first checkpoint; start it again without --resume",
            run.name,
            path.display()
        )));
    }
    let file = TensorFile::open(&path)?;
    let Some(resume) = CheckpointMeta::read(&file)?.resume else {
        return Err(Error::weights(
            &path,
            "has no training state in its metadata; it is not a resume point of this promptir",
        ));
    };
    let mut state = resume.state;
    let old = resume.batches_per_epoch;
    let bpe = plan.steps(state.epoch);
    // What this data, batch size, accumulation and stages give with the run's own number of
    // processes.
    let theirs = plan.with_world(resume.world);
    let (expected, before) = (theirs.steps(state.epoch), theirs.steps_before(state.epoch));
    if old != expected || state.step < before || state.step > before + old {
        let gives = if old != expected {
            format!(
                "the run has {old} steps in epoch {}, this config gives {expected}",
                state.epoch + 1
            )
        } else {
            format!(
                "the run stopped at step {} in epoch {}, but this config has {before} steps before that epoch",
                state.step,
                state.epoch + 1
            )
        };
        return Err(Error::Usage(format!(
            "--resume {}: {gives}; resume with the run's train.batch_size, accumulate, stages and data",
            run.name
        )));
    }
    if resume.world != world {
        // The same pairs per process and step, so an epoch has world/old-world times the steps.
        let done = (state.step - before) * resume.world / world;
        let from = state.step;
        state.step = plan.steps_before(state.epoch) + done;
        let lr = match scaling {
            LrScaling::None => "weights, optimizer state and schedule carry over",
            LrScaling::Linear => "weights and optimizer state carry over, and the learning rate follows the new count (train.lr_scaling: linear)",
        };
        say(format!(
            "--resume {}: trained with {} process(es), now {world}: the global batch is the batch size x {world} instead of x {}, an epoch has {bpe} steps instead of {old}, and step {from} continues as step {} (same epoch, same pairs seen); {lr}",
            run.name,
            resume.world,
            resume.world,
            state.step
        ));
    }
    // The moving average (`ema.*`) is the trainer's to load.
    let skip = |k: &str| k.starts_with(STATE_PREFIX) || k.starts_with(EMA_PREFIX);
    load_strict(&step.vs, &file, &skip)?;
    step.opt.load_state(&file, STATE_PREFIX)?;
    step.resume_scaler(state.scaler.clone());
    Ok((state, file))
}
