//! The exponential moving average of the weights (`train.ema`, BasicSR's `net_g_ema`): a second
//! copy of the network on the same device, updated after every optimizer step with one
//! multi-tensor kernel (`ema += (1 - decay) * (weights - ema)`), copied from the weights until
//! `start_step`. When on, it is what validation scores (so `best` is chosen by it), it is saved
//! in every checkpoint under [`EMA_PREFIX`] beside the raw weights and restored on resume, and
//! `predict`/`eval` use it by default (`--ema`).
//!
//! In fp16 a step whose gradients overflowed changes no weight; the reference optimizer skips
//! the average's update too, while the fused one skips on the device unseen, so the average
//! then moves towards the unchanged weights (a difference of one decay factor, now and then).

use crate::config::EmaConfig;
use crate::io::{load_strict_prefixed, TensorFile, EMA_PREFIX};
use crate::model::{ModelConfig, Network};
use crate::native::foreach_lerp;
use crate::Result;
use tch::{nn, Device, Tensor};

pub struct Ema {
    decay: f64,
    start_step: usize,
    vs: nn::VarStore,
    pub model: Network,
    /// (average, live weight) pairs, in the same order.
    shadow: Vec<Tensor>,
    live: Vec<Tensor>,
}

impl Ema {
    /// `None` when `cfg.decay` is 0; otherwise a copy of `weights`' network, starting equal.
    pub fn new(
        cfg: &EmaConfig,
        model: &ModelConfig,
        weights: &nn::VarStore,
        device: Device,
    ) -> Option<Ema> {
        if cfg.decay == 0.0 {
            return None;
        }
        let vs = nn::VarStore::new(device);
        // Its random init is overwritten below; the draws it takes from the global generator
        // come after the network's seeded init, and training draws nothing from it later.
        let net = Network::new(&vs.root(), model);
        let (mut mine, theirs) = (vs.variables(), weights.variables());
        let mut names: Vec<&String> = theirs.keys().collect();
        names.sort();
        let mut shadow = Vec::with_capacity(names.len());
        let mut live = Vec::with_capacity(names.len());
        for n in names {
            let s = mine.remove(n).expect("the same network has the same parameters");
            live.push(theirs[n].shallow_clone());
            shadow.push(s.set_requires_grad(false));
        }
        let ema =
            Ema { decay: cfg.decay, start_step: cfg.start_step, vs, model: net, shadow, live };
        ema.copy_weights();
        Some(ema)
    }

    fn copy_weights(&self) {
        tch::no_grad(|| {
            for (s, w) in self.shadow.iter().zip(&self.live) {
                s.shallow_clone().copy_(w);
            }
        });
    }

    /// After optimizer step number `step` (1-based): the weights themselves up to
    /// `start_step`, the moving average after it.
    pub fn update(&self, step: usize) -> Result<()> {
        if step <= self.start_step {
            self.copy_weights();
            return Ok(());
        }
        tch::no_grad(|| foreach_lerp(&self.shadow, &self.live, 1.0 - self.decay))
    }

    /// The averaged weights, named as the network's (for the checkpoints, under `EMA_PREFIX`).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.vs.variables().into_iter().map(|(n, t)| (format!("{EMA_PREFIX}{n}"), t)).collect()
    }

    /// Continues from a checkpoint's averages; `false` (and a copy of the current weights) when
    /// it has none, e.g. a run that turns EMA on when resumed.
    pub fn load(&self, file: &TensorFile) -> Result<bool> {
        if !file.header().keys().any(|k| k.starts_with(EMA_PREFIX)) {
            self.copy_weights();
            return Ok(false);
        }
        load_strict_prefixed(&self.vs, file, EMA_PREFIX, &|k| !k.starts_with(EMA_PREFIX))?;
        Ok(true)
    }
}
