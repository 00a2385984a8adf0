//! What `promptir train` was asked to do, resolved into an experiment and a plan (a new run or
//! one to resume) with every check done and nothing written yet.

use super::run_dir::RunDir;
use crate::config::{differences, Experiment};
use crate::io::atomic::check_output_folder;
use crate::{Error, Result};
use std::path::PathBuf;

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

/// Where a run's outputs go: a fresh run (created only once every check has passed) or an
/// existing one to continue.
#[derive(Debug, Clone)]
pub enum Start {
    New,
    Resume(RunDir),
}

/// The experiment with CLI overrides, validated, and where it starts; writes nothing.
pub fn resolve(args: &TrainArgs) -> Result<(Experiment, Start)> {
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
            let mut diff = differences(&exp.settings(), &stored.settings(), "the run's");
            diff.retain(|d| d.starts_with("model."));
            if !diff.is_empty() {
                return Err(Error::Usage(format!(
                    "--resume {}: the model config differs from the run's ({}); start a new run instead",
                    run.name,
                    diff.join(", ")
                )));
            }
            for d in [&run.logs, &run.weights] {
                check_output_folder(d)?;
            }
            Ok((exp, Start::Resume(run)))
        }
        None => {
            let path = args.config.as_ref().ok_or_else(|| {
                Error::Usage("train needs --config EXPERIMENT.yaml (or --resume RUN)".into())
            })?;
            let exp = apply_cli(Experiment::load(path, &args.sets)?)?;
            for d in [&args.logs_dir, &args.weights_dir] {
                check_output_folder(d)?;
            }
            Ok((exp, Start::New))
        }
    }
}
