//! The networks. [`ModelConfig`] names an architecture with its own keys and [`Network`] is
//! the built network: the rest of the crate uses only these two (see `network.rs`).
//!
//! One folder per architecture (`promptir/`, `restormer/`, `nafnet/`, `adair/`, `moce_ir/`), each with its
//! config (keys, checks, reading it off an official state_dict's shapes) and its network.
//! `blocks.rs` holds Restormer's blocks, which the later networks reuse.
//!
//! Every struct mirrors one upstream class and its fields carry the Python attribute names, so
//! var-store paths equal the official state_dict keys (`encoder_level1.0.attn.qkv.weight`, ...).

mod adair;
mod blocks;
mod init;
mod layout;
mod moce_ir;
mod nafnet;
mod network;
mod promptir;
mod recognise;
mod restormer;
mod shapes;

pub use adair::{AdaIr, AdaIrConfig, ChanelCrossAttention, FreModule};
pub use blocks::{
    Attention, CrossAttention, Downsample, FeedForward, LayerNorm, LayerNormType,
    OverlapPatchEmbed, TransformerBlock, Upsample,
};
pub(crate) use init::conv;
pub use init::{with_global_rng, TORCH_DEFAULT_INIT};
pub(crate) use layout::{is_channels_last, pointwise};
pub use layout::{to_channels_last, Layout};
pub use moce_ir::{ComplexityScale, MoceIr, MoceIrConfig, RankType};
pub use nafnet::{LayerNorm2d, NafBlock, NafNet, NafNetConfig};
pub use network::{key_of_arch, Arch, ModelConfig, Network, Trained};
pub use promptir::{PromptGenBlock, PromptIr, PromptIrConfig, WidthPlan, IGNORED_UPSTREAM_KEYS};
pub use recognise::recognise;
pub use restormer::{Restormer, RestormerConfig};

/// Configs beyond this many parameters (8 GB of fp32 weights) are refused as typos.
pub const MAX_PARAMETERS: f64 = 2e9;

/// `model.<name>` must lie in `lo..=max` (the upper bounds keep width arithmetic from overflowing).
pub(crate) fn check_range(name: &str, v: i64, lo: i64, max: i64) -> Result<(), String> {
    if (lo..=max).contains(&v) {
        Ok(())
    } else {
        Err(format!("model.{name} must be in {lo}..={max}, got {v}"))
    }
}

/// Refuses a config whose estimated size passes [`MAX_PARAMETERS`], naming the keys to check.
pub(crate) fn check_size(params: f64, keys: &str) -> Result<(), String> {
    if params > MAX_PARAMETERS {
        Err(format!(
            "the model would have about {params:.1e} parameters (limit {MAX_PARAMETERS:.0e}); check {keys}"
        ))
    } else {
        Ok(())
    }
}
