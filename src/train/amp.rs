//! Dynamic loss scaling for fp16 training, with PyTorch's `GradScaler` policy: multiply the
//! loss by `scale` before backward, unscale the gradients, skip the step and halve the scale when
//! any gradient is inf/NaN, double it after `growth_interval` clean steps.

use super::optim::AdamW;
use crate::io::ScalerState;

/// The scaler of an fp16 run; its [`ScalerState`] is saved with the resume point, so a resumed
/// run continues with the scale it had reached instead of climbing back from 2^16 through
/// skipped steps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GradScaler {
    state: ScalerState,
}

impl GradScaler {
    pub fn new(state: ScalerState) -> Self {
        GradScaler { state }
    }

    pub fn state(&self) -> &ScalerState {
        &self.state
    }

    pub fn scale(&self) -> f64 {
        self.state.scale
    }

    /// Divides every gradient by the scale in place; returns whether all of them are finite.
    /// (One host sync per step, as PyTorch's scaler does.)
    pub fn unscale(&self, opt: &AdamW) -> bool {
        let _g = tch::no_grad_guard();
        let inv = 1.0 / self.state.scale;
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
        let s = &mut self.state;
        if found_inf {
            s.scale *= s.backoff_factor;
            s.clean_steps = 0;
        } else {
            s.clean_steps += 1;
            if s.clean_steps == s.growth_interval {
                s.scale *= s.growth_factor;
                s.clean_steps = 0;
            }
        }
    }
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
        let mut s = GradScaler::new(ScalerState {
            scale: 1024.0,
            growth_interval: 2,
            ..Default::default()
        });
        let ok = s.unscale(&opt);
        assert!(!ok);
        s.update(!ok);
        assert_eq!(s.scale(), 512.0);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale(), 1024.0);
    }
}
