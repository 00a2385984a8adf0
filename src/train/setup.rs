//! What [`super::Trainer`]'s builder does before training, one job per function: the device,
//! the data of this rank, the settings every rank must share, and opening the run (claimed and
//! locked by its writer, or resumed) once every check has passed.

use super::args::Start;
use super::checkpoints::git_commit;
use super::lock::RunLock;
use super::plan::EpochPlan;
use super::resume::load_resume;
use super::run_dir::RunDir;
use super::step::TrainStep;
use crate::config::{Experiment, LrScaling};
use crate::data::{self, Loader, LoaderConfig, PairPath, Store};
use crate::dist::{Collective, Launch};
use crate::eval::EvalItem;
use crate::io::{remove_stale_temps, DatasetFingerprint, TensorFile, TrainState};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tch::Device;

/// The experiment's device; under torchrun with CUDA, this process's GPU (`cuda:LOCAL_RANK`).
pub(super) fn train_device(exp: &Experiment, launch: Option<&Launch>) -> Result<Device> {
    let mut device = crate::device::parse_device(&exp.device)?;
    if let (Some(l), Device::Cuda(_)) = (launch, device) {
        device = crate::device::parse_device(&format!("cuda:{}", l.local_rank))?;
    }
    // Before anything touches CUDA; patches have fixed shapes.
    crate::device::prepare_fixed_shapes(device)?;
    Ok(device)
}

/// This rank's data: a loader per stage, its share of the validation pairs.
pub(super) struct TrainData {
    pub loaders: Vec<Loader>,
    pub plan: EpochPlan,
    /// This rank's share of the validation pairs (all of them with one process).
    pub val_items: Vec<EvalItem>,
    /// Every degradation type of the whole validation split (the layout of reduced sums).
    pub val_kinds: Vec<String>,
    pub train_pairs: usize,
    pub val_pairs: usize,
}

impl TrainData {
    /// Decodes `pairs`, splits them and makes the loaders of rank `rank` of `world`.
    pub fn load(exp: &Experiment, pairs: &[PairPath], rank: usize, world: usize) -> Result<Self> {
        let store = Arc::new(Store::load(pairs, exp.data.workers)?);
        let split = data::split(&store.kinds(), exp.data.val_fraction, exp.seed);
        let plan = EpochPlan::new(&exp.train, split.train.len(), world);
        let loaders = stage_loaders(exp, &store, &split.train, &plan, rank)?;
        let mut val_kinds: Vec<String> =
            split.val.iter().map(|&i| store.get(i).kind.clone()).collect();
        val_kinds.sort();
        val_kinds.dedup();
        let share = &split.val[shard(split.val.len(), rank, world)];
        let val_items = share.iter().map(|&i| EvalItem::from(store.get(i).clone())).collect();
        let (train_pairs, val_pairs) = (split.train.len(), split.val.len());
        Ok(TrainData { loaders, plan, val_items, val_kinds, train_pairs, val_pairs })
    }
}

/// One loader per stage of `plan` (one without progressive patches); each stage must have an
/// optimizer step per epoch.
fn stage_loaders(
    exp: &Experiment,
    store: &Arc<Store>,
    train: &[usize],
    plan: &EpochPlan,
    rank: usize,
) -> Result<Vec<Loader>> {
    let world = plan.world();
    let cfg = LoaderConfig { rank, world, ..LoaderConfig::from_experiment(exp) };
    let mut loaders = Vec::new();
    for (i, st) in plan.stages().iter().enumerate() {
        let (patch_size, batch_size) = (st.patch_size, st.batch_size);
        let key =
            if exp.train.stages.is_empty() { "train".into() } else { format!("train.stages[{i}]") };
        let cfg = LoaderConfig { key: key.clone(), patch_size, batch_size, ..cfg.clone() };
        loaders.push(Loader::new(store.clone(), train.to_vec(), cfg)?);
        let first = if i == 0 { 0 } else { plan.stages()[i - 1].until_epoch };
        if plan.steps(first) == 0 {
            let procs = if world > 1 { format!(" x {world} processes") } else { String::new() };
            return Err(Error::Usage(format!(
                "train.accumulate is {} but an epoch has only {} batches of {key}.batch_size {batch_size}{procs}; lower train.accumulate or the batch size",
                exp.train.accumulate,
                plan.batches(first)
            )));
        }
    }
    Ok(loaders)
}

/// Rank `rank`'s contiguous share of `n` items (rank 0 first, so it holds the panels' items).
fn shard(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    (n * rank / world)..(n * (rank + 1) / world)
}

/// What every rank of a data-parallel run must share: the experiment as resolved (less paths,
/// loader threads and labels), the device kind, the data, the start and the build.
pub(super) fn rank_settings(
    exp: &Experiment,
    device: Device,
    dataset: &DatasetFingerprint,
    start: &Start,
) -> BTreeMap<String, String> {
    let mut shared = exp.shared_settings();
    // As resolved: `auto` on one machine and `cuda` on another both mean its GPU.
    let kind = if device.is_cuda() { "cuda" } else { "cpu" };
    shared.insert("device".into(), kind.into());
    let files = format!("{} pairs, names and sizes crc32c {}", dataset.pairs, dataset.files_crc32c);
    shared.insert("dataset".into(), files);
    let start = match start {
        Start::New => "a new run".to_string(),
        // The step too: a rank reading its own stale copy of the run would resume other
        // optimizer moments than rank 0 (only the weights are broadcast).
        Start::Resume(run) => {
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

/// Where new runs go (`--logs-dir`, `--weights-dir`; `logs` and `weights` by default).
#[derive(Debug, Clone)]
pub(super) struct Roots {
    pub logs: PathBuf,
    pub weights: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots { logs: "logs".into(), weights: "weights".into() }
    }
}

/// A run opened for training.
pub(super) struct OpenRun {
    pub run: RunDir,
    pub state: TrainState,
    /// The resume point (its moving average is loaded after the join).
    pub resumed: Option<TensorFile>,
    /// Held by the writer (rank 0) to the end; `None` on other ranks or without file locks.
    pub lock: Option<RunLock>,
}

/// Opens the run. A resume point is loaded into `step` first, by every rank (it only reads);
/// then the writer (rank 0) claims a new run or locks the resumed one before anything is
/// written, and tells the others its name (or that it failed, so that they stop too).
pub(super) fn open_run(
    start: Start,
    exp: &Experiment,
    roots: &Roots,
    ranks: &dyn Collective,
    step: &mut TrainStep,
    plan: &EpochPlan,
    say: &dyn Fn(String),
) -> Result<OpenRun> {
    let resumed = match &start {
        Start::Resume(run) => Some(load_resume(run, step, plan, exp.train.lr_scaling, say)?),
        Start::New => None,
    };
    let (run, lock) = match ranks.writes() {
        true => share_outcome(ranks, claim_and_lock(&start, exp, roots))?,
        false => (named(&ranks.share_string("run", "")?, &start, roots)?, None),
    };
    let Some((state, file)) = resumed else {
        return Ok(OpenRun { run, state: TrainState::default(), resumed: None, lock });
    };
    if ranks.writes() {
        // Temp files of a process killed while saving are garbage now.
        remove_stale_temps(&run.weights);
        remove_stale_temps(&run.logs);
        run.write_config(exp)?;
    }
    Ok(OpenRun { run, state, resumed: Some(file), lock })
}

/// The writer's side: a new run claimed, locked and given its config, or the resumed one
/// locked.
fn claim_and_lock(
    start: &Start,
    exp: &Experiment,
    roots: &Roots,
) -> Result<(RunDir, Option<RunLock>)> {
    match start {
        Start::New => {
            let run = RunDir::claim(&exp.name, &roots.logs, &roots.weights)?;
            let lock = RunLock::take(&run)?;
            run.write_config(exp)?;
            Ok((run, lock))
        }
        Start::Resume(run) => Ok((run.clone(), RunLock::take(run)?)),
    }
}

/// Rank 0 tells the others the run's name, or `!` and why it could not open it.
fn share_outcome(
    ranks: &dyn Collective,
    opened: Result<(RunDir, Option<RunLock>)>,
) -> Result<(RunDir, Option<RunLock>)> {
    match opened {
        Ok((run, lock)) => {
            ranks.share_string("run", &run.name)?;
            Ok((run, lock))
        }
        Err(e) => {
            ranks.share_string("run", &format!("!{e}"))?;
            Err(e)
        }
    }
}

/// The other ranks' side: the run rank 0 opened (a new run may have a timestamp appended).
fn named(shared: &str, start: &Start, roots: &Roots) -> Result<RunDir> {
    if let Some(why) = shared.strip_prefix('!') {
        return Err(Error::Usage(format!("rank 0 could not open the run: {why}")));
    }
    Ok(match start {
        Start::Resume(run) => run.clone(),
        Start::New => RunDir::named(shared, &roots.logs, &roots.weights),
    })
}

/// The line a run starts with.
pub(super) fn announce(
    exp: &Experiment,
    run: &RunDir,
    data: &TrainData,
    parameters: usize,
    device: Device,
    lr: f64,
) -> String {
    let (plan, world) = (&data.plan, data.plan.world());
    let val = if data.val_pairs == 0 {
        "no validation split (data.val_fraction is 0)".to_string()
    } else {
        format!("{} val pairs", data.val_pairs)
    };
    let first = if plan.stages().len() > 1 { " in the first stage" } else { "" };
    let procs = if world > 1 {
        let lr = match exp.train.lr_scaling {
            LrScaling::None => String::new(),
            LrScaling::Linear => format!(", lr {lr:e} = {world} x train.lr"),
        };
        let batch = plan.stages()[0].batch_size * exp.train.accumulate * world;
        format!(" x {world} processes (global batch {batch}{first}{lr})")
    } else {
        String::new()
    };
    format!(
        "run {}: {} train pairs, {val}, {} steps/epoch{first}, {parameters} parameters, {device:?}{procs}; logs {}, weights {}",
        run.name,
        data.train_pairs,
        plan.steps(0),
        run.logs.display(),
        run.weights.display()
    )
}
