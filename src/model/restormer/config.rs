//! Restormer's hyper-parameters ([`RestormerConfig`]), their checks and the parameter estimate.

use crate::model::shapes::Shapes;
use crate::model::{check_range, check_size, LayerNormType};
use serde::{Deserialize, Serialize};

/// Restormer's hyper-parameters (`model:` with `arch: restormer`), named as upstream's keyword
/// arguments. The default is upstream's default network (26,126,644 parameters), which its
/// deraining, motion and defocus deblurring models use; its denoisers set
/// `layer_norm_type: bias_free`. Upstream's `dual_pixel_task` (6-channel dual-pixel input) is
/// not built: this harness's data are RGB pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestormerConfig {
    pub inp_channels: i64,
    pub out_channels: i64,
    pub dim: i64,
    pub num_blocks: [i64; 4],
    pub num_refinement_blocks: i64,
    pub heads: [i64; 4],
    pub ffn_expansion_factor: f64,
    pub bias: bool,
    pub layer_norm_type: LayerNormType,
}

impl Default for RestormerConfig {
    fn default() -> Self {
        RestormerConfig {
            inp_channels: 3,
            out_channels: 3,
            dim: 48,
            num_blocks: [4, 6, 6, 8],
            num_refinement_blocks: 4,
            heads: [1, 2, 4, 8],
            ffn_expansion_factor: 2.66,
            bias: false,
            layer_norm_type: LayerNormType::WithBias,
        }
    }
}

impl RestormerConfig {
    /// The paper's network (upstream's defaults).
    pub fn paper() -> Self {
        Self::default()
    }

    /// The same wiring at PromptIR's tiny sizes (dim 8, one block per level).
    pub fn tiny() -> Self {
        RestormerConfig {
            dim: 8,
            num_blocks: [1, 1, 1, 1],
            num_refinement_blocks: 1,
            heads: [1, 2, 4, 4],
            ..Self::default()
        }
    }

    /// Checks everything the constructor relies on, so that building never panics.
    pub fn validate(&self) -> Result<(), String> {
        check_range("inp_channels", self.inp_channels, 1, 64)?;
        check_range("out_channels", self.out_channels, 1, 64)?;
        check_range("dim", self.dim, 1, 4096)?;
        for (i, &n) in self.num_blocks.iter().enumerate() {
            check_range(&format!("num_blocks[{i}]"), n, 1, 256)?;
        }
        check_range("num_refinement_blocks", self.num_refinement_blocks, 0, 256)?;
        if !(self.ffn_expansion_factor > 0.0 && self.ffn_expansion_factor <= 64.0) {
            return Err(format!(
                "model.ffn_expansion_factor must be in (0, 64], got {}",
                self.ffn_expansion_factor
            ));
        }
        if self.inp_channels != self.out_channels {
            return Err("model.inp_channels must equal model.out_channels (global residual)".into());
        }
        if self.dim % 2 != 0 {
            return Err(format!("model.dim must be even (Downsample halves it), got {}", self.dim));
        }
        let (d, h) = (self.dim, self.heads);
        let checks = [
            ("encoder_level1", d, h[0]),
            ("encoder_level2", 2 * d, h[1]),
            ("encoder_level3", 4 * d, h[2]),
            ("latent", 8 * d, h[3]),
            ("decoder_level1/refinement", 2 * d, h[0]),
        ];
        for (name, c, heads) in checks {
            if heads < 1 || c % heads != 0 {
                return Err(format!(
                    "{name}: width {c} is not divisible by {heads} heads (model.heads)"
                ));
            }
        }
        check_size(self.approx_parameters(), "model.dim and model.num_blocks")
    }

    /// The parameter count of the transformer blocks' 1x1 convs and the two channel reductions:
    /// never above the truth, 84% of it for the paper model.
    pub fn approx_parameters(&self) -> f64 {
        let d = self.dim as f64;
        let f = self.ffn_expansion_factor;
        // Per block: qkv 3c^2 + project_out c^2 + FFN in 2fc^2 + out fc^2.
        let block = |c: f64| c * c * (4.0 + 3.0 * f);
        let [b1, b2, b3, b4] = self.num_blocks.map(|b| b as f64);
        let refine = self.num_refinement_blocks as f64;
        b1 * block(d)
            + 2.0 * b2 * block(2.0 * d)
            + 2.0 * b3 * block(4.0 * d)
            + b4 * block(8.0 * d)
            + (b1 + refine) * block(2.0 * d)
            + 32.0 * d * d
            + 8.0 * d * d
    }

    /// Input sizes must be multiples of this (three 2x downsamplings); `restore` pads to it, as
    /// upstream's test scripts do.
    pub fn pad_multiple(&self) -> i64 {
        8
    }
}

/// Reads the hyper-parameters off an official state_dict's keys and shapes.
pub(in crate::model) fn from_shapes(shapes: &Shapes) -> Result<RestormerConfig, String> {
    let cfg = read_backbone(shapes)?;
    cfg.validate().map_err(|e| format!("inferred an invalid config ({e})"))?;
    Ok(cfg)
}

/// The Restormer U-Net's sizes as a state_dict shows them, unchecked: also the backbone of
/// PromptIR's and AdaIR's files, whose keys it shares.
pub(in crate::model) fn read_backbone(s: &Shapes) -> Result<RestormerConfig, String> {
    let embed = s.get("patch_embed.proj.weight", 4)?;
    let dim = embed[0];
    if dim < 1 {
        return Err(format!("patch_embed.proj.weight has shape {embed:?}"));
    }
    Ok(RestormerConfig {
        inp_channels: embed[1],
        out_channels: s.get("output.weight", 4)?[0],
        dim,
        num_blocks: [
            s.count("encoder_level1"),
            s.count("encoder_level2"),
            s.count("encoder_level3"),
            s.count("latent"),
        ],
        num_refinement_blocks: s.count("refinement"),
        heads: [
            s.heads("encoder_level1.0")?,
            s.heads("encoder_level2.0")?,
            s.heads("encoder_level3.0")?,
            s.heads("latent.0")?,
        ],
        ffn_expansion_factor: s.ffn_factor("encoder_level1.0", dim, 2.66)?,
        // Upstream's `bias` reaches every conv but the stem and the resamplers.
        bias: s.has("output.bias"),
        layer_norm_type: s.layer_norm("encoder_level1.0"),
    })
}
