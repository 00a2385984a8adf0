//! AdaIR's hyper-parameters ([`AdaIrConfig`]), their checks and the parameter estimate.

use crate::model::restormer::read_backbone;
use crate::model::shapes::Shapes;
use crate::model::{check_size, LayerNormType, RestormerConfig};
use serde::{Deserialize, Serialize};

/// AdaIR's hyper-parameters (`model:` with `arch: adair`), named as upstream's keyword
/// arguments: Restormer's, and `decoder` (the frequency blocks; without them it is Restormer).
/// The default is the paper's network (28,784,824 parameters in the official state_dict).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaIrConfig {
    pub inp_channels: i64,
    pub out_channels: i64,
    pub dim: i64,
    pub num_blocks: [i64; 4],
    pub num_refinement_blocks: i64,
    pub heads: [i64; 4],
    pub ffn_expansion_factor: f64,
    pub bias: bool,
    pub layer_norm_type: LayerNormType,
    pub decoder: bool,
}

impl Default for AdaIrConfig {
    fn default() -> Self {
        Self::on(RestormerConfig::paper(), true)
    }
}

impl AdaIrConfig {
    /// The paper's network (upstream's defaults).
    pub fn paper() -> Self {
        Self::default()
    }

    /// PromptIR's tiny sizes (dim 8, one block per level), the smallest at which the frequency
    /// blocks' channel gate keeps a channel (2 * dim / 16).
    pub fn tiny() -> Self {
        AdaIrConfig {
            dim: 8,
            num_blocks: [1, 1, 1, 1],
            num_refinement_blocks: 1,
            heads: [1, 2, 4, 4],
            ..Self::default()
        }
    }

    /// `backbone` with the frequency blocks when `decoder`.
    pub fn on(backbone: RestormerConfig, decoder: bool) -> Self {
        let r = backbone;
        AdaIrConfig {
            inp_channels: r.inp_channels,
            out_channels: r.out_channels,
            dim: r.dim,
            num_blocks: r.num_blocks,
            num_refinement_blocks: r.num_refinement_blocks,
            heads: r.heads,
            ffn_expansion_factor: r.ffn_expansion_factor,
            bias: r.bias,
            layer_norm_type: r.layer_norm_type,
            decoder,
        }
    }

    /// The Restormer underneath (the encoder, decoder and refinement).
    pub fn backbone(&self) -> RestormerConfig {
        RestormerConfig {
            inp_channels: self.inp_channels,
            out_channels: self.out_channels,
            dim: self.dim,
            num_blocks: self.num_blocks,
            num_refinement_blocks: self.num_refinement_blocks,
            heads: self.heads,
            ffn_expansion_factor: self.ffn_expansion_factor,
            bias: self.bias,
            layer_norm_type: self.layer_norm_type,
        }
    }

    /// Checks everything the constructor relies on, so that building never panics.
    pub fn validate(&self) -> Result<(), String> {
        self.backbone().validate()?;
        if self.decoder {
            // The frequency blocks take a 3-channel image (upstream's in_dim=3).
            if self.inp_channels != 3 {
                return Err(format!(
                    "model.inp_channels must be 3 with model.decoder (the frequency blocks read RGB), got {}",
                    self.inp_channels
                ));
            }
            if self.dim < 8 {
                return Err(format!(
                    "model.dim must be at least 8 with model.decoder (the channel gate of the last frequency block keeps 2*dim/16 channels), got {}",
                    self.dim
                ));
            }
            let h = self.heads[2];
            for c in [2 * self.dim, 4 * self.dim, 8 * self.dim] {
                if c % h != 0 {
                    return Err(format!(
                        "the frequency block of width {c} is not divisible by {h} heads (model.heads[2])"
                    ));
                }
            }
        }
        check_size(self.approx_parameters(), "model.dim and model.num_blocks")
    }

    /// Restormer's estimate plus the frequency blocks' 1x1 convs (three cross-attentions of 4c^2
    /// and the fusion's c^2): never above the truth.
    pub fn approx_parameters(&self) -> f64 {
        let d = self.dim as f64;
        let fre: f64 = if self.decoder {
            [2.0, 4.0, 8.0].iter().map(|k| 13.0 * (k * d).powi(2)).sum()
        } else {
            0.0
        };
        self.backbone().approx_parameters() + fre
    }

    /// Input sizes must be multiples of this (three 2x downsamplings); `restore` pads to it, as
    /// upstream's test script does.
    pub fn pad_multiple(&self) -> i64 {
        8
    }
}

/// Reads the hyper-parameters off an official state_dict's keys and shapes.
pub(in crate::model) fn from_shapes(shapes: &Shapes) -> Result<AdaIrConfig, String> {
    // Without its frequency blocks AdaIR is Restormer; a file needs them to be read as AdaIR.
    shapes.get("fre1.conv1.weight", 4)?;
    let cfg = AdaIrConfig::on(read_backbone(shapes)?, true);
    cfg.validate().map_err(|e| format!("inferred an invalid config ({e})"))?;
    Ok(cfg)
}
