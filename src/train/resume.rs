//! Loading a resume point: the weights, optimizer moments, schedule position and fp16 scale of
//! `last.safetensors`, also one saved by another number of processes.

use super::plan::EpochPlan;
use super::run_dir::RunDir;
use super::step::TrainStep;
use crate::config::LrScaling;
use crate::io::{
    load_strict, CheckpointMeta, Resume, TensorFile, TrainState, EMA_PREFIX, STATE_PREFIX,
};
use crate::{Error, Result};

/// Loads the resume point of `run` into `step` (every rank reads it: the run's folder must be
/// shared); returns the state to continue from, and the file (its moving average is the
/// trainer's to load). With the run's number of processes, that is exactly where it stopped;
/// with another, the position is converted ([`convert_world`]) and `say` tells what changed.
/// Everything is checked before anything is changed on disk.
pub(super) fn load_resume(
    run: &RunDir,
    step: &mut TrainStep,
    plan: &EpochPlan,
    scaling: LrScaling,
    say: &dyn Fn(String),
) -> Result<(TrainState, TensorFile)> {
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
    check_position(run, &resume, plan)?;
    let mut state = resume.state.clone();
    if resume.world != plan.world() {
        state.step = convert_world(run, &resume, plan, scaling, say);
    }
    // The moving average (`ema.*`) is the trainer's to load.
    let skip = |k: &str| k.starts_with(STATE_PREFIX) || k.starts_with(EMA_PREFIX);
    load_strict(&step.vs, &file, &skip)?;
    step.opt.load_state(&file, STATE_PREFIX)?;
    step.resume_scaler(state.scaler.clone());
    Ok((state, file))
}

/// Refuses a resume point whose epoch does not have the steps this data, batch size,
/// accumulation and stages give with the run's own number of processes.
fn check_position(run: &RunDir, resume: &Resume, plan: &EpochPlan) -> Result<()> {
    let (state, old) = (&resume.state, resume.batches_per_epoch);
    let theirs = plan.with_world(resume.world);
    let (expected, before) = (theirs.steps(state.epoch), theirs.steps_before(state.epoch));
    if old == expected && state.step >= before && state.step <= before + old {
        return Ok(());
    }
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
    Err(Error::Usage(format!(
        "--resume {}: {gives}; resume with the run's train.batch_size, accumulate, stages and data",
        run.name
    )))
}

/// The step a run saved by `resume.world` processes continues at with `plan`'s: the same pairs
/// per process and step, so an epoch has world/old-world times the steps, and the position in
/// it is the same number of pairs seen.
fn convert_world(
    run: &RunDir,
    resume: &Resume,
    plan: &EpochPlan,
    scaling: LrScaling,
    say: &dyn Fn(String),
) -> usize {
    let (state, world) = (&resume.state, plan.world());
    let before = plan.with_world(resume.world).steps_before(state.epoch);
    let done = (state.step - before) * resume.world / world;
    let step = plan.steps_before(state.epoch) + done;
    let lr = match scaling {
        LrScaling::None => "weights, optimizer state and schedule carry over",
        LrScaling::Linear => "weights and optimizer state carry over, and the learning rate follows the new count (train.lr_scaling: linear)",
    };
    say(format!(
        "--resume {}: trained with {} process(es), now {world}: the global batch is the batch size x {world} instead of x {}, an epoch has {} steps instead of {}, and step {} continues as step {step} (same epoch, same pairs seen); {lr}",
        run.name,
        resume.world,
        resume.world,
        plan.steps(state.epoch),
        resume.batches_per_epoch,
        state.step,
    ));
    step
}
