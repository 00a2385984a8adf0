//! A run name that exists, given without `--resume`, starts a new run beside the old one.

use super::fixture::fixture;
use crate::common::{copy_dir, ok, promptir, snapshot};

#[test]
fn an_existing_run_name_without_resume_makes_a_new_run() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fx.p("run"), dir.path());
    let old = snapshot(&dir.path().join("logs/r"));
    let old_w = snapshot(&dir.path().join("weights/r"));
    let a = fx.train(dir.path(), &["--set", "train.max_steps=1", "--name", "r"]);
    ok(promptir().current_dir(dir.path()).args(&a).output().unwrap());
    assert_eq!(snapshot(&dir.path().join("logs/r")), old, "the old run's logs changed");
    assert_eq!(snapshot(&dir.path().join("weights/r")), old_w, "the old run's weights changed");
    let runs: Vec<String> = std::fs::read_dir(dir.path().join("weights"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().any(|r| r.starts_with("r_")), "{runs:?}");
}
