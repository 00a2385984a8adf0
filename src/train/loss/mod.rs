//! The training loss: the weighted sum of the terms of [`TERMS`] whose weight is above 0.
//!
//! Inputs are the raw network output and the target, (B, 3, H, W) in [0, 1]; the output is not
//! clamped, so the loss also pushes values back into range. Terms are computed in fp32 whatever
//! the input dtype (SSIM's variance differences are too imprecise in bf16).

mod config;
mod ssim;
mod terms;

pub use config::{Distance, LossConfig};
pub use ssim::gaussian_ssim;
pub use terms::{Source, Term, TermFn, TERMS};

use crate::Result;
use tch::{Device, Kind, Tensor};

/// The weighted loss and its unweighted terms (those with a weight above 0, in [`TERMS`]
/// order).
#[derive(Debug)]
pub struct LossTerms {
    pub total: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
}

impl LossTerms {
    /// The unweighted term `key`, when it is on.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.terms.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }

    /// The total (`loss`) and each term (`loss_<key>`), as TensorBoard names them.
    pub fn named(&self) -> Vec<(String, &Tensor)> {
        let terms = self.terms.iter().map(|(k, t)| (format!("loss_{k}"), t));
        std::iter::once(("loss".to_string(), &self.total)).chain(terms).collect()
    }

    /// The mean of several micro-batches' terms (detached: for logging and checks), as one
    /// step over all of them reports it.
    pub fn mean_of(parts: Vec<LossTerms>) -> LossTerms {
        let n = parts.len() as f64;
        let mean = |f: &dyn Fn(&LossTerms) -> &Tensor| {
            let sum = parts.iter().map(|p| f(p).detach()).reduce(|a, b| a + b);
            sum.expect("at least one micro-batch") / n
        };
        let keys = parts.first().map_or(Vec::new(), |p| p.terms.iter().map(|t| t.0).collect());
        let terms = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, mean(&|p: &LossTerms| &p.terms[i].1)))
            .collect();
        LossTerms { total: mean(&|p| &p.total), terms }
    }
}

/// The configured training loss: each term that is on, built once (the perceptual term holds
/// its frozen VGG16); `None` for a term the network computes.
pub struct Loss {
    terms: Vec<(&'static Term, f64, Option<TermFn>)>,
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Loss");
        for (t, w, _) in &self.terms {
            d.field(t.key, w);
        }
        d.finish()
    }
}

impl Loss {
    /// Builds the terms weighted above 0 (the VGG16 weights are read only for `perceptual`).
    pub fn new(cfg: &LossConfig, device: Device) -> Result<Self> {
        let mut terms = Vec::new();
        for (t, w) in cfg.terms().filter(|(_, w)| *w > 0.0) {
            let f = match t.source {
                Source::Images(build) => Some(build(cfg, device)?),
                Source::Network => None,
            };
            terms.push((t, w, f));
        }
        Ok(Loss { terms })
    }

    /// `pred` is the raw network output, `target` the clean image, both (B, 3, H, W);
    /// `balance` the network's own term from its training forward. Without it (validation, or
    /// a network that has none) the network's terms are left out.
    pub fn compute(&self, pred: &Tensor, target: &Tensor, balance: Option<&Tensor>) -> LossTerms {
        assert_eq!(pred.size(), target.size(), "loss: pred and target shapes differ");
        let pred = pred.to_kind(Kind::Float);
        let target = target.to_kind(Kind::Float);
        let (mut terms, mut total) = (Vec::new(), None::<Tensor>);
        for (t, w, f) in &self.terms {
            let v = match f {
                Some(f) => f(&pred, &target),
                None => match balance {
                    Some(b) => b.to_kind(Kind::Float),
                    None => continue,
                },
            };
            let weighted = &v * *w;
            total = Some(match total {
                None => weighted,
                Some(s) => s + weighted,
            });
            terms.push((t.key, v));
        }
        let total = total.unwrap_or_else(|| Tensor::zeros([], (Kind::Float, pred.device())));
        LossTerms { total, terms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::kind::FLOAT_CPU;

    #[test]
    fn terms_weighted_zero_are_skipped_and_debug_lists_each_term() {
        let x = Tensor::zeros([1, 3, 16, 13], FLOAT_CPU);
        let cfg = LossConfig::only(&[("l1", 2.0), ("edge", 0.5)]);
        let loss = Loss::new(&cfg, Device::Cpu).unwrap();
        assert_eq!(format!("{loss:?}"), "Loss { l1: 2.0, edge: 0.5 }");
        let t = loss.compute(&x, &(&x + 0.1), None);
        assert!(t.get("ssim").is_none() && t.get("edge").is_some());
        let l1 = f64::try_from(t.get("l1").unwrap()).unwrap();
        assert!((l1 - 0.1).abs() < 1e-6, "{l1}");
        // A constant offset has no edges.
        assert!((f64::try_from(&t.total).unwrap() - 0.2).abs() < 1e-6);
        let names: Vec<String> = t.named().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["loss", "loss_l1", "loss_edge"]);
    }
}
