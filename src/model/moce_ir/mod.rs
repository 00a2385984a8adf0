//! MoCE-IR (Zamfir et al., CVPR 2025, arXiv 2411.18466): a four-level U-Net of MDTA blocks
//! whose decoder blocks route each image to a mixture of complexity experts: low-rank
//! projections around a Fourier-domain attention over zero-padded patches of 4, 8, 16 and 32
//! pixels, chosen (top-k) from a pooled-feature gate plus a frequency embedding of the latent.
//! Ported from the official `eduardzamfir/MoCE-IR` `src/net/moce_ir.py` (commit a1a6e74).
//!
//! Three departures, documented in `scripts/reference/moce_ir_ref.py`: eval routing adds no
//! noise (upstream's does, so its test outputs vary between runs), each image is routed to its
//! own experts at any batch size (upstream's eval path is right only at batch 1), and the
//! routing logits are float32 under autocast (upstream's routing fails there). Training is
//! upstream's: noisy routing logits and a balance loss.

mod config;

pub(super) use config::from_shapes;
pub use config::{ComplexityScale, MoceIrConfig, RankType};

use crate::model::blocks::{add_fresh, CrossAttention};
use crate::model::init::{drawing, TORCH_DEFAULT_INIT};
use crate::model::{
    conv, pointwise, to_channels_last, Attention, Downsample, FeedForward, LayerNorm,
    LayerNormType, Layout, OverlapPatchEmbed, Upsample,
};
use tch::{nn, nn::Module, Device, Kind, Tensor};

fn conv1x1(c: &nn::Conv2D, x: &Tensor) -> Tensor {
    pointwise(x, &c.ws, c.bs.as_ref())
}

/// `x + mixer(norms[0](x))`, then `x + ffn(norms[1](x))`: Restormer's block under upstream's
/// `EncoderBlock` names.
#[derive(Debug)]
pub struct EncoderBlock {
    pub norms: [LayerNorm; 2],
    pub mixer: Attention,
    pub ffn: FeedForward,
}

impl EncoderBlock {
    fn new(p: nn::Path, c: i64, heads: i64, factor: f64, ln: LayerNormType) -> Self {
        // Upstream builds every encoder group (and the refinement) with bias=True.
        EncoderBlock {
            norms: [
                LayerNorm::new(&p / "norms" / 0, c, ln),
                LayerNorm::new(&p / "norms" / 1, c, ln),
            ],
            mixer: Attention::new(&p / "mixer", c, heads, true),
            ffn: FeedForward::new(&p / "ffn", c, factor, true),
        }
    }
}

impl Module for EncoderBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = add_fresh(self.mixer.forward(&self.norms[0].forward(x)), x);
        add_fresh(self.ffn.forward(&self.norms[1].forward(&x)), &x)
    }
}

/// Upstream's `EncoderResidualGroup` (blocks at `layers.<i>`).
fn encoder_group(p: nn::Path, n: i64, c: i64, heads: i64, cfg: &MoceIrConfig) -> Vec<EncoderBlock> {
    let (f, ln) = (cfg.ffn_expansion_factor, cfg.layer_norm_type);
    (0..n).map(|i| EncoderBlock::new(&p / "layers" / i, c, heads, f, ln)).collect()
}

fn run(blocks: &[EncoderBlock], x: Tensor) -> Tensor {
    blocks.iter().fold(x, |x, b| b.forward(&x))
}

/// q and k multiplied in the Fourier domain of zero-padded `patch_size` patches (a circular
/// correlation within each patch), LayerNorm, gating v.
#[derive(Debug)]
pub struct FftAttention {
    pub patch_size: i64,
    pub q: nn::Conv2D,
    pub q_dwconv: nn::Conv2D,
    pub kv: nn::Conv2D,
    pub kv_dwconv: nn::Conv2D,
    pub norm: LayerNorm,
    pub proj_out: nn::Conv2D,
}

impl FftAttention {
    fn new(p: nn::Path, c: i64, patch_size: i64) -> Self {
        FftAttention {
            patch_size,
            q: conv(&p / "q", c, c, 1, 1, false),
            q_dwconv: conv(&p / "q_dwconv", c, c, 3, c, true),
            kv: conv(&p / "kv", c, 2 * c, 1, 1, false),
            kv_dwconv: conv(&p / "kv_dwconv", 2 * c, 2 * c, 7, 2 * c, true),
            norm: LayerNorm::new(&p / "norm", c, LayerNormType::WithBias),
            proj_out: conv(&p / "proj_out", c, c, 1, 1, true),
        }
    }
}

impl Module for FftAttention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("FFTAttention takes a 4-D map");
        let p = self.patch_size;
        let (hp, wp) = ((h + p - 1) / p, (w + p - 1) / p);
        let q = self.q_dwconv.forward(&conv1x1(&self.q, x));
        let kv = self.kv_dwconv.forward(&conv1x1(&self.kv, x));
        let [k, v]: [Tensor; 2] = kv.chunk(2, 1).try_into().expect("two halves");
        // (b, c, hp, wp, p, p) patches of the zero-padded map, in float32 as upstream (FFTs do
        // not run in reduced precision under autocast).
        let patches = |t: &Tensor| {
            let t = t.to_kind(Kind::Float).constant_pad_nd([0, wp * p - w, 0, hp * p - h]);
            t.reshape([b, c, hp, p, wp, p]).permute([0, 1, 2, 4, 3, 5])
        };
        let dims = [-2i64, -1];
        let fq = patches(&q).fft_rfft2(None::<&[i64]>, dims.as_slice(), "backward");
        let fk = patches(&k).fft_rfft2(None::<&[i64]>, dims.as_slice(), "backward");
        let out = (fq * fk).fft_irfft2(Some([p, p].as_slice()), dims.as_slice(), "backward");
        let out = out.permute([0, 1, 2, 4, 3, 5]).reshape([b, c, hp * p, wp * p]);
        let out = out.narrow(2, 0, h).narrow(3, 0, w);
        conv1x1(&self.proj_out, &(self.norm.forward(&out) * v))
    }
}

/// One expert: `x + proj[2](body(proj[0](x)) * silu(proj[1](shared)))`, the body at rank
/// `rank` (upstream's `ModExpert` inside a one-element `MySequential`: keys `experts.<i>.0.`).
#[derive(Debug)]
pub struct ModExpert {
    pub proj: [nn::Conv2D; 3],
    pub body: FftAttention,
}

impl ModExpert {
    fn new(p: nn::Path, c: i64, rank: i64, patch_size: i64) -> Self {
        let pp = &p / "proj";
        ModExpert {
            proj: [
                conv(&pp / 0, c, rank, 1, 1, false),
                conv(&pp / 1, c, rank, 1, 1, false),
                conv(&pp / 2, rank, c, 1, 1, false),
            ],
            body: FftAttention::new(&p / "body", rank, patch_size),
        }
    }

    fn forward(&self, x: &Tensor, shared: &Tensor) -> Tensor {
        let y =
            self.body.forward(&conv1x1(&self.proj[0], x)) * conv1x1(&self.proj[1], shared).silu();
        add_fresh(conv1x1(&self.proj[2], &y), x)
    }
}

/// Top-k routing over the experts from `gate(avg pool x) + freq_gate(frequency embedding)`.
#[derive(Debug)]
pub struct RoutingFunction {
    /// `gate` is `nn.Sequential(pool, rearrange, Linear)`: key `gate.2.weight`.
    pub gate_2: nn::Linear,
    pub freq_gate: nn::Linear,
    /// The experts' parameter counts, scaled by `complexity_scale` (a buffer: in the
    /// state_dict, never trained).
    pub complexity: Tensor,
    pub k: i64,
    pub use_complexity_bias: bool,
}

/// Upstream's routing noise: standard deviation 1 / experts.
fn noise_std(experts: i64) -> f64 {
    1.0 / experts as f64
}

/// `(std / (mean + 1e-8))^2` of a vector, with the unbiased std as `torch.std`.
fn squared_cv(t: &Tensor) -> Tensor {
    (t.std(true) / (t.mean(Kind::Float) + 1e-8)).square()
}

impl RoutingFunction {
    /// (B, E) gates (the top-k scores, zero elsewhere) and, with `noise` (training: standard
    /// normal draws (B, E)), the balance loss: half importance, half load, upstream's.
    fn forward(
        &self,
        x: &Tensor,
        freq_emb: &Tensor,
        noise: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, None);
        let logits =
            (self.gate_2.forward(&pooled) + self.freq_gate.forward(freq_emb)).to_kind(Kind::Float);
        let gates = |scores: &Tensor| {
            let (top, idx) = scores.topk(self.k, -1, true, true);
            logits.zeros_like().scatter(1, &idx, &top)
        };
        let Some(noise) = noise else {
            return (gates(&logits.softmax(-1, None)), None);
        };
        let experts = logits.size()[1];
        let std = noise_std(experts);
        let noisy = &logits + noise.to_kind(Kind::Float) * std;
        let g = gates(&noisy.softmax(-1, None));
        let importance = logits.softmax(-1, None).sum_dim_intlist([0i64].as_slice(), false, None);
        let importance =
            if self.use_complexity_bias { importance * &self.complexity } else { importance };
        // The chance that each expert stays in the top k under fresh noise, the k-th largest
        // noisy logit being the bar to clear: 1 - Phi((bar - logit) / std).
        let (top, _) = noisy.topk(self.k, -1, true, true);
        let bar = top.narrow(1, self.k - 1, 1);
        let z = (bar - &logits) / std;
        let p: Tensor = 1.0 - ((z / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5;
        let load = p.mean_dim([0i64].as_slice(), false, None);
        (g, Some(squared_cv(&importance) * 0.5 + squared_cv(&load) * 0.5))
    }
}

/// The experts of one decoder block, their routing and the output projection.
#[derive(Debug)]
pub struct AdapterLayer {
    pub experts: Vec<ModExpert>,
    pub proj_out: nn::Conv2D,
    pub routing: RoutingFunction,
}

impl AdapterLayer {
    fn new(p: nn::Path, c: i64, freq_dim: i64, cfg: &MoceIrConfig) -> Self {
        let ranks = cfg.expert_ranks(c).expect("validated ranks");
        let experts: Vec<ModExpert> = (ranks.iter().enumerate())
            .map(|(i, &r)| ModExpert::new(&p / "experts" / i / 0, c, r, 1 << (i + 2)))
            .collect();
        let sizes: Vec<f32> = ranks.iter().map(|&r| expert_parameters(c, r) as f32).collect();
        let scale = match cfg.complexity_scale {
            ComplexityScale::Max => sizes.iter().copied().fold(f32::MIN, f32::max),
            ComplexityScale::Min => sizes.iter().copied().fold(f32::MAX, f32::min),
            ComplexityScale::None => 1.0,
        };
        let r = &p / "routing";
        let linear = |p: nn::Path, i: i64| {
            nn::linear(
                p,
                i,
                cfg.num_experts,
                nn::LinearConfig { ws_init: TORCH_DEFAULT_INIT, bias: false, ..Default::default() },
            )
        };
        let complexity = r.zeros_no_train("complexity", &[cfg.num_experts]);
        tch::no_grad(|| {
            let values: Vec<f32> = sizes.iter().map(|s| s / scale).collect();
            complexity.shallow_clone().copy_(&Tensor::from_slice(&values));
        });
        AdapterLayer {
            experts,
            proj_out: conv(&p / "proj_out", c, c, 1, 1, false),
            routing: RoutingFunction {
                gate_2: linear(&r / "gate" / 2, c),
                freq_gate: linear(&r / "freq_gate", freq_dim),
                complexity,
                k: cfg.topk,
                use_complexity_bias: cfg.with_complexity,
            },
        }
    }

    /// Each image through its top-k experts, weighted by their gates (upstream's training-time
    /// dispatch, also used in eval), then `proj_out`.
    fn forward(
        &self,
        x: &Tensor,
        freq_emb: &Tensor,
        shared: &Tensor,
        noise: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let (gates, loss) = self.routing.forward(x, freq_emb, noise);
        let b = x.size()[0];
        let e = self.experts.len();
        // Which images go where is a host decision (upstream's `nonzero().tolist()` too).
        let host: Vec<f32> =
            Vec::try_from(gates.to_device(Device::Cpu).flatten(0, -1)).expect("float gates");
        let mut out: Option<Tensor> = None;
        for (i, expert) in self.experts.iter().enumerate() {
            let rows: Vec<i64> = (0..b).filter(|&r| host[r as usize * e + i] > 0.0).collect();
            if rows.is_empty() {
                continue;
            }
            let gate = gates.select(1, i as i64);
            // The whole batch runs as is; a part of it is gathered and added back at its rows.
            let (y, idx) = if rows.len() as i64 == b {
                (expert.forward(x, shared) * gate.view([b, 1, 1, 1]), None)
            } else {
                let idx = Tensor::from_slice(&rows).to_device(x.device());
                let y = expert.forward(&x.index_select(0, &idx), &shared.index_select(0, &idx));
                (y * gate.index_select(0, &idx).view([-1, 1, 1, 1]), Some(idx))
            };
            let y = y.to_kind(Kind::Float);
            out = Some(match (out.take(), idx) {
                (None, None) => y,
                (Some(o), None) => o + y,
                (o, Some(idx)) => o
                    .unwrap_or_else(|| Tensor::zeros(x.size(), (Kind::Float, x.device())))
                    .index_add(0, &idx, &y),
            });
        }
        let out = out.expect("top-k routes every image somewhere");
        (conv1x1(&self.proj_out, &out), loss)
    }
}

/// Parameters of an expert (the routing's `complexity` before scaling): its three projections
/// and its FFT attention at rank `r`.
fn expert_parameters(c: i64, r: i64) -> i64 {
    let projections = 3 * c * r;
    // q r^2; q_dwconv 9r + r; kv 2r^2; kv_dwconv 49*2r + 2r; norm 2r; proj_out r^2 + r.
    let body = 4 * r * r + 10 * r + 100 * r + 2 * r + r;
    projections + body
}

/// `x + mixer(adapter(proj[1](n)), shared)` with `n = norms[0](x)` and `shared =
/// shared(proj[0](n))`, then the FFN.
#[derive(Debug)]
pub struct DecoderBlock {
    pub norms: [LayerNorm; 2],
    pub proj: [nn::Conv2D; 2],
    pub shared: Attention,
    pub mixer: CrossAttention,
    pub ffn: FeedForward,
    pub adapter: AdapterLayer,
}

impl DecoderBlock {
    fn new(p: nn::Path, c: i64, heads: i64, freq_dim: i64, cfg: &MoceIrConfig) -> Self {
        let (ln, bias) = (cfg.layer_norm_type, cfg.bias);
        DecoderBlock {
            norms: [
                LayerNorm::new(&p / "norms" / 0, c, ln),
                LayerNorm::new(&p / "norms" / 1, c, ln),
            ],
            proj: [
                conv(&p / "proj" / 0, c, c, 1, 1, true),
                conv(&p / "proj" / 1, c, c, 1, 1, true),
            ],
            shared: Attention::new(&p / "shared", c, heads, bias),
            mixer: CrossAttention::new(&p / "mixer", c, heads, 7, bias),
            ffn: FeedForward::new(&p / "ffn", c, cfg.ffn_expansion_factor, bias),
            adapter: AdapterLayer::new(&p / "adapter", c, freq_dim, cfg),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        freq_emb: &Tensor,
        noise: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let n = self.norms[0].forward(x);
        let shared = self.shared.forward(&conv1x1(&self.proj[0], &n));
        let (a, loss) = self.adapter.forward(&conv1x1(&self.proj[1], &n), freq_emb, &shared, noise);
        let x = add_fresh(self.mixer.forward(&a, &shared), x);
        (add_fresh(self.ffn.forward(&self.norms[1].forward(&x)), &x), loss)
    }
}

/// One decoder level: `dec.<i>.0` upsamples, `dec.<i>.1` fuses with the skip, `dec.<i>.2` is
/// the `DecoderResidualGroup` (blocks at `layers.<j>`).
#[derive(Debug)]
pub struct DecoderLevel {
    pub upsample: Upsample,
    pub fusion: nn::Conv2D,
    pub layers: Vec<DecoderBlock>,
}

/// GELU(high-pass depthwise conv) pooled, through an MLP: what the routing sees of the latent.
#[derive(Debug)]
pub struct FrequencyEmbedding {
    /// Upstream's `HighPassConv2d` (key `high_conv.0.conv.weight`), initialised to the 3x3
    /// Laplacian. Upstream's `requires_grad_ = False` assigns an attribute rather than
    /// freezing it, so it trains, here too.
    pub high_conv_0_conv: nn::Conv2D,
    pub mlp_0: nn::Linear,
    pub mlp_2: nn::Linear,
}

impl FrequencyEmbedding {
    fn new(p: nn::Path, c: i64) -> Self {
        let high = conv(&p / "high_conv" / 0 / "conv", c, c, 3, c, false);
        tch::no_grad(|| {
            let mut k = Tensor::full([3, 3], -1.0, (Kind::Float, high.ws.device()));
            let _ = k.get(1).get(1).fill_(8.0);
            k = k.view([1, 1, 3, 3]).expand([c, 1, 3, 3], false);
            high.ws.shallow_clone().copy_(&k);
        });
        let lin = |p: nn::Path, i, o| {
            let bound = 1.0 / (i as f64).sqrt();
            nn::linear(
                p,
                i,
                o,
                nn::LinearConfig {
                    ws_init: TORCH_DEFAULT_INIT,
                    bs_init: Some(nn::Init::Uniform { lo: -bound, up: bound }),
                    bias: true,
                },
            )
        };
        FrequencyEmbedding {
            high_conv_0_conv: high,
            mlp_0: lin(&p / "mlp" / 0, c, 2 * c),
            mlp_2: lin(&p / "mlp" / 2, 2 * c, c),
        }
    }
}

impl Module for FrequencyEmbedding {
    fn forward(&self, x: &Tensor) -> Tensor {
        let high = self.high_conv_0_conv.forward(x).gelu("none");
        let pooled = high.mean_dim([-2i64, -1].as_slice(), false, None);
        self.mlp_2.forward(&self.mlp_0.forward(&pooled).gelu("none"))
    }
}

/// The whole network. Field names are the official attribute names.
#[derive(Debug)]
pub struct MoceIr {
    pub patch_embed: OverlapPatchEmbed,
    pub freq_embed: FrequencyEmbedding,
    /// `enc.<i>.0` (the group) and `enc.<i>.1` (its downsampling), levels 1-3.
    pub enc: Vec<(Vec<EncoderBlock>, Downsample)>,
    pub latent: Vec<EncoderBlock>,
    /// From the deepest level up, as upstream.
    pub dec: Vec<DecoderLevel>,
    pub refinement: Vec<EncoderBlock>,
    pub output: nn::Conv2D,
    pub config: MoceIrConfig,
    /// Activation layout of `forward` (not a parameter; `Auto` unless a benchmark sets it).
    pub layout: Layout,
}

impl MoceIr {
    /// Builds the network under `p` (use `vs.root()` so keys equal the official state_dict),
    /// drawing its initial values from libtorch's global generator as it stands.
    /// Panics on an invalid config: call `MoceIrConfig::validate` first on user input.
    pub fn new(p: &nn::Path, cfg: &MoceIrConfig) -> Self {
        drawing(None, || Self::build(p, cfg))
    }

    /// [`MoceIr::new`] with the generator seeded first (the same seed, the same weights).
    pub fn seeded(p: &nn::Path, cfg: &MoceIrConfig, seed: u64) -> Self {
        drawing(Some(seed), || Self::build(p, cfg))
    }

    fn build(p: &nn::Path, cfg: &MoceIrConfig) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid MoceIrConfig: {e}");
        }
        let (d, h) = (cfg.dims(), cfg.heads);
        let enc = p / "enc";
        let dec = p / "dec";
        MoceIr {
            patch_embed: OverlapPatchEmbed::new(p / "patch_embed", cfg.inp_channels, d[0], false),
            freq_embed: FrequencyEmbedding::new(p / "freq_embed", d[3]),
            enc: (0..3)
                .map(|i| {
                    let e = &enc / i;
                    (
                        encoder_group(&e / 0, cfg.num_blocks[i], d[i], h[i], cfg),
                        Downsample::new(&e / 1, d[i]),
                    )
                })
                .collect(),
            latent: encoder_group(p / "latent", cfg.num_blocks[3], d[3], h[3], cfg),
            dec: (0..3)
                .map(|j| {
                    let (level, q) = (2 - j, &dec / j);
                    let c = d[level];
                    DecoderLevel {
                        upsample: Upsample::new(&q / 0, 2 * c),
                        fusion: conv(&q / 1, 2 * c, c, 1, 1, cfg.bias),
                        layers: (0..cfg.num_dec_blocks[level])
                            .map(|b| {
                                DecoderBlock::new(&q / 2 / "layers" / b, c, h[level], d[3], cfg)
                            })
                            .collect(),
                    }
                })
                .collect(),
            refinement: encoder_group(p / "refinement", cfg.num_refinement_blocks, d[0], h[0], cfg),
            output: conv(p / "output", d[0], cfg.out_channels, 3, 1, cfg.bias),
            config: cfg.clone(),
            layout: Layout::default(),
        }
    }

    /// The forward; with `noise` (training: standard normal draws (decoder blocks, B, experts),
    /// one slice per block in order), routing is noisy and the mean balance loss over the
    /// decoder blocks comes back too.
    pub fn forward_routed(&self, inp: &Tensor, noise: Option<&Tensor>) -> (Tensor, Option<Tensor>) {
        let x = if self.layout.channels_last_on(inp.device()) {
            to_channels_last(inp)
        } else {
            inp.shallow_clone()
        };
        let mut feats = self.patch_embed.forward(&x);
        let mut skips = Vec::with_capacity(3);
        for (group, down) in &self.enc {
            feats = run(group, feats);
            feats = {
                let next = down.forward(&feats);
                skips.push(feats);
                next
            };
        }
        feats = run(&self.latent, feats);
        let freq = self.freq_embed.forward(&feats);
        let (mut total, mut j) = (None::<Tensor>, 0);
        for level in &self.dec {
            let skip = skips.pop().expect("one skip per level");
            feats =
                conv1x1(&level.fusion, &Tensor::cat(&[level.upsample.forward(&feats), skip], 1));
            for block in &level.layers {
                let n = noise.map(|t| t.get(j));
                let (f, loss) = block.forward(&feats, &freq, n.as_ref());
                feats = f;
                total = match (total, loss) {
                    (Some(t), Some(l)) => Some(t + l),
                    (None, l) => l,
                    (t, None) => t,
                };
                j += 1;
            }
        }
        let out = self.output.forward(&run(&self.refinement, feats)) + inp;
        (out, total.map(|t| t / self.config.decoder_blocks() as f64))
    }
}

impl Module for MoceIr {
    /// (B, 3, H, W) -> (B, 3, H, W) with H, W multiples of 8, deterministic routing; not clamped.
    fn forward(&self, inp: &Tensor) -> Tensor {
        self.forward_routed(inp, None).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::shapes::Shapes;
    use std::collections::BTreeMap;

    /// Every rank type is read back off the shapes it builds, also where one level alone
    /// matches two types (dim 16: exp from 2 gives spread's [2, 4, 8, 16] at the top level).
    #[test]
    fn the_rank_type_is_read_back_off_the_shapes() {
        let tiny = MoceIrConfig::tiny();
        let cases = [
            MoceIrConfig { dim: 16, rank_type: RankType::Exp, rank: 2, ..tiny.clone() },
            MoceIrConfig { rank_type: RankType::Constant, rank: 3, ..tiny.clone() },
            MoceIrConfig { rank_type: RankType::Lin, rank: 2, ..tiny.clone() },
            MoceIrConfig { rank_type: RankType::Double, rank: 1, ..tiny.clone() },
            MoceIrConfig { rank_type: RankType::Fact, rank: 2, ..tiny.clone() },
            MoceIrConfig { num_experts: 3, topk: 1, ..tiny.clone() },
            tiny,
        ];
        for cfg in cases {
            let vs = nn::VarStore::new(Device::Cpu);
            let _net = MoceIr::new(&vs.root(), &cfg);
            let shapes: BTreeMap<String, Vec<i64>> =
                vs.variables().into_iter().map(|(k, t)| (k, t.size())).collect();
            assert_eq!(from_shapes(&Shapes(&shapes)).unwrap(), cfg);
        }
    }

    #[test]
    fn the_high_pass_starts_as_the_laplacian_and_complexity_is_each_experts_size() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = MoceIr::new(&vs.root(), &MoceIrConfig::tiny());
        let w = &net.freq_embed.high_conv_0_conv.ws;
        assert_eq!(w.size(), [64, 1, 3, 3]);
        let k: Vec<f32> = Vec::try_from(w.get(5).flatten(0, -1)).unwrap();
        assert_eq!(k, [-1.0, -1.0, -1.0, -1.0, 8.0, -1.0, -1.0, -1.0, -1.0]);
        // The buffer against the experts' own parameter counts, largest = 1.
        let adapter = &net.dec[0].layers[0].adapter;
        let counts: Vec<f64> = (adapter.experts.iter())
            .map(|e| {
                let convs = e.proj.iter().chain([
                    &e.body.q,
                    &e.body.q_dwconv,
                    &e.body.kv,
                    &e.body.kv_dwconv,
                    &e.body.proj_out,
                ]);
                let n: i64 = convs
                    .map(|c| c.ws.numel() as i64 + c.bs.as_ref().map_or(0, |b| b.numel() as i64))
                    .sum();
                (n + 2 * e.body.norm.dim) as f64
            })
            .collect();
        let max = counts.iter().copied().fold(0.0, f64::max);
        let got: Vec<f64> = Vec::try_from(&adapter.routing.complexity).unwrap();
        for (g, c) in got.iter().zip(&counts) {
            assert!((g - c / max).abs() < 1e-6, "{got:?} vs {counts:?}");
        }
        assert!(!adapter.routing.complexity.requires_grad());
    }
}
