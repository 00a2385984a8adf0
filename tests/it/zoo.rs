//! Every tool on every network beside PromptIR, at tiny size: training in each precision with
//! EMA and accumulation, exact resume, then eval with TTA, predict with an ensemble that mixes
//! architectures (PromptIR pads to 8, NAFNet pads itself) and with tiling, inspect and report.

use crate::common::{checkpoint_at, ok, on_cpu, paired_dataset, promptir, repo};
use crate::train::assert_same_tensors;
use promptir::infer::Restore;
use promptir::io::{load_model, load_model_choosing, to_u8_chw, EmaChoice, RgbImage};
use promptir::model::Arch;
use promptir::train::{train, TrainArgs};
use std::path::Path;
use tch::Device;

const ARCHS: [Arch; 4] = [Arch::Restormer, Arch::Nafnet, Arch::Adair, Arch::MoceIr];

/// `tiny_<arch>.yaml` with a 4-step schedule, EMA and two micro-batches per step.
fn experiment(dir: &Path, arch: Arch) -> std::path::PathBuf {
    let p = dir.join(format!("{}.yaml", arch.name()));
    let base = repo().join(format!("experiments/tiny_{}.yaml", arch.name()));
    let body = format!(
        "extends: {}\nname: {}\ndata: {{val_fraction: 0.25, workers: 1}}\n\
         train: {{epochs: 2, batch_size: 2, patch_size: 32, val_every: 1, log_every: 1, val_images: 0,\n\
         accumulate: 2, ema: {{decay: 0.9, start_step: 0}}}}\n",
        base.display(),
        arch.name()
    );
    std::fs::write(&p, body).unwrap();
    p
}

fn args(dir: &Path, arch: Arch, name: &str, sets: &[&str]) -> TrainArgs {
    TrainArgs {
        config: Some(experiment(dir, arch)),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        data: Some(dir.join("data")),
        logs_dir: dir.join("logs"),
        weights_dir: dir.join("weights"),
        name: Some(name.into()),
        progress: false,
        ..TrainArgs::default()
    }
}

#[test]
fn every_network_trains_resumes_exactly_and_restores_through_every_tool() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    paired_dataset(&dir.join("data"));
    let promptir_ckpt = checkpoint_at(dir, "promptir.safetensors", 5);
    let mut runs = Vec::new();
    for arch in ARCHS {
        let n = arch.name();
        // Reduced precision: finite losses, as in fp32.
        for precision in ["bf16", "fp16"] {
            let set = format!("train.precision={precision}");
            let s =
                train(&args(dir, arch, &format!("{n}_{precision}"), &["train.max_steps=2", &set]))
                    .unwrap_or_else(|e| panic!("{n} {precision}: {e}"));
            assert!(
                s.state.step == 2 && s.state.best_psnr.is_some_and(f64::is_finite),
                "{n} {precision}"
            );
        }
        // Exact resume: 2 steps then 2 more equal 4 at once, bit for bit (weights and EMA).
        let full = train(&args(dir, arch, &format!("{n}_full"), &["train.max_steps=4"])).unwrap();
        train(&args(dir, arch, &format!("{n}_half"), &["train.max_steps=2"])).unwrap();
        let resumed = train(&TrainArgs {
            config: None,
            resume: Some(format!("{n}_half")),
            ..args(dir, arch, "unused", &["train.max_steps=4"])
        })
        .unwrap();
        assert_eq!(resumed.state.step, 4);
        assert_same_tensors(
            &full.run.weights.join("last.safetensors"),
            &resumed.run.weights.join("last.safetensors"),
        );
        let last = full.run.weights.join("last.safetensors");
        assert_eq!(load_model(&last, Device::Cpu).unwrap().meta.model.arch(), arch);

        // eval with TTA on the held-out pairs.
        let data = dir.join("data");
        let json = ok(on_cpu(
            "eval",
            &[
                &"--weights",
                &last,
                &"--data",
                &data,
                &"--tta",
                &"8",
                &"--format",
                &"json",
                &"--quiet",
            ],
        ));
        let j: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(j["psnr"]["all"].as_f64().is_some_and(f64::is_finite), "{n}: {json}");

        // predict: an ensemble with PromptIR on an odd size is the mean of the two restores (TTA off:
        // its default follows the training flips; the run's moving average, as predict takes it).
        let inp = dir.join(format!("in_{n}"));
        std::fs::create_dir_all(&inp).unwrap();
        let img = RgbImage {
            width: 37,
            height: 27,
            hwc: (0..37 * 27 * 3).map(|i| (i * 7 % 251) as u8).collect(),
        };
        img.save_png(&inp.join("0.png")).unwrap();
        let png = dir.join(format!("png_{n}"));
        let npz = dir.join(format!("{n}.npz"));
        ok(on_cpu(
            "predict",
            &[
                &"--weights",
                &last,
                &"--weights",
                &promptir_ckpt,
                &"--input",
                &inp,
                &"-o",
                &npz,
                &"--png-dir",
                &png,
            ],
        ));
        let x = img.to_tensor().unsqueeze(0);
        let (mine, theirs) = (
            load_model_choosing(&last, Device::Cpu, EmaChoice::Auto).unwrap(),
            load_model(&promptir_ckpt, Device::Cpu).unwrap(),
        );
        let mean = tch::no_grad(|| (mine.model.restore(&x) + theirs.model.restore(&x)) / 2.0);
        let got = RgbImage::load(&png.join("0.png")).unwrap();
        assert!(
            got.hwc == hwc(&to_u8_chw(&mean.squeeze_dim(0)), 37, 27),
            "{n}: not the ensemble mean"
        );
        // Tiled: runs and keeps the size.
        let tiled = dir.join(format!("tiled_{n}"));
        ok(on_cpu(
            "predict",
            &[
                &"--weights",
                &last,
                &"--input",
                &inp,
                &"-o",
                &dir.join(format!("t_{n}.npz")),
                &"--png-dir",
                &tiled,
                &"--tile",
                &"16",
                &"--tile-overlap",
                &"4",
            ],
        ));
        let t = RgbImage::load(&tiled.join("0.png")).unwrap();
        assert_eq!((t.width, t.height), (37, 27));

        // inspect names the arch and its config.
        let shown = ok(promptir().arg("inspect").arg(&last).output().unwrap());
        assert!(shown.contains(&format!("\"arch\":\"{n}\"")), "{shown}");
        runs.push(full.run.logs.clone());
    }
    // report: one row per network, labelled with it.
    let out = dir.join("report");
    ok(promptir().arg("report").args(&runs).arg("--output").arg(&out).output().unwrap());
    let table = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    for label in ["the tiny Restormer", "the tiny NAFNet", "the tiny AdaIR"] {
        assert!(table.contains(label), "{label}: {table}");
    }
}

/// CHW bytes to HWC.
fn hwc(chw: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; chw.len()];
    for c in 0..3 {
        for i in 0..w * h {
            out[i * 3 + c] = chw[c * w * h + i];
        }
    }
    out
}
