//! Restormer building blocks, as Restormer, PromptIR and their successors use them: LayerNorm over channels, MDTA attention,
//! GDFN feed-forward, the transformer block, patch embedding and the 2x resamplers.

use super::{conv, is_channels_last, pointwise};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Kind, Tensor};

/// Which LayerNorm the transformer blocks use. Upstream takes a string and silently falls back
/// to WithBias for anything but exactly `'BiasFree'`; an enum makes a typo a load error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LayerNormType {
    #[default]
    WithBias,
    BiasFree,
}

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

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("Attention expects a 4-D input");
        let (heads, ch, hw) = (self.num_heads, c / self.num_heads, h * w);
        let qkv = self.qkv_dwconv.forward(&pointwise(x, &self.qkv.ws, self.qkv.bs.as_ref()));
        let channels_last = is_channels_last(&qkv);
        // chunk(3) then 'b (head c) h w -> b head c (h w)': the channel index is (part, head,
        // c). unbind, not three selects: its backward stacks the three gradients into one
        // tensor instead of zero-filling a full-size one per part and summing them. The stack
        // is contiguous in the unbound shape, so channels-last unbinds (b, hw, 3, head, c):
        // the gradient then reaches qkv_dwconv channels-last too (its backward on an NCHW
        // gradient is slower; docs/perf-notes.md).
        let [q, k, v]: [Tensor; 3] = if channels_last {
            let parts = qkv.permute([0, 2, 3, 1]).reshape([b, hw, 3, heads, ch]).unbind(2);
            let [q, k, v]: [Tensor; 3] = parts.try_into().expect("three parts");
            [q.permute([0, 2, 3, 1]), k.permute([0, 2, 3, 1]), v]
        } else {
            let parts = qkv.reshape([b, 3, heads, ch, hw]).unbind(1);
            parts.try_into().expect("three parts")
        };
        let attn = channel_attention(&q, &k, &self.temperature, v.kind());
        // project_out(attn @ v) = (W blockdiag(attn)) @ v: one GEMM over the pixels instead of
        // two. m[b, o, head*c + j] = sum_i W[o, head*c + i] attn[b, head, i, j].
        let wp = self.project_out.ws.view([c, heads, ch]).transpose(0, 1);
        let m = wp.matmul(&attn).permute([0, 2, 1, 3]).reshape([b, c, c]);
        let out = if channels_last {
            // v is still (b, hw, head, c) here.
            let v = v.reshape([b, hw, c]);
            v.matmul(&m.transpose(1, 2)).view([b, h, w, c]).permute([0, 3, 1, 2])
        } else {
            m.matmul(&v.reshape([b, c, hw])).view([b, c, h, w])
        };
        match &self.project_out.bs {
            Some(bias) => out + bias.view([1, c, 1, 1]),
            None => out,
        }
    }
}

/// softmax(normalize(q) @ normalize(k)^T * temperature) over the last axis, for q and k of shape
/// (b, heads, c, h*w): the (c x c) attention of MDTA and of the cross-attentions built on it, in
/// `kind` (v's).
pub(crate) fn channel_attention(
    q: &Tensor,
    k: &Tensor,
    temperature: &Tensor,
    kind: Kind,
) -> Tensor {
    let norm = |t: &Tensor| t.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-12);
    if q.kind() == Kind::Float {
        // normalize(q) @ normalize(k)^T = (q @ k^T) / (|q| |k|^T), with F.normalize's
        // max(|x|, 1e-12): the norms scale a (c x c) matrix instead of two feature maps.
        let scale = norm(q) * norm(k).transpose(-2, -1);
        (q.matmul(&k.transpose(-2, -1)) / scale * temperature).softmax(-1, None)
    } else {
        // Half/bf16 (autocast): q @ k^T sums h*w products before the division, and at
        // 224x224 its entries pass fp16's 65,504 (all-NaN output). Normalised first in
        // fp32, as upstream does, the logits stay within +-1 whatever the matmul dtype.
        let unit = |t: &Tensor| {
            let t = t.to_kind(Kind::Float);
            &t / norm(&t)
        };
        let logits = unit(q).matmul(&unit(k).transpose(-2, -1)).to_kind(Kind::Float);
        (logits * temperature).softmax(-1, Kind::Float).to_kind(kind)
    }
}

/// MDTA with queries from one map and keys and values from another, through a depthwise conv of
/// `kv_kernel` (AdaIR's `Chanel_Cross_Attention`: 3; MoCE-IR's `CrossAttention`: 7).
#[derive(Debug)]
pub struct CrossAttention {
    pub num_heads: i64,
    pub temperature: Tensor,
    pub q: nn::Conv2D,
    pub q_dwconv: nn::Conv2D,
    pub kv: nn::Conv2D,
    pub kv_dwconv: nn::Conv2D,
    pub project_out: nn::Conv2D,
}

impl CrossAttention {
    pub fn new(p: nn::Path, c: i64, num_heads: i64, kv_kernel: i64, bias: bool) -> Self {
        CrossAttention {
            num_heads,
            temperature: p.var("temperature", &[num_heads, 1, 1], nn::Init::Const(1.0)),
            q: conv(&p / "q", c, c, 1, 1, bias),
            q_dwconv: conv(&p / "q_dwconv", c, c, 3, c, bias),
            kv: conv(&p / "kv", c, 2 * c, 1, 1, bias),
            kv_dwconv: conv(&p / "kv_dwconv", 2 * c, 2 * c, kv_kernel, 2 * c, bias),
            project_out: conv(&p / "project_out", c, c, 1, 1, bias),
        }
    }

    /// Queries from `x`, keys and values from `y` (the same shape).
    pub fn forward(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let conv1x1 = |c: &nn::Conv2D, x: &Tensor| pointwise(x, &c.ws, c.bs.as_ref());
        let (b, c, h, w) = x.size4().expect("cross-attention takes 4-D maps");
        let split = |t: &Tensor| t.reshape([b, self.num_heads, c / self.num_heads, h * w]);
        let q = split(&self.q_dwconv.forward(&conv1x1(&self.q, x)));
        let kv = self.kv_dwconv.forward(&conv1x1(&self.kv, y));
        let [k, v]: [Tensor; 2] = kv.chunk(2, 1).try_into().expect("two halves");
        let (k, v) = (split(&k), split(&v));
        let attn = channel_attention(&q, &k, &self.temperature, v.kind());
        conv1x1(&self.project_out, &attn.matmul(&v).reshape([b, c, h, w]))
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
        // project_in -> dwconv -> chunk(2) computed as two half-width branches on halves of the
        // same weights: per-channel convs, so the math is the same. Each half is then a dense
        // tensor (a chunk of a channels-last map is a strided view that sends GELU through a
        // scalar tail loop), and the full 2*hidden map is never held twice. The weights are
        // halved with `chunk`, whose backward concatenates the two gradients instead of
        // zero-filling one per half (timings of both in docs/perf-notes.md).
        let halves = |t: &Tensor| -> [Tensor; 2] { t.chunk(2, 0).try_into().expect("two halves") };
        let optional = |t: Option<&Tensor>| -> [Option<Tensor>; 2] {
            t.map_or([None, None], |t| halves(t).map(Some))
        };
        let (pin, dw) = (&self.project_in, &self.dwconv);
        let (pin_w, pin_b, dw_w, dw_b) =
            (halves(&pin.ws), optional(pin.bs.as_ref()), halves(&dw.ws), optional(dw.bs.as_ref()));
        let hidden = dw_w[0].size()[0];
        let half = |i: usize| {
            let y = pointwise(x, &pin_w[i], pin_b[i].as_ref());
            y.conv2d(&dw_w[i], dw_b[i].as_ref(), [1, 1], [1, 1], [1, 1], hidden)
        };
        // Separate statements free each half's intermediates before the next is built.
        let a = half(0).gelu("none");
        let g = half(1);
        let out = &self.project_out;
        pointwise(&mul_fresh(a, &g), &out.ws, out.bs.as_ref())
    }
}

/// `a * b` where `a` is a fresh result nobody else holds: in place unless autograd records it.
fn mul_fresh(mut a: Tensor, b: &Tensor) -> Tensor {
    if a.requires_grad() || b.requires_grad() {
        a * b
    } else {
        a *= b;
        a
    }
}

/// `y + x` where `y` is a fresh result nobody else holds: in place unless autograd records it,
/// which saves a full-size allocation per residual in inference.
pub(crate) fn add_fresh(mut y: Tensor, x: &Tensor) -> Tensor {
    if y.requires_grad() || x.requires_grad() {
        y + x
    } else {
        y += x;
        y
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
        let x = add_fresh(self.attn.forward(&self.norm1.forward(x)), x);
        add_fresh(self.ffn.forward(&self.norm2.forward(&x)), &x)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::with_global_rng;
    use crate::native::Autocast;
    use tch::Device;

    /// MDTA at the paper's level-1 width (48 channels, 1 head) on a 224x224 input of standard
    /// deviation `std`: fp32, then under fp16 and bf16 autocast on CPU.
    #[test]
    fn attention_stays_finite_and_close_to_fp32_in_half_and_bf16() {
        let vs = nn::VarStore::new(Device::Cpu);
        let attn = with_global_rng(|| {
            tch::manual_seed(0);
            Attention::new(vs.root(), 48, 1, false)
        });
        for std in [8.0, 16.0] {
            let x = with_global_rng(|| {
                tch::manual_seed(1);
                Tensor::randn([1, 48, 224, 224], (Kind::Float, Device::Cpu)) * std
            });
            let _g = tch::no_grad_guard();
            let want = attn.forward(&x);
            // The regime this is about: q @ k^T, formed before the division, passes fp16's
            // 65,504, so computing it in half precision would give inf/NaN.
            let qkv = attn.qkv_dwconv.forward(&attn.qkv.forward(&x)).reshape([1, 3, 48, 224 * 224]);
            let q = qkv.select(1, 0);
            let gram = f64::try_from(q.matmul(&q.transpose(-2, -1)).abs().max()).unwrap();
            assert!(gram > 65_504.0 * 4.0, "std {std}: largest Gram entry {gram}");
            let scale = f64::try_from(want.abs().max()).unwrap();
            for (dtype, tol) in [(Kind::Half, 2e-3), (Kind::BFloat16, 1e-2)] {
                let got = {
                    let _a = Autocast::new(Device::Cpu, dtype).unwrap();
                    attn.forward(&x)
                };
                assert_eq!(got.kind(), dtype);
                let got = got.to_kind(Kind::Float);
                assert!(bool::try_from(got.isfinite().all()).unwrap(), "{dtype:?}, std {std}");
                let err = f64::try_from((&got - &want).abs().max()).unwrap() / scale;
                eprintln!("std {std} {dtype:?}: max |out - fp32| / max |fp32| = {err:.2e} (Gram {gram:.3e})");
                assert!(err < tol, "{dtype:?}, std {std}: {err}");
            }
        }
    }
}
