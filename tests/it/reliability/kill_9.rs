//! kill -9 during checkpoint saves (a child process saving in a loop) never leaves an
//! unloadable checkpoint; a training run killed twice resumes and ends bit-equal to an
//! uninterrupted one.

use crate::common::{ok, paired_dataset, promptir, repo, tensors};
use promptir::io as checkpoint;
use promptir::model::{ModelConfig, Network};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tch::{nn, Device};

const SAVE_LOOP_ENV: &str = "PROMPTIR_TEST_SAVE_LOOP";

/// The child of `kill_9_during_saves_never_breaks_the_last_checkpoint`: saves the tiny model
/// to `$PROMPTIR_TEST_SAVE_LOOP` forever, every weight set to the save's number `i` (stored in
/// the metadata), so that a torn or mixed file would show.
#[test]
#[ignore = "a child process of kill_9_during_saves_never_breaks_the_last_checkpoint"]
fn save_loop_child() {
    let Some(path) = std::env::var_os(SAVE_LOOP_ENV) else { return };
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Network::new(&vs.root(), &cfg);
    let start: i64 = std::env::var("PROMPTIR_TEST_SAVE_FROM").unwrap().parse().unwrap();
    for i in start.. {
        tch::no_grad(|| {
            for mut v in vs.variables().into_values() {
                let _ = v.fill_(i as f64);
            }
        });
        let meta = checkpoint::CheckpointMeta::new(cfg.clone());
        checkpoint::save_model(&vs, &meta, Path::new(&path)).unwrap();
        println!("saved {i}");
    }
}

#[test]
fn kill_9_during_saves_never_breaks_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let mut last_i = -1i64;
    let mut torn_writes = 0;
    let mut rng = 0x2545f4914f6cdd1du64;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reliability::kill_9::save_loop_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SAVE_LOOP_ENV, &path)
            .env("PROMPTIR_TEST_SAVE_FROM", (last_i + 1).to_string())
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.find_map(|l| l.ok().filter(|l| l.starts_with("saved ")));
        assert!(first.is_some(), "round {round}: the child never saved");
        // Let it save a few more times, then kill it at a random moment.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The child's temp file is left when the kill landed inside a save.
        torn_writes +=
            usize::from(dir.path().join(format!(".last.safetensors.tmp-{}", child.id())).exists());
        let loaded = checkpoint::load_model(&path, Device::Cpu)
            .unwrap_or_else(|e| panic!("round {round}: the last checkpoint does not load: {e}"));
        // Every weight of save i holds the value i.
        let i = f64::try_from(loaded.vs.variables()["output.weight"].max()).unwrap() as i64;
        assert!(i > last_i, "round {round}: no progress ({i} after {last_i})");
        for (k, v) in loaded.vs.variables() {
            let (lo, hi) = (f64::try_from(v.min()).unwrap(), f64::try_from(v.max()).unwrap());
            assert!(
                lo == i as f64 && hi == i as f64,
                "round {round}: {k} holds {lo}..{hi}, not save {i}"
            );
        }
        last_i = i;
    }
    println!("{torn_writes} of 6 kills landed inside a save (left its temp file)");
    // Whether a kill landed inside a save is chance; one stale temp file is certain (the
    // largest pid_max is 4194304, so no process has that id).
    std::fs::write(dir.path().join(".last.safetensors.tmp-4194304"), b"torn").unwrap();
    promptir::io::remove_stale_temps(dir.path());
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["last.safetensors"], "stale temp files are swept");
}

/// Waits until `path` exists with a modification time after `after` (or panics).
fn wait_for_save(
    path: &Path,
    after: Option<std::time::SystemTime>,
    child: &mut std::process::Child,
) {
    let t0 = Instant::now();
    loop {
        let m = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if m.is_some() && (after.is_none() || m > after) {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("training exited ({st}) before saving {}", path.display());
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no save within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_run_killed_twice_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    paired_dataset(&d.join("data"));
    let tiny = repo().join("experiments/tiny.yaml");
    std::fs::write(
        d.join("exp.yaml"),
        format!(
            "extends: {}\ndata: {{val_fraction: 0.25, workers: 1}}\n\
             train: {{epochs: 8, batch_size: 2, patch_size: 16, val_every: 2, log_every: 1, val_images: 0}}\n",
            tiny.display()
        ),
    )
    .unwrap();
    let train = |extra: &[&str]| {
        let mut c = promptir();
        c.current_dir(d).args(["train", "--quiet"]).args(extra);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    // The reference: the same run without interruption, alongside.
    let full =
        train(&["--config", "exp.yaml", "--data", "data", "--name", "full"]).spawn().unwrap();

    let resume_file = d.join("weights/k/last.safetensors");
    let mut killed = 0;
    for (round, delay_ms) in [(0, 60), (1, 20)] {
        let mut child = if round == 0 {
            train(&["--config", "exp.yaml", "--data", "data", "--name", "k"]).spawn().unwrap()
        } else {
            train(&["--resume", "k"]).spawn().unwrap()
        };
        let before = std::fs::metadata(&resume_file).and_then(|m| m.modified()).ok();
        wait_for_save(&resume_file, before, &mut child);
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let text = ok(train(&["--resume", "k"]).output().unwrap());
    assert!(text.contains("finished run k after 8 epochs / 32 steps"), "{text}");
    ok(full.wait_with_output().unwrap());
    let (a, b) = (
        tensors(&d.join("weights/full/last.safetensors")),
        tensors(&d.join("weights/k/last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        let diff = f64::try_from((ta - tb).abs().max()).unwrap();
        worst = worst.max(diff);
    }
    println!("killed-and-resumed vs uninterrupted: max |diff| = {worst:e}");
    assert_eq!(worst, 0.0, "the killed-and-resumed run differs");
    assert_eq!(killed, 2, "a kill came after the run had ended");
    let left: Vec<_> = std::fs::read_dir(d.join("weights/k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temp files left after resuming: {left:?}");
}
