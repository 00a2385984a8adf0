//! Restormer building blocks as PromptIR uses them: LayerNorm over channels, MDTA attention,
//! GDFN feed-forward, the transformer block, patch embedding and the 2x resamplers.

use super::{conv, LayerNormType};
use tch::{nn, nn::Module, Tensor};

/// Per-pixel LayerNorm over channels (upstream `LayerNorm` holding a `body`), eps 1e-5.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub dim: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, dim: i64, kind: LayerNormType) -> Self {
        let body = &p / "body";
        let weight = body.var("weight", &[dim], nn::Init::Const(1.0));
        let bias = match kind {
            LayerNormType::WithBias => Some(body.var("bias", &[dim], nn::Init::Const(0.0))),
            LayerNormType::BiasFree => None,
        };
        LayerNorm { weight, bias, dim }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        // Upstream goes b c h w -> b (h w) c and back with einops copies; a permuted view into
        // the native kernel is the same math with fewer copies.
        let xt = x.permute([0, 2, 3, 1]);
        let y = match &self.bias {
            Some(b) => xt.layer_norm([self.dim], Some(&self.weight), Some(b), 1e-5, true),
            // BiasFree: the variance is taken around the mean, but the mean is not subtracted.
            None => {
                &xt / (xt.var_dim([-1i64].as_slice(), false, true) + 1e-5).sqrt() * &self.weight
            }
        };
        y.permute([0, 3, 1, 2])
    }
}

/// MDTA: multi-Dconv head transposed attention (channel attention, linear in h*w).
#[derive(Debug)]
pub struct Attention {
    pub num_heads: i64,
    /// (num_heads, 1, 1), learned softmax temperature.
    pub temperature: Tensor,
    pub qkv: nn::Conv2D,
    pub qkv_dwconv: nn::Conv2D,
    pub project_out: nn::Conv2D,
}

impl Attention {
    pub fn new(p: nn::Path, dim: i64, num_heads: i64, bias: bool) -> Self {
        Attention {
            num_heads,
            temperature: p.var("temperature", &[num_heads, 1, 1], nn::Init::Const(1.0)),
            qkv: conv(&p / "qkv", dim, dim * 3, 1, 1, bias),
            qkv_dwconv: conv(&p / "qkv_dwconv", dim * 3, dim * 3, 3, dim * 3, bias),
            project_out: conv(&p / "project_out", dim, dim, 1, 1, bias),
        }
    }
}

/// `F.normalize(x, dim=-1)`: x / max(||x||_2, 1e-12).
fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-12)
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("Attention expects a 4-D input");
        let qkv = self.qkv_dwconv.forward(&self.qkv.forward(x));
        // chunk(3) then 'b (head c) h w -> b head c (h w)': one reshape of the contiguous
        // tensor, since the head is the outer factor of the channel index.
        let qkv = qkv.reshape([b, 3, self.num_heads, c / self.num_heads, h * w]);
        let q = l2_normalize(&qkv.select(1, 0));
        let k = l2_normalize(&qkv.select(1, 1));
        let v = qkv.select(1, 2);
        // (b, heads, c/heads, c/heads)
        let attn = (q.matmul(&k.transpose(-2, -1)) * &self.temperature).softmax(-1, None);
        let out = attn.matmul(&v).reshape([b, c, h, w]);
        self.project_out.forward(&out)
    }
}

/// GDFN: gated-Dconv feed-forward network with exact (erf) GELU.
#[derive(Debug)]
pub struct FeedForward {
    pub project_in: nn::Conv2D,
    pub dwconv: nn::Conv2D,
    pub project_out: nn::Conv2D,
}

impl FeedForward {
    /// `hidden = int(dim * factor)`, computed in f64 to truncate exactly like Python.
    pub fn hidden_features(dim: i64, factor: f64) -> i64 {
        (dim as f64 * factor) as i64
    }

    pub fn new(p: nn::Path, dim: i64, ffn_expansion_factor: f64, bias: bool) -> Self {
        let hidden = Self::hidden_features(dim, ffn_expansion_factor);
        FeedForward {
            project_in: conv(&p / "project_in", dim, hidden * 2, 1, 1, bias),
            dwconv: conv(&p / "dwconv", hidden * 2, hidden * 2, 3, hidden * 2, bias),
            project_out: conv(&p / "project_out", hidden, dim, 1, 1, bias),
        }
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = self.dwconv.forward(&self.project_in.forward(x));
        let halves = x.chunk(2, 1);
        self.project_out.forward(&(halves[0].gelu("none") * &halves[1]))
    }
}

/// `x = x + attn(norm1(x)); x = x + ffn(norm2(x))`.
#[derive(Debug)]
pub struct TransformerBlock {
    pub norm1: LayerNorm,
    pub attn: Attention,
    pub norm2: LayerNorm,
    pub ffn: FeedForward,
}

impl TransformerBlock {
    pub fn new(
        p: nn::Path,
        dim: i64,
        num_heads: i64,
        ffn_factor: f64,
        bias: bool,
        ln: LayerNormType,
    ) -> Self {
        TransformerBlock {
            norm1: LayerNorm::new(&p / "norm1", dim, ln),
            attn: Attention::new(&p / "attn", dim, num_heads, bias),
            norm2: LayerNorm::new(&p / "norm2", dim, ln),
            ffn: FeedForward::new(&p / "ffn", dim, ffn_factor, bias),
        }
    }
}

impl Module for TransformerBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attn.forward(&self.norm1.forward(x));
        &x + self.ffn.forward(&self.norm2.forward(&x))
    }
}

/// A stack of transformer blocks named `0..n` like an `nn.Sequential`.
pub(crate) fn blocks(
    p: nn::Path,
    n: i64,
    dim: i64,
    heads: i64,
    ffn: f64,
    bias: bool,
    ln: LayerNormType,
) -> Vec<TransformerBlock> {
    (0..n).map(|i| TransformerBlock::new(&p / i, dim, heads, ffn, bias, ln)).collect()
}

pub(crate) fn run_blocks(blocks: &[TransformerBlock], x: Tensor) -> Tensor {
    blocks.iter().fold(x, |x, b| b.forward(&x))
}

/// 3x3 conv embedding of the input image.
#[derive(Debug)]
pub struct OverlapPatchEmbed {
    pub proj: nn::Conv2D,
}

impl OverlapPatchEmbed {
    pub fn new(p: nn::Path, in_c: i64, embed_dim: i64, bias: bool) -> Self {
        OverlapPatchEmbed { proj: conv(&p / "proj", in_c, embed_dim, 3, 1, bias) }
    }
}

impl Module for OverlapPatchEmbed {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.proj.forward(x)
    }
}

/// conv n -> n/2, PixelUnshuffle(2): 2n channels at half resolution. Key `body.0.weight`.
#[derive(Debug)]
pub struct Downsample {
    pub body_0: nn::Conv2D,
}

impl Downsample {
    pub fn new(p: nn::Path, n_feat: i64) -> Self {
        Downsample { body_0: conv(&p / "body" / 0, n_feat, n_feat / 2, 3, 1, false) }
    }
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.body_0.forward(x).pixel_unshuffle(2)
    }
}

/// conv n -> 2n, PixelShuffle(2): n/2 channels at double resolution. Key `body.0.weight`.
#[derive(Debug)]
pub struct Upsample {
    pub body_0: nn::Conv2D,
}

impl Upsample {
    pub fn new(p: nn::Path, n_feat: i64) -> Self {
        Upsample { body_0: conv(&p / "body" / 0, n_feat, n_feat * 2, 3, 1, false) }
    }
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.body_0.forward(x).pixel_shuffle(2)
    }
}
