//! Dynamic loss scaling for fp16 training with PyTorch's `GradScaler` policy, kept on the device:
//! the loss is multiplied by `scale` before backward; the gradients are unscaled and checked for
//! inf/NaN by one kernel (`found_inf`, no host sync); a step with an overflow changes nothing
//! and halves the scale; `growth_interval` clean steps in a row double it (libtorch's
//! `_amp_update_scale_`).

use super::optim::AdamW;
use crate::io::ScalerState;
use crate::native;
use crate::Result;
use tch::{Device, Kind, Tensor};

/// The scaler of an fp16 run; its [`ScalerState`] is saved with the resume point, so a resumed
/// run continues with the scale it had reached instead of climbing back from 2^16 through
/// skipped steps.
#[derive(Debug)]
pub struct GradScaler {
    /// 0-d float32 on the device (GradScaler's `_scale`).
    scale: Tensor,
    /// Clean steps in a row (0-d int32 on the device).
    growth_tracker: Tensor,
    /// 1 after a step whose gradients overflowed, else 0 (0-d float32).
    found_inf: Tensor,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: usize,
}

impl GradScaler {
    pub fn new(state: &ScalerState, device: Device) -> Self {
        GradScaler {
            scale: Tensor::from(state.scale as f32).to_device(device),
            growth_tracker: Tensor::from(state.clean_steps as i32).to_device(device),
            found_inf: Tensor::zeros([], (Kind::Float, device)),
            growth_factor: state.growth_factor,
            backoff_factor: state.backoff_factor,
            growth_interval: state.growth_interval,
        }
    }

    /// The state to save (a host sync: at save points only).
    pub fn state(&self) -> ScalerState {
        let read = |t: &Tensor| f64::try_from(t.to_kind(Kind::Double)).unwrap_or(0.0);
        ScalerState {
            scale: read(&self.scale),
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
            clean_steps: read(&self.growth_tracker) as usize,
        }
    }

    /// The current scale (a host sync).
    pub fn scale(&self) -> f64 {
        f64::try_from(&self.scale).unwrap_or(f64::NAN)
    }

    /// `loss * scale`, to call backward on.
    pub fn scale_loss(&self, loss: &Tensor) -> Tensor {
        loss * &self.scale
    }

    /// Divides every gradient by the scale in place and records in [`Self::found_inf`] whether
    /// any value is inf/NaN. No host sync.
    pub fn unscale(&mut self, opt: &AdamW) -> Result<()> {
        let _g = tch::no_grad_guard();
        let _ = self.found_inf.zero_();
        let grads = opt.grads();
        if grads.is_empty() {
            return Ok(());
        }
        native::amp_unscale(&grads, &self.found_inf, &self.scale.reciprocal())
    }

    /// 1 if the gradients of the last [`Self::unscale`] overflowed, else 0 (on the device).
    pub fn found_inf(&self) -> &Tensor {
        &self.found_inf
    }

    /// Call once per step after the step (taken or skipped): backs off after an overflow,
    /// grows after `growth_interval` clean steps.
    pub fn update(&mut self) {
        let _g = tch::no_grad_guard();
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            &self.found_inf,
            self.growth_factor,
            self.backoff_factor,
            self.growth_interval as i64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OptimizerKind;
    use tch::nn;

    fn scaler(scale: f64, interval: usize) -> GradScaler {
        let state = ScalerState { scale, growth_interval: interval, ..ScalerState::default() };
        GradScaler::new(&state, Device::Cpu)
    }

    #[test]
    fn scaled_backward_then_unscale_gives_the_plain_gradient() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[4], nn::Init::Const(0.5));
        let mut opt = AdamW::new(&vs, OptimizerKind::Fused, [0.9, 0.999], 1e-8, 0.0).unwrap();
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.25]);
        let loss = (&w * &x).sum(Kind::Float);
        loss.backward();
        let plain = w.grad().copy();
        opt.zero_grad().unwrap();
        let mut scaler = GradScaler::new(&ScalerState::default(), Device::Cpu);
        scaler.scale_loss(&(&w * &x).sum(Kind::Float)).backward();
        scaler.unscale(&opt).unwrap();
        assert!(w.grad().allclose(&plain, 0.0, 0.0, false), "powers of two unscale exactly");
        assert_eq!(f64::try_from(scaler.found_inf()).unwrap(), 0.0);
    }

    #[test]
    fn overflow_backs_off_and_clean_steps_grow_the_scale() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let opt = AdamW::new(&vs, OptimizerKind::Fused, [0.9, 0.999], 1e-8, 0.0).unwrap();
        (&w * f64::INFINITY).sum(Kind::Float).backward();
        let mut s = scaler(1024.0, 2);
        s.unscale(&opt).unwrap();
        assert_eq!(f64::try_from(s.found_inf()).unwrap(), 1.0);
        s.update();
        assert_eq!(s.scale(), 512.0);
        let _ = s.found_inf.zero_();
        s.update();
        assert_eq!(s.state().clean_steps, 1);
        s.update();
        assert_eq!((s.scale(), s.state().clean_steps), (1024.0, 0));
        // The state round-trips through what is saved.
        let again = GradScaler::new(&s.state(), Device::Cpu);
        assert_eq!(again.state(), s.state());
    }
}
