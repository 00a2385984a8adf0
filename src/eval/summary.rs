//! The scoring files other modules read: [`EvalSummary`] (the `val` of each `metrics.jsonl` line)
//! and [`EvalFile`] (`promptir eval --format json`, read back by `promptir report`).

use super::score::ImageScore;
use super::split::{SplitName, SplitParams};
use crate::infer::{view_list, Dihedral, TtaMode};
use crate::io::write_atomic_bytes;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Mean scores of a scored set: `"all"` and each degradation type. A map that is missing when
/// read (a file of an older version) is empty: not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

/// What was scored: the table header and the JSON's `"setup"`. Fields other than the weights,
/// TTA and split read as empty when missing (files of older versions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSetup {
    pub weights: Vec<PathBuf>,
    /// The training run of each checkpoint (from its provenance), `null` for imported weights.
    #[serde(default)]
    pub runs: Vec<Option<String>>,
    /// Ensemble size.
    #[serde(default)]
    pub models: usize,
    /// Per checkpoint: its moving average was scored, not the raw weights (`--ema`; empty in
    /// older files).
    #[serde(default)]
    pub ema: Vec<bool>,
    /// The `--tta` mode (older files: `true` for the 8 views, `false` for none).
    pub tta: TtaMode,
    /// The views averaged, the mode resolved (empty in older files: see [`Self::views`]).
    #[serde(default)]
    pub tta_views: Vec<Dihedral>,
    /// Why `auto` chose its views, when it had to assume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tta_notice: Option<String>,
    #[serde(default)]
    pub tile: Option<(i64, i64)>,
    #[serde(default)]
    pub data: PathBuf,
    pub split: SplitName,
    /// The validation split's parameters (`null` for `test`).
    #[serde(default)]
    pub split_params: Option<SplitParams>,
    /// Set when the data is not what the checkpoints trained on (see `dataset_notice`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// Images scored.
    #[serde(default)]
    pub count: usize,
    #[serde(default)]
    pub device: String,
}

impl EvalSetup {
    /// The views averaged; files written before `tta_views` existed imply them by the mode.
    pub fn views(&self) -> Vec<Dihedral> {
        if !self.tta_views.is_empty() {
            return self.tta_views.clone();
        }
        self.tta.fixed_views().unwrap_or_else(|| Dihedral::ALL.to_vec())
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

/// `promptir eval --format json`: the means, one row per image, and the setup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalFile {
    #[serde(flatten)]
    pub summary: EvalSummary,
    #[serde(default)]
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
    fn an_eval_file_round_trips_and_older_files_without_runs_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("eval.json");
        let file = EvalFile {
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
        v["setup"].as_object_mut().unwrap().remove("runs");
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(EvalFile::read(&p).unwrap().setup.runs.is_empty());
        // Files from before TTA modes: `tta` was a boolean, and no views or comparison.
        for (old, mode, n) in [(true, TtaMode::Eight, 8), (false, TtaMode::Off, 1)] {
            let setup = v["setup"].as_object_mut().unwrap();
            setup.insert("tta".into(), old.into());
            setup.remove("tta_views");
            v.as_object_mut().unwrap().remove("tta_compare");
            std::fs::write(&p, v.to_string()).unwrap();
            let f = EvalFile::read(&p).unwrap();
            assert_eq!((f.setup.tta, f.setup.views().len(), f.setup.tta_on()), (mode, n, old));
            assert!(f.tta_compare.is_empty());
        }
        std::fs::write(&p, "{\"psnr\": {}}").unwrap();
        assert!(EvalFile::read(&p).unwrap_err().to_string().contains("promptir eval"));
    }
}
