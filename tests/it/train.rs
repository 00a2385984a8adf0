//! End-to-end training on a tiny synthetic set: outputs on disk, TensorBoard curves read back by
//! TensorBoard itself, exact resume, runs that never overwrite each other, NaN stops.

use promptir::io::TensorFile;
use promptir::train::{train, TrainArgs};
use std::path::{Path, PathBuf};

fn experiment(dir: &Path) -> PathBuf {
    let p = dir.join("exp.yaml");
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/tiny.yaml");
    std::fs::write(
        &p,
        format!(
            "extends: {}\nname: t\ndata: {{val_fraction: 0.25, workers: 2}}\n\
             train: {{epochs: 2, batch_size: 2, patch_size: 24, val_every: 1, log_every: 1, val_images: 2}}\n",
            tiny.display()
        ),
    )
    .unwrap();
    p
}

pub(crate) struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        crate::common::paired_dataset(&dir.path().join("data"));
        experiment(dir.path());
        Env { dir }
    }
    pub fn args(&self, sets: &[&str]) -> TrainArgs {
        let d = self.dir.path();
        TrainArgs {
            config: Some(d.join("exp.yaml")),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            data: Some(d.join("data")),
            logs_dir: d.join("logs"),
            weights_dir: d.join("weights"),
            progress: false,
            ..TrainArgs::default()
        }
    }
}

pub(crate) fn weights(p: &Path) -> Vec<(String, tch::Tensor)> {
    let f = TensorFile::open(p).unwrap();
    f.header().keys().map(|k| (k.clone(), f.tensor(k).unwrap())).collect()
}

/// Two checkpoints hold the same tensors bit for bit (a run and its resumed twin); returns the
/// first's.
pub(crate) fn assert_same_tensors(a: &Path, b: &Path) -> Vec<(String, tch::Tensor)> {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka}: the resumed run differs");
    }
    a
}

#[test]
fn a_run_leaves_checkpoints_config_metrics_and_tensorboard_curves() {
    let env = Env::new();
    let s = train(&env.args(&[])).unwrap();
    assert_eq!((s.state.epoch, s.state.step, s.state.finished), (2, 8, true)); // 8 train pairs / batch 2
    let run = &s.run;
    for f in ["last.safetensors", "best.safetensors", "train_state.json"] {
        assert!(run.weights.join(f).is_file(), "{f}");
    }
    let loaded =
        promptir::io::load_model(&run.weights.join("best.safetensors"), tch::Device::Cpu).unwrap();
    assert_eq!(loaded.meta.model, promptir::model::ModelConfig::tiny());
    let metrics = std::fs::read_to_string(run.logs.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    assert!(last["val"]["psnr"]["all"].as_f64().unwrap().is_finite());
    assert!(last["val"]["psnr"]["rain"].is_number() && last["val"]["psnr"]["snow"].is_number());
    assert!(std::fs::read_to_string(run.logs.join("config.yaml"))
        .unwrap()
        .contains("patch_size: 24"));

    let out = crate::common::run_python(&[
        "scripts/reference/read_tfevents.py",
        run.logs.to_str().unwrap(),
    ]);
    let tb: serde_json::Value = serde_json::from_str(&out).unwrap();
    for tag in [
        "train/loss",
        "train/loss_l1",
        "train/loss_ssim",
        "train/lr",
        "train/images_per_s",
        "val/loss",
        "val/psnr",
        "val/ssim",
        "val/psnr_rain",
        "val/psnr_snow",
    ] {
        assert!(tb["scalars"][tag].is_array(), "missing scalar {tag}: {out}");
    }
    assert_eq!(tb["scalars"]["train/loss"].as_array().unwrap().len(), 8);
    assert_eq!(tb["scalars"]["val/psnr"].as_array().unwrap().len(), 2);
    let img = &tb["images"]["val/sample_0"][0];
    assert_eq!(
        (img["width"].as_u64(), img["height"].as_u64()),
        (Some(96), Some(32)),
        "degraded | restored | clean"
    );

    // The same experiment again is a new run, never the old folders.
    let s2 = train(&env.args(&["train.epochs=1"])).unwrap();
    assert_ne!(s2.run.name, s.run.name);
    assert!(s2.run.name.starts_with("t_"));
}

#[test]
fn resume_continues_the_same_run_exactly() {
    let env = Env::new();
    let full = train(&TrainArgs { name: Some("full".into()), ..env.args(&["train.max_steps=6"]) })
        .unwrap();
    assert_eq!(full.state.step, 6);
    let half = train(&TrainArgs { name: Some("half".into()), ..env.args(&["train.max_steps=3"]) })
        .unwrap();
    assert_eq!(half.state.step, 3);
    let at_step_3 = weights(&half.run.weights.join("last.safetensors"));
    let resumed = train(&TrainArgs {
        config: None,
        resume: Some("half".into()),
        ..env.args(&["train.max_steps=6"])
    })
    .unwrap();
    assert_eq!(resumed.run.name, "half");
    assert_eq!(resumed.state.step, 6);
    let a = assert_same_tensors(
        &full.run.weights.join("last.safetensors"),
        &resumed.run.weights.join("last.safetensors"),
    );
    // The steps after the resume changed the weights, so the comparison above can fail.
    let moved: f64 = at_step_3
        .iter()
        .zip(&a)
        .map(|((_, x), (_, y))| f64::try_from((x - y).abs().max()).unwrap())
        .fold(0.0, f64::max);
    assert!(moved > 1e-4);
}

#[test]
fn resume_refuses_a_changed_model_and_unknown_runs() {
    let env = Env::new();
    train(&TrainArgs { name: Some("r".into()), ..env.args(&["train.max_steps=2"]) }).unwrap();
    let e =
        train(&TrainArgs { config: None, resume: Some("r".into()), ..env.args(&["model.dim=16"]) })
            .unwrap_err();
    assert!(e.to_string().contains("model.dim: 16 (the run's: 8)"), "{e}");
    let e = train(&TrainArgs { config: None, resume: Some("nope".into()), ..env.args(&[]) })
        .unwrap_err();
    assert!(e.to_string().contains("no run there"), "{e}");
}

#[test]
fn a_diverging_loss_stops_with_the_step_number() {
    let env = Env::new();
    // Epoch 0 warms up at lr 0 and saves; epoch 1 jumps to 1e30 and diverges.
    let e = train(&TrainArgs {
        name: Some("nan".into()),
        ..env.args(&["train.lr=1.0e30", "train.warmup_epochs=1"])
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("NaN/inf at step 6 (epoch 2)"), "{msg}");
    let last = env.dir.path().join("weights/nan/last.safetensors");
    assert!(msg.contains(&format!("the last good checkpoint is {}", last.display())), "{msg}");
    // That checkpoint is the good one: finite, from epoch 1's start.
    let good = promptir::io::load_model(&last, tch::Device::Cpu).unwrap();
    assert_eq!(good.meta.provenance.unwrap().step, 4);
    for (k, v) in good.vs.variables() {
        assert!(bool::try_from(v.isfinite().all()).unwrap(), "{k} is not finite");
    }

    // Weights that overflow without a non-finite loss (lr beyond f32) are never saved either.
    let e = train(&TrainArgs {
        name: Some("inf".into()),
        ..env.args(&["train.lr=1.0e39", "train.max_steps=1"])
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("weights became NaN/inf by step 1") && msg.contains("no checkpoint"),
        "{msg}"
    );
    assert!(!env.dir.path().join("weights/inf/last.safetensors").exists());
}

#[test]
fn bf16_and_fp16_train_on_cpu_and_fp16_resumes_with_its_loss_scale() {
    let env = Env::new();
    let runs = [
        ("bf16", vec!["train.precision=bf16"]),
        ("fp16", vec!["train.precision=fp16"]),
        // The reference optimizer with clipping: unscale, clip, the skip decided on the host.
        (
            "fp16_reference",
            vec!["train.precision=fp16", "train.optimizer=reference", "train.grad_clip=1.0"],
        ),
    ];
    for (p, mut sets) in runs {
        sets.push("train.max_steps=4");
        let s = train(&TrainArgs { name: Some(p.into()), ..env.args(&sets) }).unwrap();
        assert_eq!(s.state.step, 4);
        assert!(s.state.best_psnr.is_some_and(f64::is_finite), "{p}: {:?}", s.state);
        let metrics = promptir::train::read_metrics(&s.run.logs.join("metrics.jsonl")).unwrap();
        assert!(metrics.iter().all(|m| m.train_loss.is_some_and(f64::is_finite)), "{p}");
        // fp16 keeps its scaler in the resume point; no overflow in 4 steps keeps 2^16.
        let scale = s.state.scaler.as_ref().map(|sc| sc.scale);
        assert_eq!(scale, p.starts_with("fp16").then_some(65536.0), "{p}");
    }
    // 2 steps, then a resume to 4: the same weights as the straight fp16 run above.
    let half = train(&TrainArgs {
        name: Some("fp16_half".into()),
        ..env.args(&["train.precision=fp16", "train.max_steps=2"])
    })
    .unwrap();
    assert_eq!(half.state.scaler.as_ref().map(|sc| sc.clean_steps), Some(2));
    let resumed = train(&TrainArgs {
        config: None,
        resume: Some("fp16_half".into()),
        ..env.args(&["train.max_steps=4"])
    })
    .unwrap();
    assert_eq!(resumed.state.scaler.as_ref().map(|sc| sc.clean_steps), Some(4));
    let (a, b) = (
        weights(&env.dir.path().join("weights/fp16/last.safetensors")),
        weights(&resumed.run.weights.join("last.safetensors")),
    );
    for ((ka, ta), (_, tb)) in a.iter().zip(&b) {
        let d = f64::try_from((ta - tb).abs().max()).unwrap();
        assert!(d <= 1e-6, "{ka}: the resumed fp16 run differs by {d:e}");
    }
}
