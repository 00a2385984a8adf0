//! Scoring restored images against ground truth. Training validation and `promptir eval` call
//! the same [`evaluate`], so a number in TensorBoard and a number in the eval table mean the same.
//!
//! PSNR is computed like the leaderboard: on the rounded u8 output, RGB, per image, then averaged.
//! SSIM follows scikit-image's default (PromptIR's evaluation convention).
//!
//! The second half is `promptir eval`: which pairs a split means ([`split_params`],
//! [`split_pairs`]), the restorer of the checkpoints ([`prepare`]) and the table ([`EvalRun`]).

use crate::checkpoint::TensorFile;
use crate::config::Experiment;
use crate::data::{self, PairPath, Sample, Store};
use crate::io::{to_u8_chw, write_atomic_bytes, RgbImage};
use crate::loss::Loss;
use crate::metrics::{psnr_u8, ssim_u8, GroupMeans, Mean};
use crate::restore::Restore;
use crate::tile::Tiled;
use crate::{predict, Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// One scored pair: the degraded input and its ground truth.
#[derive(Debug, Clone)]
pub struct EvalItem {
    pub name: String,
    /// Degradation type ("rain", "snow"), used for per-type averages.
    pub kind: String,
    pub degraded: RgbImage,
    pub clean: RgbImage,
}

/// Scores of one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageScore {
    pub name: String,
    pub kind: String,
    pub psnr: f64,
    pub ssim: f64,
    /// The degraded input scored against the ground truth (the identity baseline).
    pub psnr_input: f64,
    pub ssim_input: f64,
}

/// Averages over a set, overall and per degradation type.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    pub psnr: GroupMeans,
    pub ssim: GroupMeans,
    pub psnr_input: GroupMeans,
    pub ssim_input: GroupMeans,
    /// The training loss on full images (when a loss was given).
    pub loss: Mean,
    pub images: Vec<ImageScore>,
    /// Restored u8 CHW images of the first `keep_outputs` items (for TensorBoard and panels).
    pub outputs: Vec<Vec<u8>>,
}

fn means(g: &GroupMeans) -> BTreeMap<String, f64> {
    let mut m: BTreeMap<String, f64> =
        g.groups().iter().filter_map(|(k, v)| Some((k.clone(), v.mean()?))).collect();
    if let Some(all) = g.overall().mean() {
        m.insert("all".into(), all);
    }
    m
}

impl EvalReport {
    pub fn mean_psnr(&self) -> f64 {
        self.psnr.overall().mean().unwrap_or(f64::NAN)
    }
    pub fn mean_ssim(&self) -> f64 {
        self.ssim.overall().mean().unwrap_or(f64::NAN)
    }

    /// Means only (no per-image rows), for metrics.jsonl.
    pub fn to_json_summary(&self) -> serde_json::Value {
        let mut j = self.to_json();
        j.as_object_mut().expect("object").remove("images");
        j
    }

    /// "rain 28.10 / snow 29.02" (PSNR per degradation type).
    pub fn by_kind_line(&self) -> String {
        let parts: Vec<String> = self
            .psnr
            .groups()
            .iter()
            .filter_map(|(k, m)| Some(format!("{k} {:.2}", m.mean()?)))
            .collect();
        parts.join(" / ")
    }

    /// `{"psnr": {"all": .., "rain": ..}, "ssim": {..}, "psnr_input": {..}, ...}` for `--format json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.images.len(),
            "psnr": means(&self.psnr),
            "ssim": means(&self.ssim),
            "psnr_input": means(&self.psnr_input),
            "ssim_input": means(&self.ssim_input),
            "loss": self.loss.mean(),
            "images": self.images,
        })
    }
}

/// Restores every item on `device` (under no_grad) and scores it. The loss, when given, sees the
/// raw (unclamped) output, as in training.
pub fn evaluate(
    model: &dyn Restore,
    items: &[EvalItem],
    device: Device,
    loss: Option<&Loss>,
    keep_outputs: usize,
    mut progress: impl FnMut(usize),
) -> EvalReport {
    let _guard = tch::no_grad_guard();
    let mut r = EvalReport::default();
    for (i, it) in items.iter().enumerate() {
        let (h, w) = (it.clean.height, it.clean.width);
        let x = it.degraded.to_tensor().unsqueeze(0).to_device(device);
        let y = model.restore(&x);
        if let Some(l) = loss {
            let target = it.clean.to_tensor().unsqueeze(0).to_device(device);
            r.loss.add(
                f64::try_from(l.compute(&y, &target).total.to_kind(Kind::Double))
                    .unwrap_or(f64::NAN),
            );
        }
        let out = to_u8_chw(&y.squeeze_dim(0));
        let (gt, inp) = (it.clean.to_chw(), it.degraded.to_chw());
        let score = ImageScore {
            name: it.name.clone(),
            kind: it.kind.clone(),
            psnr: psnr_u8(&out, &gt),
            ssim: ssim_u8(&out, &gt, h, w),
            psnr_input: psnr_u8(&inp, &gt),
            ssim_input: ssim_u8(&inp, &gt, h, w),
        };
        r.psnr.add(&it.kind, score.psnr);
        r.ssim.add(&it.kind, score.ssim);
        r.psnr_input.add(&it.kind, score.psnr_input);
        r.ssim_input.add(&it.kind, score.ssim_input);
        r.images.push(score);
        if i < keep_outputs {
            r.outputs.push(out);
        }
        progress(i + 1);
    }
    r
}

/// A (1, 3, H, W) tensor of an item's input on `device` (for callers that restore themselves).
pub fn input_tensor(item: &EvalItem, device: Device) -> Tensor {
    item.degraded.to_tensor().unsqueeze(0).to_device(device)
}

impl From<Sample> for EvalItem {
    fn from(s: Sample) -> Self {
        let img = |hwc: Vec<u8>| RgbImage { width: s.width, height: s.height, hwc };
        EvalItem { degraded: img(s.degraded), clean: img(s.clean), name: s.name, kind: s.kind }
    }
}

// ------------------------------------------------------------------------------------------
// `promptir eval`: the pairs of a split, the checkpoints' restorer, the table.

/// Which pairs to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitName {
    /// The pairs training held out (same seed and fraction; see [`split_params`]).
    Val,
    /// The pairs training learned from.
    Train,
    /// `test/degraded` against `test/clean` (synthetic sets only; the course set has no targets).
    Test,
}

impl std::str::FromStr for SplitName {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "val" => Ok(SplitName::Val),
            "train" => Ok(SplitName::Train),
            "test" => Ok(SplitName::Test),
            _ => Err(format!("unknown split {s:?}; use val, train or test")),
        }
    }
}

impl std::fmt::Display for SplitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitName::Val => "val",
            SplitName::Train => "train",
            SplitName::Test => "test",
        })
    }
}

/// The validation split's seed and fraction, and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitParams {
    pub seed: u64,
    pub val_fraction: f64,
    /// E.g. "from run t (logs/t/config.yaml)", "from --seed and --val-fraction",
    /// "defaults (...)", "seed from --seed, val_fraction from run t (...)".
    pub source: String,
}

/// Checkpoint metadata naming the training run that wrote it.
pub const RUN_KEY: &str = "promptir.run";

/// A training run a checkpoint names, with its split parameters.
struct RunSplit {
    name: String,
    config: PathBuf,
    seed: u64,
    val_fraction: f64,
}

/// Decides the validation split's parameters. Each of seed and fraction comes from, in order:
/// its flag; the config of the training run the checkpoints name (`promptir.run` metadata,
/// `LOGS/<run>/config.yaml`); the experiment defaults (42, 0.1) when no checkpoint names a run
/// (imported weights). A named run whose config is missing is an error rather than a silent
/// default, as is an ensemble of runs that held out different pairs: then no split is unseen by
/// all models, and the user must pick one with the flags.
pub fn split_params(
    weights: &[PathBuf],
    logs_dir: &Path,
    seed: Option<u64>,
    val_fraction: Option<f64>,
) -> Result<SplitParams> {
    if let Some(f) = val_fraction {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::Usage(format!(
                "--val-fraction {f}: must be at least 0 and below 1"
            )));
        }
    }
    let mut runs: Vec<RunSplit> = Vec::new();
    if seed.is_none() || val_fraction.is_none() {
        for w in weights {
            let Some(name) = TensorFile::open(w)?.metadata().get(RUN_KEY).cloned() else {
                continue;
            };
            if runs.iter().any(|r| r.name == name) {
                continue;
            }
            let config = logs_dir.join(&name).join("config.yaml");
            if !config.is_file() {
                return Err(Error::Usage(format!(
                    "{}: trained in run {name}, but {} is missing, so its validation split is unknown; \
                     pass --logs-dir (the folder holding that run's logs), or state the split with --seed and --val-fraction",
                    w.display(),
                    config.display()
                )));
            }
            let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
            let exp = Experiment::from_yaml_str(&text, &config)?;
            runs.push(RunSplit {
                name,
                config,
                seed: exp.seed,
                val_fraction: exp.data.val_fraction,
            });
        }
    }
    let differ = |f: &dyn Fn(&RunSplit) -> String| runs.iter().any(|r| f(r) != f(&runs[0]));
    if (seed.is_none() && differ(&|r| r.seed.to_string()))
        || (val_fraction.is_none() && differ(&|r| r.val_fraction.to_string()))
    {
        let list: Vec<String> = runs
            .iter()
            .map(|r| format!("{}: seed {}, val_fraction {}", r.name, r.seed, r.val_fraction))
            .collect();
        return Err(Error::Usage(format!(
            "the checkpoints come from runs that held out different pairs ({}), so no split is unseen by all of them; \
             choose one with --seed and --val-fraction",
            list.join("; ")
        )));
    }
    let d = Experiment::default();
    let from_runs = || {
        let names: Vec<String> =
            runs.iter().map(|r| format!("{} ({})", r.name, r.config.display())).collect();
        format!("run {}", names.join(", "))
    };
    let source = |flag: bool, name: &str| match (flag, runs.is_empty()) {
        (true, _) => format!("--{name}"),
        (false, false) => from_runs(),
        (false, true) => "defaults (the checkpoints name no training run)".to_string(),
    };
    let (seed_src, frac_src) =
        (source(seed.is_some(), "seed"), source(val_fraction.is_some(), "val-fraction"));
    let source = if seed_src == frac_src && seed_src.starts_with("defaults") {
        seed_src
    } else if seed_src == frac_src {
        format!("from {seed_src}")
    } else if seed.is_some() && val_fraction.is_some() {
        "from --seed and --val-fraction".to_string()
    } else {
        format!("seed from {seed_src}, val_fraction from {frac_src}")
    };
    Ok(SplitParams {
        seed: seed.or(runs.first().map(|r| r.seed)).unwrap_or(d.seed),
        val_fraction: val_fraction
            .or(runs.first().map(|r| r.val_fraction))
            .unwrap_or(d.data.val_fraction),
        source,
    })
}

/// The pairs of `split` under the dataset `root`, in the dataset's order. `val`/`train` are
/// exactly [`data::split`] of the scanned pairs, i.e. what training held out / learned from.
pub fn split_pairs(
    root: &Path,
    split: SplitName,
    params: Option<&SplitParams>,
) -> Result<Vec<PairPath>> {
    if !root.is_dir() {
        return Err(Error::data(
            root,
            "dataset root does not exist; --data must name the folder holding train/ and test/",
        ));
    }
    let params = match (split, params) {
        (SplitName::Test, _) => return test_pairs(root),
        (_, Some(p)) => p,
        (_, None) => {
            return Err(Error::Usage(format!("the {split} split needs a seed and val_fraction")))
        }
    };
    let pairs = data::scan_pairs(root)?;
    let kinds: Vec<&str> = pairs.iter().map(|p| p.kind.as_str()).collect();
    let s = data::split(&kinds, params.val_fraction, params.seed);
    let picked = if split == SplitName::Val { s.val } else { s.train };
    if picked.is_empty() {
        return Err(Error::data(
            root.join("train"),
            format!(
                "the {split} split of these {} pairs is empty (val_fraction {}); choose another split or --val-fraction",
                pairs.len(),
                params.val_fraction
            ),
        ));
    }
    Ok(picked.into_iter().map(|i| pairs[i].clone()).collect())
}

/// `test/degraded` paired with `test/clean`; kinds from `test/types.json` when present.
fn test_pairs(root: &Path) -> Result<Vec<PairPath>> {
    let tests = data::scan_test(root)?;
    let clean_dir = root.join("test").join("clean");
    if !clean_dir.is_dir() {
        return Err(Error::data(
            clean_dir,
            "missing: this test set has no ground truth (the course test set has none), so it cannot be scored; \
             restore it with `promptir predict`, or score --split val",
        ));
    }
    let types_path = root.join("test").join("types.json");
    let types: Option<BTreeMap<String, String>> = if types_path.is_file() {
        let text = std::fs::read_to_string(&types_path).map_err(|e| Error::io(&types_path, e))?;
        Some(serde_json::from_str(&text).map_err(|e| {
            Error::data(
                &types_path,
                format!("not a {{\"0.png\": \"rain\", ...}} map of names to types: {e}"),
            )
        })?)
    } else {
        None
    };
    tests
        .into_iter()
        .map(|t| {
            let kind = match &types {
                None => "test".to_string(),
                Some(map) => {
                    let k = map.get(&t.name).ok_or_else(|| {
                        Error::data(
                            &types_path,
                            format!(
                                "has no entry for {}; it must give every test image's type",
                                t.name
                            ),
                        )
                    })?;
                    if k.is_empty() || k == "all" {
                        return Err(Error::data(
                            &types_path,
                            format!(
                                "type {k:?} of {}: use a name other than \"\" and \"all\"",
                                t.name
                            ),
                        ));
                    }
                    k.clone()
                }
            };
            let clean = t.clean.expect("scan_test pairs every image when test/clean exists");
            Ok(PairPath { name: t.name, kind, degraded: t.degraded, clean })
        })
        .collect()
}

/// Decodes the pairs (in parallel), checking sizes: equal within a pair, and at least SSIM's
/// 7x7 window.
pub fn load_items(pairs: &[PairPath]) -> Result<Vec<EvalItem>> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let store = Store::load(pairs, workers)?;
    store
        .into_samples()
        .into_iter()
        .map(|s| {
            if s.height < 7 || s.width < 7 {
                return Err(Error::data(
                    &s.path,
                    format!(
                        "image is {}x{}, smaller than SSIM's 7x7 window, so it cannot be scored",
                        s.width, s.height
                    ),
                ));
            }
            Ok(EvalItem::from(s))
        })
        .collect()
}

/// Everything `promptir eval` (and `visualize`) takes, except where results go.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// One or more checkpoints; several are averaged like `predict` does.
    pub weights: Vec<PathBuf>,
    /// Dataset root in the course layout.
    pub data: PathBuf,
    pub split: SplitName,
    /// Overrides of the validation split (see [`split_params`]).
    pub seed: Option<u64>,
    pub val_fraction: Option<f64>,
    /// Where training runs keep their logs (`logs/<run>/config.yaml`).
    pub logs_dir: PathBuf,
    pub tta: bool,
    /// Tile size and overlap.
    pub tile: Option<(i64, i64)>,
    pub device: Device,
    /// A progress bar on a terminal.
    pub progress: bool,
}

/// What was scored, for the table header and the JSON's `"setup"`.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSetup {
    pub weights: Vec<PathBuf>,
    /// Ensemble size.
    pub models: usize,
    pub tta: bool,
    pub tile: Option<(i64, i64)>,
    pub data: PathBuf,
    pub split: String,
    /// The validation split's parameters (`null` for `test`).
    pub split_params: Option<SplitParams>,
    /// Images scored.
    pub count: usize,
    pub device: String,
}

/// The chosen pairs (not decoded yet) and the restorer, ready to score.
pub struct Prepared {
    pub setup: EvalSetup,
    pub pairs: Vec<PairPath>,
    pub restorer: Box<dyn Restore>,
}

/// Every check a user can fail, before any image is decoded: flags, weights, split, data.
pub fn prepare(opts: &EvalOptions) -> Result<Prepared> {
    if opts.weights.is_empty() {
        return Err(Error::Usage("give at least one --weights checkpoint".into()));
    }
    if let Some((size, overlap)) = opts.tile {
        Tiled::new((), size, overlap)?;
    }
    let params = match opts.split {
        SplitName::Test => None,
        _ => Some(split_params(&opts.weights, &opts.logs_dir, opts.seed, opts.val_fraction)?),
    };
    let pairs = split_pairs(&opts.data, opts.split, params.as_ref())?;
    let models = predict::load_models(&opts.weights, opts.device)?;
    let setup = EvalSetup {
        weights: opts.weights.clone(),
        models: models.len(),
        tta: opts.tta,
        tile: opts.tile,
        data: opts.data.clone(),
        split: opts.split.to_string(),
        split_params: params,
        count: pairs.len(),
        device: format!("{:?}", opts.device),
    };
    let restorer = predict::build_restorer(models, opts.tta, opts.tile)?;
    Ok(Prepared { setup, pairs, restorer })
}

/// [`evaluate`] with a progress bar on a terminal.
pub fn score(
    restorer: &dyn Restore,
    items: &[EvalItem],
    device: Device,
    keep_outputs: usize,
    progress: bool,
) -> EvalReport {
    let bar = ProgressBar::with_draw_target(Some(items.len() as u64), ProgressDrawTarget::stderr());
    if !progress || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("scoring {bar:30} {pos}/{len} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    let report =
        evaluate(restorer, items, device, None, keep_outputs, |i| bar.set_position(i as u64));
    bar.finish_and_clear();
    report
}

/// A finished evaluation.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub setup: EvalSetup,
    pub report: EvalReport,
}

impl EvalRun {
    /// [`EvalReport::to_json`] plus `"setup"`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut j = self.report.to_json();
        j["setup"] = serde_json::to_value(&self.setup).expect("EvalSetup serialises");
        j
    }

    /// A header naming what was scored, then one row per degradation type and `all`: the
    /// model's PSNR/SSIM, the input's (identity baseline) and the PSNR gain.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let r = &self.report;
        let names: Vec<String> = s.weights.iter().map(|w| w.display().to_string()).collect();
        let mut out = format!(
            "weights: {} ({})\nTTA {}, {}, device {}\n",
            names.join(", "),
            if s.models == 1 { "1 model".to_string() } else { format!("ensemble of {}", s.models) },
            if s.tta { "on" } else { "off" },
            s.tile.map_or("whole images".to_string(), |(t, o)| format!("tiles {t} overlap {o}")),
            s.device,
        );
        let split = match &s.split_params {
            Some(p) => format!(
                "{} (seed {}, val_fraction {}; {})",
                s.split, p.seed, p.val_fraction, p.source
            ),
            None => s.split.clone(),
        };
        out += &format!("data: {}, split {split}, {} images\n\n", s.data.display(), s.count);
        out += &format!(
            "{:<8} {:>6} {:>8} {:>7} {:>11} {:>11} {:>7}\n",
            "group", "images", "PSNR", "SSIM", "input PSNR", "input SSIM", "gain"
        );
        let mut rows: Vec<(String, usize)> =
            r.psnr.groups().iter().map(|(k, m)| (k.clone(), m.count())).collect();
        rows.push(("all".into(), r.psnr.overall().count()));
        let get = |g: &GroupMeans, k: &str| {
            if k == "all" { g.overall().mean() } else { g.groups().get(k).and_then(|m| m.mean()) }
                .unwrap_or(f64::NAN)
        };
        for (k, n) in rows {
            let (p, pi) = (get(&r.psnr, &k), get(&r.psnr_input, &k));
            out += &format!(
                "{:<8} {:>6} {:>8.2} {:>7.4} {:>11.2} {:>11.4} {:>+7.2}\n",
                k,
                n,
                p,
                get(&r.ssim, &k),
                pi,
                get(&r.ssim_input, &k),
                p - pi
            );
        }
        out
    }
}

/// Fails early when the JSON file cannot be written (its folder is missing, a file or read-only).
fn check_output(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::data(path, "--output is a folder; give a file name such as eval.json"));
    }
    crate::io::check_output_file(path)
}

/// Runs `promptir eval`; with `output`, also writes [`EvalRun::to_json`] there atomically.
pub fn run_eval(opts: &EvalOptions, output: Option<&Path>) -> Result<EvalRun> {
    if let Some(o) = output {
        check_output(o)?;
    }
    let p = prepare(opts)?;
    let items = load_items(&p.pairs)?;
    let report = score(&*p.restorer, &items, opts.device, 0, opts.progress);
    let run = EvalRun { setup: p.setup, report };
    if let Some(o) = output {
        let text = serde_json::to_string_pretty(&run.to_json()).expect("JSON") + "\n";
        write_atomic_bytes(o, text.as_bytes())?;
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::FnRestore;

    fn img(seed: u8, w: usize, h: usize) -> RgbImage {
        let hwc = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        RgbImage { width: w, height: h, hwc }
    }

    #[test]
    fn identity_model_scores_the_input_and_groups_by_kind() {
        let items = vec![
            EvalItem {
                name: "rain-1".into(),
                kind: "rain".into(),
                degraded: img(3, 16, 12),
                clean: img(0, 16, 12),
            },
            EvalItem {
                name: "snow-1".into(),
                kind: "snow".into(),
                degraded: img(9, 16, 12),
                clean: img(0, 16, 12),
            },
        ];
        let id = FnRestore(|t: &Tensor| t.shallow_clone());
        let r = evaluate(&id, &items, Device::Cpu, None, 1, |_| {});
        for s in &r.images {
            assert!((s.psnr - s.psnr_input).abs() < 1e-12, "identity output == input");
        }
        let j = r.to_json();
        assert!(j["psnr"]["rain"].as_f64().unwrap() > j["psnr"]["snow"].as_f64().unwrap());
        let all = j["psnr"]["all"].as_f64().unwrap();
        let mean = (r.images[0].psnr + r.images[1].psnr) / 2.0;
        assert!((all - mean).abs() < 1e-12);
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0], items[0].degraded.to_chw());
    }

    /// A one-tensor safetensors file naming `run` (split_params reads only the metadata).
    fn ckpt(dir: &std::path::Path, name: &str, run: Option<&str>) -> PathBuf {
        let mut meta = BTreeMap::new();
        if let Some(r) = run {
            meta.insert(RUN_KEY.to_string(), r.to_string());
        }
        let path = dir.join(name);
        crate::checkpoint::save_tensors(
            &path,
            &[("x".into(), Tensor::zeros([1], tch::kind::FLOAT_CPU))],
            meta,
        )
        .unwrap();
        path
    }

    fn run_config(logs: &std::path::Path, run: &str, seed: u64, frac: f64) {
        let mut e = Experiment { seed, ..Experiment::default() };
        e.data.val_fraction = frac;
        std::fs::create_dir_all(logs.join(run)).unwrap();
        std::fs::write(logs.join(run).join("config.yaml"), e.to_yaml()).unwrap();
    }

    #[test]
    fn split_params_come_from_flags_then_the_run_then_defaults() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        run_config(&logs, "r1", 7, 0.25);
        run_config(&logs, "r2", 8, 0.25);
        let plain = ckpt(t.path(), "plain.st", None);
        let r1 = ckpt(t.path(), "r1.st", Some("r1"));
        let r1b = ckpt(t.path(), "r1b.st", Some("r1"));
        let r2 = ckpt(t.path(), "r2.st", Some("r2"));
        let ghost = ckpt(t.path(), "ghost.st", Some("gone"));

        let p = split_params(std::slice::from_ref(&plain), &logs, None, None).unwrap();
        assert_eq!((p.seed, p.val_fraction), (42, 0.1));
        assert!(p.source.starts_with("defaults"), "{}", p.source);

        let p = split_params(&[plain.clone(), r1.clone(), r1b], &logs, None, None).unwrap();
        assert_eq!((p.seed, p.val_fraction), (7, 0.25));
        assert_eq!(p.source, format!("from run r1 ({})", logs.join("r1/config.yaml").display()));

        let p = split_params(std::slice::from_ref(&r1), &logs, None, Some(0.5)).unwrap();
        assert_eq!((p.seed, p.val_fraction), (7, 0.5));
        assert!(
            p.source.starts_with("seed from run r1") && p.source.ends_with("from --val-fraction")
        );

        let p = split_params(std::slice::from_ref(&ghost), &logs, Some(3), Some(0.2)).unwrap();
        assert_eq!(
            (p.seed, p.val_fraction, p.source.as_str()),
            (3, 0.2, "from --seed and --val-fraction")
        );

        // Runs that held out different pairs: no common split unless the user picks one.
        let err = split_params(&[r1.clone(), r2.clone()], &logs, None, None).unwrap_err();
        assert!(err.to_string().contains("r1: seed 7, val_fraction 0.25; r2: seed 8"), "{err}");
        let p = split_params(&[r1.clone(), r2], &logs, Some(7), None).unwrap();
        assert_eq!((p.seed, p.val_fraction), (7, 0.25), "fractions agree, seed given");

        let err = split_params(&[ghost], &logs, None, None).unwrap_err().to_string();
        assert!(
            err.contains("trained in run gone") && err.contains("config.yaml is missing"),
            "{err}"
        );
        let err = split_params(&[r1], &logs, None, Some(1.0)).unwrap_err().to_string();
        assert!(err.contains("--val-fraction 1"), "{err}");
    }
}
