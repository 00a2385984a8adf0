//! `promptir eval`: a scoring session shown as a table (per degradation type, with the input's
//! own scores) or written as JSON ([`super::EvalFile`]).

use super::metrics::GroupMeans;
use super::session::{load_items, prepare, score, EvalOptions, EvalRun};
use super::summary::TtaScore;
use crate::infer::{view_list, Dihedral, TtaMode, TtaPlan};
use crate::io::check_output_file;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

impl EvalRun {
    /// A header naming what was scored, then one row per degradation type and `all`: the
    /// model's PSNR/SSIM, the input's (identity baseline) and the PSNR gain.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let r = &self.report;
        let names: Vec<String> = s.weights.iter().map(|w| w.display().to_string()).collect();
        let mut out = format!(
            "weights: {} ({}{})\nTTA {}, {}, device {}\n",
            names.join(", "),
            if s.models == 1 { "1 model".to_string() } else { format!("ensemble of {}", s.models) },
            match s.ema.iter().filter(|&&e| e).count() {
                0 => "",
                n if n == s.ema.len() => "; moving average of the weights",
                _ => "; moving average where a checkpoint has one",
            },
            s.tta_text(),
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
        out += &format!("metric: {}\n", s.metric.describe());
        for n in [&s.notice, &s.tta_notice].into_iter().flatten() {
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
        if !self.tta_compare.is_empty() {
            out += &self.tta_table();
        }
        out
    }

    /// `--tta-compare`: PSNR per degradation type for each view set, with its gain over `off`.
    fn tta_table(&self) -> String {
        let types = self.tta_compare[0].psnr.keys().map(String::as_str).filter(|k| *k != "all");
        let groups: Vec<&str> = types.chain(["all"]).collect();
        let mut out = format!("\nTTA views: PSNR (gain over off)\n{:<10}", "views");
        for g in &groups {
            out += &format!(" {g:>16}");
        }
        out += "\n";
        for row in &self.tta_compare {
            out += &format!("{:<10}", format!("{} ({})", row.mode, row.views.len()));
            for g in &groups {
                let p = row.psnr.get(*g).copied().unwrap_or(f64::NAN);
                let d = row.psnr_gain.get(*g).copied().unwrap_or(f64::NAN);
                out += &format!(" {p:>8.2} ({d:>+5.2})");
            }
            out += "\n";
        }
        for row in &self.tta_compare {
            out += &format!("{}: {}\n", row.mode, view_list(&row.views));
        }
        out
    }
}

/// The view sets `--tta-compare` scores: off, flips, 8, and auto's when it is none of them.
fn compare_sets(auto: Option<&TtaPlan>) -> Vec<(TtaMode, Vec<Dihedral>)> {
    let mut sets: Vec<(TtaMode, Vec<Dihedral>)> = [TtaMode::Off, TtaMode::Flips, TtaMode::Eight]
        .into_iter()
        .map(|m| (m, m.fixed_views().expect("a fixed mode")))
        .collect();
    if let Some(a) = auto {
        if sets.iter().all(|(_, v)| *v != a.views) {
            sets.push((TtaMode::Auto, a.views.clone()));
        }
    }
    sets
}

/// Runs `promptir eval`; with `output`, also writes [`EvalRun::file`] there atomically. With
/// `tta_compare`, also scores the view sets of `compare_sets` on the same decoded images
/// (the `--tta` one is not run twice).
pub fn run_eval(opts: &EvalOptions, tta_compare: bool, output: Option<&Path>) -> Result<EvalRun> {
    if let Some(o) = output {
        if o.is_dir() {
            return Err(Error::data(o, "--output is a folder; give a file name such as eval.json"));
        }
        check_output_file(o)?;
    }
    let p = prepare(opts)?;
    let items = load_items(&p.pairs, opts.metric)?;
    let views = p.setup.views();
    let report = score(&*p.restorer(&views), &items, opts.device, opts.metric, 0, opts.progress);
    let mut rows = Vec::new();
    if tta_compare {
        let mut off: Option<BTreeMap<String, f64>> = None;
        for (mode, set) in compare_sets(p.auto.as_ref()) {
            let s = if set == views {
                report.summary()
            } else {
                score(&*p.restorer(&set), &items, opts.device, opts.metric, 0, opts.progress)
                    .summary()
            };
            let base = off.get_or_insert_with(|| s.psnr.clone());
            let psnr_gain = s.psnr.iter().map(|(k, v)| (k.clone(), v - base[k])).collect();
            rows.push(TtaScore { mode, views: set, psnr: s.psnr, ssim: s.ssim, psnr_gain });
        }
    }
    let run = EvalRun { setup: p.setup, report, tta_compare: rows };
    if let Some(o) = output {
        run.file().write(o)?;
    }
    Ok(run)
}
