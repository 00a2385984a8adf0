//! A scoring session, what `eval` and `visualize` share: the checkpoints and the pairs of a
//! split, checked before any image is decoded ([`prepare`]), then scored by [`evaluate`].

use super::metrics::Metric;
use super::score::{evaluate, EvalItem, EvalReport};
use super::split::{split_pairs, split_params, SplitName};
use super::summary::{EvalFile, EvalSetup, TtaScore};
use crate::data::{PairPath, Store};
use crate::infer::{ensemble, load_models, with_views, Dihedral, Restore, Tiled, TtaMode, TtaPlan};
use crate::io::EmaChoice;
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
    /// Overrides of the validation split (by default the checkpoints' own).
    pub seed: Option<u64>,
    pub val_fraction: Option<f64>,
    pub tta: TtaMode,
    /// Raw weights or their moving average.
    pub ema: EmaChoice,
    /// Tile size and overlap.
    pub tile: Option<(i64, i64)>,
    pub device: Device,
    /// A progress bar on a terminal.
    pub progress: bool,
    /// How PSNR and SSIM are computed.
    pub metric: Metric,
}

/// Decodes the pairs (in parallel), checking sizes: equal within a pair, and at least `metric`'s
/// SSIM window.
pub fn load_items(pairs: &[PairPath], metric: Metric) -> Result<Vec<EvalItem>> {
    let side = metric.ssim_window();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let store = Store::load(pairs, workers)?;
    store
        .into_samples()
        .into_iter()
        .map(|s| {
            if s.height < side || s.width < side {
                return Err(Error::data(
                    &s.path,
                    format!(
                        "image is {}x{}, smaller than SSIM's {side}x{side} window (--metric {}), so it cannot be scored",
                        s.width, s.height, metric.name()
                    ),
                ));
            }
            Ok(EvalItem::from(s))
        })
        .collect()
}

/// The chosen pairs (not decoded yet) and the networks, ready to score.
pub struct Prepared {
    pub setup: EvalSetup,
    pub pairs: Vec<PairPath>,
    /// The checkpoints averaged, without TTA or tiles ([`Self::restorer`] adds them).
    pub base: Box<dyn Restore>,
    /// What `--tta auto` resolves to for these checkpoints (`None` if it cannot tell).
    pub auto: Option<TtaPlan>,
    tile: Option<(i64, i64)>,
}

impl Prepared {
    /// The forward path with `views` averaged and the session's tiling.
    pub fn restorer(&self, views: &[Dihedral]) -> Box<dyn Restore + '_> {
        with_views(&*self.base, views, self.tile).expect("tiling was checked in prepare")
    }
}

/// Every check a user can fail, before any image is decoded: flags, weights, split, data.
pub fn prepare(opts: &EvalOptions) -> Result<Prepared> {
    if opts.weights.is_empty() {
        return Err(Error::Usage("give at least one --weights checkpoint".into()));
    }
    if let Some((size, overlap)) = opts.tile {
        Tiled::new((), size, overlap)?;
    }
    let models = load_models(&opts.weights, opts.device, opts.ema)?;
    let checkpoints: Vec<(&Path, _)> = models.iter().map(|m| (m.path.as_path(), &m.meta)).collect();
    let params = match opts.split {
        SplitName::Test => None,
        _ => Some(split_params(&checkpoints, opts.seed, opts.val_fraction)?),
    };
    let (pairs, notice) = split_pairs(&opts.data, opts.split, params.as_ref(), &checkpoints)?;
    let tta = TtaPlan::resolve(opts.tta, &checkpoints)?;
    let auto = match tta.mode {
        TtaMode::Auto => Some(tta.clone()),
        _ => TtaPlan::resolve(TtaMode::Auto, &checkpoints).ok(),
    };
    let setup = EvalSetup {
        weights: opts.weights.clone(),
        runs: models.iter().map(|m| m.meta.run().map(String::from)).collect(),
        models: models.len(),
        ema: models.iter().map(|m| m.ema).collect(),
        tta: tta.mode,
        tta_views: tta.views,
        tta_notice: tta.notice,
        tile: opts.tile,
        data: opts.data.clone(),
        split: opts.split,
        split_params: params,
        notice,
        metric: opts.metric,
        count: pairs.len(),
        device: format!("{:?}", opts.device),
    };
    Ok(Prepared { setup, pairs, base: Box::new(ensemble(models)), auto, tile: opts.tile })
}

/// [`evaluate`] with a progress bar on a terminal.
pub fn score(
    restorer: &dyn Restore,
    items: &[EvalItem],
    device: Device,
    metric: Metric,
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
    let report = evaluate(restorer, items, device, metric, None, keep_outputs, |i| {
        bar.set_position(i as u64)
    });
    bar.finish_and_clear();
    report
}

/// A finished evaluation.
#[derive(Debug, Clone)]
pub struct EvalRun {
    pub setup: EvalSetup,
    pub report: EvalReport,
    /// `--tta-compare`'s rows (empty without it).
    pub tta_compare: Vec<TtaScore>,
}

impl EvalRun {
    /// What `--format json` prints and `--output` writes.
    pub fn file(&self) -> EvalFile {
        EvalFile {
            format_version: super::summary::EVAL_FORMAT_VERSION,
            summary: self.report.summary(),
            images: self.report.images.clone(),
            setup: self.setup.clone(),
            tta_compare: self.tta_compare.clone(),
        }
    }
}
