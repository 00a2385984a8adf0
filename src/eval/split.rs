//! Which pairs a split means: `val` is exactly what the checkpoints' training held out (its seed
//! and fraction come from their provenance), `train` the rest, `test` the test folder with
//! ground truth.

use crate::data::{self, fingerprint, PairPath, TestTypes};
use crate::io::CheckpointMeta;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which pairs to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SplitName {
    /// The pairs training held out (the seed and fraction in the checkpoints' provenance).
    Val,
    /// The pairs training learned from.
    Train,
    /// `test/degraded` against `test/clean` (synthetic sets only; the course set has no targets).
    Test,
}

impl std::fmt::Display for SplitName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SplitName::Val => "val",
            SplitName::Train => "train",
            SplitName::Test => "test",
        })
    }
}

/// The validation split's seed and fraction, and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitParams {
    pub seed: u64,
    pub val_fraction: f64,
    /// E.g. "from run t (checkpoint)", "from --seed and --val-fraction", "defaults (...)",
    /// "seed from --seed, val_fraction from run t (checkpoint)".
    pub source: String,
}

/// A training run a checkpoint names, with its split parameters.
struct RunSplit {
    name: String,
    seed: u64,
    val_fraction: f64,
}

/// Decides the validation split's parameters. Each of seed and fraction comes from, in order:
/// its flag; the checkpoints' provenance; the experiment defaults (42, 0.1) when no checkpoint
/// names a run (imported weights). An ensemble of runs that held out different pairs is an
/// error: then no split is unseen by all models, and the user must pick one with the flags.
pub fn split_params(
    checkpoints: &[(&Path, &CheckpointMeta)],
    seed: Option<u64>,
    val_fraction: Option<f64>,
) -> Result<SplitParams> {
    if let Some(f) = val_fraction {
        if !(0.0..1.0).contains(&f) {
            return Err(Error::Usage(format!(
                "--val-fraction {f}: must be at least 0 and below 1"
            )));
        }
    }
    let mut runs: Vec<RunSplit> = Vec::new();
    if seed.is_none() || val_fraction.is_none() {
        for p in checkpoints.iter().filter_map(|(_, m)| m.provenance.as_ref()) {
            if !runs.iter().any(|r| r.name == p.run) {
                let (name, seed, val_fraction) = (p.run.clone(), p.seed, p.val_fraction);
                runs.push(RunSplit { name, seed, val_fraction });
            }
        }
    }
    let differ = |f: &dyn Fn(&RunSplit) -> String| runs.iter().any(|r| f(r) != f(&runs[0]));
    if (seed.is_none() && differ(&|r| r.seed.to_string()))
        || (val_fraction.is_none() && differ(&|r| r.val_fraction.to_string()))
    {
        let list: Vec<String> = runs
            .iter()
            .map(|r| format!("{}: seed {}, val_fraction {}", r.name, r.seed, r.val_fraction))
            .collect();
        return Err(Error::Usage(format!(
            "the checkpoints come from runs that held out different pairs ({}), so no split is unseen by all of them; \
             choose one with --seed and --val-fraction",
            list.join("; ")
        )));
    }
    let d = crate::config::Experiment::default();
    let from_runs = || {
        let names: Vec<String> = runs.iter().map(|r| format!("{} (checkpoint)", r.name)).collect();
        format!("run {}", names.join(", "))
    };
    let source = |flag: bool, name: &str| match (flag, runs.is_empty()) {
        (true, _) => format!("--{name}"),
        (false, false) => from_runs(),
        (false, true) => "defaults (the checkpoints name no training run)".to_string(),
    };
    let (seed_src, frac_src) =
        (source(seed.is_some(), "seed"), source(val_fraction.is_some(), "val-fraction"));
    let source = if seed_src == frac_src && seed_src.starts_with("defaults") {
        seed_src
    } else if seed_src == frac_src {
        format!("from {seed_src}")
    } else if seed.is_some() && val_fraction.is_some() {
        "from --seed and --val-fraction".to_string()
    } else {
        format!("seed from {seed_src}, val_fraction from {frac_src}")
    };
    Ok(SplitParams {
        seed: seed.or(runs.first().map(|r| r.seed)).unwrap_or(d.seed),
        val_fraction: val_fraction
            .or(runs.first().map(|r| r.val_fraction))
            .unwrap_or(d.data.val_fraction),
        source,
    })
}

/// A line for the setup when the data given is not the data a checkpoint trained on (another
/// root, or files added, removed or re-exported): its `val` split is then not what it held out.
pub fn dataset_notice(
    checkpoints: &[(&Path, &CheckpointMeta)],
    root: &Path,
    pairs: &[PairPath],
) -> Option<String> {
    let now = fingerprint(root, pairs);
    let differing: Vec<String> = checkpoints
        .iter()
        .filter_map(|(_, m)| m.provenance.as_ref())
        .filter(|p| p.dataset.pairs != now.pairs || p.dataset.files_crc32c != now.files_crc32c)
        .map(|p| {
            format!(
                "run {} trained on {} pairs in {}",
                p.run,
                p.dataset.pairs,
                p.dataset.root.display()
            )
        })
        .collect();
    (!differing.is_empty()).then(|| {
        format!(
            "these {} pairs are not the files the checkpoints trained on ({}), so this split is not exactly what training held out",
            now.pairs,
            differing.join("; ")
        )
    })
}

/// The pairs of `split` under the dataset `root`, in the dataset's order, with the
/// [`dataset_notice`] for `checkpoints` (never for `test`). `val`/`train` are exactly
/// [`data::split`] of the scanned pairs, i.e. what training held out / learned from.
pub fn split_pairs(
    root: &Path,
    split: SplitName,
    params: Option<&SplitParams>,
    checkpoints: &[(&Path, &CheckpointMeta)],
) -> Result<(Vec<PairPath>, Option<String>)> {
    if !root.is_dir() {
        return Err(Error::data(
            root,
            "dataset root does not exist; --data must name the folder holding train/ and test/",
        ));
    }
    let params = match (split, params) {
        (SplitName::Test, _) => return Ok((test_pairs(root)?, None)),
        (_, Some(p)) => p,
        (_, None) => {
            return Err(Error::Usage(format!("the {split} split needs a seed and val_fraction")))
        }
    };
    let pairs = data::scan_pairs(root)?;
    let kinds: Vec<&str> = pairs.iter().map(|p| p.kind.as_str()).collect();
    let s = data::split(&kinds, params.val_fraction, params.seed);
    let picked = if split == SplitName::Val { s.val } else { s.train };
    if picked.is_empty() {
        return Err(Error::data(
            root.join("train"),
            format!(
                "the {split} split of these {} pairs is empty (val_fraction {}); choose another split or --val-fraction",
                pairs.len(),
                params.val_fraction
            ),
        ));
    }
    let notice = dataset_notice(checkpoints, root, &pairs);
    Ok((picked.into_iter().map(|i| pairs[i].clone()).collect(), notice))
}

/// `test/degraded` paired with `test/clean`; kinds from `test/types.json` when present.
fn test_pairs(root: &Path) -> Result<Vec<PairPath>> {
    let tests = data::scan_test(root)?;
    let clean_dir = root.join("test").join("clean");
    if !clean_dir.is_dir() {
        return Err(Error::data(
            clean_dir,
            "missing: this test set has no ground truth (the course test set has none), so it cannot be scored; \
             restore it with `promptir predict`, or score --split val",
        ));
    }
    let types_path = TestTypes::path(root);
    let types = if types_path.is_file() { Some(TestTypes::read(&types_path)?) } else { None };
    tests
        .into_iter()
        .map(|t| {
            let kind = match &types {
                None => "test".to_string(),
                Some(map) => map.0.get(&t.name).cloned().ok_or_else(|| {
                    Error::data(
                        &types_path,
                        format!(
                            "has no entry for {}; it must give every test image's type",
                            t.name
                        ),
                    )
                })?,
            };
            let clean = t.clean.expect("scan_test pairs every image when test/clean exists");
            Ok(PairPath { name: t.name, kind, degraded: t.degraded, clean })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{DatasetFingerprint, Provenance};
    use crate::model::ModelConfig;

    fn trained(run: &str, seed: u64, frac: f64) -> CheckpointMeta {
        CheckpointMeta {
            provenance: Some(Provenance {
                run: run.into(),
                experiment: String::new(),
                seed,
                val_fraction: frac,
                epoch: 1,
                step: 10,
                val: None,
                git_commit: None,
                dataset: DatasetFingerprint {
                    root: "d".into(),
                    pairs: 4,
                    files_crc32c: "0".into(),
                },
            }),
            ..CheckpointMeta::new(ModelConfig::tiny())
        }
    }

    #[test]
    fn split_params_come_from_flags_then_the_checkpoint_then_defaults() {
        let w = Path::new("w.safetensors");
        let plain = CheckpointMeta::new(ModelConfig::tiny());
        let (r1, r1b, r2) =
            (trained("r1", 7, 0.25), trained("r1", 7, 0.25), trained("r2", 8, 0.25));
        let get = |ms: &[&CheckpointMeta], seed, frac| {
            let c: Vec<(&Path, &CheckpointMeta)> = ms.iter().map(|m| (w, *m)).collect();
            split_params(&c, seed, frac)
        };

        let p = get(&[&plain], None, None).unwrap();
        assert_eq!((p.seed, p.val_fraction), (42, 0.1));
        assert!(p.source.starts_with("defaults"), "{}", p.source);

        let p = get(&[&plain, &r1, &r1b], None, None).unwrap();
        assert_eq!(
            (p.seed, p.val_fraction, p.source.as_str()),
            (7, 0.25, "from run r1 (checkpoint)")
        );

        let p = get(&[&r1], None, Some(0.5)).unwrap();
        assert_eq!((p.seed, p.val_fraction), (7, 0.5));
        assert_eq!(p.source, "seed from run r1 (checkpoint), val_fraction from --val-fraction");

        // Runs that held out different pairs: no common split unless the user picks one.
        let err = get(&[&r1, &r2], None, None).unwrap_err();
        assert!(err.to_string().contains("r1: seed 7, val_fraction 0.25; r2: seed 8"), "{err}");
        let p = get(&[&r1, &r2], Some(7), None).unwrap();
        assert_eq!((p.seed, p.val_fraction), (7, 0.25), "fractions agree, seed given");

        let p = get(&[&r1], Some(3), Some(0.2)).unwrap();
        assert_eq!(p.source, "from --seed and --val-fraction");
        let err = get(&[&r1], None, Some(1.0)).unwrap_err().to_string();
        assert!(err.contains("--val-fraction 1"), "{err}");
    }
}
