//! PromptIR (Potlapalli et al., NeurIPS 2023, arXiv 2306.13090): Restormer's encoder/decoder
//! with prompt blocks on the decoder side. Ported from the official `va1shn9v/PromptIR`
//! `net/model.py` (commit 20eff77, its last change through 106159a) with `decoder=True`.

mod config;
mod prompt;

pub(super) use config::from_shapes;
pub use config::PromptIrConfig;
pub use prompt::PromptGenBlock;

use crate::model::blocks::{blocks, run_blocks};
use crate::model::init::drawing;
use crate::model::{
    conv, pointwise, to_channels_last, Downsample, Layout, OverlapPatchEmbed, TransformerBlock,
    Upsample,
};
use tch::{nn, nn::Module, Tensor};

/// Upstream modules that exist in the official state_dict but never run in `forward`.
/// They are not built here; the importer drops them by name and reports it.
pub const IGNORED_UPSTREAM_KEYS: [&str; 6] = [
    "chnl_reduce1.weight",
    "chnl_reduce2.weight",
    "chnl_reduce3.weight",
    "reduce_noise_channel_1.weight",
    "reduce_noise_channel_2.weight",
    "reduce_noise_channel_3.weight",
];

/// Channel widths in terms of `dim`. Upstream writes several of these as literals that are only
/// right at dim 48 (`4*dim+512`, `2*dim+224`, ...); a test pins them to those literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WidthPlan {
    pub c1: i64,
    pub c2: i64,
    pub c3: i64,
    pub c4: i64,
    /// Width of noise_level3: latent + prompt3 (704 at dim 48).
    pub noise3: i64,
    /// Width of noise_level2: decoder_level3 + prompt2 (320).
    pub noise2: i64,
    /// Width of noise_level1: decoder_level2 + prompt1 (160).
    pub noise1: i64,
    /// Input of reduce_chan_level3: up4_3 output + encoder_level3 (288).
    pub chan3_in: i64,
    /// Input of reduce_chan_level2: up3_2 output + encoder_level2 (192).
    pub chan2_in: i64,
}

impl WidthPlan {
    pub fn new(cfg: &PromptIrConfig) -> Self {
        let d = cfg.dim;
        let [p1, p2, p3] = cfg.prompt_dims;
        let (c1, c2, c3, c4) = (d, 2 * d, 4 * d, 8 * d);
        WidthPlan {
            c1,
            c2,
            c3,
            c4,
            noise3: c4 + p3,
            noise2: c3 + p2,
            noise1: c2 + p1,
            chan3_in: c2 + c3,
            chan2_in: c2 + c2,
        }
    }
}

/// The whole network. Field names are the official attribute names.
#[derive(Debug)]
pub struct PromptIr {
    pub patch_embed: OverlapPatchEmbed,
    pub encoder_level1: Vec<TransformerBlock>,
    pub down1_2: Downsample,
    pub encoder_level2: Vec<TransformerBlock>,
    pub down2_3: Downsample,
    pub encoder_level3: Vec<TransformerBlock>,
    pub down3_4: Downsample,
    pub latent: Vec<TransformerBlock>,
    pub prompt1: PromptGenBlock,
    pub prompt2: PromptGenBlock,
    pub prompt3: PromptGenBlock,
    pub noise_level3: TransformerBlock,
    pub reduce_noise_level3: nn::Conv2D,
    pub up4_3: Upsample,
    pub reduce_chan_level3: nn::Conv2D,
    pub decoder_level3: Vec<TransformerBlock>,
    pub noise_level2: TransformerBlock,
    pub reduce_noise_level2: nn::Conv2D,
    pub up3_2: Upsample,
    pub reduce_chan_level2: nn::Conv2D,
    pub decoder_level2: Vec<TransformerBlock>,
    pub noise_level1: TransformerBlock,
    pub reduce_noise_level1: nn::Conv2D,
    pub up2_1: Upsample,
    pub decoder_level1: Vec<TransformerBlock>,
    pub refinement: Vec<TransformerBlock>,
    pub output: nn::Conv2D,
    pub config: PromptIrConfig,
    /// Activation layout of `forward` (not a parameter; `Auto` unless a benchmark sets it).
    pub layout: Layout,
}

impl PromptIr {
    /// Builds the network under `p` (use `vs.root()` so keys equal the official state_dict),
    /// drawing its initial values from libtorch's global generator as it stands.
    /// Panics on an invalid config: call `PromptIrConfig::validate` first on user input.
    pub fn new(p: &nn::Path, cfg: &PromptIrConfig) -> Self {
        drawing(None, || Self::build(p, cfg))
    }

    /// [`PromptIr::new`] with the generator seeded first: the same seed gives the same initial
    /// weights even while other threads build models (parallel tests, several runs in one process).
    pub fn seeded(p: &nn::Path, cfg: &PromptIrConfig, seed: u64) -> Self {
        drawing(Some(seed), || Self::build(p, cfg))
    }

    fn build(p: &nn::Path, cfg: &PromptIrConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid PromptIrConfig: {e}");
        }
        let w = WidthPlan::new(cfg);
        let (ffn, bias, ln, h, nb) =
            (cfg.ffn_expansion_factor, cfg.bias, cfg.layer_norm_type, cfg.heads, cfg.num_blocks);
        let [p1, p2, p3] = cfg.prompt_dims;
        let [s1, s2, s3] = cfg.prompt_sizes;
        let len = cfg.prompt_len;
        let tb =
            |name: &str, dim, heads| TransformerBlock::new(p / name, dim, heads, ffn, bias, ln);
        let stack = |name: &str, n, dim, heads| blocks(p / name, n, dim, heads, ffn, bias, ln);
        let conv1 = |name: &str, cin, cout| conv(p / name, cin, cout, 1, 1, bias);
        PromptIr {
            // Upstream builds the stem with OverlapPatchEmbed's own default, bias=False.
            patch_embed: OverlapPatchEmbed::new(p / "patch_embed", cfg.inp_channels, w.c1, false),
            encoder_level1: stack("encoder_level1", nb[0], w.c1, h[0]),
            down1_2: Downsample::new(p / "down1_2", w.c1),
            encoder_level2: stack("encoder_level2", nb[1], w.c2, h[1]),
            down2_3: Downsample::new(p / "down2_3", w.c2),
            encoder_level3: stack("encoder_level3", nb[2], w.c3, h[2]),
            down3_4: Downsample::new(p / "down3_4", w.c3),
            latent: stack("latent", nb[3], w.c4, h[3]),
            prompt1: PromptGenBlock::new(p / "prompt1", p1, len, s1, w.c2),
            prompt2: PromptGenBlock::new(p / "prompt2", p2, len, s2, w.c3),
            prompt3: PromptGenBlock::new(p / "prompt3", p3, len, s3, w.c4),
            // All three noise blocks use heads[2], as upstream does.
            noise_level3: tb("noise_level3", w.noise3, h[2]),
            reduce_noise_level3: conv1("reduce_noise_level3", w.noise3, w.c3),
            up4_3: Upsample::new(p / "up4_3", w.c3),
            reduce_chan_level3: conv1("reduce_chan_level3", w.chan3_in, w.c3),
            decoder_level3: stack("decoder_level3", nb[2], w.c3, h[2]),
            noise_level2: tb("noise_level2", w.noise2, h[2]),
            reduce_noise_level2: conv1("reduce_noise_level2", w.noise2, w.c3),
            up3_2: Upsample::new(p / "up3_2", w.c3),
            reduce_chan_level2: conv1("reduce_chan_level2", w.chan2_in, w.c2),
            decoder_level2: stack("decoder_level2", nb[1], w.c2, h[1]),
            noise_level1: tb("noise_level1", w.noise1, h[2]),
            reduce_noise_level1: conv1("reduce_noise_level1", w.noise1, w.c2),
            up2_1: Upsample::new(p / "up2_1", w.c2),
            // cat(up2_1, e1) is already 2*dim wide: no 1x1 reduce at level 1.
            decoder_level1: stack("decoder_level1", nb[0], w.c2, h[0]),
            refinement: stack("refinement", cfg.num_refinement_blocks, w.c2, h[0]),
            output: conv(p / "output", w.c2, cfg.out_channels, 3, 1, bias),
            config: cfg.clone(),
            layout: Layout::default(),
        }
    }
}

impl Module for PromptIr {
    /// (B, 3, H, W) -> (B, 3, H, W) with H, W multiples of 8; not clamped.
    fn forward(&self, inp: &Tensor) -> Tensor {
        // Every op keeps the layout of its input, so converting once here sets it throughout.
        let x = if self.layout.channels_last_on(inp.device()) {
            to_channels_last(inp)
        } else {
            inp.shallow_clone()
        };
        let conv1x1 = |c: &nn::Conv2D, x: &Tensor| pointwise(x, &c.ws, c.bs.as_ref());
        // 1. embed + encoder
        let e1 = run_blocks(&self.encoder_level1, self.patch_embed.forward(&x));
        let e2 = run_blocks(&self.encoder_level2, self.down1_2.forward(&e1));
        let e3 = run_blocks(&self.encoder_level3, self.down2_3.forward(&e2));
        let latent = run_blocks(&self.latent, self.down3_4.forward(&e3));
        // 2. latent + prompt3 -> level 3 ([current, prompt] and [upsampled, skip] order matters)
        let l = Tensor::cat(&[&latent, &self.prompt3.forward(&latent)], 1);
        let l = conv1x1(&self.reduce_noise_level3, &self.noise_level3.forward(&l));
        let d3 = Tensor::cat(&[self.up4_3.forward(&l), e3], 1);
        let d3 = run_blocks(&self.decoder_level3, conv1x1(&self.reduce_chan_level3, &d3));
        // 3. prompt2 -> level 2
        let d3 = Tensor::cat(&[&d3, &self.prompt2.forward(&d3)], 1);
        let d3 = conv1x1(&self.reduce_noise_level2, &self.noise_level2.forward(&d3));
        let d2 = Tensor::cat(&[self.up3_2.forward(&d3), e2], 1);
        let d2 = run_blocks(&self.decoder_level2, conv1x1(&self.reduce_chan_level2, &d2));
        // 4. prompt1 -> level 1
        let d2 = Tensor::cat(&[&d2, &self.prompt1.forward(&d2)], 1);
        let d2 = conv1x1(&self.reduce_noise_level1, &self.noise_level1.forward(&d2));
        let d1 = Tensor::cat(&[self.up2_1.forward(&d2), e1], 1);
        let d1 = run_blocks(&self.decoder_level1, d1);
        // 5. refinement + global residual
        let d1 = run_blocks(&self.refinement, d1);
        self.output.forward(&d1) + inp
    }
}
