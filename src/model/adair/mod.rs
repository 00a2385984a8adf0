//! AdaIR (Cui et al., ICLR 2025, arXiv 2403.14614), built on PromptIR's code: Restormer with an
//! adaptive frequency learning block after the latent and after decoder levels 3 and 2. Each
//! splits a conv of the resized input image into high and low frequencies (an FFT mask whose
//! size a small conv predicts), attends from each to the features, fuses them and attends back.
//! Ported from the official `c-yn/AdaIR` `net/model.py` (commit ccb8b98), class AdaIR.

mod config;

pub(super) use config::from_shapes;
pub use config::AdaIrConfig;

use crate::model::blocks::CrossAttention;
use crate::model::init::drawing;
use crate::model::restormer::Tap;
use crate::model::{conv, pointwise, Layout, Restormer};
use tch::{nn, nn::Module, Kind, Tensor};

/// Upstream's frequency split divides each side by this before scaling it by the predicted rate,
/// so the low-frequency box is empty below 128 pixels at a block's level.
const MASK_DIVISOR: i64 = 128;

fn conv1x1(c: &nn::Conv2D, x: &Tensor) -> Tensor {
    pointwise(x, &c.ws, c.bs.as_ref())
}

/// Upstream's `Chanel_Cross_Attention`: the shared cross-attention with a 3x3 key/value conv.
pub type ChanelCrossAttention = CrossAttention;

/// sigmoid(conv7x7([max over channels, mean over channels])).
#[derive(Debug)]
pub struct SpatialGate {
    pub spatial: nn::Conv2D,
}

impl Module for SpatialGate {
    fn forward(&self, x: &Tensor) -> Tensor {
        let max = x.amax([1i64].as_slice(), true);
        let mean = x.mean_dim([1i64].as_slice(), true, None);
        self.spatial.forward(&Tensor::cat(&[max, mean], 1)).sigmoid()
    }
}

/// sigmoid(mlp(avg pool) + mlp(max pool)); `mlp` is upstream's `nn.Sequential(conv, ReLU,
/// conv)` (keys `mlp.0.weight`, `mlp.2.weight`).
#[derive(Debug)]
pub struct ChannelGate {
    pub mlp_0: nn::Conv2D,
    pub mlp_2: nn::Conv2D,
}

impl Module for ChannelGate {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mlp = |t: Tensor| self.mlp_2.forward(&self.mlp_0.forward(&t).relu());
        let avg = mlp(x.mean_dim([2i64, 3].as_slice(), true, None));
        let max = mlp(x.amax([2i64, 3].as_slice(), true));
        (avg + max).sigmoid()
    }
}

/// The fusion of the two frequency branches. Upstream's attributes are `SpatialGate` and
/// `ChannelGate` (capitalised): the keys keep those names.
#[derive(Debug)]
pub struct FreRefine {
    pub spatial_gate: SpatialGate,
    pub channel_gate: ChannelGate,
    pub proj: nn::Conv2D,
}

impl FreRefine {
    fn forward(&self, low: &Tensor, high: &Tensor) -> Tensor {
        let high_gated = high * self.channel_gate.forward(low);
        let low_gated = low * self.spatial_gate.forward(high);
        conv1x1(&self.proj, &(low_gated + high_gated))
    }
}

/// The adaptive frequency learning block. `conv` and `score_gen` are defined upstream but never
/// run; they are built so that the keys (and the parameter count) are the official ones, and get
/// no gradient, like `rate_conv` (`nn.Sequential(conv, GELU, conv)`), whose output reaches the
/// loss only through an integer mask size.
#[derive(Debug)]
pub struct FreModule {
    pub conv: nn::Conv2D,
    pub conv1: nn::Conv2D,
    pub score_gen: nn::Conv2D,
    /// (c, 1, 1), zero at init: each block starts as the identity on its features.
    pub para1: Tensor,
    pub para2: Tensor,
    pub channel_cross_l: ChanelCrossAttention,
    pub channel_cross_h: ChanelCrossAttention,
    pub channel_cross_agg: ChanelCrossAttention,
    pub frequency_refine: FreRefine,
    pub rate_conv_0: nn::Conv2D,
    pub rate_conv_2: nn::Conv2D,
}

impl FreModule {
    fn new(p: nn::Path, c: i64, heads: i64, bias: bool) -> Self {
        let refine = &p / "frequency_refine";
        let cross = |name: &str| CrossAttention::new(&p / name, c, heads, 3, bias);
        FreModule {
            conv: conv(&p / "conv", 3, c, 3, 1, false),
            conv1: conv(&p / "conv1", 3, c, 3, 1, false),
            score_gen: conv(&p / "score_gen", 2, 2, 7, 1, true),
            para1: p.var("para1", &[c, 1, 1], nn::Init::Const(0.0)),
            para2: p.var("para2", &[c, 1, 1], nn::Init::Const(1.0)),
            channel_cross_l: cross("channel_cross_l"),
            channel_cross_h: cross("channel_cross_h"),
            channel_cross_agg: cross("channel_cross_agg"),
            frequency_refine: FreRefine {
                spatial_gate: SpatialGate {
                    spatial: conv(&refine / "SpatialGate" / "spatial", 2, 1, 7, 1, false),
                },
                channel_gate: ChannelGate {
                    mlp_0: conv(&refine / "ChannelGate" / "mlp" / 0, c, c / 16, 1, 1, false),
                    mlp_2: conv(&refine / "ChannelGate" / "mlp" / 2, c / 16, c, 1, 1, false),
                },
                proj: conv(&refine / "proj", c, c, 1, 1, true),
            },
            rate_conv_0: conv(&p / "rate_conv" / 0, c, c / 8, 1, 1, false),
            rate_conv_2: conv(&p / "rate_conv" / 2, c / 8, 2, 1, 1, false),
        }
    }

    /// Half-sides of the centred low-frequency box of each image, as upstream computes them:
    /// `int(side // 128 * rate)` with the rate in float32.
    fn mask_sizes(&self, x: &Tensor) -> Vec<(i64, i64)> {
        let (h, w) = (x.size()[2], x.size()[3]);
        if h / MASK_DIVISOR == 0 && w / MASK_DIVISOR == 0 {
            return vec![(0, 0); x.size()[0] as usize]; // empty whatever the rate: no host sync
        }
        let pooled = x.mean_dim([2i64, 3].as_slice(), true, None);
        let rate = self.rate_conv_2.forward(&self.rate_conv_0.forward(&pooled).gelu("none"));
        let rate: Vec<f32> = Vec::try_from(rate.sigmoid().to_kind(Kind::Float).flatten(0, -1))
            .expect("a float tensor");
        rate.chunks(2)
            .map(|r| {
                (
                    ((h / MASK_DIVISOR) as f32 * r[0]) as i64,
                    ((w / MASK_DIVISOR) as f32 * r[1]) as i64,
                )
            })
            .collect()
    }

    /// (high, low): |ifft2| of the spectrum outside and inside the box, in float32 (FFTs do
    /// not run in reduced precision, as under PyTorch's autocast).
    fn split(&self, img: &Tensor) -> (Tensor, Tensor) {
        let x = self.conv1.forward(img).to_kind(Kind::Float);
        let (b, _, h, w) = x.size4().expect("4-D");
        let sizes = self.mask_sizes(&x);
        if sizes.iter().all(|&(mh, mw)| mh == 0 || mw == 0) {
            // An empty box: the spectrum passes whole (the round trip is the identity up to
            // float rounding) and the low part is exactly zero, with a zero gradient.
            return (x.abs(), x.zeros_like());
        }
        // Upstream centres the spectrum (roll by half the size), masks, and rolls back; the
        // mask rolled back instead is the same product.
        let mask = Tensor::zeros([b, 1, h, w], (Kind::Float, x.device()));
        for (i, &(mh, mw)) in sizes.iter().enumerate() {
            let _ = mask
                .get(i as i64)
                .narrow(1, h / 2 - mh, 2 * mh)
                .narrow(2, w / 2 - mw, 2 * mw)
                .fill_(1.0);
        }
        let mask = mask.roll([-(h / 2), -(w / 2)], [2, 3]);
        let spectrum = x.fft_fft2(None::<&[i64]>, [-2i64, -1].as_slice(), "forward");
        let back = |s: Tensor| s.fft_ifft2(None::<&[i64]>, [-2i64, -1].as_slice(), "forward").abs();
        let high = back(&spectrum * (1.0 - &mask));
        let low = back(&spectrum * mask);
        (high, low)
    }

    /// `y` refined with frequencies of `img` (the network's input), resized to `y`'s size.
    fn forward(&self, img: &Tensor, y: &Tensor) -> Tensor {
        let (h, w) = (y.size()[2], y.size()[3]);
        let img = img.upsample_bilinear2d([h, w], false, None, None);
        let (high, low) = self.split(&img);
        let (high, low) = (high.to_kind(y.kind()), low.to_kind(y.kind()));
        let high = self.channel_cross_l.forward(&high, y);
        let low = self.channel_cross_h.forward(&low, y);
        let agg = self.frequency_refine.forward(&low, &high);
        self.channel_cross_agg.forward(y, &agg) * &self.para1 + y * &self.para2
    }
}

/// The whole network: Restormer's modules (at the same keys) and the three frequency blocks.
#[derive(Debug)]
pub struct AdaIr {
    pub backbone: Restormer,
    pub fre1: Option<FreModule>,
    pub fre2: Option<FreModule>,
    pub fre3: Option<FreModule>,
    pub config: AdaIrConfig,
}

impl AdaIr {
    /// Builds the network under `p` (use `vs.root()` so keys equal the official state_dict),
    /// drawing its initial values from libtorch's global generator as it stands.
    /// Panics on an invalid config: call `AdaIrConfig::validate` first on user input.
    pub fn new(p: &nn::Path, cfg: &AdaIrConfig) -> Self {
        drawing(None, || Self::build(p, cfg))
    }

    /// [`AdaIr::new`] with the generator seeded first (the same seed, the same weights).
    pub fn seeded(p: &nn::Path, cfg: &AdaIrConfig, seed: u64) -> Self {
        drawing(Some(seed), || Self::build(p, cfg))
    }

    fn build(p: &nn::Path, cfg: &AdaIrConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid AdaIrConfig: {e}");
        }
        let (d, h, bias) = (cfg.dim, cfg.heads[2], cfg.bias);
        let fre = |name: &str, c: i64| cfg.decoder.then(|| FreModule::new(p / name, c, h, bias));
        AdaIr {
            fre1: fre("fre1", 8 * d),
            fre2: fre("fre2", 4 * d),
            fre3: fre("fre3", 2 * d),
            backbone: Restormer::build(p, &cfg.backbone()),
            config: cfg.clone(),
        }
    }

    pub fn set_layout(&mut self, layout: Layout) {
        self.backbone.layout = layout;
    }
}

impl Module for AdaIr {
    /// (B, 3, H, W) -> (B, 3, H, W) with H, W multiples of 8; not clamped.
    fn forward(&self, inp: &Tensor) -> Tensor {
        self.backbone.forward_tapped(inp, |at, x| {
            let block = match at {
                Tap::Latent => &self.fre1,
                Tap::Decoder3 => &self.fre2,
                Tap::Decoder2 => &self.fre3,
            };
            match block {
                Some(b) => b.forward(inp, &x),
                None => x,
            }
        })
    }
}
