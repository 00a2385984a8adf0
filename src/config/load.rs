//! Reading experiment files: `extends: base.yaml` merges a base file (relative to the including
//! file), except that a `model:` of another `arch` replaces the base's; `--set a.b=v` overrides
//! any key with a YAML value. Merging happens on YAML values, then the typed struct is
//! deserialised, so a misspelled key anywhere (file or override) is an error naming it.

use super::Experiment;
use crate::{Error, Result};
use serde_yaml::Value;
use std::path::{Path, PathBuf};

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

/// Whether `over` names another `model.arch` than `base` (absent is PromptIR). Its model then
/// replaces the base's whole: the base's keys belong to another network.
fn switches_arch(base: &Value, over: &Value) -> bool {
    let arch = |v: &Value| match v.get("model").and_then(|m| m.get("arch")) {
        Some(a) => a.as_str().map(str::to_owned),
        None => Some("promptir".to_owned()),
    };
    over.get("model").and_then(|m| m.get("arch")).is_some() && arch(base) != arch(over)
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
            if switches_arch(&merged, &v) {
                if let Some(m) = merged.as_mapping_mut() {
                    m.remove("model");
                }
            }
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
            let mut key = e.path().to_string();
            let mut inner = e.into_inner().to_string();
            // `model` reads its keys once `arch` is known, out of the tracker's sight; its
            // message names the key, which goes back into the path.
            if let Some((msg, k, arch)) = crate::model::key_of_arch(&inner) {
                (key, inner) = (format!("{key}.{k}"), format!("{msg} (arch {arch})"));
            }
            let what = if inner.contains("unknown field") { "unknown key" } else { "bad value" };
            cfg_err(origin, format!("{what} at `{key}`: {inner}"))
        })
    }

    /// The resolved config as YAML (written to `logs/<run>/config.yaml`).
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("Experiment serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

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
        assert_eq!((e.loss.weight("l1"), e.loss.weight("ssim")), (1.0, 0.2));
        assert_eq!(e.name, "child");
        // The resolved YAML parses back to the same experiment.
        assert_eq!(Experiment::from_yaml_str(&e.to_yaml(), &p).unwrap(), e);
    }

    /// A model of another arch replaces the base's; one of the same arch merges key by key.
    #[test]
    fn a_model_of_another_arch_replaces_the_base_model() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.yaml", "model: {dim: 16, prompt_len: 3}\n");
        let p = write(d.path(), "r.yaml", "extends: base.yaml\nmodel: {arch: restormer, dim: 8}\n");
        let e = Experiment::load(&p, &[]).unwrap();
        let want = crate::model::RestormerConfig { dim: 8, ..Default::default() };
        assert_eq!(e.model, ModelConfig::Restormer(want));
        let p =
            write(d.path(), "same.yaml", "extends: base.yaml\nmodel: {arch: promptir, dim: 8}\n");
        match Experiment::load(&p, &[]).unwrap().model {
            ModelConfig::Promptir(c) => assert_eq!((c.dim, c.prompt_len), (8, 3)),
            other => panic!("{other:?}"),
        }
        // `--set` merges into the model as it stands: the PromptIR keys then name the arch.
        let e = Experiment::load(
            &write(d.path(), "b.yaml", "model: {prompt_len: 3}\n"),
            &["model.arch=restormer".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown key at `model.prompt_len`") && e.ends_with("(arch restormer)"),
            "{e}"
        );
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
        assert!(e.contains("bad value at `model.layer_norm_type`: unknown variant"), "{e}");
        assert!(e.ends_with("(arch promptir)"), "{e}");
        let p = write(d.path(), "w.yaml", "model: {arch: promptir, width: 32}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("unknown key at `model.width`: unknown field `width`"), "{e}");
        assert!(e.ends_with("(arch promptir)"), "{e}");
        let p = write(d.path(), "s.yaml", "train: {stages: [{until_epoch: 3, patch: 64}]}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("train.stages"), "{e}");
        let ok = write(d.path(), "ok.yaml", "seed: 3\n");
        let e = Experiment::load(&ok, &["train.nope=1".into()]).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn published_parses_strictly_and_is_not_written_when_absent() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "p.yaml",
            "published: {psnr: 32.64, label: \"course report, public test\"}\n",
        );
        let e = Experiment::load(&p, &[]).unwrap();
        let got = e.published.as_ref().unwrap();
        assert_eq!((got.psnr, got.label.as_str()), (32.64, "course report, public test"));
        assert_eq!(Experiment::from_yaml_str(&e.to_yaml(), &p).unwrap(), e);
        let p = write(d.path(), "q.yaml", "published: {psnr: 32.0, label: x, split: test}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("q.yaml") && e.contains("unknown key at `published.split`"), "{e}");
        let p = write(d.path(), "r.yaml", "published: {psnr: 32.0}\n");
        let e = Experiment::load(&p, &[]).unwrap_err().to_string();
        assert!(e.contains("r.yaml") && e.contains("label"), "{e}");
        for (set, needle) in
            [("published.psnr=-1", "published.psnr"), ("published.label=' '", "published.label")]
        {
            let p = write(d.path(), "s.yaml", "published: {psnr: 32.0, label: x}\n");
            let e = Experiment::load(&p, &[set.into()]).unwrap_err().to_string();
            assert!(e.contains(needle), "{set}: {e}");
        }
        let plain = Experiment::load(&write(d.path(), "t.yaml", "seed: 3\n"), &[]).unwrap();
        assert!(plain.published.is_none() && !plain.to_yaml().contains("published"));
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
            ("train.accumulate=0", "train.accumulate"),
            ("train.ema.decay=1.0", "train.ema.decay"),
            ("loss.fft=-1", "loss.fft"),
            ("loss.l1=0", "at least one of"),
            ("train.stages=[{until_epoch: 5, patch_size: 64, batch_size: 4}, {until_epoch: 5, patch_size: 96, batch_size: 2}]", "train.stages[1].until_epoch"),
            ("train.stages=[{until_epoch: 5, patch_size: 60, batch_size: 4}]", "train.stages[0]"),
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
