//! The training step: forward, loss, backward, gradient clipping, AdamW. `train`, `bench --mode
//! train` and the tests all run this one, so a benchmark times what users run.

use super::amp::GradScaler;
use super::loss::{Loss, LossTerms};
use super::optim::AdamW;
use crate::config::{Experiment, Precision};
use crate::infer::Restore;
use crate::io::ScalerState;
use crate::model::PromptIr;
use crate::{Error, Result};
use tch::{nn, Device, Tensor};

/// What one step did.
#[derive(Debug)]
pub struct StepOutcome {
    /// The loss and its terms (on the device; reading them is a host sync).
    pub terms: LossTerms,
    /// The global gradient norm before clipping, when `train.grad_clip` is set.
    pub grad_norm: Option<Tensor>,
    /// fp16 only: a gradient overflowed, so the update was skipped and the scale lowered.
    pub skipped: bool,
    /// The loss or the gradient norm was NaN/inf (checked only when asked); no update was made.
    pub nonfinite: bool,
}

/// A network with its loss and optimizer, and the fp16 scaler when training in fp16.
pub struct TrainStep {
    pub vs: nn::VarStore,
    pub model: PromptIr,
    pub loss: Loss,
    pub opt: AdamW,
    /// Present for `train.precision: fp16`.
    pub scaler: Option<GradScaler>,
    pub grad_clip: Option<f64>,
}

impl TrainStep {
    /// The experiment's network (seeded with `exp.seed`), loss and optimizer on `device`.
    pub fn new(exp: &Experiment, device: Device) -> Result<Self> {
        if exp.train.precision == Precision::Fp16 && !device.is_cuda() {
            return Err(Error::config(
                "train.precision",
                "fp16 needs a CUDA device; use precision: fp32 on CPU",
            ));
        }
        let loss = Loss::new(&exp.loss, device)?;
        let vs = nn::VarStore::new(device);
        let model = PromptIr::seeded(&vs.root(), &exp.model, exp.seed);
        let opt = AdamW::from_config(&vs, &exp.train)?;
        let scaler = match exp.train.precision {
            Precision::Fp32 => None,
            Precision::Fp16 => Some(GradScaler::default()),
        };
        Ok(TrainStep { vs, model, loss, opt, scaler, grad_clip: exp.train.grad_clip })
    }

    /// Continues with a saved scaler state; switching precision on resume starts or drops it.
    pub fn resume_scaler(&mut self, saved: Option<ScalerState>) {
        if let (Some(scaler), Some(state)) = (&mut self.scaler, saved) {
            *scaler = GradScaler::new(state);
        }
    }

    /// One optimizer step on the batch `x -> y` (on the model's device) at learning rate `lr`.
    /// With `check_finite` the loss and gradient norm are read first (a host sync) and a NaN/inf
    /// stops the step before the weights change.
    pub fn step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        lr: f64,
        check_finite: bool,
    ) -> Result<StepOutcome> {
        self.opt.zero_grad()?;
        let terms = match &mut self.scaler {
            None => {
                let terms = self.loss.compute(&self.model.restore(x), y);
                terms.total.backward();
                terms
            }
            Some(sc) => {
                // fp16 forward; the loss is computed in fp32 on the upcast output.
                let terms = self.loss.compute(&tch::autocast(true, || self.model.restore(x)), y);
                (&terms.total * sc.scale()).backward();
                let finite = sc.unscale(&self.opt);
                sc.update(!finite);
                if !finite {
                    // An overflow: skip this step (the scale was lowered), as GradScaler does.
                    return Ok(StepOutcome {
                        terms,
                        grad_norm: None,
                        skipped: true,
                        nonfinite: false,
                    });
                }
                terms
            }
        };
        let grad_norm = self.grad_clip.map(|c| self.opt.clip_grad_norm(c));
        let nonfinite = check_finite
            && (!is_finite(&terms.total) || grad_norm.as_ref().is_some_and(|n| !is_finite(n)));
        if !nonfinite {
            self.opt.step(lr);
        }
        Ok(StepOutcome { terms, grad_norm, skipped: false, nonfinite })
    }

    /// The current loss scale (fp16), for the "overflows at every step" check.
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(GradScaler::scale)
    }
}

/// Whether a 0-d tensor is finite (a host sync).
pub(crate) fn is_finite(t: &Tensor) -> bool {
    f64::try_from(t.detach().to_kind(tch::Kind::Double)).is_ok_and(f64::is_finite)
}
