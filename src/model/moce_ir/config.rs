//! MoCE-IR's hyper-parameters ([`MoceIrConfig`]), their checks, the experts' sizes and the
//! parameter estimate.

use crate::model::shapes::Shapes;
use crate::model::{check_range, check_size, FeedForward, LayerNormType, RestormerConfig};
use serde::{Deserialize, Serialize};

/// How the experts' ranks grow (upstream's `rank_type`): from `rank`, or, for `spread`, the
/// level's width halved per expert (`dim/8, dim/4, dim/2, dim` for four experts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankType {
    Constant,
    Lin,
    Double,
    Exp,
    Fact,
    Spread,
}

/// What the experts' parameter counts (the routing's `complexity` buffer) are divided by.
/// Upstream leaves them unscaled for any other string; `none` says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplexityScale {
    Min,
    Max,
    None,
}

/// MoCE-IR's hyper-parameters (`model:` with `arch: moce_ir`), named as upstream's keyword
/// arguments, with its four levels (the configs' `levels = len(num_blocks)`). The default is the
/// paper's MoCE-IR (25,353,796 parameters); [`MoceIrConfig::small`] is MoCE-IR-S.
///
/// Upstream's `depth_type` and `stage_depth` are not keys: an expert of depth d recomputes the
/// same value d times, so they change neither the weights nor the output. `topk` and
/// `with_complexity` are not in a state_dict; `import` reads upstream's defaults (1, false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoceIrConfig {
    pub inp_channels: i64,
    pub out_channels: i64,
    pub dim: i64,
    pub num_blocks: [i64; 4],
    /// Decoder blocks per level, from the top level down (upstream's order).
    pub num_dec_blocks: [i64; 3],
    pub num_refinement_blocks: i64,
    pub heads: [i64; 4],
    pub ffn_expansion_factor: f64,
    pub bias: bool,
    pub layer_norm_type: LayerNormType,
    /// The experts' base rank (`latent_dim` in upstream's options; unused by `spread`).
    pub rank: i64,
    pub rank_type: RankType,
    /// Experts per decoder block (`num_exp_blocks` in upstream's options).
    pub num_experts: i64,
    /// Experts each image is routed to.
    pub topk: i64,
    /// Weights the importance loss by the experts' relative sizes (the routing's
    /// `use_complexity_bias`).
    pub with_complexity: bool,
    pub complexity_scale: ComplexityScale,
}

impl Default for MoceIrConfig {
    fn default() -> Self {
        MoceIrConfig {
            inp_channels: 3,
            out_channels: 3,
            dim: 48,
            num_blocks: [4, 6, 6, 8],
            num_dec_blocks: [2, 4, 4],
            num_refinement_blocks: 4,
            heads: [1, 2, 4, 8],
            ffn_expansion_factor: 2.0,
            bias: false,
            layer_norm_type: LayerNormType::WithBias,
            rank: 2,
            rank_type: RankType::Spread,
            num_experts: 4,
            topk: 1,
            with_complexity: false,
            complexity_scale: ComplexityScale::Max,
        }
    }
}

/// Widest per-level width (keeps the factorial and power ranks from overflowing).
const MAX_RANK: i64 = 1 << 16;

impl MoceIrConfig {
    /// MoCE-IR as upstream's `moce_ir` options build it.
    pub fn paper() -> Self {
        Self::default()
    }

    /// MoCE-IR-S (`moce_ir_s`: dim 32, 11,477,752 parameters).
    pub fn small() -> Self {
        MoceIrConfig { dim: 32, ..Self::default() }
    }

    /// The same wiring at PromptIR's tiny sizes (dim 8, one block per level and stage).
    pub fn tiny() -> Self {
        MoceIrConfig {
            dim: 8,
            num_blocks: [1, 1, 1, 1],
            num_dec_blocks: [1, 1, 1],
            num_refinement_blocks: 1,
            ..Self::default()
        }
    }

    /// Widths of the four levels.
    pub fn dims(&self) -> [i64; 4] {
        [self.dim, 2 * self.dim, 4 * self.dim, 8 * self.dim]
    }

    /// Decoder blocks in all (the balance loss is their mean).
    pub fn decoder_blocks(&self) -> i64 {
        self.num_dec_blocks.iter().sum()
    }

    /// The ranks of a decoder block's experts at width `c`, or None when one overflows.
    pub fn expert_ranks(&self, c: i64) -> Option<Vec<i64>> {
        let (r, n) = (self.rank, self.num_experts);
        (0..n)
            .map(|i| match self.rank_type {
                RankType::Constant => Some(r),
                RankType::Lin => r.checked_add(i),
                RankType::Double => r.checked_add(2 * i),
                RankType::Exp => r.checked_pow(i as u32 + 1),
                RankType::Fact => (1..=r.checked_add(i)?).try_fold(1i64, |a, k| a.checked_mul(k)),
                RankType::Spread => Some(c >> (n - 1 - i)),
            })
            .map(|r| r.filter(|r| (1..=MAX_RANK).contains(r)))
            .collect()
    }

    /// The Restormer with the same encoder, for the checks they share.
    fn backbone(&self) -> RestormerConfig {
        RestormerConfig {
            inp_channels: self.inp_channels,
            out_channels: self.out_channels,
            dim: self.dim,
            num_blocks: self.num_blocks,
            num_refinement_blocks: self.num_refinement_blocks,
            heads: self.heads,
            ffn_expansion_factor: self.ffn_expansion_factor,
            bias: self.bias,
            layer_norm_type: self.layer_norm_type,
        }
    }

    /// Checks everything the constructor relies on, so that building never panics.
    pub fn validate(&self) -> Result<(), String> {
        // Channels, widths, blocks, heads per level and the FFN factor, as Restormer's.
        self.backbone().validate()?;
        for (i, &n) in self.num_dec_blocks.iter().enumerate() {
            check_range(&format!("num_dec_blocks[{i}]"), n, 1, 256)?;
        }
        // One expert would make the routing trivial and its balance loss NaN (the unbiased std
        // of one value), as upstream's.
        check_range("num_experts", self.num_experts, 2, 8)?;
        check_range("topk", self.topk, 1, self.num_experts)?;
        check_range("rank", self.rank, 1, MAX_RANK)?;
        for (level, c) in self.dims().into_iter().enumerate().take(3) {
            if self.expert_ranks(c).is_none() {
                return Err(format!(
                    "level {}: the experts' ranks ({:?} from model.rank {}) must be in 1..={MAX_RANK} at width {c}",
                    level + 1,
                    self.rank_type,
                    self.rank
                ));
            }
        }
        check_size(self.approx_parameters(), "model.dim and model.num_blocks")
    }

    /// The transformer blocks' 1x1 convs, the experts' projections and quadratic terms, and the
    /// resamplers: never above the truth.
    pub fn approx_parameters(&self) -> f64 {
        let f = self.ffn_expansion_factor;
        // Per block: qkv 3c^2 + project_out c^2 + FFN in 2fc^2 + out fc^2; a decoder block has
        // the same again in its cross-attention and two projections, and its experts.
        let block = |c: i64| (c * c) as f64 * (4.0 + 3.0 * f);
        let experts = |c: i64| {
            let ranks = self.expert_ranks(c).unwrap_or_default();
            ranks.iter().map(|&r| (3 * c * r + 4 * r * r) as f64).sum::<f64>()
        };
        let d = self.dims();
        let enc: f64 = (0..4).map(|i| self.num_blocks[i] as f64 * block(d[i])).sum();
        let dec: f64 = (0..3)
            .map(|i| self.num_dec_blocks[i] as f64 * (2.0 * block(d[i]) + experts(d[i])))
            .sum();
        // Downsample c -> c/2 and Upsample 2c -> 4c (3x3), the fusion 2c -> c, per level.
        let resample: f64 = d[..3].iter().map(|&c| ((c * c) as f64) * (4.5 + 72.0 + 2.0)).sum();
        enc + dec + resample + self.num_refinement_blocks as f64 * block(d[0])
    }

    /// Input sizes must be multiples of this (three 2x downsamplings); `restore` pads to it.
    pub fn pad_multiple(&self) -> i64 {
        8
    }
}

/// Reads the hyper-parameters off an official state_dict's keys and shapes.
pub(in crate::model) fn from_shapes(s: &Shapes) -> Result<MoceIrConfig, String> {
    let embed = s.get("patch_embed.proj.weight", 4)?;
    let dim = embed[0];
    if dim < 2 {
        return Err(format!("patch_embed.proj.weight has shape {embed:?}"));
    }
    let heads =
        |prefix: &str| Ok::<_, String>(s.get(&format!("{prefix}.mixer.temperature"), 3)?[0]);
    let enc = |i: usize| format!("enc.{i}.0.layers");
    // Upstream's `dec` runs from the deepest level up; num_dec_blocks lists the top level first.
    let dec = |level: usize| format!("dec.{}.2.layers", 2 - level);
    // Each level's first decoder block: its experts' ranks.
    let ranks_at = |level: usize| {
        let block = format!("{}.0", dec(level));
        let experts = s.count(&format!("{block}.adapter.experts"));
        (0..experts)
            .map(|e| Ok(s.get(&format!("{block}.adapter.experts.{e}.0.proj.0.weight"), 4)?[0]))
            .collect::<Result<Vec<i64>, String>>()
    };
    let ranks = [ranks_at(0)?, ranks_at(1)?, ranks_at(2)?];
    let experts = ranks[0].len() as i64;
    let hidden = s.get(&format!("{}.0.ffn.project_in.weight", enc(0)), 4)?[0] / 2;
    let mut cfg = MoceIrConfig {
        inp_channels: embed[1],
        out_channels: s.get("output.weight", 4)?[0],
        dim,
        num_blocks: [
            s.count(&enc(0)),
            s.count(&enc(1)),
            s.count(&enc(2)),
            s.count("latent.layers"),
        ],
        num_dec_blocks: [s.count(&dec(0)), s.count(&dec(1)), s.count(&dec(2))],
        num_refinement_blocks: s.count("refinement.layers"),
        heads: [
            heads(&format!("{}.0", enc(0)))?,
            heads(&format!("{}.0", enc(1)))?,
            heads(&format!("{}.0", enc(2)))?,
            heads("latent.layers.0")?,
        ],
        ffn_expansion_factor: if FeedForward::hidden_features(dim, 2.0) == hidden {
            2.0
        } else {
            hidden as f64 / dim as f64
        },
        bias: s.has("output.bias"),
        layer_norm_type: if s.has(&format!("{}.0.norms.0.body.bias", enc(0))) {
            LayerNormType::WithBias
        } else {
            LayerNormType::BiasFree
        },
        num_experts: experts,
        ..MoceIrConfig::default()
    };
    // The rank type whose ranks are the file's at every level (spread's grow with the width,
    // the others' do not, so one level alone can match two types).
    let types = [
        RankType::Spread,
        RankType::Constant,
        RankType::Lin,
        RankType::Double,
        RankType::Exp,
        RankType::Fact,
    ];
    let first = *ranks[0].first().ok_or("no experts in the first decoder block")?;
    let fits = |t: RankType, rank: i64| {
        let c = MoceIrConfig { rank_type: t, rank, ..cfg.clone() };
        (0..3).all(|level| c.expert_ranks(dim << level).as_ref() == Some(&ranks[level]))
    };
    let found = types.into_iter().find_map(|t| {
        // Constant, lin and double start at the rank; exp and fact grow from it.
        (1..=first.min(64)).chain([first]).find(|&r| fits(t, r)).map(|r| (t, r))
    });
    let (rank_type, rank) = found.ok_or_else(|| {
        format!("expert ranks {ranks:?} (per level) follow no rank_type of upstream's")
    })?;
    if rank_type != RankType::Spread {
        cfg.rank = rank;
    }
    cfg.rank_type = rank_type;
    cfg.topk = cfg.topk.min(cfg.num_experts);
    cfg.validate().map_err(|e| format!("inferred an invalid config ({e})"))?;
    Ok(cfg)
}
