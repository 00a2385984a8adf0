//! Reading a config off an official state_dict: the tensor shapes by key, checked before use
//! (they come from a file), and the Restormer backbone that several architectures share.

use super::{FeedForward, LayerNormType};
use std::collections::BTreeMap;

/// Keys and shapes of a state_dict.
pub(crate) struct Shapes<'a>(pub &'a BTreeMap<String, Vec<i64>>);

impl Shapes<'_> {
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The shape of `key`, which must have `rank` dimensions.
    pub fn get(&self, key: &str, rank: usize) -> Result<&[i64], String> {
        let s = self.0.get(key).ok_or_else(|| format!("no key {key}"))?;
        if s.len() == rank {
            Ok(s)
        } else {
            Err(format!("{key} has shape {s:?}, expected {rank} dimensions"))
        }
    }

    /// Length of the `nn.Sequential` at `prefix` (`prefix.0...`, `prefix.1...`): 0 when absent.
    pub fn count(&self, prefix: &str) -> i64 {
        let dot = format!("{prefix}.");
        self.0
            .keys()
            .filter_map(|k| k.strip_prefix(&dot)?.split('.').next()?.parse::<i64>().ok())
            .max()
            .map_or(0, |m| m + 1)
    }

    /// Heads of the transformer block at `prefix` (its temperature is (heads, 1, 1)).
    pub fn heads(&self, prefix: &str) -> Result<i64, String> {
        Ok(self.get(&format!("{prefix}.attn.temperature"), 3)?[0])
    }

    /// The FFN expansion factor of the block at `prefix`, whose width `dim` is known. The factor
    /// itself is not stored: `preferred` (upstream's 2.66) when it reproduces the hidden width.
    pub fn ffn_factor(&self, prefix: &str, dim: i64, preferred: f64) -> Result<f64, String> {
        let hidden = self.get(&format!("{prefix}.ffn.project_in.weight"), 4)?[0] / 2;
        Ok(if FeedForward::hidden_features(dim, preferred) == hidden {
            preferred
        } else {
            hidden as f64 / dim as f64
        })
    }

    /// Which LayerNorm the block at `prefix` uses.
    pub fn layer_norm(&self, prefix: &str) -> LayerNormType {
        if self.has(&format!("{prefix}.norm1.body.bias")) {
            LayerNormType::WithBias
        } else {
            LayerNormType::BiasFree
        }
    }
}

/// The Restormer U-Net's sizes as its state_dict shows them (the keys PromptIR shares).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Backbone {
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

impl Backbone {
    pub fn read(s: &Shapes) -> Result<Self, String> {
        let embed = s.get("patch_embed.proj.weight", 4)?;
        let dim = embed[0];
        if dim < 1 {
            return Err(format!("patch_embed.proj.weight has shape {embed:?}"));
        }
        Ok(Backbone {
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
}
