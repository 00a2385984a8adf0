//! `promptir eval`: a scoring session shown as a table (per degradation type, with the input's
//! own scores) or written as JSON ([`super::EvalFile`]).

use super::metrics::GroupMeans;
use super::session::{load_items, prepare, score, EvalOptions, EvalRun};
use crate::io::check_output_file;
use crate::{Error, Result};
use std::path::Path;

impl EvalRun {
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
