//! Runs of one experiment that differ only in their seed become one table row: each number as
//! mean and sample standard deviation over the seeds, the per-seed values kept beside them.

use super::{EvalScore, RunRecord};
use crate::config::{Experiment, Published};
use serde::{Deserialize, Serialize};

/// One number of an experiment over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedStat {
    /// One entry per seed, in the experiment's `seeds` order (`None`: not measured there).
    pub values: Vec<Option<f64>>,
    /// How many seeds have a value.
    pub n: usize,
    pub mean: Option<f64>,
    /// Sample standard deviation (divides by n - 1); `None` below two values.
    pub std: Option<f64>,
}

impl SeedStat {
    pub fn new(values: Vec<Option<f64>>) -> Self {
        let xs: Vec<f64> = values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
        let n = xs.len();
        let mean = (n > 0).then(|| xs.iter().sum::<f64>() / n as f64);
        let std = mean.filter(|_| n > 1).map(|m| {
            let ss: f64 = xs.iter().map(|x| (x - m).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        SeedStat { values, n, mean, std }
    }
}

/// One row of the table: the runs of one experiment, one per seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentRecord {
    /// The runs' common name (`l1_only` for `l1_only_s42`, `l1_only_s43`); a lone run's name.
    pub name: String,
    /// Run names (`Ablation::runs[].name`), in the order given to the report.
    pub runs: Vec<String>,
    pub seeds: Vec<u64>,
    pub best_val_psnr: SeedStat,
    /// Eval PSNR ("all") without and with TTA, and TTA's gain per seed.
    pub eval_psnr: SeedStat,
    pub eval_tta_psnr: SeedStat,
    pub tta_gain: SeedStat,
    /// The course report's number for this recipe (the config's `published`).
    pub published: Option<Published>,
}

/// `name` without its `_s<seed>` suffix (how `scripts/ablation.sh` names the runs of a seed).
fn base_name(name: &str, seed: u64) -> &str {
    name.strip_suffix(&format!("_s{seed}")).unwrap_or(name)
}

/// The config with what may differ between seeds of one experiment blanked out.
fn recipe(e: &Experiment) -> Experiment {
    Experiment { name: String::new(), seed: 0, ..e.clone() }
}

/// Groups `runs` (first-seen order) into experiments: the same base name and the same resolved
/// config apart from `name` and `seed`, each seed once. A lone run keeps its own name.
pub fn group(runs: &[RunRecord]) -> Vec<ExperimentRecord> {
    let mut groups: Vec<Vec<&RunRecord>> = Vec::new();
    for r in runs {
        let key = (base_name(&r.name, r.exp.seed), recipe(&r.exp));
        let same = groups.iter_mut().find(|g| {
            (base_name(&g[0].name, g[0].exp.seed), recipe(&g[0].exp)) == key
                && g.iter().all(|m| m.exp.seed != r.exp.seed)
        });
        match same {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups
        .into_iter()
        .map(|g| {
            let stat = |f: &dyn Fn(&RunRecord) -> Option<f64>| {
                SeedStat::new(g.iter().map(|r| f(r)).collect())
            };
            let all = |e: &Option<EvalScore>| e.as_ref().map(EvalScore::all);
            ExperimentRecord {
                name: if g.len() == 1 {
                    g[0].name.clone()
                } else {
                    base_name(&g[0].name, g[0].exp.seed).to_string()
                },
                runs: g.iter().map(|r| r.name.clone()).collect(),
                seeds: g.iter().map(|r| r.exp.seed).collect(),
                best_val_psnr: stat(&|r| r.best_val_psnr),
                eval_psnr: stat(&|r| all(&r.eval)),
                eval_tta_psnr: stat(&|r| all(&r.eval_tta)),
                tta_gain: stat(&|r| Some(all(&r.eval_tta)? - all(&r.eval)?)),
                published: g[0].exp.published.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        // 31.9, 32.0, 32.2: mean 32.0333, sample std sqrt(0.04667 / 2) = 0.152753 (python).
        let s = SeedStat::new(vec![Some(31.9), Some(32.0), None, Some(32.2)]);
        assert_eq!(s.n, 3);
        assert!((s.mean.unwrap() - 32.033_333_333_333_33).abs() < 1e-12);
        assert!((s.std.unwrap() - 0.15275252316519464).abs() < 1e-12);
        let one = SeedStat::new(vec![Some(1.5)]);
        assert_eq!((one.n, one.mean, one.std), (1, Some(1.5), None));
        let none = SeedStat::new(vec![None, None]);
        assert_eq!((none.n, none.mean, none.std), (0, None, None));
    }

    #[test]
    fn seed_suffixes_are_stripped_only_when_they_are_the_seed() {
        assert_eq!(base_name("l1_only_s42", 42), "l1_only");
        assert_eq!(base_name("l1_only_s42", 43), "l1_only_s42");
        assert_eq!(base_name("l1_only", 42), "l1_only");
    }
}
