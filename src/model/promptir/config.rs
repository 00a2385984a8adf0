//! PromptIR's hyper-parameters ([`PromptIrConfig`]), their checks and the parameter estimate.

use super::WidthPlan;
use crate::model::restormer::read_backbone;
use crate::model::shapes::Shapes;
use crate::model::{LayerNormType, MAX_PARAMETERS};
use serde::{Deserialize, Serialize};

/// PromptIR's hyper-parameters (`model:` with `arch: promptir`). The default is the official model (35,376,967 parameters
/// used in forward); widths are derived from `dim` so that small configs work too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptIrConfig {
    pub inp_channels: i64,
    pub out_channels: i64,
    pub dim: i64,
    pub num_blocks: [i64; 4],
    pub num_refinement_blocks: i64,
    pub heads: [i64; 4],
    pub ffn_expansion_factor: f64,
    pub bias: bool,
    pub layer_norm_type: LayerNormType,
    /// Prompt components per block (upstream: 5 for all three).
    pub prompt_len: i64,
    /// Channels of prompt1/2/3 (upstream literals 64, 128, 320).
    pub prompt_dims: [i64; 3],
    /// Spatial size of prompt1/2/3 (upstream literals 64, 32, 16).
    pub prompt_sizes: [i64; 3],
}

impl Default for PromptIrConfig {
    fn default() -> Self {
        PromptIrConfig {
            inp_channels: 3,
            out_channels: 3,
            dim: 48,
            num_blocks: [4, 6, 6, 8],
            num_refinement_blocks: 4,
            heads: [1, 2, 4, 8],
            ffn_expansion_factor: 2.66,
            bias: false,
            layer_norm_type: LayerNormType::WithBias,
            prompt_len: 5,
            prompt_dims: [64, 128, 320],
            prompt_sizes: [64, 32, 16],
        }
    }
}

impl PromptIrConfig {
    /// The official network.
    pub fn paper() -> Self {
        Self::default()
    }

    /// A small network with the same wiring, for CPU tests and demos (about 0.2 M parameters).
    pub fn tiny() -> Self {
        PromptIrConfig {
            dim: 8,
            num_blocks: [1, 1, 1, 1],
            num_refinement_blocks: 1,
            heads: [1, 2, 4, 4],
            prompt_len: 3,
            prompt_dims: [8, 16, 32],
            prompt_sizes: [16, 8, 4],
            ..Self::default()
        }
    }

    /// Checks everything the constructor relies on, so that building never panics.
    pub fn validate(&self) -> Result<(), String> {
        // Upper bounds first: they keep the width arithmetic below from overflowing.
        let range = |name: &str, v: i64, max: i64| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be in 1..={max}, got {v}"))
            }
        };
        range("model.inp_channels", self.inp_channels, 64)?;
        range("model.out_channels", self.out_channels, 64)?;
        range("model.dim", self.dim, 4096)?;
        range("model.prompt_len", self.prompt_len, 1024)?;
        for (i, &n) in self.num_blocks.iter().enumerate() {
            range(&format!("model.num_blocks[{i}]"), n, 256)?;
        }
        if !(0..=256).contains(&self.num_refinement_blocks) {
            return Err("model.num_refinement_blocks must be in 0..=256".into());
        }
        for (i, (&d, &s)) in self.prompt_dims.iter().zip(&self.prompt_sizes).enumerate() {
            range(&format!("model.prompt_dims[{i}]"), d, 65536)?;
            range(&format!("model.prompt_sizes[{i}]"), s, 4096)?;
        }
        if !(self.ffn_expansion_factor > 0.0 && self.ffn_expansion_factor <= 64.0) {
            return Err(format!(
                "model.ffn_expansion_factor must be in (0, 64], got {}",
                self.ffn_expansion_factor
            ));
        }
        let w = WidthPlan::new(self);
        if self.inp_channels != self.out_channels {
            return Err("model.inp_channels must equal model.out_channels (global residual)".into());
        }
        if self.dim % 2 != 0 {
            return Err(format!("model.dim must be even (Downsample halves it), got {}", self.dim));
        }
        let h = self.heads;
        let checks = [
            ("encoder_level1", w.c1, h[0]),
            ("encoder_level2", w.c2, h[1]),
            ("encoder_level3", w.c3, h[2]),
            ("latent", w.c4, h[3]),
            ("noise_level3", w.noise3, h[2]),
            ("noise_level2", w.noise2, h[2]),
            ("noise_level1", w.noise1, h[2]),
            ("decoder_level1/refinement", w.c2, h[0]),
        ];
        for (name, c, heads) in checks {
            if heads < 1 || c % heads != 0 {
                return Err(format!(
                    "{name}: width {c} is not divisible by {heads} heads (model.heads)"
                ));
            }
        }
        let params = self.approx_parameters();
        if params > MAX_PARAMETERS {
            return Err(format!(
                "the model would have about {:.1e} parameters (limit {MAX_PARAMETERS:.0e}); check model.dim, model.num_blocks and model.prompt_*",
                params
            ));
        }
        Ok(())
    }

    /// The parameter count without the small terms (norms, biases, depthwise and 3x3 convs of
    /// the stem): never above the truth, 92% of it for the paper model, 75% for `tiny()`.
    /// Enough to refuse a typo such as `dim: 4800` before libtorch tries to allocate it.
    pub fn approx_parameters(&self) -> f64 {
        let w = WidthPlan::new(self);
        let f = self.ffn_expansion_factor;
        // Per block: qkv 3c^2 + project_out c^2 + FFN in 2fc^2 + out fc^2.
        let block = |c: i64| (c as f64).powi(2) * (4.0 + 3.0 * f);
        let [b1, b2, b3, b4] = self.num_blocks.map(|b| b as f64);
        let blocks = b1 * block(w.c1)
            + b2 * block(w.c2)
            + b3 * block(w.c3)
            + b4 * block(w.c4)
            + b3 * block(w.c3)
            + b2 * block(w.c2)
            + (b1 + self.num_refinement_blocks as f64) * block(w.c2)
            + block(w.noise3)
            + block(w.noise2)
            + block(w.noise1);
        let prompts: f64 = (0..3)
            .map(|i| {
                let (d, s) = (self.prompt_dims[i] as f64, self.prompt_sizes[i] as f64);
                self.prompt_len as f64 * d * s * s + 9.0 * d * d
            })
            .sum();
        blocks + prompts
    }

    /// Input sizes must be multiples of this (three 2x downsamplings); `restore` pads to it.
    pub fn pad_multiple(&self) -> i64 {
        8
    }
}

/// Reads the hyper-parameters off an official state_dict's keys and shapes, so that importing
/// needs no config (the release checkpoint comes out as `PromptIrConfig::paper()`).
pub(in crate::model) fn from_shapes(shapes: &Shapes) -> Result<PromptIrConfig, String> {
    let b = read_backbone(shapes)?;
    let p = |i: usize| shapes.get(&format!("prompt{i}.prompt_param"), 5);
    let (p1, p2, p3) = (p(1)?, p(2)?, p(3)?);
    let cfg = PromptIrConfig {
        inp_channels: b.inp_channels,
        out_channels: b.out_channels,
        dim: b.dim,
        num_blocks: b.num_blocks,
        num_refinement_blocks: b.num_refinement_blocks,
        heads: b.heads,
        ffn_expansion_factor: b.ffn_expansion_factor,
        bias: b.bias,
        layer_norm_type: b.layer_norm_type,
        prompt_len: p1[1],
        prompt_dims: [p1[2], p2[2], p3[2]],
        prompt_sizes: [p1[3], p2[3], p3[3]],
    };
    cfg.validate().map_err(|e| format!("inferred an invalid config ({e})"))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_estimate_is_close_and_absurd_sizes_are_refused() {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _m = super::super::PromptIr::new(&vs.root(), &PromptIrConfig::tiny());
        let tiny: usize = vs.variables().values().map(|t| t.numel()).sum();
        // The paper model's count is the documented one (upstream, parameters used in forward).
        for (cfg, exact) in
            [(PromptIrConfig::paper(), 35_376_967.0), (PromptIrConfig::tiny(), tiny as f64)]
        {
            let ratio = cfg.approx_parameters() / exact;
            assert!((0.7..=1.0).contains(&ratio), "dim {}: estimate/exact = {ratio}", cfg.dim);
        }
        let e = PromptIrConfig { dim: 4000, ..PromptIrConfig::paper() }.validate().unwrap_err();
        assert!(e.contains("parameters") && e.contains("model.dim"), "{e}");
        // Values that would overflow the width arithmetic are refused before it runs.
        for cfg in [
            PromptIrConfig { dim: i64::MAX, ..PromptIrConfig::paper() },
            PromptIrConfig { prompt_dims: [64, i64::MAX, 320], ..PromptIrConfig::paper() },
            PromptIrConfig { num_blocks: [4, 6, -1, 8], ..PromptIrConfig::paper() },
        ] {
            assert!(cfg.validate().is_err());
        }
    }
}
