//! Restormer (Zamir et al., CVPR 2022, arXiv 2111.09881), PromptIR's backbone and the baseline
//! of its paper: a four-level U-Net of MDTA/GDFN transformer blocks. Ported from the official
//! `swz30/Restormer` `basicsr/models/archs/restormer_arch.py` (commit df766d5).

mod config;

pub use config::RestormerConfig;
pub(super) use config::{from_shapes, read_backbone};

use crate::model::blocks::{blocks, run_blocks};
use crate::model::init::drawing;
use crate::model::{
    conv, pointwise, to_channels_last, Downsample, Layout, OverlapPatchEmbed, TransformerBlock,
    Upsample,
};
use tch::{nn, nn::Module, Tensor};

/// The whole network. Field names are the official attribute names.
#[derive(Debug)]
pub struct Restormer {
    pub patch_embed: OverlapPatchEmbed,
    pub encoder_level1: Vec<TransformerBlock>,
    pub down1_2: Downsample,
    pub encoder_level2: Vec<TransformerBlock>,
    pub down2_3: Downsample,
    pub encoder_level3: Vec<TransformerBlock>,
    pub down3_4: Downsample,
    pub latent: Vec<TransformerBlock>,
    pub up4_3: Upsample,
    pub reduce_chan_level3: nn::Conv2D,
    pub decoder_level3: Vec<TransformerBlock>,
    pub up3_2: Upsample,
    pub reduce_chan_level2: nn::Conv2D,
    pub decoder_level2: Vec<TransformerBlock>,
    pub up2_1: Upsample,
    pub decoder_level1: Vec<TransformerBlock>,
    pub refinement: Vec<TransformerBlock>,
    pub output: nn::Conv2D,
    pub config: RestormerConfig,
    /// Activation layout of `forward` (not a parameter; `Auto` unless a benchmark sets it).
    pub layout: Layout,
}

impl Restormer {
    /// Builds the network under `p` (use `vs.root()` so keys equal the official state_dict),
    /// drawing its initial values from libtorch's global generator as it stands.
    /// Panics on an invalid config: call `RestormerConfig::validate` first on user input.
    pub fn new(p: &nn::Path, cfg: &RestormerConfig) -> Self {
        drawing(None, || Self::build(p, cfg))
    }

    /// [`Restormer::new`] with the generator seeded first (the same seed, the same weights).
    pub fn seeded(p: &nn::Path, cfg: &RestormerConfig, seed: u64) -> Self {
        drawing(Some(seed), || Self::build(p, cfg))
    }

    /// Builds under `p` without the generator lock (for networks built on this one).
    pub(in crate::model) fn build(p: &nn::Path, cfg: &RestormerConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid RestormerConfig: {e}");
        }
        let (ffn, bias, ln, h, nb) =
            (cfg.ffn_expansion_factor, cfg.bias, cfg.layer_norm_type, cfg.heads, cfg.num_blocks);
        let d = cfg.dim;
        let (c1, c2, c3, c4) = (d, 2 * d, 4 * d, 8 * d);
        let stack = |name: &str, n, dim, heads| blocks(p / name, n, dim, heads, ffn, bias, ln);
        Restormer {
            // Upstream builds the stem with OverlapPatchEmbed's own default, bias=False.
            patch_embed: OverlapPatchEmbed::new(p / "patch_embed", cfg.inp_channels, c1, false),
            encoder_level1: stack("encoder_level1", nb[0], c1, h[0]),
            down1_2: Downsample::new(p / "down1_2", c1),
            encoder_level2: stack("encoder_level2", nb[1], c2, h[1]),
            down2_3: Downsample::new(p / "down2_3", c2),
            encoder_level3: stack("encoder_level3", nb[2], c3, h[2]),
            down3_4: Downsample::new(p / "down3_4", c3),
            latent: stack("latent", nb[3], c4, h[3]),
            up4_3: Upsample::new(p / "up4_3", c4),
            reduce_chan_level3: conv(p / "reduce_chan_level3", c4, c3, 1, 1, bias),
            decoder_level3: stack("decoder_level3", nb[2], c3, h[2]),
            up3_2: Upsample::new(p / "up3_2", c3),
            reduce_chan_level2: conv(p / "reduce_chan_level2", c3, c2, 1, 1, bias),
            decoder_level2: stack("decoder_level2", nb[1], c2, h[1]),
            up2_1: Upsample::new(p / "up2_1", c2),
            // cat(up2_1, e1) is already 2*dim wide: no 1x1 reduce at level 1.
            decoder_level1: stack("decoder_level1", nb[0], c2, h[0]),
            refinement: stack("refinement", cfg.num_refinement_blocks, c2, h[0]),
            output: conv(p / "output", c2, cfg.out_channels, 3, 1, bias),
            config: cfg.clone(),
            layout: Layout::default(),
        }
    }
}

/// Where a network built on Restormer's U-Net changes its features: after the latent, after
/// decoder level 3 and after decoder level 2 (AdaIR's frequency blocks sit there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::model) enum Tap {
    Latent,
    Decoder3,
    Decoder2,
}

impl Module for Restormer {
    /// (B, C, H, W) -> (B, C, H, W) with H, W multiples of 8; not clamped.
    fn forward(&self, inp: &Tensor) -> Tensor {
        self.forward_tapped(inp, |_, x| x)
    }
}

impl Restormer {
    /// The forward with `tap(at, features)` replacing the features at each [`Tap`].
    pub(in crate::model) fn forward_tapped(
        &self,
        inp: &Tensor,
        tap: impl Fn(Tap, Tensor) -> Tensor,
    ) -> Tensor {
        // Every op keeps the layout of its input, so converting once here sets it throughout.
        let x = if self.layout.channels_last_on(inp.device()) {
            to_channels_last(inp)
        } else {
            inp.shallow_clone()
        };
        let conv1x1 = |c: &nn::Conv2D, x: &Tensor| pointwise(x, &c.ws, c.bs.as_ref());
        let e1 = run_blocks(&self.encoder_level1, self.patch_embed.forward(&x));
        let e2 = run_blocks(&self.encoder_level2, self.down1_2.forward(&e1));
        let e3 = run_blocks(&self.encoder_level3, self.down2_3.forward(&e2));
        let latent = tap(Tap::Latent, run_blocks(&self.latent, self.down3_4.forward(&e3)));
        // [upsampled, skip] order matters.
        let d3 = Tensor::cat(&[self.up4_3.forward(&latent), e3], 1);
        let d3 = run_blocks(&self.decoder_level3, conv1x1(&self.reduce_chan_level3, &d3));
        let d3 = tap(Tap::Decoder3, d3);
        let d2 = Tensor::cat(&[self.up3_2.forward(&d3), e2], 1);
        let d2 = run_blocks(&self.decoder_level2, conv1x1(&self.reduce_chan_level2, &d2));
        let d2 = tap(Tap::Decoder2, d2);
        let d1 = Tensor::cat(&[self.up2_1.forward(&d2), e1], 1);
        let d1 = run_blocks(&self.refinement, run_blocks(&self.decoder_level1, d1));
        self.output.forward(&d1) + inp
    }
}
