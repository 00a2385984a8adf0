//! What a run reports while it trains: the progress bar and its lines, running means of the loss
//! terms kept on the device between log points, and TensorBoard's scalars and images.

use super::loss::LossTerms;
use crate::dist::Collective;
use crate::eval::{EvalItem, EvalReport};
use crate::io::image::panel;
use crate::io::{RgbImage, SummaryWriter};
use crate::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tch::{Kind, Tensor};

/// A progress bar on a terminal (lines printed through it so it does not tear), plain stderr
/// lines otherwise.
pub(super) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(enabled: bool, len: u64, position: u64, prefix: &str) -> Self {
        let bar = ProgressBar::new(len);
        if enabled && std::io::stderr().is_terminal() {
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:25} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
                )
                .expect("valid template"),
            );
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_position(position);
        bar.set_prefix(prefix.to_string());
        Progress { bar }
    }

    pub fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Running sums of the loss terms, kept on the device between log points (no host sync).
pub(super) struct Running {
    sums: BTreeMap<String, Tensor>,
    count: usize,
    images: usize,
    wait: Duration,
    since: Instant,
}

/// Means since the last drain.
pub(super) struct Drained {
    pub means: BTreeMap<String, f64>,
    pub images_per_s: f64,
    pub wait_fraction: f64,
}

impl Running {
    pub fn new() -> Self {
        Running {
            sums: BTreeMap::new(),
            count: 0,
            images: 0,
            wait: Duration::ZERO,
            since: Instant::now(),
        }
    }

    pub fn add(&mut self, t: &LossTerms, images: usize, wait: Duration) {
        for (k, v) in t.named() {
            let v = v.detach().to_kind(Kind::Double);
            let e = self.sums.entry(k).or_insert_with(|| v.zeros_like());
            *e += v;
        }
        self.count += 1;
        self.images += images;
        self.wait += wait;
    }

    /// Means since the last drain (one host sync), then reset.
    pub fn drain(&mut self) -> Drained {
        let n = self.count.max(1) as f64;
        let means = self
            .sums
            .iter()
            .map(|(k, v)| (k.clone(), f64::try_from(v).unwrap_or(f64::NAN) / n))
            .collect();
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let drained = Drained {
            means,
            images_per_s: self.images as f64 / secs,
            wait_fraction: self.wait.as_secs_f64() / secs,
        };
        *self = Running::new();
        drained
    }
}

impl Drained {
    /// The means over all ranks (each took as many steps), the images over all of them.
    pub fn over(mut self, ranks: &dyn Collective) -> Result<Drained> {
        let mut v: Vec<f64> = self.means.values().copied().collect();
        v.extend([self.images_per_s, self.wait_fraction]);
        let v = ranks.sum_f64(&v)?;
        let w = ranks.world() as f64;
        for (m, s) in self.means.values_mut().zip(&v) {
            *m = s / w;
        }
        let n = self.means.len();
        (self.images_per_s, self.wait_fraction) = (v[n], v[n + 1] / w);
        Ok(self)
    }
}

/// The line printed after a validation point (`at`: the epoch, and its steps when cut short).
pub(super) fn epoch_line(
    at: &str,
    step: usize,
    train_loss: Option<f64>,
    report: Option<&EvalReport>,
    improved: bool,
) -> String {
    let loss = train_loss.map_or("-".into(), |l| format!("{l:.4}"));
    match report {
        Some(r) => format!(
            "{at} step {step}: train loss {loss}, val psnr {:.3} dB ssim {:.4} ({}){}",
            r.mean_psnr(),
            r.mean_ssim(),
            r.by_kind_line(),
            if improved { " [best]" } else { "" }
        ),
        None => format!(
            "{at} step {step}: train loss {loss} (no validation split: data.val_fraction is 0)"
        ),
    }
}

/// A running mean of the total loss over an epoch, on the device until read.
pub(super) struct EpochLoss {
    sum: Option<Tensor>,
    count: usize,
}

impl EpochLoss {
    pub fn new() -> Self {
        EpochLoss { sum: None, count: 0 }
    }

    pub fn add(&mut self, total: &Tensor) {
        let v = total.detach().to_kind(Kind::Double);
        self.sum = Some(match self.sum.take() {
            Some(s) => s + v,
            None => v,
        });
        self.count += 1;
    }

    /// The sum and the number of steps (one host sync), to add up over processes.
    pub fn sum_count(&self) -> (f64, usize) {
        let sum = self.sum.as_ref().and_then(|s| f64::try_from(s).ok()).unwrap_or(0.0);
        (sum, self.count)
    }
}

/// The step's training scalars.
pub(super) fn log_train(tb: &mut dyn SummaryWriter, step: i64, d: &Drained, lr: f64) -> Result<()> {
    for (k, v) in &d.means {
        tb.scalar(&format!("train/{k}"), step, *v)?;
    }
    tb.scalar("train/lr", step, lr)?;
    tb.scalar("train/images_per_s", step, d.images_per_s)?;
    tb.scalar("train/data_wait_fraction", step, d.wait_fraction)
}

/// A validation's scalars (overall and per type) and its degraded | restored | clean panels.
pub(super) fn log_val(
    tb: &mut dyn SummaryWriter,
    step: i64,
    report: &EvalReport,
    items: &[EvalItem],
) -> Result<()> {
    if let Some(l) = report.loss.mean() {
        tb.scalar("val/loss", step, l)?;
    }
    tb.scalar("val/psnr", step, report.mean_psnr())?;
    tb.scalar("val/ssim", step, report.mean_ssim())?;
    for (kind, m) in report.psnr.groups() {
        tb.scalar(&format!("val/psnr_{kind}"), step, m.mean().unwrap_or(f64::NAN))?;
    }
    for (kind, m) in report.ssim.groups() {
        tb.scalar(&format!("val/ssim_{kind}"), step, m.mean().unwrap_or(f64::NAN))?;
    }
    for (i, (item, out)) in items.iter().zip(&report.outputs).enumerate() {
        let restored = RgbImage::from_chw(out, item.clean.height, item.clean.width);
        let p = panel(&[&item.degraded, &restored, &item.clean]);
        tb.image(&format!("val/sample_{i}"), step, &p.hwc, p.height, p.width)?;
    }
    Ok(())
}
