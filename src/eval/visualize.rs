//! `promptir visualize`: degraded | restored | clean panels of a split, named with the restored
//! image's PSNR, plus an `overview.png` stacking the first few. Scores come from the same
//! [`super::evaluate`] as `eval` and training validation.

use super::session::{load_items, prepare, score, EvalOptions, EvalRun};
use crate::data::PairPath;
use crate::io::image::{panel, stack, RgbImage};
use crate::{Error, Result};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

/// Panels stacked in `overview.png`.
pub const OVERVIEW_ROWS: usize = 6;

/// Everything `promptir visualize` takes.
#[derive(Debug, Clone)]
pub struct VisualizeOptions {
    pub eval: EvalOptions,
    /// Folder for the PNGs (created if missing).
    pub output: PathBuf,
    /// How many pairs, taken in turn from each degradation type.
    pub count: usize,
}

#[derive(Debug, Clone)]
pub struct VisualizeSummary {
    /// The panels written, in order.
    pub panels: Vec<PathBuf>,
    pub overview: PathBuf,
    /// The scores of the pictured pairs.
    pub run: EvalRun,
}

/// `rain-12.png` scored 31.4249 dB -> `rain-12_psnr31.42.png`.
pub fn panel_name(name: &str, psnr: f64) -> String {
    let stem = Path::new(name).file_stem().map_or(name.into(), |s| s.to_string_lossy());
    format!("{stem}_psnr{psnr:.2}.png")
}

/// The first `n` pairs taking each type in turn (rain, snow, rain, ...), so a few panels show
/// every type; within a type the dataset order is kept.
pub fn take_by_kind(pairs: &[PairPath], n: usize) -> Vec<PairPath> {
    let mut queues: BTreeMap<&str, VecDeque<&PairPath>> = BTreeMap::new();
    for p in pairs {
        queues.entry(&p.kind).or_default().push_back(p);
    }
    let mut out = Vec::with_capacity(n.min(pairs.len()));
    while out.len() < n && queues.values().any(|q| !q.is_empty()) {
        for q in queues.values_mut() {
            if out.len() < n {
                if let Some(p) = q.pop_front() {
                    out.push(p.clone());
                }
            }
        }
    }
    out
}

/// Runs `promptir visualize`. Nothing is written before every pictured pair is restored.
pub fn visualize(opts: &VisualizeOptions) -> Result<VisualizeSummary> {
    if opts.count == 0 {
        return Err(Error::Usage("--count must be at least 1".into()));
    }
    let dir = &opts.output;
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(dir, "--output is a file; give a folder for the panels"));
    }
    crate::io::check_output_folder(dir)?;

    let mut p = prepare(&opts.eval)?;
    let pairs = take_by_kind(&p.pairs, opts.count);
    p.setup.count = pairs.len();
    let items = load_items(&pairs, opts.eval.metric)?;
    let report = score(
        &*p.restorer(&p.setup.views()),
        &items,
        opts.eval.device,
        opts.eval.metric,
        items.len(),
        opts.eval.progress,
    );

    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut panels = Vec::with_capacity(items.len());
    let mut images = Vec::new();
    for ((item, s), out) in items.iter().zip(&report.images).zip(&report.outputs) {
        let restored = RgbImage::from_chw(out, item.clean.height, item.clean.width);
        let img = panel(&[&item.degraded, &restored, &item.clean]);
        let path = dir.join(panel_name(&item.name, s.psnr));
        img.save_png(&path)?;
        panels.push(path);
        if images.len() < OVERVIEW_ROWS {
            images.push(img);
        }
    }
    let overview = dir.join("overview.png");
    stack(&images).save_png(&overview)?;
    Ok(VisualizeSummary {
        panels,
        overview,
        run: EvalRun { setup: p.setup, report, tta_compare: Vec::new() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kind_order() {
        assert_eq!(panel_name("rain-12.png", 31.4249), "rain-12_psnr31.42.png");
        assert_eq!(panel_name("7.jpg", 9.999), "7_psnr10.00.png");
        let pair = |kind: &str, n: usize| PairPath {
            name: format!("{kind}-{n}.png"),
            kind: kind.into(),
            degraded: PathBuf::new(),
            clean: PathBuf::new(),
        };
        let pairs = [pair("rain", 1), pair("rain", 2), pair("rain", 3), pair("snow", 1)];
        let names: Vec<String> = take_by_kind(&pairs, 3).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["rain-1.png", "snow-1.png", "rain-2.png"]);
        assert_eq!(take_by_kind(&pairs, 10).len(), 4);
    }
}
