//! Checkpoints: a network's weights in a safetensors file whose metadata ([`CheckpointMeta`])
//! carries the model config and, for files written by `train`, where they came from
//! ([`Provenance`]), so every later command rebuilds the network, and finds the run's validation
//! split, from the file alone. A run's resume point (`last.safetensors`) also holds the
//! optimizer state under [`STATE_PREFIX`] and the [`TrainState`].

use super::import::infer_config;
use super::tensors::{load_strict, load_strict_prefixed, save_tensors, TensorFile};
use crate::model::{ModelConfig, Network};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// The metadata layout version this promptir writes: a change to what a checkpoint holds or
/// means bumps it. Version 2 added `arch` to the model config.
pub const FORMAT_VERSION: &str = "2";
/// The versions it reads; any other is refused. Version 1 is version 2 without `arch`, which
/// [`ModelConfig`] reads as PromptIR.
const READS: [&str; 2] = ["1", "2"];
/// Tensors of a resume point that are not weights (optimizer moments) start with this.
pub const STATE_PREFIX: &str = "state.";
/// The weights' moving average (`train.ema`), saved beside the raw weights under these names.
pub const EMA_PREFIX: &str = "ema.";

/// Whether a checkpoint entry is one of the network's raw weights (not optimizer state, not the
/// moving average).
pub fn is_weight_key(k: &str) -> bool {
    !k.starts_with(STATE_PREFIX) && !k.starts_with(EMA_PREFIX)
}

/// Which weights of a checkpoint to load (`--ema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EmaChoice {
    /// The moving average when the checkpoint has one (what its validation scored), else the
    /// raw weights.
    #[default]
    Auto,
    /// The moving average; an error for a checkpoint without one.
    On,
    /// The raw weights.
    Off,
}

const FORMAT_KEY: &str = "promptir.format";
/// The metadata entry holding the model config (JSON).
pub const CONFIG_KEY: &str = "promptir.model_config";
const PROVENANCE_KEY: &str = "promptir.provenance";
const IMPORTED_KEY: &str = "promptir.imported_from";
const TRAIN_STATE_KEY: &str = "promptir.train_state";
const BATCHES_KEY: &str = "promptir.batches_per_epoch";
const WORLD_KEY: &str = "promptir.world_size";

/// Mean scores of a validation, overall (`"all"`) and per degradation type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValScores {
    pub psnr: BTreeMap<String, f64>,
    pub ssim: BTreeMap<String, f64>,
}

/// The training pairs a run saw, as a fingerprint: another dataset (or files added, removed or
/// re-exported) gives another value, so a validation split is not silently taken from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// The dataset root as given to `train`.
    pub root: PathBuf,
    pub pairs: usize,
    /// CRC-32C (hex) of every pair's file names and sizes, in scan order.
    pub files_crc32c: String,
}

/// Where a trained checkpoint came from: enough to find the pairs its run held out, and to
/// reproduce the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The run (`logs/<run>`, `weights/<run>`).
    pub run: String,
    /// The resolved experiment (the run's `config.yaml`).
    pub experiment: String,
    pub seed: u64,
    /// `data.val_fraction`: with `seed`, it fixes the validation split.
    pub val_fraction: f64,
    /// Epochs completed and optimizer steps taken when the weights were saved.
    pub epoch: usize,
    pub step: usize,
    /// The validation these weights were saved after, if any.
    pub val: Option<ValScores>,
    /// The promptir source the binary was built from (`git describe`), when known.
    pub git_commit: Option<String>,
    pub dataset: DatasetFingerprint,
}

/// The fp16 loss scaler's state (`torch.amp.GradScaler`'s policy), kept across a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: usize,
    /// Clean steps since the scale last changed.
    pub clean_steps: usize,
}

impl Default for ScalerState {
    /// `torch.amp.GradScaler` defaults: 2^16, x2 every 2000 clean steps, x0.5 on overflow.
    fn default() -> Self {
        ScalerState {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            clean_steps: 0,
        }
    }
}

/// Where training stands: in the resume point and, for people, in `train_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs fully completed.
    pub epoch: usize,
    /// Optimiser steps taken.
    pub step: usize,
    pub best_psnr: Option<f64>,
    pub best_epoch: Option<usize>,
    /// Whether training reached its end (epochs or max_steps).
    pub finished: bool,
    /// The fp16 loss scaler (fp16 runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<ScalerState>,
    /// `train.keep_best`: the (epoch, validation PSNR) of each `best_epoch_N` kept, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_best: Vec<(usize, f64)>,
}

/// What a resume point adds to a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub state: TrainState,
    /// Optimizer steps in the resumed epoch: a resume with another data set or batch size is
    /// refused.
    pub batches_per_epoch: usize,
    /// Processes the run trained with (1 without torchrun).
    pub world: usize,
}

/// Everything a checkpoint's metadata holds; the one type its writer and readers share.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    pub model: ModelConfig,
    /// Written by `train`.
    pub provenance: Option<Provenance>,
    /// Written by `promptir import`: the official file it came from.
    pub imported_from: Option<String>,
    /// Only in a run's resume point.
    pub resume: Option<Resume>,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("metadata serialises")
}

impl CheckpointMeta {
    pub fn new(model: ModelConfig) -> Self {
        CheckpointMeta { model, provenance: None, imported_from: None, resume: None }
    }

    /// The safetensors metadata map.
    fn to_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
        m.insert(CONFIG_KEY.into(), json(&self.model));
        if let Some(p) = &self.provenance {
            m.insert(PROVENANCE_KEY.into(), json(p));
        }
        if let Some(i) = &self.imported_from {
            m.insert(IMPORTED_KEY.into(), i.clone());
        }
        if let Some(r) = &self.resume {
            m.insert(TRAIN_STATE_KEY.into(), json(&r.state));
            m.insert(BATCHES_KEY.into(), r.batches_per_epoch.to_string());
            m.insert(WORLD_KEY.into(), r.world.to_string());
        }
        m
    }

    /// Reads and checks the metadata of a file written by this version of the format.
    pub fn read(file: &TensorFile) -> Result<Self> {
        let meta = file.metadata();
        let bad = |msg: String| Error::weights(&file.path, msg);
        match meta.get(FORMAT_KEY) {
            Some(v) if READS.contains(&v.as_str()) => {}
            Some(v) => {
                return Err(bad(format!(
                    "checkpoint format version {v}, this promptir reads versions {} only; use the promptir that wrote it",
                    READS.join(", ")
                )))
            }
            None if meta.contains_key(CONFIG_KEY) => {
                return Err(bad(format!(
                    "written by a promptir before format versions (no {FORMAT_KEY}); this promptir reads versions {} only, retrain or re-import it",
                    READS.join(", ")
                )))
            }
            None => {
                return Err(bad("is not a promptir checkpoint (no promptir metadata); convert official checkpoints with `promptir import`".into()))
            }
        }
        let config = meta.get(CONFIG_KEY).ok_or_else(|| {
            bad(format!("has no {CONFIG_KEY} in its metadata; the file was edited or is corrupt"))
        })?;
        let model: ModelConfig = serde_json::from_str(config)
            .map_err(|e| bad(format!("corrupt model config in metadata: {e}")))?;
        model.validate().map_err(|e| bad(format!("invalid model config in metadata: {e}")))?;
        fn parse<T: serde::de::DeserializeOwned>(
            file: &TensorFile,
            meta: &BTreeMap<String, String>,
            key: &str,
        ) -> Result<Option<T>> {
            meta.get(key).map(|j| serde_json::from_str(j)).transpose().map_err(|e| {
                Error::weights(
                    &file.path,
                    format!("corrupt {key} in metadata ({e}); the file was edited or is corrupt"),
                )
            })
        }
        let provenance: Option<Provenance> = parse(file, &meta, PROVENANCE_KEY)?;
        let state: Option<TrainState> = parse(file, &meta, TRAIN_STATE_KEY)?;
        let batches: Option<usize> = parse(file, &meta, BATCHES_KEY)?;
        let world: Option<usize> = parse(file, &meta, WORLD_KEY)?;
        let resume = match (state, batches, world) {
            (Some(state), Some(batches_per_epoch), Some(world)) => {
                Some(Resume { state, batches_per_epoch, world })
            }
            (None, None, None) => None,
            _ => return Err(bad("incomplete training state in metadata".into())),
        };
        Ok(CheckpointMeta {
            model,
            provenance,
            imported_from: meta.get(IMPORTED_KEY).cloned(),
            resume,
        })
    }

    /// The training run these weights came from, if any.
    pub fn run(&self) -> Option<&str> {
        self.provenance.as_ref().map(|p| p.run.as_str())
    }
}

/// Writes `weights` (name, tensor), then `extra` tensors, with `meta`, atomically.
pub fn save_checkpoint(
    path: &Path,
    weights: &[(String, Tensor)],
    extra: &[(String, Tensor)],
    meta: &CheckpointMeta,
) -> Result<()> {
    let mut all: Vec<(String, Tensor)> =
        weights.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.extend(extra.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
    save_tensors(path, &all, meta.to_map())
}

/// Saves a model's variables with `meta`.
pub fn save_model(vs: &nn::VarStore, meta: &CheckpointMeta, path: &Path) -> Result<()> {
    let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    save_checkpoint(path, &vars, &[], meta)
}

/// A network rebuilt from a checkpoint's own metadata.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: Network,
    pub meta: CheckpointMeta,
    pub path: PathBuf,
    /// The moving average was loaded, not the raw weights.
    pub ema: bool,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel").field("path", &self.path).field("meta", &self.meta).finish()
    }
}

/// Refuses metadata whose config describes a network much larger than the tensors the file
/// holds (an edited or corrupted header) before building it, so that a damaged config can never
/// ask for a huge allocation. The estimate is at most the true count, so a file that matches
/// its config always passes; smaller differences are left to the strict key/shape check.
fn check_config_fits_tensors(file: &TensorFile, config: &ModelConfig) -> Result<()> {
    let mut header = file.header();
    header.retain(|k, _| is_weight_key(k));
    let held: f64 = header.values().map(|(_, s)| s.iter().product::<i64>() as f64).sum();
    let claimed = config.approx_parameters();
    if claimed <= 1.5 * held {
        return Ok(());
    }
    // Name the differing keys when the tensors say what the config should be.
    let mut differs = Vec::new();
    if let Ok(actual) = infer_config(&file.path, &header, Some(config.arch())) {
        let (a, b) = (serde_json::to_value(config), serde_json::to_value(&actual));
        if let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) {
            for (k, v) in &a {
                // The factor is not stored in the tensors, only the width it produces.
                if k != "ffn_expansion_factor" && b.get(k) != Some(v) {
                    differs.push(format!("{k}: metadata {v}, tensors {}", b[k]));
                }
            }
        }
    }
    if differs.is_empty() {
        differs.push(format!(
            "about {claimed:.1e} parameters in the metadata, {held:.1e} in the file"
        ));
    }
    Err(Error::weights(
        &file.path,
        format!(
            "the model config in the metadata does not match the tensors ({}); the file was edited or is corrupt, use another checkpoint",
            differs.join("; ")
        ),
    ))
}

/// Loads a checkpoint written by this project onto `device`: the metadata's config must
/// describe the tensors, then keys, shapes and dtypes are checked strictly (a resume point's
/// optimizer state and a moving average are passed over).
pub fn load_model(path: &Path, device: Device) -> Result<LoadedModel> {
    load_model_choosing(path, device, EmaChoice::Off)
}

/// [`load_model`] with the raw weights or their moving average, as `ema` asks.
pub fn load_model_choosing(path: &Path, device: Device, ema: EmaChoice) -> Result<LoadedModel> {
    let file = TensorFile::open(path)?;
    let meta = CheckpointMeta::read(&file)?;
    check_config_fits_tensors(&file, &meta.model)?;
    let has_ema = file.header().keys().any(|k| k.starts_with(EMA_PREFIX));
    let use_ema =
        match ema {
            EmaChoice::Auto => has_ema,
            EmaChoice::Off => false,
            EmaChoice::On if has_ema => true,
            EmaChoice::On => return Err(Error::weights(
                path,
                "holds no moving average of the weights (no ema.* tensors); use --ema off or auto",
            )),
        };
    let vs = nn::VarStore::new(device);
    let model = Network::new(&vs.root(), &meta.model);
    if use_ema {
        load_strict_prefixed(&vs, &file, EMA_PREFIX, &|k| !k.starts_with(EMA_PREFIX))?;
    } else {
        load_strict(&vs, &file, &|k| !is_weight_key(k))?;
    }
    Ok(LoadedModel { vs, model, meta, path: path.to_path_buf(), ema: use_ema })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            run: "r".into(),
            experiment: "seed: 3\n".into(),
            seed: 3,
            val_fraction: 0.25,
            epoch: 2,
            step: 40,
            val: Some(ValScores {
                psnr: [("all".to_string(), 28.5), ("rain".to_string(), 27.0)].into(),
                ssim: [("all".to_string(), 0.9)].into(),
            }),
            git_commit: Some("abc1234".into()),
            dataset: DatasetFingerprint {
                root: "data/x".into(),
                pairs: 12,
                files_crc32c: "0badf00d".into(),
            },
        }
    }

    #[test]
    fn metadata_round_trips_and_other_versions_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        let x = [("x".to_string(), Tensor::zeros([2], tch::kind::FLOAT_CPU))];
        let state = TrainState {
            step: 40,
            scaler: Some(ScalerState { scale: 512.0, ..ScalerState::default() }),
            ..TrainState::default()
        };
        let meta = CheckpointMeta {
            provenance: Some(provenance()),
            resume: Some(Resume { state, batches_per_epoch: 20, world: 2 }),
            ..CheckpointMeta::new(ModelConfig::tiny())
        };
        save_checkpoint(&path, &x, &[], &meta).unwrap();
        let back = CheckpointMeta::read(&TensorFile::open(&path).unwrap()).unwrap();
        assert_eq!(back, meta);
        assert_eq!(back.run(), Some("r"));

        // Another version, none (a file of the project's first days), no metadata at all.
        let read = |edit: &dyn Fn(&mut BTreeMap<String, String>)| {
            let mut m = meta.to_map();
            edit(&mut m);
            save_tensors(&path, &x, m).unwrap();
            CheckpointMeta::read(&TensorFile::open(&path).unwrap()).unwrap_err().to_string()
        };
        let e = read(&|m| drop(m.insert(FORMAT_KEY.into(), "3".into())));
        assert!(
            e.contains(
                "m.safetensors: checkpoint format version 3, this promptir reads versions 1, 2 only"
            ),
            "{e}"
        );
        // Version 1: the same, without `arch` in the config (PromptIR).
        let mut v1 = meta.to_map();
        v1.insert(FORMAT_KEY.into(), "1".into());
        let mut cfg: serde_json::Value = serde_json::from_str(&v1[CONFIG_KEY]).unwrap();
        assert_eq!(cfg.as_object_mut().unwrap().remove("arch"), Some("promptir".into()));
        v1.insert(CONFIG_KEY.into(), cfg.to_string());
        save_tensors(&path, &x, v1).unwrap();
        assert_eq!(CheckpointMeta::read(&TensorFile::open(&path).unwrap()).unwrap(), meta);
        let e = read(&|m| drop(m.remove(FORMAT_KEY)));
        assert!(e.contains("before format versions"), "{e}");
        let e = read(&|m| m.clear());
        assert!(e.contains("not a promptir checkpoint") && e.contains("promptir import"), "{e}");
        // A resume point names its number of processes.
        let e = read(&|m| drop(m.remove(WORLD_KEY)));
        assert!(e.contains("incomplete training state"), "{e}");
    }

    #[test]
    fn corrupt_metadata_names_the_key() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.safetensors");
        let mut m = CheckpointMeta::new(ModelConfig::tiny()).to_map();
        m.insert(PROVENANCE_KEY.to_string(), "{\"run\": 3}".to_string());
        save_tensors(&path, &[("x".into(), Tensor::zeros([1], tch::kind::FLOAT_CPU))], m).unwrap();
        let e = CheckpointMeta::read(&TensorFile::open(&path).unwrap()).unwrap_err().to_string();
        assert!(e.contains("corrupt promptir.provenance"), "{e}");
    }
}
