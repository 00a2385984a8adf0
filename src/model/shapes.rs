//! Reading a config off an official state_dict: the tensor shapes by key, checked before use
//! (they come from a file).

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
