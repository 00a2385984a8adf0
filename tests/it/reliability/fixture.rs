//! The shared inputs of the bad-input table, built once: a dataset, an experiment, a checkpoint,
//! a short training run (`r`, stopped mid-epoch at step 2) and a few odd files.

use crate::common::{checkpoint_at, copy_dir, paired_dataset, promptir, repo, run_python};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub(super) fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Rows copy what they modify.
pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) root: PathBuf,
}

impl Fixture {
    pub(super) fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    /// `train --config exp.yaml --data data` in a row folder holding a copy of the dataset.
    pub(super) fn train(&self, row: &Path, extra: &[&str]) -> Vec<String> {
        copy_dir(&self.p("data"), &row.join("data"));
        let exp = self.p("exp.yaml");
        let mut a = vec!["train", "--config", exp.to_str().unwrap()];
        a.extend(["--data", "data", "--quiet"]);
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    }
    /// `train --resume r` in a row folder holding a copy of run `r`.
    pub(super) fn resume(&self, row: &Path, extra: &[&str]) -> Vec<String> {
        copy_dir(&self.p("run"), row);
        copy_dir(&self.p("data"), &row.join("data"));
        let mut a = vec!["train", "--resume", "r", "--quiet"];
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    }
    /// `eval`/`visualize` of the run's checkpoint on a copy of the dataset.
    pub(super) fn score(&self, row: &Path, cmd: &str, extra: &[&str]) -> Vec<String> {
        copy_dir(&self.p("data"), &row.join("data"));
        let w = self.p("run/weights/r/last.safetensors");
        let mut a = vec![cmd, "--weights", w.to_str().unwrap(), "--device", "cpu", "--quiet"];
        if !extra.contains(&"--data") {
            a.extend(["--data", "data"]);
        }
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    }
    pub(super) fn predict(&self, weights: &Path, input: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["predict".to_string(), "--weights".into(), s(weights)];
        a.extend(["--input".into(), s(input), "--output".into(), "pred.npz".into()]);
        a.extend(["--device".into(), "cpu".into()]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    }
}

pub(super) fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        paired_dataset(&root.join("data"));
        let tiny = repo().join("experiments/tiny.yaml");
        std::fs::write(
            root.join("exp.yaml"),
            format!(
                "extends: {}\nname: r\ndata: {{val_fraction: 0.25, workers: 1}}\n\
                 train: {{epochs: 2, batch_size: 2, patch_size: 16, val_every: 1, log_every: 1, val_images: 0}}\n",
                tiny.display()
            ),
        )
        .unwrap();
        checkpoint_at(&root, "tiny.safetensors", 0);
        std::fs::create_dir_all(root.join("imgs")).unwrap();
        for n in 0..2 {
            std::fs::copy(
                root.join(format!("data/train/degraded/rain-{}.png", n + 1)),
                root.join(format!("imgs/{n}.png")),
            )
            .unwrap();
        }
        std::fs::write(root.join("afile"), b"a regular file, not a folder").unwrap();
        // torch.save's legacy format (magic, version, sys info, object, storage keys) of a dict
        // without any state_dict, written with pickle alone to keep torch out of the fixture.
        let legacy = r#"
import pickle, sys
f = open(sys.argv[1], "wb")
sizes = {"short": 2, "int": 4, "long": 4}
header = {"protocol_version": 1001, "little_endian": True, "type_sizes": sizes}
for o in (0x1950A86A20F9469CFC6C, 1001, header, {"epoch": 3, "note": "no weights"}, []):
    pickle.dump(o, f, protocol=2)
"#;
        run_python(&["-c", legacy, root.join("nostate.ckpt").to_str().unwrap()]);
        let out = promptir()
            .current_dir(&root)
            .args(["train", "--config", "exp.yaml", "--data", "data", "--quiet"])
            .args(["--logs-dir", "run/logs", "--weights-dir", "run/weights"])
            .args(["--set", "train.max_steps=2"])
            .output()
            .unwrap();
        crate::common::ok(out);
        Fixture { _dir: dir, root }
    })
}
