//! Dynamic loss scaling for fp16 training, with PyTorch's `GradScaler` policy: multiply the
//! loss by `scale` before backward, unscale the gradients, skip the step and halve the scale when
//! any gradient is inf/NaN, double it after `growth_interval` clean steps.

use crate::optim::AdamW;
use serde::{Deserialize, Serialize};
use tch::Kind;

/// Saved with the resume point (`TrainState::scaler`), so a resumed fp16 run continues with the
/// scale it had reached instead of climbing back from 2^16 through skipped steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: usize,
    clean_steps: usize,
}

impl Default for GradScaler {
    /// `torch.amp.GradScaler` defaults: 2^16, x2 every 2000 clean steps, x0.5 on overflow.
    fn default() -> Self {
        GradScaler {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            clean_steps: 0,
        }
    }
}

impl GradScaler {
    pub fn new(init_scale: f64, growth_interval: usize) -> Self {
        GradScaler { scale: init_scale, growth_interval, ..Self::default() }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Divides every gradient by the scale in place; returns whether all of them are finite.
    /// (One host sync per step, as PyTorch's scaler does.)
    pub fn unscale(&self, opt: &AdamW) -> bool {
        let _g = tch::no_grad_guard();
        let inv = 1.0 / self.scale;
        let mut finite = true;
        for mut g in opt.grads() {
            let _ = g.g_mul_scalar_(inv);
            if finite {
                finite = bool::try_from(g.isfinite().all()).unwrap_or(false);
            }
        }
        finite
    }

    /// Call once per step after `unscale` (and after the step, if it was taken).
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff_factor;
            self.clean_steps = 0;
        } else {
            self.clean_steps += 1;
            if self.clean_steps == self.growth_interval {
                self.scale *= self.growth_factor;
                self.clean_steps = 0;
            }
        }
    }
}

/// Whether a 0-d loss is finite (a host sync).
pub fn is_finite(t: &tch::Tensor) -> bool {
    f64::try_from(t.detach().to_kind(Kind::Double)).map(f64::is_finite).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind, Tensor};

    #[test]
    fn scaled_backward_then_unscale_gives_the_plain_gradient() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[4], nn::Init::Const(0.5));
        let mut opt = AdamW::new(&vs, [0.9, 0.999], 1e-8, 0.0).unwrap();
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.25]);
        let loss = (&w * &x).sum(Kind::Float);
        loss.backward();
        let plain = w.grad().copy();
        opt.zero_grad().unwrap();
        let scaler = GradScaler::default();
        ((&w * &x).sum(Kind::Float) * scaler.scale()).backward();
        assert!(scaler.unscale(&opt));
        assert!(w.grad().allclose(&plain, 0.0, 0.0, false), "powers of two unscale exactly");
    }

    #[test]
    fn overflow_skips_and_backs_off_then_grows() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let opt = AdamW::new(&vs, [0.9, 0.999], 1e-8, 0.0).unwrap();
        (&w * f64::INFINITY).sum(Kind::Float).backward();
        let mut s = GradScaler::new(1024.0, 2);
        let ok = s.unscale(&opt);
        assert!(!ok);
        s.update(!ok);
        assert_eq!(s.scale(), 512.0);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale(), 1024.0);
    }
}
