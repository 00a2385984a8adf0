//! `ablation.md`: the table (columns padded so the raw text reads as a table too), the figures
//! and the notes.

use super::{best_ensemble, ensemble_published, Ablation, EvalScore, RunRecord, SeedStat};
use crate::config::LossConfig;

/// "L1 + 0.2 SSIM + 0.05 VGG": the weighted terms, a weight of 1 left out.
pub fn loss_label(l: &LossConfig) -> String {
    let terms: Vec<String> = l
        .terms()
        .filter(|(_, w)| *w > 0.0)
        .map(|(t, w)| if w == 1.0 { t.label.to_string() } else { format!("{w} {}", t.label) })
        .collect();
    terms.join(" + ")
}

/// Distinct values in first-seen order.
pub(super) fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
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

/// Header of the published-reference column (a different image set from ours).
pub const PUBLISHED_HEADER: &str = "report's public test (other split)";

/// One number over an experiment's `group_n` seeds: the value alone for one seed, else
/// "mean ± std" ("[n=k]" when only k seeds have it).
fn stat_cell(s: &SeedStat, group_n: usize) -> String {
    let Some(mean) = s.mean else { return "-".into() };
    let mut cell = match s.std {
        Some(sd) => format!("{mean:.2} ± {sd:.2}"),
        None => format!("{mean:.2}"),
    };
    if group_n > 1 && s.n < group_n {
        cell.push_str(&format!(" [n={}]", s.n));
    }
    cell
}

/// The markdown table rows (cells), experiments first, then ensembles; the last cell is the
/// published reference (empty when there is none).
pub fn table_rows(a: &Ablation) -> Vec<[String; 10]> {
    let mut rows = Vec::new();
    for x in &a.experiments {
        let runs: Vec<&RunRecord> =
            x.runs.iter().filter_map(|n| a.runs.iter().find(|r| &r.name == n)).collect();
        let first = runs[0];
        let n = runs.len();
        // The best ensemble holding any of the seeds, against that member's own numbers: like
        // with like, an ensemble with TTA against the run with TTA.
        let ens = runs
            .iter()
            .filter_map(|r| Some((best_ensemble(&a.ensembles, &r.name)?, *r)))
            .max_by(|p, q| p.0 .0.total_cmp(&q.0 .0));
        let ens_cell = match ens {
            Some(((v, true), r)) => with_gain(Some(v), r.eval_tta.as_ref().map(EvalScore::all)),
            Some(((v, false), r)) => with_gain(Some(v), r.eval.as_ref().map(EvalScore::all)),
            None => "-".into(),
        };
        let done = unique(runs.iter().map(|r| r.epochs_done.to_string()));
        let epochs = if runs.iter().all(|r| r.epochs_done >= r.epochs) {
            first.epochs.to_string()
        } else {
            format!("{}/{}", done.join(","), first.epochs)
        };
        let best = match (n, first.best_val_psnr, first.best_val_epoch) {
            (1, Some(p), Some(e)) => format!("{p:.2} (ep {e})"),
            (1, _, _) => "-".into(),
            _ => stat_cell(&x.best_val_psnr, n),
        };
        let tta = match (x.eval_tta_psnr.mean, x.tta_gain.mean) {
            (Some(_), Some(g)) => format!("{} ({g:+.2})", stat_cell(&x.eval_tta_psnr, n)),
            _ => stat_cell(&x.eval_tta_psnr, n),
        };
        rows.push([
            if n == 1 { x.name.clone() } else { format!("{} ({n} seeds)", x.name) },
            first.loss.clone(),
            first.patch.to_string(),
            first.batch.to_string(),
            epochs,
            best,
            stat_cell(&x.eval_psnr, n),
            tta,
            ens_cell,
            x.published.as_ref().map_or(String::new(), |p| format!("{:.2}", p.psnr)),
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
            ensemble_published(e, &a.runs).map_or(String::new(), |p| format!("{:.2}", p.psnr)),
        ]);
    }
    rows
}

/// `ablation.md`: the table (columns padded so the raw text reads as a table too), the
/// figures and the notes. The published column is left out when no row has a number for it.
pub fn markdown(a: &Ablation) -> String {
    let mut header = vec![
        "experiment".to_string(),
        "loss".into(),
        "patch".into(),
        "batch".into(),
        "epochs".into(),
        "best val PSNR".into(),
        format!("{} PSNR", a.split),
        "+TTA".into(),
        "+ensemble".into(),
        PUBLISHED_HEADER.into(),
    ];
    let mut rows: Vec<Vec<String>> = table_rows(a).into_iter().map(Vec::from).collect();
    if rows.iter().all(|r| r[9].is_empty()) {
        header.pop();
        for r in &mut rows {
            r.pop();
        }
    }
    let cols = header.len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].chars().count()]).max())
        .map(|w| w.unwrap_or(1))
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
    let rule: Vec<String> = (0..cols)
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
        "Generated by `promptir report` from {} run(s) ({} experiment(s)) and {} ensemble(s).\n\n",
        a.runs.len(),
        a.experiments.len(),
        a.ensembles.len()
    ));
    md.push_str(&line(&header));
    md.push_str(&format!("| {} |\n", rule.join(" | ")));
    for r in &rows {
        md.push_str(&line(r));
    }
    md.push_str(
        "\n![Figure 1: training loss per epoch](fig1_train_loss.png)\n\n\
         ![Figure 2: validation loss per epoch](fig2_val_loss.png)\n\n\
         ![Figure 3: validation PSNR per epoch](fig3_val_psnr.png)\n\n",
    );
    md.push_str(
        "Figures: training loss (the mean over each epoch's steps), validation loss and \
         validation PSNR per epoch, one line per experiment (the mean over its seeds). The \
         losses are each run's own training objective, so their levels compare only between \
         runs with the same loss.\n\n",
    );
    md.push_str("Notes:\n\n");
    for n in &a.notes {
        md.push_str(&format!("- {n}\n"));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_labels_name_the_weighted_terms() {
        let mut l = LossConfig::default().with("ssim", 0.2).with("perceptual", 0.05);
        assert_eq!(loss_label(&l), "L1 + 0.2 SSIM + 0.05 VGG");
        l.set_weight("perceptual", 0.0);
        assert_eq!(loss_label(&l), "L1 + 0.2 SSIM");
        l = LossConfig::only(&[("l1", 0.5), ("ssim", 1.0)]);
        assert_eq!(loss_label(&l), "0.5 L1 + SSIM");
        l = LossConfig::default().with("edge", 0.05).with("psnr", 0.01);
        assert_eq!(loss_label(&l), "L1 + 0.05 edge + 0.01 PSNR");
    }
}
