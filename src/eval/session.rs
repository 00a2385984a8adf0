//! `promptir eval` (and `visualize`'s scoring): the checkpoints and the pairs of a split, checked
//! before any image is decoded, then scored by [`evaluate`] and shown as a table or JSON.

use super::metrics::GroupMeans;
use super::score::{evaluate, EvalItem, EvalReport};
use super::split::{dataset_notice, split_pairs, split_params, SplitName};
use super::summary::{EvalFile, EvalSetup};
use crate::data::{PairPath, Store};
use crate::infer::{build_restorer, load_models, Restore, Tiled};
use crate::io::atomic::check_output_file;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tch::Device;

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
    pub tta: bool,
    /// Tile size and overlap.
    pub tile: Option<(i64, i64)>,
    pub device: Device,
    /// A progress bar on a terminal.
    pub progress: bool,
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
    let models = load_models(&opts.weights, opts.device)?;
    let checkpoints: Vec<(&Path, _)> = models.iter().map(|m| (m.path.as_path(), &m.meta)).collect();
    let params = match opts.split {
        SplitName::Test => None,
        _ => Some(split_params(&checkpoints, opts.seed, opts.val_fraction)?),
    };
    let pairs = split_pairs(&opts.data, opts.split, params.as_ref())?;
    let notice = match opts.split {
        SplitName::Test => None,
        _ => dataset_notice(&checkpoints, &opts.data, &crate::data::scan_pairs(&opts.data)?),
    };
    let setup = EvalSetup {
        weights: opts.weights.clone(),
        runs: models.iter().map(|m| m.meta.run().map(String::from)).collect(),
        models: models.len(),
        tta: opts.tta,
        tile: opts.tile,
        data: opts.data.clone(),
        split: opts.split,
        split_params: params,
        notice,
        count: pairs.len(),
        device: format!("{:?}", opts.device),
    };
    let restorer = build_restorer(models, opts.tta, opts.tile)?;
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
    /// What `--format json` prints and `--output` writes.
    pub fn file(&self) -> EvalFile {
        EvalFile {
            summary: self.report.summary(),
            images: self.report.images.clone(),
            setup: self.setup.clone(),
        }
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
            None => s.split.to_string(),
        };
        out += &format!("data: {}, split {split}, {} images\n", s.data.display(), s.count);
        if let Some(n) = &s.notice {
            out += &format!("note: {n}\n");
        }
        out += &format!(
            "\n{:<8} {:>6} {:>8} {:>7} {:>11} {:>11} {:>7}\n",
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

/// Runs `promptir eval`; with `output`, also writes [`EvalRun::file`] there atomically.
pub fn run_eval(opts: &EvalOptions, output: Option<&Path>) -> Result<EvalRun> {
    if let Some(o) = output {
        if o.is_dir() {
            return Err(Error::data(o, "--output is a folder; give a file name such as eval.json"));
        }
        check_output_file(o)?;
    }
    let p = prepare(opts)?;
    let items = load_items(&p.pairs)?;
    let report = score(&*p.restorer, &items, opts.device, 0, opts.progress);
    let run = EvalRun { setup: p.setup, report };
    if let Some(o) = output {
        run.file().write(o)?;
    }
    Ok(run)
}
