//! NAFNet (Chen et al., ECCV 2022, arXiv 2204.04676), the light CNN the all-in-one papers and the
//! course report compare against: a U-Net of NAFBlocks (LayerNorm, depthwise conv, SimpleGate,
//! simplified channel attention), no activation functions. Ported from the official
//! `megvii-research/NAFNet` `basicsr/models/archs/NAFNet_arch.py` (commit 2b4af71), class NAFNet.

mod config;

pub(super) use config::from_shapes;
pub use config::NafNetConfig;

use crate::model::init::{conv_with, drawing};
use crate::model::{conv, pointwise, to_channels_last, Layout};
use tch::{nn, nn::Module, Tensor};

/// Upstream `LayerNorm2d`: LayerNorm over channels at each pixel, eps 1e-6.
#[derive(Debug)]
pub struct LayerNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl LayerNorm2d {
    fn new(p: nn::Path, c: i64) -> Self {
        LayerNorm2d {
            weight: p.var("weight", &[c], nn::Init::Const(1.0)),
            bias: p.var("bias", &[c], nn::Init::Const(0.0)),
        }
    }
}

impl Module for LayerNorm2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        // A permuted view into the native kernel: the same math as upstream's hand-written
        // function, and contiguous rows when the map is channels-last.
        let c = self.weight.size()[0];
        let y = x.permute([0, 2, 3, 1]).layer_norm(
            [c],
            Some(&self.weight),
            Some(&self.bias),
            1e-6,
            true,
        );
        y.permute([0, 3, 1, 2])
    }
}

/// SimpleGate: the first half of the channels times the second.
fn simple_gate(x: &Tensor) -> Tensor {
    let [a, b]: [Tensor; 2] = x.chunk(2, 1).try_into().expect("two halves");
    a * b
}

/// One NAFBlock. Fields are upstream's attributes; `sca` is its `nn.Sequential` of a global
/// average pool and a 1x1 conv (key `sca.1.weight`).
#[derive(Debug)]
pub struct NafBlock {
    pub conv1: nn::Conv2D,
    pub conv2: nn::Conv2D,
    pub conv3: nn::Conv2D,
    pub sca_1: nn::Conv2D,
    pub conv4: nn::Conv2D,
    pub conv5: nn::Conv2D,
    pub norm1: LayerNorm2d,
    pub norm2: LayerNorm2d,
    /// (1, c, 1, 1), zero at init: each block starts as the identity.
    pub beta: Tensor,
    pub gamma: Tensor,
}

impl NafBlock {
    /// Upstream's DW_Expand and FFN_Expand are 2 (NAFNet never passes others).
    fn new(p: nn::Path, c: i64) -> Self {
        let dw = 2 * c;
        NafBlock {
            conv1: conv(&p / "conv1", c, dw, 1, 1, true),
            conv2: conv(&p / "conv2", dw, dw, 3, dw, true),
            conv3: conv(&p / "conv3", dw / 2, c, 1, 1, true),
            sca_1: conv(&p / "sca" / 1, dw / 2, dw / 2, 1, 1, true),
            conv4: conv(&p / "conv4", c, 2 * c, 1, 1, true),
            conv5: conv(&p / "conv5", c, c, 1, 1, true),
            norm1: LayerNorm2d::new(&p / "norm1", c),
            norm2: LayerNorm2d::new(&p / "norm2", c),
            beta: p.var("beta", &[1, c, 1, 1], nn::Init::Const(0.0)),
            gamma: p.var("gamma", &[1, c, 1, 1], nn::Init::Const(0.0)),
        }
    }
}

impl Module for NafBlock {
    fn forward(&self, inp: &Tensor) -> Tensor {
        let conv1x1 = |c: &nn::Conv2D, x: &Tensor| pointwise(x, &c.ws, c.bs.as_ref());
        let x = conv1x1(&self.conv1, &self.norm1.forward(inp));
        let x = simple_gate(&self.conv2.forward(&x));
        // Simplified channel attention: a 1x1 conv of the per-channel means, as a linear map.
        let (b, c) = (x.size()[0], x.size()[1]);
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, None);
        let sca = self.sca_1.ws.view([c, c]);
        let weights = match &self.sca_1.bs {
            Some(bias) => bias.addmm(&pooled, &sca.transpose(0, 1)),
            None => pooled.mm(&sca.transpose(0, 1)),
        };
        let x = conv1x1(&self.conv3, &(x * weights.view([b, c, 1, 1])));
        let y = inp + x * &self.beta;
        let x = conv1x1(&self.conv4, &self.norm2.forward(&y));
        let x = conv1x1(&self.conv5, &simple_gate(&x));
        y + x * &self.gamma
    }
}

/// The whole network. Field names are the official attribute names; `ups[i]` is upstream's
/// `nn.Sequential(conv 1x1, PixelShuffle(2))` (key `ups.i.0.weight`).
#[derive(Debug)]
pub struct NafNet {
    pub intro: nn::Conv2D,
    pub ending: nn::Conv2D,
    pub encoders: Vec<Vec<NafBlock>>,
    pub decoders: Vec<Vec<NafBlock>>,
    pub middle_blks: Vec<NafBlock>,
    pub ups: Vec<nn::Conv2D>,
    pub downs: Vec<nn::Conv2D>,
    pub config: NafNetConfig,
    /// Activation layout of `forward` (not a parameter; `Auto` unless a benchmark sets it).
    pub layout: Layout,
}

impl NafNet {
    /// Builds the network under `p` (use `vs.root()` so keys equal the official state_dict),
    /// drawing its initial values from libtorch's global generator as it stands.
    /// Panics on an invalid config: call `NafNetConfig::validate` first on user input.
    pub fn new(p: &nn::Path, cfg: &NafNetConfig) -> Self {
        drawing(None, || Self::build(p, cfg))
    }

    /// [`NafNet::new`] with the generator seeded first (the same seed, the same weights).
    pub fn seeded(p: &nn::Path, cfg: &NafNetConfig, seed: u64) -> Self {
        drawing(Some(seed), || Self::build(p, cfg))
    }

    fn build(p: &nn::Path, cfg: &NafNetConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid NafNetConfig: {e}");
        }
        let w = cfg.widths();
        let stack =
            |p: nn::Path, n: i64, c: i64| (0..n).map(|j| NafBlock::new(&p / j, c)).collect();
        let levels = cfg.enc_blk_nums.len();
        let stride2 = nn::ConvConfig { stride: 2, ..Default::default() };
        NafNet {
            intro: conv(p / "intro", cfg.img_channel, cfg.width, 3, 1, true),
            ending: conv(p / "ending", cfg.width, cfg.img_channel, 3, 1, true),
            encoders: (0..levels)
                .map(|i| stack(p / "encoders" / i, cfg.enc_blk_nums[i], w[i]))
                .collect(),
            // Decoder i sits at level levels-1-i, deepest first.
            decoders: (0..levels)
                .map(|i| stack(p / "decoders" / i, cfg.dec_blk_nums[i], w[levels - 1 - i]))
                .collect(),
            middle_blks: stack(p / "middle_blks", cfg.middle_blk_num, w[levels]),
            ups: (0..levels)
                .map(|i| {
                    let c = w[levels - i];
                    conv(p / "ups" / i / 0, c, 2 * c, 1, 1, false)
                })
                .collect(),
            downs: (0..levels)
                .map(|i| conv_with(p / "downs" / i, w[i], 2 * w[i], 2, stride2))
                .collect(),
            config: cfg.clone(),
            layout: Layout::default(),
        }
    }
}

fn run(blocks: &[NafBlock], x: Tensor) -> Tensor {
    blocks.iter().fold(x, |x, b| b.forward(&x))
}

impl Module for NafNet {
    /// (B, C, H, W) -> (B, C, H, W), any H and W: zero-padded to a multiple of 2^levels
    /// (right/bottom) and cropped back, as upstream's forward does. Not clamped.
    fn forward(&self, inp: &Tensor) -> Tensor {
        let (h, w) = (inp.size()[2], inp.size()[3]);
        let m = self.config.padder_size();
        let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
        let inp = if ph == 0 && pw == 0 {
            inp.shallow_clone()
        } else {
            inp.constant_pad_nd([0, pw, 0, ph])
        };
        let x = if self.layout.channels_last_on(inp.device()) {
            to_channels_last(&inp)
        } else {
            inp.shallow_clone()
        };
        let mut x = self.intro.forward(&x);
        let mut skips = Vec::with_capacity(self.encoders.len());
        for (enc, down) in self.encoders.iter().zip(&self.downs) {
            x = run(enc, x);
            skips.push(x.shallow_clone());
            x = down.forward(&x);
        }
        x = run(&self.middle_blks, x);
        for ((dec, up), skip) in self.decoders.iter().zip(&self.ups).zip(skips.iter().rev()) {
            let upsampled = pointwise(&x, &up.ws, None).pixel_shuffle(2);
            x = run(dec, upsampled + skip);
        }
        let out = self.ending.forward(&x) + &inp;
        if ph == 0 && pw == 0 {
            out
        } else {
            out.narrow(2, 0, h).narrow(3, 0, w)
        }
    }
}
