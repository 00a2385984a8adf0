//! An experiment as flat `key.path -> value` pairs, to name the keys in which two differ (a
//! resume with a changed network, ranks of one run launched with different settings).

use super::Experiment;
use serde_json::Value;
use std::collections::BTreeMap;

/// Keys that may differ between the processes of one run: where this machine keeps files,
/// its loader threads, and labels that do not change training (rank 0 names the run).
const MACHINE_LOCAL: [&str; 6] =
    ["name", "published", "data.root", "data.workers", "data.prefetch", "loss.vgg_weights"];

impl Experiment {
    /// Every leaf key with its value as JSON text (`train.lr` -> `0.0002`); lists are one value.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        flatten("", &serde_json::to_value(self).expect("Experiment serialises"), &mut out);
        out
    }

    /// [`Self::settings`] without the keys that may differ between machines: what every
    /// process of a data-parallel run must share.
    pub fn shared_settings(&self) -> BTreeMap<String, String> {
        let mut s = self.settings();
        s.retain(|k, _| !MACHINE_LOCAL.iter().any(|m| k == m || k.starts_with(&format!("{m}."))));
        s
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        v => {
            out.insert(prefix.to_string(), v.to_string());
        }
    }
}

/// `key: ours (theirs_name: theirs)` for each key whose value differs, in key order; a key
/// one side lacks shows as `-`.
pub fn differences(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    theirs_name: &str,
) -> Vec<String> {
    let missing = "-".to_string();
    let keys: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .map(|k| {
            let (a, b) = (ours.get(k).unwrap_or(&missing), theirs.get(k).unwrap_or(&missing));
            format!("{k}: {a} ({theirs_name}: {b})")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_the_leaf_keys_and_differences_name_them() {
        let a = Experiment::default();
        let s = a.settings();
        assert_eq!(s["train.lr"], "0.0002");
        assert_eq!(s["model.dim"], "48");
        assert_eq!(s["train.betas"], "[0.9,0.999]");
        assert!(!s.contains_key("train"), "only leaves");
        let mut b = a.clone();
        b.train.lr = 1e-3;
        b.augment.rotate.degrees = 5.0;
        assert_eq!(
            differences(&b.settings(), &s, "rank 0"),
            [
                "augment.rotate.degrees: 5.0 (rank 0: 15.0)".to_string(),
                "train.lr: 0.001 (rank 0: 0.0002)".to_string()
            ]
        );
        assert!(differences(&s, &s, "x").is_empty());
        let mut fewer = s.clone();
        fewer.remove("train.lr");
        assert_eq!(differences(&fewer, &s, "x"), ["train.lr: - (x: 0.0002)"]);
    }

    #[test]
    fn shared_settings_leave_out_paths_threads_and_labels_only() {
        let a = Experiment::default();
        let mut b = a.clone();
        b.name = "other".into();
        b.data.root = "/mnt/elsewhere".into();
        b.data.workers += 3;
        b.data.prefetch += 1;
        b.loss.vgg_weights = "/mnt/vgg.safetensors".into();
        assert_eq!(a.shared_settings(), b.shared_settings());
        b.data.val_fraction = 0.5;
        b.seed += 1;
        let d = differences(&b.shared_settings(), &a.shared_settings(), "rank 0");
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("data.val_fraction: 0.5") && d[1].starts_with("seed: "), "{d:?}");
    }
}
