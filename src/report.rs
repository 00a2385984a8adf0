//! `promptir report`: the ablation table (`ablation.md`, `ablation.json`) and validation curves
//! (`curves.png`) from finished runs and their eval files.
//!
//! File conventions (what `scripts/ablation.sh` writes):
//! - a run is its log folder `logs/<run>/` with `config.yaml` and `metrics.jsonl` (from `train`);
//! - `logs/<run>/eval_<split>.json` and `eval_<split>_tta.json`: `promptir eval --format json` of
//!   one checkpoint without / with TTA;
//! - `<evals>/ensemble*_<split>.json` and `ensemble*_<split>_tta.json`: an eval of several
//!   checkpoints; its members are the runs whose weights folder (`.../<run>/best.safetensors`)
//!   `setup.weights` names.
//!
//! Each eval file's `setup.split` and `setup.tta` must agree with its name.

use crate::config::{Experiment, LossConfig};
use crate::model::ModelConfig;
use crate::plot::{Axes, Figure, Rect, PALETTE};
use crate::{Error, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `promptir report` was asked to do.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Run log folders (`logs/<run>`), in table order.
    pub runs: Vec<PathBuf>,
    /// Folder for ablation.md, ablation.json and curves.png (created if missing).
    pub output: PathBuf,
    /// Folder with `ensemble*_<split>[_tta].json` (default: `output`).
    pub evals: Option<PathBuf>,
    /// Which eval files to read: `eval_<split>.json`; "test" or "val".
    pub split: String,
    /// Extra lines for the notes under the table.
    pub notes: Vec<String>,
}

/// One validation from `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValPoint {
    pub epoch: usize,
    pub psnr: f64,
    pub loss: Option<f64>,
}

/// The numbers of one eval file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalScore {
    pub file: PathBuf,
    pub count: Option<u64>,
    pub weights: Vec<String>,
    /// Mean PSNR: "all" and per degradation type.
    pub psnr: BTreeMap<String, f64>,
    pub ssim: BTreeMap<String, f64>,
    /// Mean PSNR of the degraded inputs themselves (the do-nothing baseline).
    pub psnr_input: Option<f64>,
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
    /// Run names (weights folders) in `setup.weights` order.
    pub members: Vec<String>,
    pub eval: Option<EvalScore>,
    pub eval_tta: Option<EvalScore>,
}

/// The best ensemble containing run `name`: (PSNR, with TTA).
fn best_ensemble(ensembles: &[EnsembleRecord], name: &str) -> Option<(f64, bool)> {
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
    pub split: String,
    pub runs: Vec<RunRecord>,
    pub ensembles: Vec<EnsembleRecord>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub ablation: Ablation,
    pub files: Vec<PathBuf>,
}

/// "L1 + 0.2 SSIM + 0.05 VGG": the weighted terms, a weight of 1 left out.
pub fn loss_label(l: &LossConfig) -> String {
    let terms: Vec<String> = [(l.l1, "L1"), (l.ssim, "SSIM"), (l.perceptual, "VGG")]
        .into_iter()
        .filter(|(w, _)| *w > 0.0)
        .map(|(w, n)| if w == 1.0 { n.to_string() } else { format!("{w} {n}") })
        .collect();
    terms.join(" + ")
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::data(path, format!("not valid JSON: {e}")))
}

fn number_map(v: &Value) -> BTreeMap<String, f64> {
    v.as_object()
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
        .unwrap_or_default()
}

/// Reads a `promptir eval --format json` file, checking it is the split and TTA mode its name
/// says.
pub fn read_eval(path: &Path, split: &str, tta: bool) -> Result<EvalScore> {
    let j = read_json(path)?;
    let bad = |msg: String| Error::data(path, msg);
    let psnr = number_map(&j["psnr"]);
    if !psnr.contains_key("all") {
        return Err(
            bad("no psnr.all; expected the output of `promptir eval --format json`".into()),
        );
    }
    let setup = &j["setup"];
    if setup["split"].as_str() != Some(split) {
        return Err(bad(format!(
            "setup.split is {}, but the file name says {split:?}",
            setup["split"]
        )));
    }
    if setup["tta"].as_bool() != Some(tta) {
        return Err(bad(format!("setup.tta is {}, but the file name says {tta}", setup["tta"])));
    }
    let weights = setup["weights"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| w.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Ok(EvalScore {
        file: path.to_path_buf(),
        count: j["count"].as_u64().or(setup["count"].as_u64()),
        weights,
        psnr,
        ssim: number_map(&j["ssim"]),
        psnr_input: j["psnr_input"]["all"].as_f64(),
    })
}

fn optional_eval(path: PathBuf, split: &str, tta: bool) -> Result<Option<EvalScore>> {
    if path.is_file() {
        read_eval(&path, split, tta).map(Some)
    } else {
        Ok(None)
    }
}

/// The validation curve in `metrics.jsonl` (sorted by epoch; a repeated epoch, from a resumed
/// run, keeps its last line). A missing file is an empty curve.
pub fn read_curve(path: &Path) -> Result<Vec<ValPoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut by_epoch = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |msg: &str| Error::data(path, format!("line {}: {msg}", i + 1));
        let j: Value = serde_json::from_str(line).map_err(|e| bad(&e.to_string()))?;
        let epoch = j["epoch"].as_u64().ok_or_else(|| bad("no integer \"epoch\""))? as usize;
        // NaN PSNR is written as null.
        let psnr = j["val"]["psnr"]["all"].as_f64().unwrap_or(f64::NAN);
        by_epoch.insert(epoch, ValPoint { epoch, psnr, loss: j["val"]["loss"].as_f64() });
    }
    Ok(by_epoch.into_values().collect())
}

/// Loads one run's log folder.
pub fn load_run(dir: &Path, split: &str) -> Result<RunRecord> {
    let cfg = dir.join("config.yaml");
    if !cfg.is_file() {
        return Err(Error::Usage(format!(
            "{}: no config.yaml; pass run log folders (logs/<run>), not weights folders",
            dir.display()
        )));
    }
    let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
    let exp = Experiment::from_yaml_str(&text, &cfg)?;
    let curve = read_curve(&dir.join("metrics.jsonl"))?;
    // The first epoch reaching the maximum, as train's `best.safetensors` is chosen.
    let best =
        curve
            .iter()
            .filter(|p| p.psnr.is_finite())
            .reduce(|b, p| if p.psnr > b.psnr { p } else { b });
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| exp.name.clone());
    Ok(RunRecord {
        name,
        dir: dir.to_path_buf(),
        loss: loss_label(&exp.loss),
        patch: exp.train.patch_size,
        batch: exp.train.batch_size,
        epochs: exp.train.epochs,
        epochs_done: curve.last().map_or(0, |p| p.epoch),
        best_val_psnr: best.map(|p| p.psnr),
        best_val_epoch: best.map(|p| p.epoch),
        eval: optional_eval(dir.join(format!("eval_{split}.json")), split, false)?,
        eval_tta: optional_eval(dir.join(format!("eval_{split}_tta.json")), split, true)?,
        ensemble_psnr: None,
        curve,
        exp,
    })
}

/// The run a checkpoint path belongs to: its folder's name (`weights/<run>/best.safetensors`).
fn member_name(weights: &str) -> String {
    let p = Path::new(weights);
    p.parent()
        .and_then(Path::file_name)
        .or_else(|| p.file_stem())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| weights.to_string())
}

/// Finds `ensemble*_<split>.json` / `ensemble*_<split>_tta.json` in `dir` (none if it is missing).
pub fn load_ensembles(dir: &Path, split: &str) -> Result<Vec<EnsembleRecord>> {
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
        let members: Vec<String> = score.weights.iter().map(|w| member_name(w)).collect();
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
                    "setup.weights names runs {members:?}, but the other {prefix} file has {:?}",
                    rec.members
                ),
            ));
        }
        *(if tta { &mut rec.eval_tta } else { &mut rec.eval }) = Some(score);
    }
    Ok(found.into_values().collect())
}

fn model_label(m: &ModelConfig) -> String {
    let which = if *m == ModelConfig::paper() {
        "the paper's PromptIR"
    } else if *m == ModelConfig::tiny() {
        "the tiny PromptIR"
    } else {
        "a custom PromptIR"
    };
    format!("{which} (dim {}, blocks {:?})", m.dim, m.num_blocks)
}

/// Collects runs and ensembles and the notes under the table.
pub fn collect(opts: &ReportOptions) -> Result<Ablation> {
    if opts.runs.is_empty() {
        return Err(Error::Usage("report needs at least one run folder (logs/<run>)".into()));
    }
    let split = opts.split.as_str();
    let mut runs = opts.runs.iter().map(|d| load_run(d, split)).collect::<Result<Vec<_>>>()?;
    let ens_dir = opts.evals.as_ref().unwrap_or(&opts.output);
    let ensembles = load_ensembles(ens_dir, split)?;
    for r in &mut runs {
        r.ensemble_psnr = best_ensemble(&ensembles, &r.name).map(|e| e.0);
    }

    let mut notes = vec![
        "PSNR in dB on the rounded 8-bit RGB output, averaged over images. \
         best val PSNR: the highest validation PSNR in the run's `metrics.jsonl` \
         (the held-out `data.val_fraction` of the training pairs) and its epoch; \
         epochs `a/b`: stopped after a of b."
            .to_string(),
        format!(
            "{split} PSNR: `promptir eval` of the checkpoint in the run's `eval_{split}.json`; \
             +TTA: the same with 8-way flip/rotation averaging (`eval_{split}_tta.json`), \
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
    let evals = runs.iter().flat_map(|r| [&r.eval, &r.eval_tta]).flatten();
    let evals: Vec<&EvalScore> = evals.collect();
    if let Some(n) = evals.iter().find_map(|e| e.count) {
        let input = evals
            .iter()
            .find_map(|e| e.psnr_input)
            .map_or(String::new(), |p| format!("; the degraded inputs themselves score {p:.2} dB"));
        notes.push(format!("{split} set: {n} images{input}."));
    }
    notes.extend(opts.notes.iter().cloned());
    Ok(Ablation { split: opts.split.clone(), runs, ensembles, notes })
}

/// Distinct values in first-seen order.
fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v
}

fn f2(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map_or("-".into(), |v| format!("{v:.2}"))
}

/// "31.45 (+0.22)": a value and its gain over `base` when both exist.
fn with_gain(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) => format!("{v:.2} ({:+.2})", v - b),
        (v, _) => f2(v),
    }
}

/// The markdown table rows (cells), runs first, then ensembles.
pub fn table_rows(a: &Ablation) -> Vec<[String; 9]> {
    let mut rows = Vec::new();
    for r in &a.runs {
        let test = r.eval.as_ref().map(EvalScore::all);
        let tta = r.eval_tta.as_ref().map(EvalScore::all);
        let ens = best_ensemble(&a.ensembles, &r.name);
        // Compare like with like: an ensemble with TTA against the run with TTA.
        let ens_cell = match ens {
            Some((v, true)) => with_gain(Some(v), tta),
            Some((v, false)) => with_gain(Some(v), test),
            None => "-".into(),
        };
        let epochs = if r.epochs_done < r.epochs {
            format!("{}/{}", r.epochs_done, r.epochs)
        } else {
            r.epochs.to_string()
        };
        let best = match (r.best_val_psnr, r.best_val_epoch) {
            (Some(p), Some(e)) => format!("{p:.2} (ep {e})"),
            _ => "-".into(),
        };
        rows.push([
            r.name.clone(),
            r.loss.clone(),
            r.patch.to_string(),
            r.batch.to_string(),
            epochs,
            best,
            f2(test),
            with_gain(tta, test),
            ens_cell,
        ]);
    }
    for e in &a.ensembles {
        let runs: Vec<&RunRecord> =
            e.members.iter().filter_map(|m| a.runs.iter().find(|r| &r.name == m)).collect();
        let joined = |f: &dyn Fn(&RunRecord) -> String| {
            let v = unique(runs.iter().map(|r| f(r)));
            if v.is_empty() {
                "-".into()
            } else {
                v.join("/")
            }
        };
        let test = e.eval.as_ref().map(EvalScore::all);
        let tta = e.eval_tta.as_ref().map(EvalScore::all);
        rows.push([
            format!("{}: {}", e.name, e.members.join(" + ")),
            joined(&|r| r.loss.clone()),
            joined(&|r| r.patch.to_string()),
            joined(&|r| r.batch.to_string()),
            joined(&|r| r.epochs.to_string()),
            "-".into(),
            f2(test),
            with_gain(tta, test),
            "-".into(),
        ]);
    }
    rows
}

/// `ablation.md`: the table (columns padded so the raw text reads as a table too), the curves
/// and the notes.
pub fn markdown(a: &Ablation) -> String {
    let header = [
        "experiment".to_string(),
        "loss".into(),
        "patch".into(),
        "batch".into(),
        "epochs".into(),
        "best val PSNR".into(),
        format!("{} PSNR", a.split),
        "+TTA".into(),
        "+ensemble".into(),
    ];
    let rows = table_rows(a);
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap())
        .collect();
    // Text columns left-aligned, numbers right-aligned.
    let right = |c: usize| c >= 2;
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if right(c) {
                    format!("{s:>w$}", w = widths[c])
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let rule: Vec<String> = (0..9)
        .map(|c| {
            let dashes = "-".repeat(widths[c] - 1);
            if right(c) {
                format!("{dashes}:")
            } else {
                format!(":{dashes}")
            }
        })
        .collect();
    let mut md = String::from("# Ablation\n\n");
    md.push_str(&format!(
        "Generated by `promptir report` from {} run(s) and {} ensemble(s).\n\n",
        a.runs.len(),
        a.ensembles.len()
    ));
    md.push_str(&line(&header));
    md.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in &rows {
        md.push_str(&line(r));
    }
    md.push_str("\n![validation curves](curves.png)\n\n");
    md.push_str(
        "Curves: validation PSNR and validation loss per epoch. The loss is each run's own \
         training objective, so its level is comparable only between runs with the same loss.\n\n",
    );
    md.push_str("Notes:\n\n");
    for n in &a.notes {
        md.push_str(&format!("- {n}\n"));
    }
    md
}

/// Width and height of `curves.png`.
pub const CURVES_SIZE: (usize, usize) = (1500, 560);

/// Two panels side by side: validation PSNR and validation loss per epoch, one colour per run.
pub fn curves(runs: &[RunRecord]) -> Figure {
    let (w, h) = CURVES_SIZE;
    let mut fig = Figure::new(w, h);
    let mut psnr = Axes::new("validation PSNR", "epoch", "PSNR (dB)");
    let mut loss = Axes::new("validation loss (own objective)", "epoch", "loss");
    for (i, r) in runs.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts = |f: &dyn Fn(&ValPoint) -> f64| {
            r.curve.iter().map(|p| (p.epoch as f64, f(p))).collect::<Vec<_>>()
        };
        psnr.line(&r.name, color, pts(&|p| p.psnr));
        loss.line(&r.name, color, pts(&|p| p.loss.unwrap_or(f64::NAN)));
    }
    psnr.x_from_zero = true;
    loss.x_from_zero = true;
    psnr.legend();
    loss.legend();
    let half = w as f64 / 2.0;
    fig.draw(&psnr, Rect { x: 0.0, y: 0.0, w: half, h: h as f64 });
    fig.draw(&loss, Rect { x: half, y: 0.0, w: half, h: h as f64 });
    fig
}

/// Writes `ablation.md`, `ablation.json` and `curves.png` into `opts.output`.
pub fn report(opts: &ReportOptions) -> Result<ReportSummary> {
    let ablation = collect(opts)?;
    std::fs::create_dir_all(&opts.output).map_err(|e| Error::io(&opts.output, e))?;
    let md = opts.output.join("ablation.md");
    let json = opts.output.join("ablation.json");
    let png = opts.output.join("curves.png");
    crate::io::write_atomic_bytes(&md, markdown(&ablation).as_bytes())?;
    let text = serde_json::to_string_pretty(&ablation).expect("ablation serialises");
    crate::io::write_atomic_bytes(&json, text.as_bytes())?;
    curves(&ablation.runs).save_png(&png)?;
    Ok(ReportSummary { ablation, files: vec![md, json, png] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_labels_name_the_weighted_terms() {
        let mut l = LossConfig { ssim: 0.2, perceptual: 0.05, ..LossConfig::default() };
        assert_eq!(loss_label(&l), "L1 + 0.2 SSIM + 0.05 VGG");
        l.perceptual = 0.0;
        assert_eq!(loss_label(&l), "L1 + 0.2 SSIM");
        l = LossConfig { l1: 0.5, ssim: 1.0, ..LossConfig::default() };
        assert_eq!(loss_label(&l), "0.5 L1 + SSIM");
    }

    #[test]
    fn curves_keep_the_last_line_of_a_repeated_epoch_and_sort() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let line = |e: usize, psnr: &str| {
            format!("{{\"epoch\":{e},\"val\":{{\"psnr\":{{\"all\":{psnr}}},\"loss\":0.5}}}}\n")
        };
        let text = [line(2, "20.0"), line(1, "19.0"), line(2, "21.0"), line(3, "null")].concat();
        std::fs::write(&p, text + "\n").unwrap();
        let c = read_curve(&p).unwrap();
        assert_eq!(c.iter().map(|v| v.epoch).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(c[1].psnr, 21.0);
        assert!(c[2].psnr.is_nan() && c[2].loss == Some(0.5));
        std::fs::write(&p, "{\"epoch\":1}\nnot json\n").unwrap();
        let e = read_curve(&p).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl: line 2"), "{e}");
        assert!(read_curve(&d.path().join("missing.jsonl")).unwrap().is_empty());
    }

    #[test]
    fn ensemble_members_are_weights_folders() {
        assert_eq!(
            member_name("results/ablation/x/weights/tiny_combined/best.safetensors"),
            "tiny_combined"
        );
        assert_eq!(member_name("best.safetensors"), "best");
    }
}
