//! AdamW with PyTorch's semantics (`torch.optim.AdamW`, amsgrad off), its state kept in Rust.
//!
//! tch's `nn::Optimizer` keeps its moments inside libtorch with no way to save them, so a resumed
//! run would restart them from zero. Here they live in Rust, keyed by parameter name, and travel
//! through [`AdamW::state_tensors`] / [`AdamW::load_state`] (a safetensors file), so a resumed run
//! continues exactly where it stopped, whichever implementation steps it:
//! - [`OptimizerKind::Fused`]: libtorch's `_fused_adamw_` kernel (CPU and CUDA) over all
//!   parameters at once, through the native layer, as `AdamW(fused=True)` runs it; the fp16
//!   skip (`found_inf`) happens on the device.
//! - [`OptimizerKind::Reference`]: per parameter in PyTorch's order (`_single_tensor_adam`):
//!   `p *= 1 - lr*wd; m = lerp(m, g, 1-b1); v = b2*v + (1-b2)*g^2;
//!   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`, with `t` counted per parameter;
//!   bitwise equal to `torch.optim.AdamW` on CPU (tests/it/optim.rs).

use crate::config::{OptimizerKind, TrainConfig};
use crate::io::TensorFile;
use crate::native::{self, AdamWStep, AdamWTensors};
use crate::{Error, Result};
use std::collections::BTreeMap;
use tch::{nn, COptimizer, Kind, Tensor};

const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";
const STEP: &str = "step";

/// Steps a parameter took (PyTorch's per-parameter `state["step"]`): counted on the host by
/// the reference step (its bias corrections need the number), on the device by the fused kernel.
enum StepCount {
    Host(i64),
    /// A 0-d float32 tensor on the parameter's device, as `AdamW(fused=True)` keeps it.
    Device(Tensor),
}

impl StepCount {
    /// The count (a host sync for a device count).
    fn value(&self) -> i64 {
        match self {
            StepCount::Host(n) => *n,
            StepCount::Device(t) => f64::try_from(t).map_or(0, |v| v as i64),
        }
    }
}

/// Moments of one parameter, created at its first step with a gradient (as PyTorch does).
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: StepCount,
}

struct Param {
    name: String,
    tensor: Tensor,
    state: Option<Moments>,
}

impl Param {
    /// The weights, their gradient and their moments (zero before the first step); `None`
    /// without a gradient.
    fn with_grad(&mut self) -> Option<(&mut Tensor, Tensor, &mut Moments)> {
        let Param { tensor, state, .. } = self;
        let grad = tensor.grad();
        if !grad.defined() {
            return None;
        }
        let st = state.get_or_insert_with(|| Moments {
            exp_avg: tensor.zeros_like(),
            exp_avg_sq: tensor.zeros_like(),
            step: StepCount::Host(0),
        });
        Some((tensor, grad, st))
    }
}

pub struct AdamW {
    /// Every variable of the VarStore at construction, sorted by name.
    params: Vec<Param>,
    betas: [f64; 2],
    eps: f64,
    weight_decay: f64,
    kind: OptimizerKind,
    /// Used only for `zero_grad`: libtorch's `Optimizer::zero_grad` sets gradients to undefined
    /// (PyTorch's `set_to_none=True`), which tch's `Tensor::zero_grad` cannot do. A parameter
    /// left out of a backward pass then keeps no gradient and is skipped, as in PyTorch.
    grad_reset: COptimizer,
}

impl AdamW {
    /// Tracks every variable of `vs` (variables added later are not tracked).
    pub fn new(
        vs: &nn::VarStore,
        kind: OptimizerKind,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut grad_reset = COptimizer::sgd(0.0, 0.0, 0.0, 0.0, false)?;
        for (_, t) in &vars {
            grad_reset.add_parameters(t, 0)?;
        }
        let params =
            vars.into_iter().map(|(name, tensor)| Param { name, tensor, state: None }).collect();
        Ok(AdamW { params, betas, eps, weight_decay, kind, grad_reset })
    }

    /// `train.optimizer`, `train.betas`, `train.eps`, `train.weight_decay`.
    pub fn from_config(vs: &nn::VarStore, t: &TrainConfig) -> Result<Self> {
        Self::new(vs, t.optimizer, t.betas, t.eps, t.weight_decay)
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Drops all gradients (they become undefined, not zero).
    pub fn zero_grad(&mut self) -> Result<()> {
        Ok(self.grad_reset.zero_grad()?)
    }

    /// Scales all gradients so that their global L2 norm is at most `max_norm`, like
    /// `torch.nn.utils.clip_grad_norm_`, and returns the norm before clipping as a 0-d tensor on
    /// the parameters' device. The scale `min(max_norm / (norm + 1e-6), 1)` stays a tensor, so
    /// no GPU->CPU sync happens here.
    pub fn clip_grad_norm(&self, max_norm: f64) -> Tensor {
        let _no_grad = tch::no_grad_guard();
        let mut grads: Vec<Tensor> =
            self.params.iter().map(|p| p.tensor.grad()).filter(Tensor::defined).collect();
        if grads.is_empty() {
            return Tensor::from_slice(&[0f32]).reshape([]);
        }
        let norms: Vec<Tensor> = grads.iter().map(Tensor::norm).collect();
        let total = Tensor::stack(&norms, 0).norm();
        // PyTorch computes `max_norm / (total + 1e-6)` as `reciprocal() * max_norm`.
        let coef = ((&total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
        for g in &mut grads {
            let _ = g.g_mul_(&coef);
        }
        total
    }

    /// One AdamW step at learning rate `lr` for every parameter that has a gradient. With
    /// `found_inf` (fp16, fused only) a nonzero value makes the step change nothing.
    pub fn step(&mut self, lr: f64, found_inf: Option<&Tensor>) -> Result<()> {
        match self.kind {
            OptimizerKind::Fused => self.step_fused(lr, found_inf),
            OptimizerKind::Reference => {
                assert!(found_inf.is_none(), "the reference step skips on the host");
                self.step_reference(lr);
                Ok(())
            }
        }
    }

    fn step_fused(&mut self, lr: f64, found_inf: Option<&Tensor>) -> Result<()> {
        let _no_grad = tch::no_grad_guard();
        let mut t = AdamWTensors::default();
        for p in &mut self.params {
            let Some((param, grad, st)) = p.with_grad() else { continue };
            if let StepCount::Host(k) = st.step {
                let count = Tensor::from(k as f32).to_device(param.device());
                st.step = StepCount::Device(count);
            }
            let StepCount::Device(step) = &st.step else { unreachable!("made a device count") };
            t.params.push(param.shallow_clone());
            t.grads.push(grad);
            t.exp_avgs.push(st.exp_avg.shallow_clone());
            t.exp_avg_sqs.push(st.exp_avg_sq.shallow_clone());
            t.steps.push(step.shallow_clone());
        }
        if t.params.is_empty() {
            return Ok(());
        }
        let hp =
            AdamWStep { lr, betas: self.betas, weight_decay: self.weight_decay, eps: self.eps };
        native::fused_adamw(&t, hp, None, found_inf)
    }

    fn step_reference(&mut self, lr: f64) {
        let _no_grad = tch::no_grad_guard();
        let [b1, b2] = self.betas;
        for p in &mut self.params {
            let Some((param, grad, st)) = p.with_grad() else { continue };
            let t = st.step.value() + 1;
            st.step = StepCount::Host(t);
            if self.weight_decay != 0.0 {
                let _ = param.g_mul_scalar_(1.0 - lr * self.weight_decay);
            }
            let _ = st.exp_avg.lerp_(&grad, 1.0 - b1);
            // v*b2 + g*(g*(1-b2)) rounds like PyTorch's addcmul_(g, g, value=1-b2).
            let _ = st.exp_avg_sq.g_mul_scalar_(b2).addcmul_(&grad, &(&grad * (1.0 - b2)));
            let t = t as f64;
            let step_size = lr / (1.0 - b1.powf(t));
            let bias_correction2_sqrt = (1.0 - b2.powf(t)).powf(0.5);
            let denom = (st.exp_avg_sq.sqrt() / bias_correction2_sqrt).g_add_scalar_(self.eps);
            // p + (-step_size*m)/denom rounds like PyTorch's addcdiv_(m, denom, value=-step_size).
            let _ = param.addcdiv_(&(&st.exp_avg * -step_size), &denom);
        }
    }

    /// The parameters, sorted by name (the same order in every process).
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.tensor.shallow_clone()).collect()
    }

    /// The defined gradients (for loss scaling and diagnostics).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.tensor.grad()).filter(Tensor::defined).collect()
    }

    /// The largest per-parameter step count (0 before the first step; a host sync per
    /// parameter after fused steps).
    pub fn step_count(&self) -> i64 {
        self.params
            .iter()
            .filter_map(|p| p.state.as_ref().map(|s| s.step.value()))
            .max()
            .unwrap_or(0)
    }

    /// The optimiser state as named tensors for a safetensors file: `<prefix>exp_avg.<param>`,
    /// `<prefix>exp_avg_sq.<param>` (the parameter's shape and dtype) and `<prefix>step.<param>`
    /// (0-d int64), for each parameter that has taken a step, sorted by parameter name.
    pub fn state_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for p in &self.params {
            if let Some(s) = &p.state {
                let name = |what: &str| format!("{prefix}{what}.{}", p.name);
                out.push((name(EXP_AVG), s.exp_avg.shallow_clone()));
                out.push((name(EXP_AVG_SQ), s.exp_avg_sq.shallow_clone()));
                out.push((name(STEP), Tensor::from_slice(&[s.step.value()]).reshape([])));
            }
        }
        out
    }

    /// Replaces the state with the entries of `file` under `prefix` (written by
    /// [`Self::state_tensors`]); other entries are not looked at. Strict: unknown names, missing
    /// entries, wrong shapes or dtypes are errors, and on error the current state is left
    /// unchanged. Parameters absent from the file start fresh.
    pub fn load_state(&mut self, file: &TensorFile, prefix: &str) -> Result<()> {
        let bad = |msg: String| Error::weights(&file.path, msg);
        // param index -> [exp_avg, exp_avg_sq, step] entry names
        let mut found: BTreeMap<usize, [Option<String>; 3]> = BTreeMap::new();
        for name in file.header().into_keys() {
            let Some(entry) = name.strip_prefix(prefix) else { continue };
            let (slot, pname) = [EXP_AVG_SQ, EXP_AVG, STEP]
                .iter()
                .zip([1, 0, 2])
                .find_map(|(what, slot)| {
                    entry.strip_prefix(what)?.strip_prefix('.').map(|rest| (slot, rest))
                })
                .ok_or_else(|| bad(format!("{name:?} is not an optimizer state entry")))?;
            let idx = self
                .params
                .binary_search_by(|p| p.name.as_str().cmp(pname))
                .map_err(|_| bad(format!("{name:?}: the model has no parameter {pname:?}")))?;
            found.entry(idx).or_default()[slot] = Some(name);
        }
        let mut loaded = Vec::with_capacity(found.len());
        for (idx, names) in found {
            let p = &self.params[idx];
            let [Some(m), Some(v), Some(s)] = names else {
                return Err(bad(format!(
                    "incomplete state for {:?}: needs {EXP_AVG}, {EXP_AVG_SQ} and {STEP}",
                    p.name
                )));
            };
            let moment = |n: &str| -> Result<Tensor> {
                let t = file.tensor(n)?;
                if t.size() != p.tensor.size() || t.kind() != p.tensor.kind() {
                    return Err(bad(format!(
                        "{n}: {:?} {:?} does not match the parameter's {:?} {:?}",
                        t.kind(),
                        t.size(),
                        p.tensor.kind(),
                        p.tensor.size()
                    )));
                }
                Ok(t.to_device(p.tensor.device()))
            };
            let step_t = file.tensor(&s)?;
            if step_t.kind() != Kind::Int64 || step_t.numel() != 1 {
                return Err(bad(format!("{s}: expected one int64 step count")));
            }
            let step = i64::try_from(&step_t.reshape([]))?;
            let step = StepCount::Host(step);
            loaded.push((idx, Moments { exp_avg: moment(&m)?, exp_avg_sq: moment(&v)?, step }));
        }
        for p in &mut self.params {
            p.state = None;
        }
        for (idx, st) in loaded {
            self.params[idx].state = Some(st);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn store(values: &[(&str, f32)]) -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        for (name, v) in values {
            let _ = vs.root().var_copy(name, &Tensor::from_slice(&[*v]));
        }
        vs
    }

    fn value(vs: &nn::VarStore, name: &str) -> f64 {
        f64::try_from(&vs.variables()[name].reshape([])).unwrap()
    }

    #[test]
    fn first_step_by_hand() {
        // p=1, g=0.5, lr=0.1, wd=0.1, betas (0.9, 0.999): decay to 0.99; m̂ = 0.5, v̂ = 0.25,
        // so the update is lr * 0.5 / (0.5 + eps) = 0.1 and p = 0.89.
        let vs = store(&[("a", 1.0)]);
        let mut opt = AdamW::new(&vs, OptimizerKind::Reference, [0.9, 0.999], 1e-8, 0.1).unwrap();
        (&vs.variables()["a"] * 0.5).sum(Kind::Float).backward();
        opt.step(0.1, None).unwrap();
        assert!((value(&vs, "a") - 0.89).abs() < 1e-6, "{}", value(&vs, "a"));
        assert_eq!(opt.step_count(), 1);
    }

    #[test]
    fn zero_grad_drops_gradients_and_gradless_params_stay_put() {
        let vs = store(&[("a", 1.0), ("b", 2.0)]);
        let mut opt = AdamW::new(&vs, OptimizerKind::Reference, [0.9, 0.999], 1e-8, 0.5).unwrap();
        let vars = vs.variables();
        (&vars["a"] * 3.0).sum(Kind::Float).backward();
        opt.zero_grad().unwrap();
        assert!(!vars["a"].grad().defined() && !vars["b"].grad().defined());
        // Only `a` is in this loss: `b` must see neither the update nor the weight decay.
        (&vars["a"] * 3.0).sum(Kind::Float).backward();
        opt.step(0.01, None).unwrap();
        assert_eq!(value(&vs, "b"), 2.0);
        assert_ne!(value(&vs, "a"), 1.0);
        let names: Vec<String> = opt.state_tensors("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["exp_avg.a", "exp_avg_sq.a", "step.a"]);
    }

    #[test]
    fn clip_grad_norm_without_grads_is_zero() {
        let vs = store(&[("a", 1.0)]);
        let opt = AdamW::new(&vs, OptimizerKind::Reference, [0.9, 0.999], 1e-8, 0.0).unwrap();
        assert_eq!(f64::try_from(&opt.clip_grad_norm(1.0)).unwrap(), 0.0);
    }
}
