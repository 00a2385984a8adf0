//! `promptir report`: the ablation table (`ablation.md`, `ablation.json`) and the report's three
//! figures (`fig1_train_loss.png`, `fig2_val_loss.png`, `fig3_val_psnr.png`) from finished runs
//! and their eval files. Runs that differ only in their seed share one row (mean ± sample std).
//!
//! What it reads (`scripts/ablation.sh` writes them), each through the type its writer uses:
//! - a run is its log folder `logs/<run>/`: `config.yaml` and `metrics.jsonl` ([`MetricsLine`]);
//! - `logs/<run>/eval_<split>.json` and `eval_<split>_tta.json` ([`EvalFile`]): one checkpoint
//!   without / with TTA;
//! - `<evals>/ensemble*_<split>.json` and `ensemble*_<split>_tta.json`: an eval of several
//!   checkpoints; its members are the runs named by their provenance (`setup.runs`).
//!
//! Each eval file's `setup.split` and `setup.tta` must agree with its name.

mod seeds;
mod table;

pub use seeds::{ExperimentRecord, SeedStat};
use table::{loss_label, markdown};

use crate::config::{Experiment, Published};
use crate::eval::{EvalFile, Metric, SplitName};
use crate::model::ModelConfig;
use crate::tools::plot::{self, Panel, Series, PALETTE};
use crate::train::{read_metrics, MetricsLine};
use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use table::unique;

/// What `promptir report` was asked to do.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Run log folders (`logs/<run>`), in table order.
    pub runs: Vec<PathBuf>,
    /// Folder for ablation.md, ablation.json and the figures (created if missing).
    pub output: PathBuf,
    /// Folder with `ensemble*_<split>[_tta].json` (default: `output`).
    pub evals: Option<PathBuf>,
    /// Which eval files to read: `eval_<split>.json`.
    pub split: SplitName,
    /// Extra lines for the notes under the table.
    pub notes: Vec<String>,
}

/// One validation point of a run's curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValPoint {
    pub epoch: usize,
    /// `None` for a run without a validation split.
    pub psnr: Option<f64>,
    pub loss: Option<f64>,
    pub train_loss: Option<f64>,
}

impl From<&MetricsLine> for ValPoint {
    fn from(m: &MetricsLine) -> Self {
        ValPoint {
            epoch: m.epoch,
            psnr: m.val.as_ref().and_then(|v| v.psnr_all()),
            loss: m.val.as_ref().and_then(|v| v.loss),
            train_loss: m.train_loss,
        }
    }
}

/// The numbers of one eval file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalScore {
    pub file: PathBuf,
    pub count: usize,
    pub weights: Vec<PathBuf>,
    /// Mean PSNR: "all" and per degradation type.
    pub psnr: BTreeMap<String, f64>,
    pub ssim: BTreeMap<String, f64>,
    /// Mean PSNR of the degraded inputs themselves (the do-nothing baseline).
    pub psnr_input: Option<f64>,
    /// The run of each checkpoint (from the setup; older files: the weights' folder names).
    #[serde(skip)]
    members: Vec<String>,
}

impl EvalScore {
    pub fn all(&self) -> f64 {
        self.psnr["all"]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// The log folder's name (unique, unlike the experiment name).
    pub name: String,
    pub dir: PathBuf,
    /// The run's resolved config.yaml.
    #[serde(rename = "config")]
    pub exp: Experiment,
    pub loss: String,
    pub patch: usize,
    pub batch: usize,
    pub epochs: usize,
    /// Last validated epoch (less than `epochs` for a run that stopped early).
    pub epochs_done: usize,
    pub best_val_psnr: Option<f64>,
    pub best_val_epoch: Option<usize>,
    pub eval: Option<EvalScore>,
    pub eval_tta: Option<EvalScore>,
    /// Best ensemble containing this run (TTA if measured), for the +ensemble column.
    pub ensemble_psnr: Option<f64>,
    pub curve: Vec<ValPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnsembleRecord {
    /// The file prefix ("ensemble", "ensemble_b", ...).
    pub name: String,
    /// Run names in `setup.weights` order.
    pub members: Vec<String>,
    pub eval: Option<EvalScore>,
    pub eval_tta: Option<EvalScore>,
}

/// The best ensemble containing run `name`: (PSNR, with TTA).
pub(crate) fn best_ensemble(ensembles: &[EnsembleRecord], name: &str) -> Option<(f64, bool)> {
    ensembles
        .iter()
        .filter(|e| e.members.iter().any(|m| m == name))
        .filter_map(EnsembleRecord::headline)
        .max_by(|x, y| x.0.total_cmp(&y.0))
}

impl EnsembleRecord {
    /// The number shown in members' +ensemble column: with TTA when measured.
    fn headline(&self) -> Option<(f64, bool)> {
        match (&self.eval_tta, &self.eval) {
            (Some(t), _) => Some((t.all(), true)),
            (None, Some(e)) => Some((e.all(), false)),
            _ => None,
        }
    }
}

/// Everything the report shows; `ablation.json` is this, serialised.
#[derive(Debug, Clone, Serialize)]
pub struct Ablation {
    pub split: SplitName,
    pub runs: Vec<RunRecord>,
    /// The table's rows: runs grouped by experiment over seeds, in `runs` order.
    pub experiments: Vec<ExperimentRecord>,
    pub ensembles: Vec<EnsembleRecord>,
    pub notes: Vec<String>,
}

/// The course report's two-model ensemble (combined loss at patch 224 / batch 2 averaged with
/// patch 160 / batch 4), from the same report as the experiments' `published` numbers. Shown
/// on an ensemble row only when it is that ensemble at paper scale, see [`ensemble_published`].
pub const REPORT_ENSEMBLE: (f64, &str) =
    (32.73, "course report, public test set (Codabench), two-model ensemble");

/// The report's ensemble number for `e` when `e` is the report's ensemble: two runs of the
/// paper network with the same loss, one of them a report recipe (carrying `published`), the
/// other differing from it in patch/batch.
pub fn ensemble_published(e: &EnsembleRecord, runs: &[RunRecord]) -> Option<Published> {
    let m: Vec<&RunRecord> =
        e.members.iter().filter_map(|n| runs.iter().find(|r| &r.name == n)).collect();
    let [a, b] = m[..] else { return None };
    let paper = |r: &RunRecord| r.exp.model == ModelConfig::paper();
    let reported = a.exp.published.is_some() || b.exp.published.is_some();
    let other_patch = (a.patch, a.batch) != (b.patch, b.batch);
    (paper(a) && paper(b) && a.exp.loss == b.exp.loss && reported && other_patch)
        .then(|| Published { psnr: REPORT_ENSEMBLE.0, label: REPORT_ENSEMBLE.1.to_string() })
}

#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub ablation: Ablation,
    pub files: Vec<PathBuf>,
}

/// The run a checkpoint path belongs to when its eval file predates `setup.runs`: its folder's
/// name (`weights/<run>/best.safetensors`).
fn folder_name(weights: &Path) -> String {
    weights
        .parent()
        .and_then(Path::file_name)
        .or_else(|| weights.file_stem())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| weights.display().to_string())
}

/// Reads an eval file, checking it is the split and TTA mode its name says.
pub fn read_eval(path: &Path, split: SplitName, tta: bool) -> Result<EvalScore> {
    let f = EvalFile::read(path)?;
    let bad = |msg: String| Error::data(path, msg);
    if f.setup.split != split {
        return Err(bad(format!(
            "setup.split is \"{}\", but the file name says \"{split}\"",
            f.setup.split
        )));
    }
    // The tables are the course's convention (and the published rows beside them are too).
    if f.setup.metric != Metric::Course {
        return Err(bad(format!(
            "setup.metric is \"{}\", but the report's tables use the course's: rerun promptir eval without --metric for this file",
            f.setup.metric.name()
        )));
    }
    if f.setup.tta_on() != tta {
        return Err(bad(format!(
            "setup.tta is {}, but the file name says TTA {}",
            f.setup.tta,
            if tta { "on" } else { "off" }
        )));
    }
    let members = if f.setup.runs.len() == f.setup.weights.len() {
        let named = f.setup.runs.iter().zip(&f.setup.weights);
        named.map(|(r, w)| r.clone().unwrap_or_else(|| folder_name(w))).collect()
    } else {
        f.setup.weights.iter().map(|w| folder_name(w)).collect()
    };
    Ok(EvalScore {
        file: path.to_path_buf(),
        count: f.summary.count,
        weights: f.setup.weights,
        psnr: f.summary.psnr,
        ssim: f.summary.ssim,
        psnr_input: f.summary.psnr_input.get("all").copied(),
        members,
    })
}

fn optional_eval(path: PathBuf, split: SplitName, tta: bool) -> Result<Option<EvalScore>> {
    if path.is_file() {
        read_eval(&path, split, tta).map(Some)
    } else {
        Ok(None)
    }
}

/// Loads one run's log folder.
pub fn load_run(dir: &Path, split: SplitName) -> Result<RunRecord> {
    let cfg = dir.join("config.yaml");
    if !cfg.is_file() {
        return Err(Error::Usage(format!(
            "{}: no config.yaml; pass run log folders (logs/<run>), not weights folders",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
    let exp = Experiment::from_yaml_str(&text, &cfg)?;
    let curve: Vec<ValPoint> =
        read_metrics(&dir.join("metrics.jsonl"))?.iter().map(ValPoint::from).collect();
    // The first epoch reaching the maximum, as train's `best.safetensors` is chosen.
    let best = curve
        .iter()
        .filter_map(|p| Some((p.epoch, p.psnr.filter(|v| v.is_finite())?)))
        .reduce(|b, p| if p.1 > b.1 { p } else { b });
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| exp.name.clone());
    let last_stage = *exp.train.stage_list().last().expect("at least one stage");
    Ok(RunRecord {
        name,
        dir: dir.to_path_buf(),
        loss: loss_label(&exp.loss),
        // Progressive runs show their last stage; the batch is per optimizer step.
        patch: last_stage.patch_size,
        batch: last_stage.batch_size * exp.train.accumulate,
        epochs: exp.train.epochs,
        epochs_done: curve.last().map_or(0, |p| p.epoch),
        best_val_psnr: best.map(|p| p.1),
        best_val_epoch: best.map(|p| p.0),
        eval: optional_eval(dir.join(format!("eval_{split}.json")), split, false)?,
        eval_tta: optional_eval(dir.join(format!("eval_{split}_tta.json")), split, true)?,
        ensemble_psnr: None,
        curve,
        exp,
    })
}

/// Finds `ensemble*_<split>.json` / `ensemble*_<split>_tta.json` in `dir` (none if it is missing).
pub fn load_ensembles(dir: &Path, split: SplitName) -> Result<Vec<EnsembleRecord>> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut names: Vec<String> =
        rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut found: BTreeMap<String, EnsembleRecord> = BTreeMap::new();
    for file in names.iter().filter(|n| n.starts_with("ensemble")) {
        let (prefix, tta) = if let Some(p) = file.strip_suffix(&format!("_{split}_tta.json")) {
            (p, true)
        } else if let Some(p) = file.strip_suffix(&format!("_{split}.json")) {
            (p, false)
        } else {
            continue;
        };
        let score = read_eval(&dir.join(file), split, tta)?;
        let members = score.members.clone();
        let rec = found.entry(prefix.to_string()).or_insert_with(|| EnsembleRecord {
            name: prefix.to_string(),
            members: members.clone(),
            eval: None,
            eval_tta: None,
        });
        if rec.members != members {
            return Err(Error::data(
                dir.join(file),
                format!(
                    "its checkpoints come from runs {members:?}, but the other {prefix} file's from {:?}",
                    rec.members
                ),
            ));
        }
        *(if tta { &mut rec.eval_tta } else { &mut rec.eval }) = Some(score);
    }
    Ok(found.into_values().collect())
}

fn model_label(m: &ModelConfig) -> String {
    let name = match m.published() {
        Some(name) => format!("the paper's {name}"),
        None if *m == ModelConfig::tiny_of(m.arch()) => format!("the tiny {}", m.arch().label()),
        None => format!("a custom {}", m.arch().label()),
    };
    format!("{name} ({})", m.summary())
}

/// Collects runs and ensembles and the notes under the table.
pub fn collect(opts: &ReportOptions) -> Result<Ablation> {
    if opts.runs.is_empty() {
        return Err(Error::Usage("report needs at least one run folder (logs/<run>)".into()));
    }
    let split = opts.split;
    let mut runs = opts.runs.iter().map(|d| load_run(d, split)).collect::<Result<Vec<_>>>()?;
    let ens_dir = opts.evals.as_ref().unwrap_or(&opts.output);
    let ensembles = load_ensembles(ens_dir, split)?;
    for r in &mut runs {
        r.ensemble_psnr = best_ensemble(&ensembles, &r.name).map(|e| e.0);
    }
    let experiments = seeds::group(&runs);

    let mut notes = vec![
        "PSNR in dB on the rounded 8-bit RGB output, averaged over images. \
         best val PSNR: the highest validation PSNR in the run's `metrics.jsonl` \
         (the held-out `data.val_fraction` of the training pairs) and its epoch; \
         epochs `a/b`: stopped after a of b."
            .to_string(),
        format!(
            "{split} PSNR: `promptir eval` of the checkpoint in the run's `eval_{split}.json`; \
             +TTA: the same with test-time augmentation (`eval_{split}_tta.json`, its `setup.tta`), \
             in brackets its gain over {split} PSNR; +ensemble: the ensemble row containing \
             the run (with TTA when measured), in brackets its gain over the run's +TTA. \
             `-`: not measured."
        ),
    ];
    let mut models: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for r in &runs {
        models.entry(model_label(&r.exp.model)).or_default().push(&r.name);
    }
    for (label, names) in &models {
        if models.len() == 1 {
            notes.push(format!("Network: {label}."));
        } else {
            notes.push(format!("Network of {}: {label}.", names.join(", ")));
        }
    }
    let roots = unique(runs.iter().map(|r| format!("`{}`", r.exp.data.root.display())));
    notes.push(format!("Training data: {}.", roots.join(", ")));
    let evals: Vec<&EvalScore> =
        runs.iter().flat_map(|r| [&r.eval, &r.eval_tta]).flatten().collect();
    if let Some(e) = evals.first() {
        let input = evals
            .iter()
            .find_map(|e| e.psnr_input)
            .map_or(String::new(), |p| format!("; the degraded inputs themselves score {p:.2} dB"));
        notes.push(format!("{split} set: {} images{input}.", e.count));
    }
    if let Some(n) = experiments.iter().map(|x| x.runs.len()).filter(|&n| n > 1).max() {
        notes.push(format!(
            "Rows of several seeds (runs identical but for `seed`, up to {n}): mean ± sample \
             standard deviation over the seeds, their number in the experiment column, `[n=k]` \
             where only k seeds have the number; +TTA's bracket is the mean of the per-seed \
             gains. Per-seed values: `ablation.json` (`experiments`, and `runs`). +ensemble and \
             the ensemble rows: the ensembles as evaluated, of the runs they name (the first \
             seed's in `scripts/ablation.sh`)."
        ));
    }
    let refs: Vec<(String, Published)> = experiments
        .iter()
        .filter_map(|x| Some((x.name.clone(), x.published.clone()?)))
        .chain(
            ensembles.iter().filter_map(|e| Some((e.name.clone(), ensemble_published(e, &runs)?))),
        )
        .collect();
    if !refs.is_empty() {
        let each: Vec<String> =
            refs.iter().map(|(n, p)| format!("{n}: {:.2} dB ({})", p.psnr, p.label)).collect();
        notes.push(format!(
            "{}: the PSNR published for the same recipe (`published` in its experiment file), \
             measured on the course's public test set, a different image set from this table's \
             {split} column, so the two columns are not a paired comparison. {}.",
            table::PUBLISHED_HEADER,
            each.join("; ")
        ));
    }
    notes.extend(opts.notes.iter().cloned());
    Ok(Ablation { split, runs, experiments, ensembles, notes })
}

/// Width and height of each figure.
pub const FIGURE_SIZE: (usize, usize) = (900, 560);

/// The report's three figures: file name and panel (one line per experiment, the mean over its
/// seeds at each epoch).
pub fn figures(a: &Ablation) -> Vec<(&'static str, Panel)> {
    let series = |f: &dyn Fn(&ValPoint) -> Option<f64>| -> Vec<Series> {
        a.experiments
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let members: Vec<&RunRecord> =
                    x.runs.iter().filter_map(|n| a.runs.iter().find(|r| &r.name == n)).collect();
                let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
                for p in members.iter().flat_map(|r| &r.curve) {
                    let v = by_epoch.entry(p.epoch).or_default();
                    v.extend(f(p).filter(|v| v.is_finite()));
                }
                let name = match x.runs.len() {
                    1 => x.name.clone(),
                    n => format!("{} (mean of {n} seeds)", x.name),
                };
                let points = by_epoch
                    .into_iter()
                    .map(|(e, v)| {
                        let mean = if v.is_empty() {
                            f64::NAN
                        } else {
                            v.iter().sum::<f64>() / v.len() as f64
                        };
                        (e as f64, mean)
                    })
                    .collect();
                Series { name, color: PALETTE[i % PALETTE.len()], points }
            })
            .collect()
    };
    let panel = |title: &str, y: &str, f: &dyn Fn(&ValPoint) -> Option<f64>| Panel {
        title: title.into(),
        x_label: "epoch".into(),
        y_label: y.into(),
        series: series(f),
    };
    vec![
        (
            "fig1_train_loss.png",
            panel("training loss (own objective)", "mean loss over the epoch", &|p| p.train_loss),
        ),
        ("fig2_val_loss.png", panel("validation loss (own objective)", "loss", &|p| p.loss)),
        ("fig3_val_psnr.png", panel("validation PSNR", "PSNR (dB)", &|p| p.psnr)),
    ]
}

/// Writes `ablation.md`, `ablation.json` and the three figures into `opts.output`.
pub fn report(opts: &ReportOptions) -> Result<ReportSummary> {
    let ablation = collect(opts)?;
    std::fs::create_dir_all(&opts.output).map_err(|e| Error::io(&opts.output, e))?;
    let md = opts.output.join("ablation.md");
    let json = opts.output.join("ablation.json");
    crate::io::write_atomic_bytes(&md, markdown(&ablation).as_bytes())?;
    let text = serde_json::to_string_pretty(&ablation).expect("ablation serialises");
    crate::io::write_atomic_bytes(&json, text.as_bytes())?;
    let mut files = vec![md, json];
    let (w, h) = FIGURE_SIZE;
    for (name, panel) in figures(&ablation) {
        let png = opts.output.join(name);
        plot::save_png(std::slice::from_ref(&panel), w, h, &png)?;
        files.push(png);
    }
    Ok(ReportSummary { ablation, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_eval_files_name_their_members_by_folder() {
        assert_eq!(
            folder_name(Path::new("results/ablation/x/weights/tiny_combined/best.safetensors")),
            "tiny_combined"
        );
        assert_eq!(folder_name(Path::new("best.safetensors")), "best");
    }
}
