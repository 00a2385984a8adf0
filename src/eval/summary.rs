//! The scoring files other modules read: [`EvalSummary`] (the `val` of each `metrics.jsonl` line)
//! and [`EvalFile`] (`promptir eval --format json`, read back by `promptir report`).

use super::metrics::Metric;
use super::score::ImageScore;
use super::split::{SplitName, SplitParams};
use crate::infer::{view_list, Dihedral, TtaMode};
use crate::io::write_atomic_bytes;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Mean scores of a scored set: `"all"` and each degradation type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// Images scored.
    pub count: usize,
    pub psnr: BTreeMap<String, f64>,
    pub ssim: BTreeMap<String, f64>,
    /// The degraded inputs' own scores (the do-nothing baseline).
    pub psnr_input: BTreeMap<String, f64>,
    pub ssim_input: BTreeMap<String, f64>,
    /// The training loss on full images (validation only; absent if not finite).
    pub loss: Option<f64>,
}

impl EvalSummary {
    /// The overall mean PSNR.
    pub fn psnr_all(&self) -> Option<f64> {
        self.psnr.get("all").copied()
    }
}

/// What was scored: the table header and the JSON's `"setup"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSetup {
    pub weights: Vec<PathBuf>,
    /// The training run of each checkpoint (from its provenance), `null` for imported weights.
    pub runs: Vec<Option<String>>,
    /// Ensemble size.
    pub models: usize,
    /// Per checkpoint: its moving average was scored, not the raw weights (`--ema`).
    pub ema: Vec<bool>,
    /// The `--tta` mode.
    pub tta: TtaMode,
    /// The views averaged, the mode resolved.
    pub tta_views: Vec<Dihedral>,
    /// Why `auto` chose its views, when it had to assume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tta_notice: Option<String>,
    pub tile: Option<(i64, i64)>,
    pub data: PathBuf,
    pub split: SplitName,
    /// The validation split's parameters (`null` for `test`).
    pub split_params: Option<SplitParams>,
    /// Set when the data is not what the checkpoints trained on (see `dataset_notice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// Images scored.
    pub count: usize,
    pub device: String,
    /// How PSNR and SSIM were computed (files without it: the course's).
    #[serde(default)]
    pub metric: Metric,
}

impl EvalSetup {
    /// The views averaged.
    pub fn views(&self) -> Vec<Dihedral> {
        self.tta_views.clone()
    }

    /// Whether TTA was asked for (the `_tta` in an eval file's name), whatever `auto` chose.
    pub fn tta_on(&self) -> bool {
        self.tta != TtaMode::Off
    }

    /// "off", or "auto (id, hflip)".
    pub fn tta_text(&self) -> String {
        match self.tta {
            TtaMode::Off => "off".into(),
            m => format!("{m} ({})", view_list(&self.views())),
        }
    }
}

/// One view set's means in `promptir eval --tta-compare`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtaScore {
    pub mode: TtaMode,
    pub views: Vec<Dihedral>,
    /// `"all"` and each degradation type.
    pub psnr: BTreeMap<String, f64>,
    pub ssim: BTreeMap<String, f64>,
    /// PSNR minus the `off` row's, per group.
    pub psnr_gain: BTreeMap<String, f64>,
}

/// The eval file layout this promptir writes, and the only one it reads: a change to what the
/// file holds or means bumps it.
pub const EVAL_FORMAT_VERSION: u32 = 1;

/// `promptir eval --format json`: the means, one row per image, and the setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalFile {
    /// `EVAL_FORMAT_VERSION` when written.
    pub format_version: u32,
    #[serde(flatten)]
    pub summary: EvalSummary,
    pub images: Vec<ImageScore>,
    pub setup: EvalSetup,
    /// `--tta-compare`: off, flips, 8 and (when it differs) auto, scored on the same images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tta_compare: Vec<TtaScore>,
}

impl EvalFile {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("an eval file serialises") + "\n"
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic_bytes(path, self.to_json().as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        // The version first: a file of another layout is named as such, not as a parse error.
        // A file without a version is an older eval only when it has an eval's setup.
        let version = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(|v| v.get("format_version").is_some() || v.get("setup").is_some())
            .map(|v| v.get("format_version").and_then(serde_json::Value::as_u64));
        match version {
            Some(Some(v)) if v != u64::from(EVAL_FORMAT_VERSION) => {
                return Err(Error::data(
                    path,
                    format!("eval file format version {v}, this promptir reads version {EVAL_FORMAT_VERSION} only; rerun promptir eval"),
                ))
            }
            Some(None) => {
                return Err(Error::data(
                    path,
                    format!("written by a promptir before eval format versions (no format_version); this promptir reads version {EVAL_FORMAT_VERSION} only, rerun promptir eval"),
                ))
            }
            _ => {}
        }
        let file: EvalFile = serde_json::from_str(&text).map_err(|e| {
            Error::data(
                path,
                format!("not the output of `promptir eval --format json` ({e}); rerun that eval"),
            )
        })?;
        if file.summary.psnr_all().is_none() {
            return Err(Error::data(path, "no psnr.all: the eval scored no images"));
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eval_file_round_trips_and_other_versions_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("eval.json");
        let file = EvalFile {
            format_version: EVAL_FORMAT_VERSION,
            summary: EvalSummary {
                count: 1,
                psnr: [("all".to_string(), 30.5), ("rain".to_string(), 30.5)].into(),
                ssim: [("all".to_string(), 0.9)].into(),
                psnr_input: [("all".to_string(), 20.0)].into(),
                ssim_input: [("all".to_string(), 0.5)].into(),
                loss: None,
            },
            images: vec![ImageScore {
                name: "rain-1.png".into(),
                kind: "rain".into(),
                psnr: 30.5,
                ssim: 0.9,
                psnr_input: 20.0,
                ssim_input: 0.5,
            }],
            setup: EvalSetup {
                weights: vec!["w/r/best.safetensors".into()],
                runs: vec![Some("r".into())],
                models: 1,
                ema: vec![true],
                tta: TtaMode::Auto,
                tta_views: vec![Dihedral::IDENTITY, Dihedral::HFLIP],
                tta_notice: None,
                tile: Some((128, 32)),
                data: "data".into(),
                split: SplitName::Val,
                split_params: Some(SplitParams {
                    seed: 3,
                    val_fraction: 0.1,
                    source: "checkpoint".into(),
                }),
                notice: None,
                count: 1,
                metric: Metric::Rgb,
                device: "Cpu".into(),
            },
            tta_compare: vec![TtaScore {
                mode: TtaMode::Flips,
                views: TtaMode::Flips.fixed_views().unwrap(),
                psnr: [("all".to_string(), 30.7)].into(),
                ssim: [("all".to_string(), 0.91)].into(),
                psnr_gain: [("all".to_string(), 0.2)].into(),
            }],
        };
        file.write(&p).unwrap();
        assert_eq!(EvalFile::read(&p).unwrap(), file);
        let mut v: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
        v["format_version"] = 2.into();
        std::fs::write(&p, v.to_string()).unwrap();
        let e = EvalFile::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("eval.json: eval file format version 2, this promptir reads version 1"),
            "{e}"
        );
        v.as_object_mut().unwrap().remove("format_version");
        std::fs::write(&p, v.to_string()).unwrap();
        let e = EvalFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("before eval format versions"), "{e}");
        v["format_version"] = 1.into();
        v["setup"].as_object_mut().unwrap().remove("runs");
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(EvalFile::read(&p).unwrap_err().to_string().contains("missing field `runs`"));
        std::fs::write(&p, "{\"format_version\": 1, \"psnr\": {}}").unwrap();
        assert!(EvalFile::read(&p).unwrap_err().to_string().contains("promptir eval"));
    }
}
