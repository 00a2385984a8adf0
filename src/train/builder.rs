//! How a [`Trainer`] is made: from the resolved experiment and where it starts, with an
//! optional torchrun launch, every check done before anything is written.

use super::args::{resolve, Start, TrainArgs};
use super::checkpoints::Checkpoints;
use super::ema::Ema;
use super::log::Progress;
use super::schedule::Schedule;
use super::setup::{announce, open_run, rank_settings, train_device, OpenRun, Roots, TrainData};
use super::step::TrainStep;
use super::trainer::{StopHandle, Trainer};
use crate::config::Experiment;
use crate::data::{self, fingerprint};
use crate::dist::{self, Collective, Group, Launch, ProcessGroup, Single};
use crate::io::EventWriter;
use crate::Result;
use std::path::PathBuf;
use std::rc::Rc;
use tch::Tensor;

impl Trainer {
    /// A trainer for `exp` starting at `start` ([`super::resolve`] gives both from the CLI's
    /// arguments).
    pub fn builder(exp: Experiment, start: Start) -> TrainerBuilder {
        TrainerBuilder {
            exp,
            start,
            launch: None,
            roots: Roots::default(),
            progress: true,
            stop: StopHandle::new(),
        }
    }

    /// What `promptir train` was asked: the arguments resolved (nothing written yet) and the
    /// launch read from torchrun's environment.
    pub fn from_args(args: &TrainArgs) -> Result<TrainerBuilder> {
        let (exp, start) = resolve(args)?;
        Ok(Trainer::builder(exp, start)
            .launch(Launch::from_env()?)
            .dirs(&args.logs_dir, &args.weights_dir)
            .progress(args.progress))
    }
}

/// How a [`Trainer`] is made: the resolved experiment and where it starts, then the optional
/// parts (a torchrun launch, output roots, progress bar, stop handle).
pub struct TrainerBuilder {
    exp: Experiment,
    start: Start,
    launch: Option<Launch>,
    roots: Roots,
    progress: bool,
    stop: StopHandle,
}

impl TrainerBuilder {
    /// One process of a data-parallel run (`None`: the only process).
    pub fn launch(mut self, launch: Option<Launch>) -> Self {
        self.launch = launch;
        self
    }
    /// Where a new run's folders go (default `logs/` and `weights/`).
    pub fn dirs(mut self, logs: impl Into<PathBuf>, weights: impl Into<PathBuf>) -> Self {
        self.roots = Roots { logs: logs.into(), weights: weights.into() };
        self
    }
    /// A progress bar on a terminal (rank 0), on by default.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }
    pub fn stop(mut self, stop: StopHandle) -> Self {
        self.stop = stop;
        self
    }

    /// Checks everything a user can get wrong (device, VGG file, launch, data, patch size,
    /// resume point) before anything is written; then the writer opens the run.
    pub fn build(self) -> Result<Trainer> {
        let TrainerBuilder { exp, start, launch, roots, progress, stop } = self;
        let device = train_device(&exp, launch.as_ref())?;
        // The loss first (inside TrainStep): a missing VGG file stops us before minutes of decoding.
        let mut step = TrainStep::new(&exp, device)?;
        let ranks: Rc<dyn Collective> = match &launch {
            Some(l) => {
                let group = ProcessGroup::join(l, device, dist::timeout())?;
                Rc::new(Group::new(group, exp.train.bucket_mb))
            }
            None => Rc::new(Single),
        };
        let pairs = data::scan_pairs(&exp.data.root)?;
        let dataset = fingerprint(&exp.data.root, &pairs);
        // Before minutes of decoding: every rank must train the same run on the same data.
        ranks.check_same_settings(&rank_settings(&exp, device, &dataset, &start))?;
        let data = TrainData::load(&exp, &pairs, ranks.rank(), ranks.world())?;
        let writes = ranks.writes();
        let say = |s: String| {
            if writes {
                eprintln!("{s}")
            }
        };
        let opened = open_run(start, &exp, &roots, &*ranks, &mut step, &data.plan, &say)?;
        // After the resume, so every rank starts from rank 0's weights and moments.
        step.join(ranks.clone())?;
        let ema = moving_average(&exp, &step, &opened, &say)?;
        let schedule = Schedule::from_config(&exp, data.plan.steps(0), ranks.world());
        let tb = if writes { Some(EventWriter::create(&opened.run.logs)?) } else { None };
        let max_steps = exp.train.max_steps.unwrap_or(usize::MAX);
        let total = data.plan.steps_before(exp.train.epochs).min(max_steps) as u64;
        let bar =
            Progress::new(progress && writes, total, opened.state.step as u64, &opened.run.name);
        let parameters = step.vs.variables().values().map(Tensor::numel).sum();
        say(announce(&exp, &opened.run, &data, parameters, device, schedule.lr));
        Ok(Trainer {
            checkpoints: Checkpoints::new(opened.run, &exp, dataset, writes),
            _lock: opened.lock,
            state: opened.state,
            loaders: data.loaders,
            plan: data.plan,
            val_items: data.val_items,
            val_kinds: data.val_kinds,
            exp,
            device,
            ranks,
            step,
            ema,
            schedule,
            tb,
            progress: bar,
            stop,
            stop_after: None,
            max_steps,
        })
    }
}

/// `train.ema`'s moving average, continued from the resume point when it holds one.
fn moving_average(
    exp: &Experiment,
    step: &TrainStep,
    opened: &OpenRun,
    say: &dyn Fn(String),
) -> Result<Option<Ema>> {
    let ema = Ema::new(&exp.train.ema, &exp.model, &step.vs, step.vs.device());
    if let (Some(ema), Some(file)) = (&ema, &opened.resumed) {
        if !ema.load(file)? {
            say(format!(
                "--resume {}: the resume point has no moving average (train.ema was off); it starts from the resumed weights",
                opened.run.name
            ));
        }
    }
    Ok(ema)
}
