//! Experiment files: typed, strict YAML. Enters once ([`Experiment::load`], in `load.rs`), is
//! validated before any work starts (`validate.rs`), and is written back resolved into each
//! run's log folder. Every struct rejects unknown keys; every default lives here.

mod load;
mod settings;
mod validate;

pub use crate::train::{Distance, LossConfig};
pub use settings::differences;

use crate::model::ModelConfig;

/// Modules in torchvision's `vgg16().features` (13 conv + 13 ReLU + 5 max-pool): the valid
/// `loss.perceptual_layers` are `0..VGG16_FEATURES`.
pub const VGG16_FEATURES: usize = 31;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    /// Run name; defaults to the experiment file's stem.
    pub name: String,
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N
    pub device: String,
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
    pub loss: LossConfig,
    pub augment: AugmentConfig,
    /// The course report's published number for this recipe, shown by `promptir report` in its
    /// own column (a different image set from ours, so never mixed into our columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
}

/// A published result to set our numbers against: `published: {psnr: 32.64, label: "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    /// PSNR in dB.
    pub psnr: f64,
    /// Where the number comes from and on which images (shown in the report's notes).
    pub label: String,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: "experiment".into(),
            seed: 42,
            device: "auto".into(),
            model: ModelConfig::default(),
            data: DataConfig::default(),
            train: TrainConfig::default(),
            loss: LossConfig::default(),
            augment: AugmentConfig::default(),
            published: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset root in the course layout (train/degraded, train/clean, test/degraded).
    pub root: PathBuf,
    /// Fraction of pairs held out for validation, stratified by degradation type.
    pub val_fraction: f64,
    /// Background threads that crop and augment batches.
    pub workers: usize,
    /// Batches prepared ahead of the training step.
    pub prefetch: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            root: PathBuf::from("data/hw4_realse_dataset"),
            val_fraction: 0.1,
            workers: 4,
            prefetch: 4,
        }
    }
}

/// When the learning rate is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleUnit {
    /// Once per epoch: epoch e trains at the closed form's lr(e).
    Epoch,
    /// Once per epoch as upstream PromptIR steps it (Lightning's epoch-end hook calls
    /// `scheduler.step(current_epoch)`): epoch e >= 1 trains at lr(e - 1) and epoch 0 at
    /// `warmup_start_lr` (so with a warmup, epochs 0 and 1 both at the start rate).
    EpochLagged,
    /// Every optimiser step, with fractional epochs.
    Step,
}

/// How the learning rate follows the number of processes (torchrun's world size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LrScaling {
    /// The schedule as written, whatever the global batch.
    #[default]
    None,
    /// The whole schedule (`lr`, `warmup_start_lr`, `eta_min`) times the number of processes,
    /// the linear rule for a global batch that many times larger (Goyal et al., 2017).
    Linear,
}

/// The forward pass's precision. Weights, the loss and the optimizer stay fp32 in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    /// Autocast in bfloat16 (fp32's range, so no loss scaling): the natural choice on current
    /// GPUs; on CPU too.
    Bf16,
    /// Autocast in float16 with dynamic loss scaling (`GradScaler`'s policy, kept on the device).
    Fp16,
}

/// Which AdamW implementation steps the weights (both save the same state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// libtorch's fused kernel (CPU and CUDA), as `torch.optim.AdamW(fused=True)`.
    #[default]
    Fused,
    /// The per-parameter Rust implementation, bitwise equal to `torch.optim.AdamW` on CPU.
    Reference,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Optional cap on optimiser steps (smoke tests, benchmarks).
    pub max_steps: Option<usize>,
    pub batch_size: usize,
    pub patch_size: usize,
    /// AdamW, PyTorch defaults apart from the learning rate.
    pub lr: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// Linear warmup from `warmup_start_lr` to `lr`, then cosine to `eta_min` at `max_epochs`.
    pub warmup_epochs: f64,
    /// Cosine horizon; defaults to `epochs` (upstream: 150 while training 120).
    pub max_epochs: Option<f64>,
    pub warmup_start_lr: f64,
    pub eta_min: f64,
    pub schedule_unit: ScheduleUnit,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    pub precision: Precision,
    pub optimizer: OptimizerKind,
    /// With several processes (torchrun): gradients are averaged in flat buckets of about this
    /// many MiB, one all-reduce each (PyTorch DDP's default, 25); 0: one per parameter.
    pub bucket_mb: f64,
    /// Whether the learning rate scales with the number of processes.
    pub lr_scaling: LrScaling,
    /// Micro-batches of `batch_size` whose gradients are summed into one optimizer step (the
    /// step of a batch this many times larger, in the memory of one micro-batch).
    pub accumulate: usize,
    /// Progressive patches (Restormer's training): `(until_epoch, patch_size, batch_size)`
    /// stages replacing `patch_size`/`batch_size`; the last stage runs to the end.
    pub stages: Vec<Stage>,
    /// Exponential moving average of the weights (off with decay 0).
    pub ema: EmaConfig,
    /// Validate every N epochs (and after the last one).
    pub val_every: usize,
    /// Also keep `epoch_N.safetensors` every N epochs (0 = never).
    pub save_every: usize,
    /// Keep only the newest N `epoch_N` checkpoints (0 = all of them).
    pub keep_last: usize,
    /// Also keep the K best validated checkpoints as `best_epoch_N` (0 = none are made, and
    /// existing ones are left alone; `best` is always kept).
    pub keep_best: usize,
    /// Log training scalars every N steps.
    pub log_every: usize,
    /// Validation images written to TensorBoard.
    pub val_images: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 300,
            max_steps: None,
            batch_size: 2,
            patch_size: 224,
            lr: 2e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_epochs: 15.0,
            max_epochs: None,
            warmup_start_lr: 0.0,
            eta_min: 0.0,
            schedule_unit: ScheduleUnit::Epoch,
            grad_clip: None,
            precision: Precision::Fp32,
            optimizer: OptimizerKind::Fused,
            bucket_mb: 25.0,
            lr_scaling: LrScaling::None,
            accumulate: 1,
            stages: Vec::new(),
            ema: EmaConfig::default(),
            val_every: 5,
            save_every: 50,
            keep_last: 0,
            keep_best: 0,
            log_every: 50,
            val_images: 4,
        }
    }
}

/// One stage of a progressive patch schedule: the epochs from the previous stage's `until_epoch`
/// (0 for the first) up to this `until_epoch` (0-based, exclusive: `until_epoch: 1` is the first
/// epoch alone) train on `patch_size` crops in batches of `batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub until_epoch: usize,
    pub patch_size: usize,
    pub batch_size: usize,
}

/// The weights' exponential moving average (BasicSR's `ema_decay`): after each optimizer step
/// `ema = decay * ema + (1 - decay) * weights`; until `start_step` it copies the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmaConfig {
    /// 0 = off; typical 0.999.
    pub decay: f64,
    pub start_step: usize,
}

impl Default for EmaConfig {
    fn default() -> Self {
        EmaConfig { decay: 0.0, start_step: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Probability of a horizontal flip (both images).
    pub hflip: f64,
    /// Probability of a vertical flip (both images).
    pub vflip: f64,
    /// Probability of a random 90/180/270-degree rotation (both images).
    pub rot90: f64,
    pub rotate: RotateConfig,
    pub color_jitter: ColorJitterConfig,
    pub blur: BlurConfig,
    pub erase: EraseConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            hflip: 0.5,
            vflip: 0.5,
            rot90: 0.5,
            rotate: RotateConfig::default(),
            color_jitter: ColorJitterConfig::default(),
            blur: BlurConfig::default(),
            erase: EraseConfig::default(),
        }
    }
}

/// Small-angle rotation of both images (bilinear, reflected borders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RotateConfig {
    pub prob: f64,
    pub degrees: f64,
}

impl Default for RotateConfig {
    fn default() -> Self {
        RotateConfig { prob: 0.0, degrees: 15.0 }
    }
}

/// Brightness/contrast/saturation jitter, the same factors applied to both images (it changes
/// the scene's colours, not the degradation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColorJitterConfig {
    pub prob: f64,
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
}

impl Default for ColorJitterConfig {
    fn default() -> Self {
        ColorJitterConfig { prob: 0.0, brightness: 0.1, contrast: 0.1, saturation: 0.1 }
    }
}

/// Which images of a pair a photometric step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AugmentImages {
    /// The degraded input only: a harder input, the target unchanged.
    #[default]
    Degraded,
    /// Both images, the same way (the course report's pipeline: a transform of the whole pair).
    Both,
}

/// Gaussian blur (by default of the degraded image only: a harder input, the target stays
/// sharp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    pub prob: f64,
    pub sigma: [f64; 2],
    pub images: AugmentImages,
}

impl Default for BlurConfig {
    fn default() -> Self {
        BlurConfig { prob: 0.0, sigma: [0.1, 1.0], images: AugmentImages::Degraded }
    }
}

/// Random erasing of a rectangle (by default in the degraded image only: the network must
/// inpaint it from context, a regulariser rather than a degradation model; with `both`, the
/// same rectangle in both images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EraseConfig {
    pub prob: f64,
    /// Area fraction range of the erased rectangle.
    pub scale: [f64; 2],
    pub images: AugmentImages,
}

impl Default for EraseConfig {
    fn default() -> Self {
        EraseConfig { prob: 0.0, scale: [0.02, 0.1], images: AugmentImages::Degraded }
    }
}

impl TrainConfig {
    /// The stages training goes through: `stages`, or one stage of `patch_size`/`batch_size`.
    pub fn stage_list(&self) -> Vec<Stage> {
        if self.stages.is_empty() {
            let (patch_size, batch_size) = (self.patch_size, self.batch_size);
            vec![Stage { until_epoch: usize::MAX, patch_size, batch_size }]
        } else {
            self.stages.clone()
        }
    }
}

impl Experiment {
    /// The cosine horizon (`train.max_epochs`, else `train.epochs`).
    pub fn schedule_horizon(&self) -> f64 {
        self.train.max_epochs.unwrap_or(self.train.epochs as f64)
    }
}
