//! Experiment files: typed, strict YAML. Enters once (`Experiment::load`), is validated before
//! any work starts, and is written back resolved into each run's log folder.
//!
//! `extends: base.yaml` merges a base file (relative to the including file); `--set a.b=v`
//! overrides any key with a YAML value. Merging happens on YAML values, then the typed struct
//! is deserialised, so a misspelled key anywhere (file or override) is an error naming it.

use crate::model::ModelConfig;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

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
    /// Once per epoch, like the report and upstream's Lightning scheduler.
    Epoch,
    /// Every optimiser step, with fractional epochs.
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    /// CUDA only: fp16 autocast for the forward pass with dynamic loss scaling (weights, loss
    /// and optimiser stay fp32). tch's autocast has no bf16 switch, hence fp16 + a scaler.
    Fp16,
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
    /// Validate every N epochs (and after the last one).
    pub val_every: usize,
    /// Also keep `epoch_N.safetensors` every N epochs (0 = never).
    pub save_every: usize,
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
            val_every: 5,
            save_every: 50,
            log_every: 50,
            val_images: 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    L1,
    L2,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    pub l1: f64,
    /// Weight of (1 - SSIM), Gaussian window 11, sigma 1.5.
    pub ssim: f64,
    /// Weight of the VGG16 perceptual term.
    pub perceptual: f64,
    /// torchvision `features.N` indices whose outputs are compared (relu1_2, relu2_2, relu3_3).
    pub perceptual_layers: Vec<usize>,
    pub perceptual_distance: Distance,
    /// ImageNet VGG16 weights (`scripts/export_vgg16.py` writes them).
    pub vgg_weights: PathBuf,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            l1: 1.0,
            ssim: 0.0,
            perceptual: 0.0,
            perceptual_layers: vec![3, 8, 15],
            perceptual_distance: Distance::L1,
            vgg_weights: PathBuf::from("weights/vgg16.safetensors"),
        }
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

/// Gaussian blur of the degraded image only (a harder input; the target stays sharp).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlurConfig {
    pub prob: f64,
    pub sigma: [f64; 2],
}

impl Default for BlurConfig {
    fn default() -> Self {
        BlurConfig { prob: 0.0, sigma: [0.1, 1.0] }
    }
}

/// Random erasing of a rectangle in the degraded image only: the network must inpaint it
/// from context, a regulariser rather than a degradation model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EraseConfig {
    pub prob: f64,
    /// Area fraction range of the erased rectangle.
    pub scale: [f64; 2],
}

impl Default for EraseConfig {
    fn default() -> Self {
        EraseConfig { prob: 0.0, scale: [0.02, 0.1] }
    }
}

fn cfg_err(file: &Path, msg: impl Into<String>) -> Error {
    Error::config(file.display().to_string(), msg)
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value =
        serde_yaml::from_str(&text).map_err(|e| cfg_err(path, format!("not valid YAML: {e}")))?;
    match v {
        Value::Null => Ok(Value::Mapping(Default::default())),
        Value::Mapping(_) => Ok(v),
        _ => Err(cfg_err(path, "the top level must be a mapping of keys")),
    }
}

/// Recursively merges `over` into `base` (mappings merge key by key; anything else replaces).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Loads `path` with its `extends` chain resolved (cycles are errors).
fn resolve(path: &Path, seen: &mut Vec<PathBuf>) -> Result<Value> {
    let canon = path.canonicalize().map_err(|e| {
        cfg_err(path, format!("cannot open the experiment file ({e}); check the path"))
    })?;
    if seen.contains(&canon) {
        return Err(cfg_err(path, "`extends` forms a cycle"));
    }
    seen.push(canon);
    let mut v = read_yaml(path)?;
    let ext = v.as_mapping_mut().and_then(|m| m.remove("extends"));
    match ext {
        None => Ok(v),
        Some(Value::String(base)) => {
            let base_path = path.parent().unwrap_or(Path::new(".")).join(base);
            let mut merged = resolve(&base_path, seen)?;
            merge(&mut merged, v);
            Ok(merged)
        }
        Some(_) => Err(cfg_err(path, "`extends` must be a file name")),
    }
}

/// Applies `a.b.c=value` (value parsed as YAML) to `v`.
fn apply_set(v: &mut Value, assignment: &str) -> Result<()> {
    let bad = || Error::Usage(format!("--set {assignment:?}: expected key.path=value"));
    let (key, raw) = assignment.split_once('=').ok_or_else(bad)?;
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(bad());
    }
    let value: Value = serde_yaml::from_str(raw)
        .map_err(|e| Error::Usage(format!("--set {key}: bad value: {e}")))?;
    let mut slot = v;
    for part in key.split('.') {
        let map = match slot {
            Value::Mapping(m) => m,
            _ => {
                return Err(Error::Usage(format!(
                    "--set {key}: {part:?} is inside a value that is not a mapping"
                )))
            }
        };
        slot = map
            .entry(Value::String(part.to_string()))
            .or_insert(Value::Mapping(Default::default()));
    }
    *slot = value;
    Ok(())
}

impl Experiment {
    /// Loads an experiment file with its `extends` chain and `--set` overrides, then validates it.
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let mut v = resolve(path, &mut Vec::new())?;
        for s in sets {
            apply_set(&mut v, s)?;
        }
        // After the overrides, so that `--set name=...` counts.
        let named = v.as_mapping().is_some_and(|m| m.contains_key("name"));
        let mut exp = Self::from_value(v, path)?;
        if !named {
            exp.name =
                path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(exp.name);
        }
        exp.validate().map_err(|m| cfg_err(path, m))?;
        Ok(exp)
    }

    /// Parses YAML text (no `extends`), e.g. a run's resolved `config.yaml`.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self> {
        let v: Value = serde_yaml::from_str(text)
            .map_err(|e| cfg_err(origin, format!("not valid YAML: {e}")))?;
        let exp = Self::from_value(v, origin)?;
        exp.validate().map_err(|m| cfg_err(origin, m))?;
        Ok(exp)
    }

    fn from_value(v: Value, origin: &Path) -> Result<Self> {
        serde_path_to_error::deserialize(v).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            let what = if inner.contains("unknown field") { "unknown key" } else { "bad value" };
            cfg_err(origin, format!("{what} at `{key}`: {inner}"))
        })
    }

    /// The resolved config as YAML (written to `logs/<run>/config.yaml`).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("Experiment serialises")
    }

    /// The cosine horizon (`train.max_epochs`, else `train.epochs`).
    pub fn schedule_horizon(&self) -> f64 {
        self.train.max_epochs.unwrap_or(self.train.epochs as f64)
    }

    /// Range checks that need no file system (paths are checked by the commands that use them).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.model.validate()?;
        let t = &self.train;
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("{name} is a probability and must be in [0, 1], got {p}"))
            }
        };
        let non_neg = |name: &str, x: f64| {
            if x >= 0.0 && x.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be >= 0, got {x}"))
            }
        };
        let n = &self.name;
        if n.is_empty() || n.contains(['/', '\\']) || n == "." || n == ".." {
            return Err(format!("name {n:?} must be a plain folder name (no `/`, not `..`)"));
        }
        if !crate::device::is_valid_device_name(&self.device) {
            return Err(format!("device {:?}: use auto, cpu, cuda or cuda:N", self.device));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!("train.lr must be > 0, got {}", t.lr));
        }
        if t.batch_size == 0 {
            return Err("train.batch_size must be >= 1".into());
        }
        if t.epochs == 0 {
            return Err("train.epochs must be >= 1".into());
        }
        if t.max_steps == Some(0) {
            return Err("train.max_steps must be >= 1 (or left out)".into());
        }
        if let Some(m) = t.max_epochs {
            if !(m > 0.0 && m.is_finite()) {
                return Err(format!("train.max_epochs must be > 0, got {m}"));
            }
        }
        let m = self.model.pad_multiple() as usize;
        if t.patch_size == 0 || !t.patch_size.is_multiple_of(m) {
            return Err(format!(
                "train.patch_size must be a positive multiple of {m}, got {}",
                t.patch_size
            ));
        }
        for (i, b) in t.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(format!("train.betas[{i}] must be in [0, 1), got {b}"));
            }
        }
        if t.eps.is_nan() || t.eps <= 0.0 {
            return Err(format!("train.eps must be > 0, got {}", t.eps));
        }
        non_neg("train.weight_decay", t.weight_decay)?;
        non_neg("train.warmup_epochs", t.warmup_epochs)?;
        non_neg("train.warmup_start_lr", t.warmup_start_lr)?;
        non_neg("train.eta_min", t.eta_min)?;
        if self.schedule_horizon() < t.warmup_epochs {
            return Err(format!(
                "train.max_epochs ({}) must be >= train.warmup_epochs ({})",
                self.schedule_horizon(),
                t.warmup_epochs
            ));
        }
        if let Some(c) = t.grad_clip {
            if c.is_nan() || c <= 0.0 {
                return Err(format!("train.grad_clip must be > 0, got {c}"));
            }
        }
        if t.val_every == 0 || t.log_every == 0 {
            return Err("train.val_every and train.log_every must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(format!(
                "data.val_fraction must be in [0, 1), got {}",
                self.data.val_fraction
            ));
        }
        // Upper bounds catch typos before they become thousands of threads or a huge queue.
        if !(1..=256).contains(&self.data.workers) || !(1..=1024).contains(&self.data.prefetch) {
            return Err(format!(
                "data.workers must be in 1..=256 and data.prefetch in 1..=1024, got {} and {}",
                self.data.workers, self.data.prefetch
            ));
        }
        let l = &self.loss;
        non_neg("loss.l1", l.l1)?;
        non_neg("loss.ssim", l.ssim)?;
        non_neg("loss.perceptual", l.perceptual)?;
        if l.l1 + l.ssim + l.perceptual <= 0.0 {
            return Err("at least one of loss.l1, loss.ssim, loss.perceptual must be > 0".into());
        }
        if l.perceptual > 0.0
            && (l.perceptual_layers.is_empty() || l.perceptual_layers.iter().any(|&i| i > 29))
        {
            return Err(
                "loss.perceptual_layers must list VGG16 `features.N` indices in 0..=29".into()
            );
        }
        let a = &self.augment;
        prob("augment.hflip", a.hflip)?;
        prob("augment.vflip", a.vflip)?;
        prob("augment.rot90", a.rot90)?;
        prob("augment.rotate.prob", a.rotate.prob)?;
        prob("augment.color_jitter.prob", a.color_jitter.prob)?;
        prob("augment.blur.prob", a.blur.prob)?;
        prob("augment.erase.prob", a.erase.prob)?;
        non_neg("augment.rotate.degrees", a.rotate.degrees)?;
        let cj = &a.color_jitter;
        for (n, x) in [
            ("brightness", cj.brightness),
            ("contrast", cj.contrast),
            ("saturation", cj.saturation),
        ] {
            if !(0.0..1.0).contains(&x) {
                return Err(format!("augment.color_jitter.{n} must be in [0, 1), got {x}"));
            }
        }
        if !(a.blur.sigma[0] > 0.0 && a.blur.sigma[0] <= a.blur.sigma[1]) {
            return Err("augment.blur.sigma must be [min, max] with 0 < min <= max".into());
        }
        if !(a.erase.scale[0] > 0.0
            && a.erase.scale[0] <= a.erase.scale[1]
            && a.erase.scale[1] < 1.0)
        {
            return Err("augment.erase.scale must be [min, max] with 0 < min <= max < 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn extends_and_set_merge_then_type_check() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "base.yaml",
            "seed: 1\ntrain: {lr: 1.0e-3, batch_size: 4}\nloss: {l1: 1.0}\n",
        );
        let p = write(d.path(), "child.yaml", "extends: base.yaml\ntrain: {batch_size: 8}\n");
        let e =
            Experiment::load(&p, &["loss.ssim=0.2".into(), "train.patch_size=64".into()]).unwrap();
        assert_eq!((e.seed, e.train.lr, e.train.batch_size, e.train.patch_size), (1, 1e-3, 8, 64));
        assert_eq!((e.loss.l1, e.loss.ssim), (1.0, 0.2));
        assert_eq!(e.name, "child");
        // The resolved YAML parses back to the same experiment.
        assert_eq!(Experiment::from_yaml_str(&e.to_yaml(), &p).unwrap(), e);
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_file_and_key() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "x.yaml", "train: {lr: 1.0e-3, bach_size: 4}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("x.yaml") && e.contains("unknown key at `train.bach_size`"), "{e}");
        let p = write(d.path(), "y.yaml", "train: {lr: fast}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("bad value at `train.lr`"), "{e}");
        let p = write(d.path(), "z.yaml", "model: {layer_norm_type: biasfree}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("model.layer_norm_type"), "{e}");
        let ok = write(d.path(), "ok.yaml", "seed: 3\n");
        let e = Experiment::load(&ok, &["train.nope=1".into()]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn ranges_are_validated() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "v.yaml", "seed: 3\n");
        for (set, needle) in [
            ("train.lr=-1", "train.lr"),
            ("train.batch_size=0", "train.batch_size"),
            ("train.patch_size=100", "multiple of 8"),
            ("augment.hflip=1.5", "augment.hflip"),
            ("device=tpu", "device"),
            ("data.val_fraction=1.0", "data.val_fraction"),
            ("name=../x", "plain folder name"),
            ("train.max_steps=0", "train.max_steps"),
            ("train.max_epochs=.nan", "train.max_epochs"),
            ("data.prefetch=100000000", "data.prefetch"),
        ] {
            let e = Experiment::load(&p, &[set.into()]).unwrap_err().to_string();
            assert!(e.contains(needle), "{set}: {e}");
        }
    }

    #[test]
    fn extends_cycle_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.yaml", "extends: b.yaml\n");
        let b = write(d.path(), "b.yaml", "extends: a.yaml\n");
        assert!(Experiment::load(&b, &[]).unwrap_err().to_string().contains("cycle"));
    }
}
