//! The training step: forward, loss, backward, gradient clipping, AdamW. `train`, `bench --mode
//! train` and the tests all run this one, so a benchmark times what users run.

use super::amp::GradScaler;
use super::loss::{Loss, LossTerms};
use super::optim::AdamW;
use crate::config::{Experiment, OptimizerKind, Precision};
use crate::dist::{Collective, Single};
use crate::infer::{padded, Restore};
use crate::io::ScalerState;
use crate::model::{Network, Trained};
use crate::native::Autocast;
use crate::Result;
use std::cell::RefCell;
use std::rc::Rc;
use tch::{nn, Device, Kind, Tensor};

/// What one step did.
#[derive(Debug)]
pub struct StepOutcome {
    /// The loss and its terms (on the device; reading them is a host sync).
    pub terms: LossTerms,
    /// The global gradient norm before clipping, when `train.grad_clip` is set.
    pub grad_norm: Option<Tensor>,
    /// fp16 with the reference optimizer: a gradient overflowed, so the update was skipped and
    /// the scale lowered. (The fused optimizer skips on the device, unseen here.)
    pub skipped: bool,
    /// The loss or the gradient norm was NaN/inf (checked only when asked); no update was made.
    pub nonfinite: bool,
}

/// A network with its loss and optimizer, and the fp16 scaler when training in fp16.
pub struct TrainStep {
    pub vs: nn::VarStore,
    pub model: Network,
    pub loss: Loss,
    pub opt: AdamW,
    pub precision: Precision,
    /// Present for `train.precision: fp16`.
    pub scaler: Option<GradScaler>,
    pub grad_clip: Option<f64>,
    device: Device,
    /// The processes whose gradients are averaged ([`Single`] alone).
    ranks: Rc<dyn Collective>,
    /// The run's seed and the steps taken so far: a step's random draws (MoCE-IR's routing
    /// noise) are a function of both, so an exact resume draws them again. The trainer sets
    /// `steps_taken` before each step; each step counts itself for the other callers.
    seed: u64,
    pub steps_taken: u64,
}

impl TrainStep {
    /// The experiment's network (seeded with `exp.seed`), loss and optimizer on `device`.
    pub fn new(exp: &Experiment, device: Device) -> Result<Self> {
        let loss = Loss::new(&exp.loss, device)?;
        let vs = nn::VarStore::new(device);
        let model = Network::seeded(&vs.root(), &exp.model, exp.seed);
        let opt = AdamW::from_config(&vs, &exp.train)?;
        let precision = exp.train.precision;
        let scaler = (precision == Precision::Fp16)
            .then(|| GradScaler::new(&ScalerState::default(), device));
        Ok(TrainStep {
            vs,
            model,
            loss,
            opt,
            precision,
            scaler,
            grad_clip: exp.train.grad_clip,
            device,
            ranks: Rc::new(Single),
            seed: exp.seed,
            steps_taken: 0,
        })
    }

    /// Trains data-parallel with `ranks`: rank 0's weights are copied to every rank now, and
    /// each step averages the gradients over the ranks.
    pub fn join(&mut self, ranks: Rc<dyn Collective>) -> Result<()> {
        ranks.broadcast_params(&self.opt.params())?;
        self.ranks = ranks;
        Ok(())
    }

    /// Continues with a saved scaler state; switching precision on resume starts or drops it.
    pub fn resume_scaler(&mut self, saved: Option<ScalerState>) {
        if let (Some(scaler), Some(state)) = (&mut self.scaler, saved) {
            *scaler = GradScaler::new(&state, self.device);
        }
    }

    /// The network's output, under autocast in bf16/fp16 (the output then has that dtype; the
    /// loss upcasts it).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _autocast = self.autocast(x.device())?;
        Ok(self.model.restore(x))
    }

    /// Autocast to the run's precision on `device` while the guard lives (none in fp32).
    fn autocast(&self, device: Device) -> Result<Option<Autocast>> {
        let dtype = match self.precision {
            Precision::Fp32 => return Ok(None),
            Precision::Bf16 => Kind::BFloat16,
            Precision::Fp16 => Kind::Half,
        };
        Ok(Some(Autocast::new(device, dtype)?))
    }

    /// The training forward (noisy routing for MoCE-IR, with its balance loss), padded and
    /// under autocast as [`TrainStep::forward`].
    pub fn forward_train(&self, x: &Tensor, draws: Option<&Tensor>) -> Result<Trained> {
        let _autocast = self.autocast(x.device())?;
        let balance = RefCell::new(None);
        let output = padded(x, self.model.pad_multiple(), |x| {
            let t = self.model.forward_train(x, draws);
            *balance.borrow_mut() = t.balance;
            t.output
        });
        Ok(Trained { output, balance: balance.into_inner() })
    }

    /// The step's random draws (MoCE-IR's routing noise) for all its images, from one seed:
    /// every micro-batch of every rank (`accumulate x world x batch` rows, in the loader's
    /// order). None for a network without draws.
    fn step_draws(&self, micro_batches: usize, batch: i64) -> Option<Tensor> {
        let world = self.ranks.world() as i64;
        self.model
            .training_draws(mix(self.seed, self.steps_taken), micro_batches as i64 * world * batch)
    }

    /// The rows of micro-batch `micro` on this rank: the loader gives micro-batch m of a step on
    /// rank r the images at `(m * world + r) * batch`, so each image gets the same draws however
    /// the step's images are split over ranks and micro-batches.
    fn draws_of(&self, all: &Tensor, micro: usize, batch: i64) -> Tensor {
        let (rank, world) = (self.ranks.rank() as i64, self.ranks.world() as i64);
        all.narrow(1, (micro as i64 * world + rank) * batch, batch).to_device(self.device)
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
        self.step_accumulated(&[(x.shallow_clone(), y.shallow_clone())], lr, check_finite)
    }

    /// One optimizer step on several micro-batches `(x, y)` of equal size (gradient
    /// accumulation): each one's loss, divided by their number, is backpropagated in turn, so
    /// the gradient is that of the mean loss over all of them, as one batch of their union
    /// would give (the networks have no batch statistics; MoCE-IR's balance loss is each
    /// micro-batch's own, its routing noise the same), holding one micro-batch's activations.
    pub fn step_accumulated(
        &mut self,
        batches: &[(Tensor, Tensor)],
        lr: f64,
        check_finite: bool,
    ) -> Result<StepOutcome> {
        self.opt.zero_grad()?;
        let n = batches.len() as f64;
        let mut parts = Vec::with_capacity(batches.len());
        let batch = batches.first().map_or(0, |(x, _)| x.size()[0]);
        let all = self.step_draws(batches.len(), batch);
        for (m, (x, y)) in batches.iter().enumerate() {
            let draws = all.as_ref().map(|a| self.draws_of(a, m, batch));
            let out = self.forward_train(x, draws.as_ref())?;
            let terms = self.loss.compute(&out.output, y, out.balance.as_ref());
            let part =
                if batches.len() == 1 { terms.total.shallow_clone() } else { &terms.total / n };
            match &self.scaler {
                None => part.backward(),
                Some(sc) => sc.scale_loss(&part).backward(),
            }
            parts.push(terms);
        }
        self.steps_taken += 1;
        let terms =
            if parts.len() == 1 { parts.pop().expect("one") } else { LossTerms::mean_of(parts) };
        self.ranks.average_gradients(&self.opt.params(), self.model.routes_gradients())?;
        if let Some(sc) = &mut self.scaler {
            sc.unscale(&self.opt)?;
        }
        let grad_norm = self.grad_clip.map(|c| self.opt.clip_grad_norm(c));
        // With a scaler, overflowing gradients are expected now and then: the scaler skips
        // them, so only the loss is checked.
        let mut nonfinite = check_finite
            && (!is_finite(&terms.total)
                || (self.scaler.is_none() && grad_norm.as_ref().is_some_and(|n| !is_finite(n))));
        // Each rank's loss is its own: a NaN on one must stop all of them at this step, or the
        // others would apply the NaN-averaged gradients and wait for a rank that had stopped.
        // (Every rank checks at the same steps, so they all take part.)
        if check_finite {
            nonfinite = self.ranks.any(nonfinite)?;
        }
        if nonfinite {
            return Ok(StepOutcome { terms, grad_norm, skipped: false, nonfinite });
        }
        let found_inf = self.scaler.as_ref().map(|s| s.found_inf().shallow_clone());
        let skipped = match (self.opt.kind(), &found_inf) {
            (OptimizerKind::Fused, found_inf) => {
                self.opt.step(lr, found_inf.as_ref())?;
                false
            }
            // The reference step decides on the host: one sync per step.
            (OptimizerKind::Reference, Some(f)) if !is_zero(f) => true,
            (OptimizerKind::Reference, _) => {
                self.opt.step(lr, None)?;
                false
            }
        };
        if let Some(sc) = &mut self.scaler {
            sc.update();
        }
        Ok(StepOutcome { terms, grad_norm, skipped, nonfinite })
    }

    /// The current loss scale (fp16; a host sync), for the "overflows at every step" check.
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(GradScaler::scale)
    }
}

/// A seed for the draws of step `step` of a run seeded `seed` (splitmix64 rounds).
fn mix(seed: u64, step: u64) -> u64 {
    let round = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    // libtorch seeds are taken as i64: keep it non-negative.
    round(round(seed) ^ step) >> 1
}

/// Whether a 0-d tensor is finite (a host sync).
pub(crate) fn is_finite(t: &Tensor) -> bool {
    f64::try_from(t.detach().to_kind(tch::Kind::Double)).is_ok_and(f64::is_finite)
}

fn is_zero(t: &Tensor) -> bool {
    f64::try_from(t.reshape([])).is_ok_and(|v| v == 0.0)
}
