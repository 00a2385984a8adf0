//! Which views test-time augmentation averages. Averaging a view assumes the network treats it
//! like the original, which it only learns if training showed it that view: rain streaks are
//! directional, so a model trained with horizontal flips only can lose PSNR on vertical flips
//! and quarter turns. `auto` therefore uses the views the checkpoints' own training
//! augmentations covered (their provenance), and the CLI says which views it used.

use super::dihedral::{view_list, Dihedral};
use crate::config::{AugmentConfig, Experiment};
use crate::io::{CheckpointMeta, Provenance};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `--tta`: which views to average.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TtaMode {
    /// The image as it is.
    Off,
    /// All 8 flips and quarter turns.
    #[value(name = "8")]
    #[serde(rename = "8")]
    Eight,
    /// Identity, hflip, vflip and both (rot180).
    Flips,
    /// The views the checkpoints' training augmentations covered.
    Auto,
}

impl TtaMode {
    pub fn name(self) -> &'static str {
        match self {
            TtaMode::Off => "off",
            TtaMode::Eight => "8",
            TtaMode::Flips => "flips",
            TtaMode::Auto => "auto",
        }
    }

    /// The views of a mode that does not depend on the checkpoints.
    pub fn fixed_views(self) -> Option<Vec<Dihedral>> {
        match self {
            TtaMode::Off => Some(vec![Dihedral::IDENTITY]),
            TtaMode::Eight => Some(Dihedral::ALL.to_vec()),
            TtaMode::Flips => Some(Dihedral::group(&[Dihedral::HFLIP, Dihedral::VFLIP])),
            TtaMode::Auto => None,
        }
    }
}

impl std::fmt::Display for TtaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The group of views the training augmentations generate. Only the dihedral ones count:
/// small-angle rotation, colour jitter, blur and erasing map no view onto another.
pub fn trained_views(aug: &AugmentConfig) -> Vec<Dihedral> {
    let mut gens = Vec::new();
    if aug.hflip > 0.0 {
        gens.push(Dihedral::HFLIP);
    }
    if aug.vflip > 0.0 {
        gens.push(Dihedral::VFLIP);
    }
    if aug.rot90 > 0.0 {
        gens.push(Dihedral::ROT90);
    }
    Dihedral::group(&gens)
}

/// The augmentations of a run's resolved experiment (its provenance).
fn provenance_augment(path: &Path, p: &Provenance) -> Result<AugmentConfig> {
    match Experiment::from_yaml_str(&p.experiment, path) {
        Ok(exp) => Ok(exp.augment),
        Err(e) => Err(Error::weights(
            path,
            format!(
                "its provenance holds no readable experiment ({e}), so --tta auto cannot tell which views it trained on; give --tta 8, flips or off"
            ),
        )),
    }
}

/// The views a checkpoint's recorded training covered; `None` when it has no record.
fn recorded_views(path: &Path, meta: &CheckpointMeta) -> Option<Result<Vec<Dihedral>>> {
    let p = meta.provenance.as_ref()?;
    Some(provenance_augment(path, p).map(|a| trained_views(&a)))
}

/// For a forced mode: which of its views some checkpoint's recorded training never showed the
/// network (the tiny ablation measured -0.98 dB on rain for 8 views after hflip-only training).
/// Checkpoints without a readable record are not second-guessed here.
fn untrained_views_note(
    mode: TtaMode,
    views: &[Dihedral],
    checkpoints: &[(&Path, &CheckpointMeta)],
) -> Option<String> {
    let mut untrained: Vec<Dihedral> = Vec::new();
    for (path, meta) in checkpoints {
        let Some(Ok(own)) = recorded_views(path, meta) else { continue };
        untrained.extend(views.iter().filter(|v| !own.contains(v)));
    }
    untrained.sort();
    untrained.dedup();
    (!untrained.is_empty()).then(|| {
        format!(
            "--tta {mode} averages views the training did not augment with ({}), which can lower PSNR on directional rain; --tta auto averages only the trained ones",
            view_list(&untrained)
        )
    })
}

/// A resolved `--tta`: the mode asked for, the views it stands for, and why when `auto` had
/// to assume or found nothing to average.
#[derive(Debug, Clone, PartialEq)]
pub struct TtaPlan {
    pub mode: TtaMode,
    /// Sorted; `[id]` means no augmentation.
    pub views: Vec<Dihedral>,
    pub notice: Option<String>,
}

impl TtaPlan {
    /// Resolves `mode` for an ensemble of `checkpoints`: `auto` is the intersection of each
    /// member's trained views (a view helps the average only if every member saw it).
    pub fn resolve(mode: TtaMode, checkpoints: &[(&Path, &CheckpointMeta)]) -> Result<TtaPlan> {
        if let Some(views) = mode.fixed_views() {
            let notice = untrained_views_note(mode, &views, checkpoints);
            return Ok(TtaPlan { mode, views, notice });
        }
        let mut views = Dihedral::ALL.to_vec();
        let mut notes = Vec::new();
        for (path, meta) in checkpoints {
            let own = match recorded_views(path, meta) {
                Some(own) => own?,
                None => {
                    let why = if meta.imported_from.is_some() {
                        "imported official weights, which upstream trained with all 8 flips/rotations"
                    } else {
                        "no record of its training augmentations; assuming all 8 views like the official weights"
                    };
                    notes.push(format!("{}: {why}", path.display()));
                    Dihedral::ALL.to_vec()
                }
            };
            views.retain(|v| own.contains(v));
        }
        if views.len() == 1 {
            notes.push(
                "training used no flips or 90-degree turns, so TTA is off (--tta 8 or flips forces it)"
                    .into(),
            );
        }
        Ok(TtaPlan { mode, views, notice: (!notes.is_empty()).then(|| notes.join("; ")) })
    }

    /// "auto: id, hflip" (for messages and table headers).
    pub fn describe(&self) -> String {
        format!("{}: {}", self.mode, view_list(&self.views))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::DatasetFingerprint;
    use crate::model::ModelConfig;

    fn aug(hflip: f64, vflip: f64, rot90: f64) -> AugmentConfig {
        AugmentConfig { hflip, vflip, rot90, ..AugmentConfig::default() }
    }

    fn names(v: &[Dihedral]) -> Vec<&'static str> {
        v.iter().map(|d| d.name()).collect()
    }

    #[test]
    fn trained_views_are_the_generated_group() {
        assert_eq!(names(&trained_views(&aug(0.5, 0.0, 0.0))), ["id", "hflip"]);
        assert_eq!(names(&trained_views(&aug(0.0, 0.3, 0.0))), ["id", "vflip"]);
        assert_eq!(names(&trained_views(&aug(0.5, 0.5, 0.0))), ["id", "rot180", "hflip", "vflip"]);
        assert_eq!(trained_views(&aug(0.5, 0.5, 0.0)), TtaMode::Flips.fixed_views().unwrap());
        assert_eq!(names(&trained_views(&aug(0.0, 0.0, 0.5))), ["id", "rot90", "rot180", "rot270"]);
        assert_eq!(trained_views(&aug(0.5, 0.0, 0.5)), Dihedral::ALL);
        assert_eq!(trained_views(&aug(0.0, 0.5, 1.0)), Dihedral::ALL);
        assert_eq!(trained_views(&aug(0.5, 0.5, 0.5)), Dihedral::ALL);
        assert_eq!(names(&trained_views(&aug(0.0, 0.0, 0.0))), ["id"]);
        // Small-angle rotation covers no dihedral view.
        let mut a = aug(0.0, 0.0, 0.0);
        a.rotate.prob = 1.0;
        assert_eq!(names(&trained_views(&a)), ["id"]);
    }

    fn trained(a: &AugmentConfig) -> CheckpointMeta {
        let exp = crate::config::Experiment { augment: a.clone(), ..Default::default() };
        let mut meta = CheckpointMeta::new(ModelConfig::tiny());
        meta.provenance = Some(Provenance {
            run: "r".into(),
            experiment: exp.to_yaml(),
            seed: 1,
            val_fraction: 0.1,
            epoch: 1,
            step: 1,
            val: None,
            git_commit: None,
            dataset: DatasetFingerprint { root: "d".into(), pairs: 1, files_crc32c: "0".into() },
        });
        meta
    }

    fn auto(metas: &[&CheckpointMeta]) -> Result<TtaPlan> {
        let p = Path::new("w.safetensors");
        let cps: Vec<(&Path, &CheckpointMeta)> = metas.iter().map(|m| (p, *m)).collect();
        TtaPlan::resolve(TtaMode::Auto, &cps)
    }

    #[test]
    fn auto_reads_the_provenance_and_intersects_an_ensemble() {
        let h = trained(&aug(0.5, 0.0, 0.0));
        let hv = trained(&aug(0.5, 0.5, 0.0));
        let all = trained(&aug(0.5, 0.5, 0.5));
        let plan = auto(&[&h]).unwrap();
        assert_eq!((names(&plan.views), plan.notice), (vec!["id", "hflip"], None));
        assert_eq!(auto(&[&hv]).unwrap().views, TtaMode::Flips.fixed_views().unwrap());
        assert_eq!(auto(&[&all]).unwrap().views, Dihedral::ALL);
        assert_eq!(names(&auto(&[&all, &hv, &h]).unwrap().views), ["id", "hflip"]);
        let v = trained(&aug(0.0, 0.5, 0.0));
        let off = auto(&[&h, &v]).unwrap();
        assert_eq!(names(&off.views), ["id"]);
        assert!(off.notice.unwrap().contains("TTA is off"));
        let none = auto(&[&trained(&aug(0.0, 0.0, 0.0))]).unwrap();
        assert_eq!(names(&none.views), ["id"]);
    }

    #[test]
    fn auto_without_provenance_uses_all_eight_and_says_why() {
        let mut imported = CheckpointMeta::new(ModelConfig::tiny());
        imported.imported_from = Some("model.ckpt".into());
        let plan = auto(&[&imported]).unwrap();
        assert_eq!(plan.views, Dihedral::ALL);
        assert!(plan.notice.unwrap().contains("upstream trained with all 8"));
        let h = trained(&aug(0.5, 0.0, 0.0));
        assert_eq!(names(&auto(&[&imported, &h]).unwrap().views), ["id", "hflip"]);
        let plain = CheckpointMeta::new(ModelConfig::tiny());
        assert!(auto(&[&plain]).unwrap().notice.unwrap().contains("no record"));
        // A provenance that does not parse is an error naming the flag, not a guess.
        let mut odd = trained(&aug(0.5, 0.0, 0.0));
        odd.provenance.as_mut().unwrap().experiment = "augment: {flip: 0.5}\n".into();
        let e = auto(&[&odd]).unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("--tta 8, flips or off"), "{e}");
        // Fixed modes need no checkpoints.
        assert_eq!(TtaPlan::resolve(TtaMode::Eight, &[]).unwrap().views, Dihedral::ALL);
    }

    #[test]
    fn forced_views_the_training_never_showed_are_named() {
        let p = Path::new("w.safetensors");
        let forced = |m: TtaMode, metas: &[&CheckpointMeta]| {
            let cps: Vec<(&Path, &CheckpointMeta)> = metas.iter().map(|m| (p, *m)).collect();
            TtaPlan::resolve(m, &cps).unwrap()
        };
        let h = trained(&aug(0.5, 0.0, 0.0));
        let plan = forced(TtaMode::Eight, &[&h]);
        assert_eq!(plan.views, Dihedral::ALL);
        let note = plan.notice.unwrap();
        assert!(
            note.contains("(rot90, rot180, rot270, antitranspose, vflip, transpose)"),
            "{note}"
        );
        assert!(note.contains("--tta auto"), "{note}");
        assert!(forced(TtaMode::Flips, &[&h]).notice.unwrap().contains("(rot180, vflip)"));
        // Covered by the training, by an ensemble member's, or not recorded: nothing to say.
        let hv = trained(&aug(0.5, 0.5, 0.0));
        assert_eq!(forced(TtaMode::Flips, &[&hv]).notice, None);
        assert_eq!(forced(TtaMode::Eight, &[&trained(&aug(0.5, 0.5, 0.5))]).notice, None);
        assert_eq!(forced(TtaMode::Off, &[&h]).notice, None);
        let mut imported = CheckpointMeta::new(ModelConfig::tiny());
        imported.imported_from = Some("model.ckpt".into());
        assert_eq!(forced(TtaMode::Eight, &[&imported]).notice, None);
        let note = forced(TtaMode::Flips, &[&hv, &h]).notice.unwrap();
        assert!(note.contains("(rot180, vflip)"), "{note}");
    }

    #[test]
    fn every_view_of_every_mode_is_inverted_exactly() {
        let x = crate::model::with_global_rng(|| {
            tch::manual_seed(5);
            tch::Tensor::rand([2, 3, 5, 7], (tch::Kind::Float, tch::Device::Cpu))
        });
        for (m, n) in [(TtaMode::Off, 1), (TtaMode::Flips, 4), (TtaMode::Eight, 8)] {
            let views = m.fixed_views().unwrap();
            assert_eq!(views.len(), n);
            for v in &views {
                assert!(v.invert(&v.apply(&x)).equal(&x), "{m}: {v}");
                // Each set is a group: averaging it is the same from any starting view.
                assert!(views.iter().all(|w| views.contains(&v.after(*w))), "{m} not closed");
            }
        }
    }

    #[test]
    fn modes_round_trip_by_name() {
        let read = |s: &str| serde_json::from_str::<TtaMode>(s);
        for m in [TtaMode::Off, TtaMode::Eight, TtaMode::Flips, TtaMode::Auto] {
            assert_eq!(read(&serde_json::to_string(&m).unwrap()).unwrap(), m);
        }
        assert_eq!(serde_json::to_string(&TtaMode::Eight).unwrap(), "\"8\"");
        assert!(read("true").is_err());
        assert!(read("\"on\"").unwrap_err().to_string().contains("expected one of `off`, `8`"));
    }
}
