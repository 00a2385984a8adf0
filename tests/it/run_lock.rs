//! One writer per run: a second `train` on a running run is refused and touches nothing, and a
//! run whose writer was killed with kill -9 resumes.

use crate::common::{ok, paired_dataset, promptir, repo, signal, snapshot, user_error};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_second_writer_is_refused_while_the_first_runs_and_a_killed_run_resumes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    paired_dataset(&dir.join("data"));
    let exp = format!(
        "extends: {}\ndata: {{root: data, val_fraction: 0.25, workers: 1}}\n\
         train: {{epochs: 1000, batch_size: 2, patch_size: 24, val_every: 1000, log_every: 1}}\n",
        repo().join("experiments/tiny.yaml").display()
    );
    std::fs::write(dir.join("exp.yaml"), exp).unwrap();
    let mut first = promptir()
        .current_dir(dir)
        .args(["train", "--quiet", "--config", "exp.yaml", "--name", "lockt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = dir.join("weights/lockt/last.safetensors");
    let t0 = Instant::now();
    while !last.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint within 60 s");
        assert!(first.try_wait().unwrap().is_none(), "the first run exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stopped, so that the folders hold still while the second writer tries.
    signal(first.id(), "-STOP");
    let (logs, weights) = (snapshot(&dir.join("logs")), snapshot(&dir.join("weights")));
    let second =
        promptir().current_dir(dir).args(["train", "--quiet", "--resume", "lockt"]).output();
    let err = user_error(&second.unwrap());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let holder = format!("run lockt is being written by PID {} on {}", first.id(), host.trim());
    assert!(err.contains(&holder) && err.contains("--resume lockt"), "{err}");
    assert_eq!(snapshot(&dir.join("logs")), logs, "the refused writer touched logs/");
    assert_eq!(snapshot(&dir.join("weights")), weights, "the refused writer touched weights/");
    // kill -9: the kernel drops the lock with its holder.
    first.kill().unwrap();
    first.wait().unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("weights/lockt/train_state.json")).unwrap(),
    )
    .unwrap();
    let epochs = state["epoch"].as_u64().unwrap() + 1;
    let stdout = ok(promptir()
        .current_dir(dir)
        .args(["train", "--quiet", "--resume", "lockt", "--set"])
        .arg(format!("train.epochs={epochs}"))
        .output()
        .unwrap());
    assert!(stdout.contains(&format!("finished run lockt after {epochs} epochs")), "{stdout}");
}
