//! Scoring restored images against ground truth. Training validation and `promptir eval` call
//! the same [`evaluate`], so a number in TensorBoard and a number in the eval table mean the same.
//!
//! Each image is scored in the [`Metric`] convention asked for (training validation: the
//! course's, PSNR on the rounded u8 output like the leaderboard), then averaged.

use super::metrics::{GroupMeans, Mean, Metric};
use super::summary::EvalSummary;
use crate::data::Sample;
use crate::infer::Restore;
use crate::io::{to_u8_chw, RgbImage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

impl From<Sample> for EvalItem {
    fn from(s: Sample) -> Self {
        let img = |hwc: Vec<u8>| RgbImage { width: s.width, height: s.height, hwc };
        EvalItem { degraded: img(s.degraded), clean: img(s.clean), name: s.name, kind: s.kind }
    }
}

/// Scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// `{"all": .., "rain": .., ...}`: the overall mean and each type's.
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

    /// Every metric's sum and count overall and per group of `kinds`, then the loss's: what
    /// [`EvalReport::with_sums`] rebuilds the means from once summed over processes.
    pub fn sums(&self, kinds: &[String]) -> Vec<f64> {
        let mut v = Vec::new();
        for g in [&self.psnr, &self.ssim, &self.psnr_input, &self.ssim_input] {
            // The overall sum as summed in order, so that one process's report comes back
            // unchanged (pooling the groups would add in another order).
            v.extend([g.overall().sum(), g.overall().count() as f64]);
            for k in kinds {
                let m = g.groups().get(k).copied().unwrap_or_default();
                v.extend([m.sum(), m.count() as f64]);
            }
        }
        v.extend([self.loss.sum(), self.loss.count() as f64]);
        v
    }

    /// The report with its means replaced by those of `sums` (laid out as [`Self::sums`]);
    /// groups without values are left out, as `evaluate` would.
    pub fn with_sums(mut self, kinds: &[String], sums: &[f64]) -> Self {
        let mut at = 0;
        let mut next = || {
            let m = Mean::from_sum(sums[at], sums[at + 1].round() as usize);
            at += 2;
            m
        };
        let mut group = || {
            let all = next();
            let means: BTreeMap<String, Mean> = kinds.iter().map(|k| (k.clone(), next())).collect();
            GroupMeans::new(all, means.into_iter().filter(|(_, m)| m.count() > 0).collect())
        };
        (self.psnr, self.ssim, self.psnr_input, self.ssim_input) =
            (group(), group(), group(), group());
        self.loss = next();
        self
    }

    /// The means, as files store them.
    pub fn summary(&self) -> EvalSummary {
        EvalSummary {
            // The scored images, also after `with_sums` (where `images` holds one share).
            count: self.psnr.overall().count(),
            psnr: means(&self.psnr),
            ssim: means(&self.ssim),
            psnr_input: means(&self.psnr_input),
            ssim_input: means(&self.ssim_input),
            loss: self.loss.mean().filter(|l| l.is_finite()),
        }
    }
}

/// A training loss: (raw output, target) -> the 0-d total.
pub type LossFn<'a> = &'a dyn Fn(&Tensor, &Tensor) -> Tensor;

/// Restores every item on `device` (under no_grad) and scores it. The loss, when given, sees the
/// raw (unclamped) output, as in training.
pub fn evaluate(
    model: &dyn Restore,
    items: &[EvalItem],
    device: Device,
    metric: Metric,
    loss: Option<LossFn<'_>>,
    keep_outputs: usize,
    mut progress: impl FnMut(usize),
) -> EvalReport {
    let _guard = tch::no_grad_guard();
    let mut r = EvalReport::default();
    for (i, it) in items.iter().enumerate() {
        let x = it.degraded.to_tensor().unsqueeze(0).to_device(device);
        let y = model.restore(&x);
        if let Some(l) = loss {
            let target = it.clean.to_tensor().unsqueeze(0).to_device(device);
            r.loss.add(f64::try_from(l(&y, &target).to_kind(Kind::Double)).unwrap_or(f64::NAN));
        }
        let y = y.squeeze_dim(0).to_device(Device::Cpu);
        let gt = it.clean.to_tensor();
        let (psnr, ssim) = metric.score(&y, &gt);
        let (psnr_input, ssim_input) = metric.score(&it.degraded.to_tensor(), &gt);
        let score = ImageScore {
            name: it.name.clone(),
            kind: it.kind.clone(),
            psnr,
            ssim,
            psnr_input,
            ssim_input,
        };
        r.psnr.add(&it.kind, score.psnr);
        r.ssim.add(&it.kind, score.ssim);
        r.psnr_input.add(&it.kind, score.psnr_input);
        r.ssim_input.add(&it.kind, score.ssim_input);
        r.images.push(score);
        if i < keep_outputs {
            r.outputs.push(to_u8_chw(&y));
        }
        progress(i + 1);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::FnRestore;

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
        let r = evaluate(&id, &items, Device::Cpu, Metric::Course, None, 1, |_| {});
        for s in &r.images {
            assert!((s.psnr - s.psnr_input).abs() < 1e-12, "identity output == input");
        }
        let s = r.summary();
        assert!(s.psnr["rain"] > s.psnr["snow"]);
        let mean = (r.images[0].psnr + r.images[1].psnr) / 2.0;
        assert!((s.psnr["all"] - mean).abs() < 1e-12);
        assert_eq!((s.count, s.loss), (2, None));
        assert_eq!(r.outputs.len(), 1);
        assert_eq!(r.outputs[0], items[0].degraded.to_chw());
    }

    #[test]
    fn one_process_sums_rebuild_the_same_report_bit_for_bit() {
        // What a single process's "reduction" does: its own sums back in. Five images whose
        // PSNRs do not add associatively, and a kind with no image (left out, as evaluate does).
        let items: Vec<EvalItem> = (0..5u8)
            .map(|i| EvalItem {
                name: format!("{i}"),
                kind: ["rain", "snow"][usize::from(i % 2)].into(),
                degraded: img(3 + 7 * i, 11 + usize::from(i), 9),
                clean: img(0, 11 + usize::from(i), 9),
            })
            .collect();
        let id = FnRestore(|t: &Tensor| t.shallow_clone());
        let r = evaluate(&id, &items, Device::Cpu, Metric::Course, None, 0, |_| {});
        let kinds = ["haze", "rain", "snow"].map(String::from);
        let back = r.clone().with_sums(&kinds, &r.sums(&kinds));
        assert_eq!(back.summary(), r.summary());
        assert!(!back.psnr.groups().contains_key("haze"));
        assert_eq!(back.psnr.overall().sum().to_bits(), r.psnr.overall().sum().to_bits());
    }
}
