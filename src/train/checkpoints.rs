//! The checkpoint policy, in one object: what a save writes (`last` as the resume point, the
//! weights-only copies `best`, `epoch_N`, `best_epoch_N`), which copies a validation earns, and
//! retention (`train.keep_best`, `train.keep_last`). Only the process that writes the run
//! (rank 0) touches the folder; the others call the same methods and nothing happens.

use super::run_dir::RunDir;
use crate::config::Experiment;
use crate::io::{
    save_checkpoint, CheckpointMeta, DatasetFingerprint, Provenance, Resume, TrainState, ValScores,
};
use crate::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// What a save writes, gathered by the trainer.
pub(super) struct Snapshot<'a> {
    pub weights: Vec<(String, Tensor)>,
    /// The optimizer's state entries (resume point only).
    pub optimizer: Vec<(String, Tensor)>,
    /// The moving average's entries, when `train.ema` is on (every file).
    pub ema: Vec<(String, Tensor)>,
    pub state: &'a TrainState,
    /// Steps in the current epoch and processes: what a resume checks.
    pub batches_per_epoch: usize,
    pub world: usize,
    /// The validation the save follows, if any.
    pub val: Option<ValScores>,
}

pub(super) struct Checkpoints {
    pub run: RunDir,
    exp: Experiment,
    dataset: DatasetFingerprint,
    writes: bool,
}

/// The git commit the binary was built from (`build.rs`), if it was built from a checkout.
pub(super) fn git_commit() -> Option<String> {
    option_env!("PROMPTIR_GIT_COMMIT").filter(|c| !c.is_empty()).map(String::from)
}

impl Checkpoints {
    /// `writes`: whether this process writes the run (rank 0).
    pub fn new(run: RunDir, exp: &Experiment, dataset: DatasetFingerprint, writes: bool) -> Self {
        Checkpoints { run, exp: exp.clone(), dataset, writes }
    }

    /// Names the checkpoint a diverged run can go back to.
    pub fn last_good(&self) -> String {
        let last = self.run.checkpoint("last");
        if last.is_file() {
            format!("the last good checkpoint is {}", last.display())
        } else {
            "no checkpoint was saved yet".to_string()
        }
    }

    /// The run diverged: `what`, where to go back to and what to change.
    pub fn diverged(&self, what: String) -> Error {
        Error::Diverged(format!(
            "{what}; {}; lower train.lr or set train.grad_clip",
            self.last_good()
        ))
    }

    /// After a validation of `epoch` (0-based; `psnr` its mean, `whole` whether the epoch was
    /// completed): records a new best in `state` and returns whether it was one, with the
    /// copies the save should write (`best`, `epoch_N` by `train.save_every`, `best_epoch_N`
    /// by `train.keep_best`).
    pub fn after_validation(
        &self,
        state: &mut TrainState,
        epoch: usize,
        psnr: Option<f64>,
        whole: bool,
    ) -> (bool, Vec<String>) {
        let improved = psnr.is_some_and(|p| state.best_psnr.is_none_or(|b| p > b));
        let mut copies = Vec::new();
        if improved {
            (state.best_psnr, state.best_epoch) = (psnr, Some(epoch + 1));
            copies.push("best".to_string());
        }
        let save_every = self.exp.train.save_every;
        if save_every > 0 && whole && state.epoch.is_multiple_of(save_every) {
            copies.push(format!("epoch_{}", state.epoch));
        }
        if let Some(p) = psnr {
            if self.rank_best(state, epoch + 1, p) {
                copies.push(format!("best_epoch_{}", epoch + 1));
            }
        }
        (improved, copies)
    }

    /// `train.keep_best`: whether validation PSNR `psnr` of `epoch` (1-based) is among the
    /// best kept (then listed in `state.kept_best`; [`Self::prune`] removes what left it).
    fn rank_best(&self, state: &mut TrainState, epoch: usize, psnr: f64) -> bool {
        let keep = self.exp.train.keep_best;
        let kept = &mut state.kept_best;
        kept.retain(|&(e, _)| e != epoch); // an epoch redone after a resume
        if keep == 0 || (kept.len() >= keep && kept.last().is_some_and(|&(_, p)| psnr <= p)) {
            kept.truncate(keep);
            return false;
        }
        kept.push((epoch, psnr));
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        kept.truncate(keep);
        true
    }

    /// The one place where checkpoints are written. `last.safetensors` is the resume point:
    /// weights, optimizer state and training state in one file, replaced atomically, so a kill
    /// at any moment leaves a matching set. `copies` get the weights alone (and their moving
    /// average), written once and hard-linked. Weights that became NaN/inf are never saved
    /// over good ones.
    pub fn save(&self, snap: Snapshot, copies: &[String]) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        if !weights_finite(&snap.weights) {
            let step = snap.state.step;
            return Err(
                self.diverged(format!("weights became NaN/inf by step {step} and were not saved"))
            );
        }
        let plain = CheckpointMeta {
            provenance: Some(self.provenance(snap.state, snap.val)),
            ..CheckpointMeta::new(self.exp.model.clone())
        };
        let resume = CheckpointMeta {
            resume: Some(Resume {
                state: snap.state.clone(),
                batches_per_epoch: snap.batches_per_epoch,
                world: snap.world,
            }),
            ..plain.clone()
        };
        let mut extra = snap.optimizer;
        extra.extend(snap.ema.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
        save_checkpoint(&self.run.checkpoint("last"), &snap.weights, &extra, &resume)?;
        if let Some((first, rest)) = copies.split_first() {
            let first = self.run.checkpoint(first);
            save_checkpoint(&first, &snap.weights, &snap.ema, &plain)?;
            for name in rest {
                link_or_copy(&first, &self.run.checkpoint(name))?;
            }
        }
        self.run.write_state(snap.state)
    }

    fn provenance(&self, state: &TrainState, val: Option<ValScores>) -> Provenance {
        Provenance {
            run: self.run.name.clone(),
            experiment: self.exp.to_yaml(),
            seed: self.exp.seed,
            val_fraction: self.exp.data.val_fraction,
            epoch: state.epoch,
            step: state.step,
            val,
            git_commit: git_commit(),
            dataset: self.dataset.clone(),
        }
    }

    /// Retention, after a save: every `best_epoch_N` not among the best `train.keep_best`
    /// (when it is on), and all but the newest `train.keep_last` `epoch_N` (0: keep all).
    /// Decided from the folder, so a run killed between a save and its prune, or resumed with
    /// a smaller `keep_best`, still ends with what the keys say.
    pub fn prune(&self, state: &TrainState) -> Result<()> {
        if !self.writes {
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
            let kept: Vec<usize> = state.kept_best.iter().map(|k| k.0).collect();
            let stale = numbered("best_epoch_").into_iter().filter(|e| !kept.contains(e));
            gone.extend(stale.map(|e| format!("best_epoch_{e}")));
        }
        let keep = self.exp.train.keep_last;
        if keep > 0 {
            let epochs = numbered("epoch_");
            let old = &epochs[..epochs.len().saturating_sub(keep)];
            gone.extend(old.iter().map(|e| format!("epoch_{e}")));
        }
        for p in gone.iter().map(|name| self.run.checkpoint(name)) {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Whether every weight is finite (one host sync; used at save points only).
fn weights_finite(vars: &[(String, Tensor)]) -> bool {
    tch::no_grad(|| {
        let sums: Vec<Tensor> = vars.iter().map(|(_, t)| t.abs().sum(Kind::Double)).collect();
        sums.is_empty()
            || f64::try_from(Tensor::stack(&sums, 0).sum(Kind::Double)).is_ok_and(f64::is_finite)
    })
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
