//! NAFNet's hyper-parameters ([`NafNetConfig`]), their checks and the parameter estimate.

use crate::model::shapes::Shapes;
use crate::model::{check_range, check_size};
use serde::{Deserialize, Serialize};

/// NAFNet's hyper-parameters (`model:` with `arch: nafnet`), named as upstream's keyword
/// arguments. The default is upstream's SIDD denoiser (width 32, 29,159,715 parameters);
/// [`NafNetConfig::gopro`] is its GoPro deblurring network (width 64, 67,888,835).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NafNetConfig {
    pub img_channel: i64,
    pub width: i64,
    pub middle_blk_num: i64,
    /// Blocks per encoder level; one 2x downsampling after each.
    pub enc_blk_nums: Vec<i64>,
    /// Blocks per decoder level, deepest first; as many levels as the encoder has.
    pub dec_blk_nums: Vec<i64>,
}

impl Default for NafNetConfig {
    fn default() -> Self {
        Self::sidd()
    }
}

impl NafNetConfig {
    /// `options/{train,test}/SIDD/NAFNet-width32.yml`.
    pub fn sidd() -> Self {
        NafNetConfig {
            img_channel: 3,
            width: 32,
            middle_blk_num: 12,
            enc_blk_nums: vec![2, 2, 4, 8],
            dec_blk_nums: vec![2, 2, 2, 2],
        }
    }

    /// `options/test/GoPro/NAFNet-width64.yml` (upstream tests it as NAFNetLocal, whose
    /// test-time local pooling is not built here: this is its plain NAFNet).
    pub fn gopro() -> Self {
        NafNetConfig {
            img_channel: 3,
            width: 64,
            middle_blk_num: 1,
            enc_blk_nums: vec![1, 1, 1, 28],
            dec_blk_nums: vec![1, 1, 1, 1],
        }
    }

    /// Width 8 and one block per level, for CPU tests and demos (290,715 parameters).
    pub fn tiny() -> Self {
        NafNetConfig {
            img_channel: 3,
            width: 8,
            middle_blk_num: 1,
            enc_blk_nums: vec![1, 1, 1, 1],
            dec_blk_nums: vec![1, 1, 1, 1],
        }
    }

    /// Checks everything the constructor relies on, so that building never panics.
    pub fn validate(&self) -> Result<(), String> {
        check_range("img_channel", self.img_channel, 1, 64)?;
        check_range("width", self.width, 1, 4096)?;
        check_range("middle_blk_num", self.middle_blk_num, 0, 256)?;
        if self.enc_blk_nums.len() > 8 {
            return Err(format!(
                "model.enc_blk_nums has {} levels; at most 8",
                self.enc_blk_nums.len()
            ));
        }
        if self.dec_blk_nums.len() != self.enc_blk_nums.len() {
            return Err(format!(
                "model.dec_blk_nums has {} levels and model.enc_blk_nums {}: give both the same number",
                self.dec_blk_nums.len(),
                self.enc_blk_nums.len()
            ));
        }
        for (name, nums) in
            [("enc_blk_nums", &self.enc_blk_nums), ("dec_blk_nums", &self.dec_blk_nums)]
        {
            for (i, &n) in nums.iter().enumerate() {
                check_range(&format!("{name}[{i}]"), n, 0, 256)?;
            }
        }
        check_size(self.approx_parameters(), "model.width and the block counts")
    }

    /// Channels at each level, the deepest (middle) last.
    pub fn widths(&self) -> Vec<i64> {
        (0..=self.enc_blk_nums.len()).map(|i| self.width << i).collect()
    }

    /// The 1x1 convs of the blocks (conv1 2c^2, conv3 c^2, sca c^2, conv4 2c^2, conv5 c^2) and
    /// the resamplers: never above the truth, 99% of it for the SIDD network.
    pub fn approx_parameters(&self) -> f64 {
        let w = self.widths();
        let block = |c: i64| 7.0 * (c as f64).powi(2);
        let levels: f64 = self
            .enc_blk_nums
            .iter()
            .zip(&self.dec_blk_nums)
            .enumerate()
            .map(|(i, (&e, &d))| {
                let c = w[i] as f64;
                // downs: 2x2 conv c -> 2c; ups: 1x1 conv 2c -> 4c.
                (e + d) as f64 * block(w[i]) + 8.0 * c * c + 8.0 * c * c
            })
            .sum();
        levels + self.middle_blk_num as f64 * block(*w.last().expect("one level at least"))
    }

    /// Sizes must be multiples of 2^levels inside the network, but upstream's forward pads with
    /// zeros to that itself and crops back: `restore` adds no padding of its own.
    pub fn pad_multiple(&self) -> i64 {
        1
    }

    /// The multiple NAFNet's forward pads to.
    pub fn padder_size(&self) -> i64 {
        1 << self.enc_blk_nums.len()
    }
}

/// Reads the hyper-parameters off an official state_dict's keys and shapes.
pub(in crate::model) fn from_shapes(shapes: &Shapes) -> Result<NafNetConfig, String> {
    let intro = shapes.get("intro.weight", 4)?;
    if !shapes.has("ending.weight") {
        return Err("no key ending.weight".into());
    }
    let levels = shapes.count("downs");
    let cfg = NafNetConfig {
        img_channel: intro[1],
        width: intro[0],
        middle_blk_num: shapes.count("middle_blks"),
        enc_blk_nums: (0..levels).map(|i| shapes.count(&format!("encoders.{i}"))).collect(),
        dec_blk_nums: (0..levels).map(|i| shapes.count(&format!("decoders.{i}"))).collect(),
    };
    cfg.validate().map_err(|e| format!("inferred an invalid config ({e})"))?;
    Ok(cfg)
}
