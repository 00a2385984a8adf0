//! A training run on disk: `logs/<run>/` (resolved config, TensorBoard events, metrics.jsonl) and
//! `weights/<run>/` (checkpoints and the resumable training state). A new run never writes into
//! an existing one; `--resume` is the only way back in.

use crate::config::Experiment;
use crate::eval::EvalSummary;
use crate::io::{write_atomic_bytes, TrainState};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct RunDir {
    pub name: String,
    pub logs: PathBuf,
    pub weights: PathBuf,
}

/// One line of `metrics.jsonl`: written by `train` after each validation (or each epoch when
/// there is no validation split), read by `promptir report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Epochs completed (the last may be partial when `max_steps` or Ctrl-C ended the run).
    pub epoch: usize,
    pub step: usize,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch's steps (`null` when not finite).
    pub train_loss: Option<f64>,
    /// The validation; absent when the run holds no validation split.
    pub val: Option<EvalSummary>,
    pub epoch_seconds: f64,
}

/// The lines of a `metrics.jsonl` by epoch: sorted, and a repeated epoch (a resumed run that
/// redid it) keeps its last line. A missing file has no lines.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut by_epoch = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let m: MetricsLine = serde_json::from_str(line)
            .map_err(|e| Error::data(path, format!("line {}: {e}", i + 1)))?;
        by_epoch.insert(m.epoch, m);
    }
    Ok(by_epoch.into_values().collect())
}

impl RunDir {
    /// The run `name`'s folders (nothing is created or checked).
    pub fn named(name: &str, logs_root: &Path, weights_root: &Path) -> Self {
        RunDir {
            name: name.to_string(),
            logs: logs_root.join(name),
            weights: weights_root.join(name),
        }
    }

    /// Claims a fresh run named `name` (a UTC timestamp suffix added only when that name is
    /// taken): its logs folder is created with `create_dir`, which fails when it exists, so two
    /// processes starting at once never get the same run. Writes nothing into it.
    pub fn claim(name: &str, logs_root: &Path, weights_root: &Path) -> Result<Self> {
        std::fs::create_dir_all(logs_root).map_err(|e| Error::io(logs_root, e))?;
        let stamp = utc_stamp();
        for n in 0.. {
            let candidate = match n {
                0 => name.to_string(),
                1 => format!("{name}_{stamp}"),
                n => format!("{name}_{stamp}_{n}"),
            };
            let run = Self::named(&candidate, logs_root, weights_root);
            if run.weights.exists() {
                continue;
            }
            match std::fs::create_dir(&run.logs) {
                Ok(()) => {
                    std::fs::create_dir_all(&run.weights)
                        .map_err(|e| Error::io(&run.weights, e))?;
                    return Ok(run);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&run.logs, e)),
            }
        }
        unreachable!("some name is free")
    }

    /// The resolved experiment as `config.yaml` (what `--resume` reads back).
    pub fn write_config(&self, exp: &Experiment) -> Result<()> {
        write_atomic_bytes(&self.config_path(), exp.to_yaml().as_bytes())
    }

    /// An existing run, for `--resume`: its folders and config must exist.
    pub fn open(name_or_path: &str, logs_root: &Path, weights_root: &Path) -> Result<Self> {
        // Accept "name", "logs/name" or "weights/name".
        let name = Path::new(name_or_path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("--resume {name_or_path:?}: not a run name")))?;
        let run = Self::named(&name, logs_root, weights_root);
        if !run.config_path().is_file() {
            return Err(Error::Usage(format!(
                "--resume {name}: no run there ({} is missing); runs live under {}",
                run.config_path().display(),
                logs_root.display()
            )));
        }
        Ok(run)
    }

    pub fn config_path(&self) -> PathBuf {
        self.logs.join("config.yaml")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.logs.join("metrics.jsonl")
    }
    pub fn state_path(&self) -> PathBuf {
        self.weights.join("train_state.json")
    }
    pub fn checkpoint(&self, which: &str) -> PathBuf {
        self.weights.join(format!("{which}.safetensors"))
    }

    pub fn read_config(&self) -> Result<Experiment> {
        let p = self.config_path();
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        Experiment::from_yaml_str(&text, &p)
    }

    pub fn read_state(&self) -> Result<TrainState> {
        let p = self.state_path();
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::io(
                &p,
                std::io::Error::new(
                    e.kind(),
                    format!("{e}; the run has no checkpoint to resume from yet"),
                ),
            )
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::data(&p, format!("corrupt training state: {e}")))
    }

    pub fn write_state(&self, s: &TrainState) -> Result<()> {
        let json = serde_json::to_string_pretty(s).expect("TrainState serialises");
        write_atomic_bytes(&self.state_path(), json.as_bytes())
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn append_metrics(&self, line: &MetricsLine) -> Result<()> {
        use std::io::Write;
        let p = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        let json = serde_json::to_string(line).expect("a metrics line serialises");
        writeln!(f, "{json}").map_err(|e| Error::io(&p, e))
    }
}

/// `YYYYmmdd-HHMMSS` in UTC, without a date crate.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ScalerState;

    #[test]
    fn a_new_run_never_reuses_an_existing_folder() {
        let d = tempfile::tempdir().unwrap();
        let (logs, weights) = (d.path().join("logs"), d.path().join("weights"));
        let exp = Experiment { name: "exp".into(), ..Experiment::default() };
        let a = RunDir::claim("exp", &logs, &weights).unwrap();
        assert_eq!(a.name, "exp");
        a.write_config(&exp).unwrap();
        let b = RunDir::claim("exp", &logs, &weights).unwrap();
        assert!(b.name.starts_with("exp_") && b.name != a.name);
        let c = RunDir::claim("exp", &logs, &weights).unwrap();
        assert!(c.name != b.name && c.name.starts_with(&b.name), "{} {}", b.name, c.name);
        // A weights folder alone (logs deleted by hand) also keeps its name taken.
        std::fs::create_dir_all(weights.join("w")).unwrap();
        assert_ne!(RunDir::claim("w", &logs, &weights).unwrap().name, "w");
        assert_eq!(RunDir::open("logs/exp", &logs, &weights).unwrap().read_config().unwrap(), exp);
        assert!(RunDir::open("nope", &logs, &weights)
            .unwrap_err()
            .to_string()
            .contains("no run there"));
    }

    #[test]
    fn the_loss_scale_survives_a_save() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::named("r", &d.path().join("logs"), d.path());
        std::fs::create_dir_all(&run.weights).unwrap();
        let scaler =
            ScalerState { scale: 512.0, growth_interval: 2, clean_steps: 1, ..Default::default() };
        let s = TrainState { step: 7, scaler: Some(scaler), ..TrainState::default() };
        run.write_state(&s).unwrap();
        let back = run.read_state().unwrap();
        assert_eq!(back, s);
        // fp32 runs write no scaler key, and read back without one.
        let json = std::fs::read_to_string(run.state_path()).unwrap();
        run.write_state(&TrainState::default()).unwrap();
        assert!(json.contains("scaler"));
        assert!(!std::fs::read_to_string(run.state_path()).unwrap().contains("scaler"));
        assert_eq!(run.read_state().unwrap(), TrainState::default());
    }

    #[test]
    fn metrics_lines_round_trip_sort_and_keep_the_last_of_a_repeated_epoch() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::named("r", d.path(), d.path());
        std::fs::create_dir_all(&run.logs).unwrap();
        let line = |epoch: usize, psnr: f64| MetricsLine {
            epoch,
            step: epoch * 10,
            lr: 1e-4,
            train_loss: Some(0.25),
            val: Some(EvalSummary {
                count: 2,
                psnr: [("all".to_string(), psnr)].into(),
                ..EvalSummary::default()
            }),
            epoch_seconds: 1.5,
        };
        for l in [line(2, 20.0), line(1, 19.0), line(2, 21.0)] {
            run.append_metrics(&l).unwrap();
        }
        run.append_metrics(&MetricsLine { val: None, ..line(3, 0.0) }).unwrap();
        let back = read_metrics(&run.metrics_path()).unwrap();
        assert_eq!(back, [line(1, 19.0), line(2, 21.0), MetricsLine { val: None, ..line(3, 0.0) }]);
        std::fs::write(
            run.metrics_path(),
            "{\"epoch\":1,\"step\":5,\"lr\":0.1,\"train_loss\":null,\"val\":null,\"epoch_seconds\":2.0}\nnot json\n",
        )
        .unwrap();
        let e = read_metrics(&run.metrics_path()).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl: line 2"), "{e}");
        assert!(read_metrics(&d.path().join("missing.jsonl")).unwrap().is_empty());
    }

    #[test]
    fn utc_stamp_has_the_right_shape() {
        let s = utc_stamp();
        assert_eq!(s.len(), 15);
        assert!(s.starts_with("20") && s.as_bytes()[8] == b'-');
    }
}
