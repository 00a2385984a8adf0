//! `promptir report` on fabricated run folders: exact table rows, `-` for missing evals, the
//! JSON, and the curves PNG (size, and lines in both panels).

use promptir::config::Experiment;
use promptir::tools::report::{self, ReportOptions, CURVES_SIZE};
use serde_json::json;
use std::path::{Path, PathBuf};

struct Fake {
    name: &'static str,
    patch: usize,
    batch: usize,
    epochs: usize,
    ssim: f64,
    perceptual: f64,
    /// (epoch, val psnr, val loss)
    curve: Vec<(usize, f64, f64)>,
    test: Option<f64>,
    tta: Option<f64>,
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn eval_json(weights: &[String], tta: bool, split: &str, all: f64) -> String {
    json!({
        "count": 20,
        "psnr": {"all": all, "rain": all - 0.5, "snow": all + 0.5},
        "ssim": {"all": 0.81, "rain": 0.8, "snow": 0.82},
        "psnr_input": {"all": 18.0}, "ssim_input": {"all": 0.6}, "loss": null, "images": [],
        "setup": {"weights": weights, "tta": tta, "split": split, "count": 20},
    })
    .to_string()
}

fn fabricate(root: &Path, f: &Fake) -> PathBuf {
    let dir = root.join("logs").join(f.name);
    let mut e = Experiment { name: f.name.into(), ..Experiment::default() };
    e.train.patch_size = f.patch;
    e.train.batch_size = f.batch;
    e.train.epochs = f.epochs;
    e.train.warmup_epochs = 0.0;
    e.loss.ssim = f.ssim;
    e.loss.perceptual = f.perceptual;
    write(&dir.join("config.yaml"), &e.to_yaml());
    let lines: Vec<String> = f
        .curve
        .iter()
        .map(|&(epoch, psnr, loss)| {
            json!({"epoch": epoch, "step": epoch * 10, "lr": 1e-3,
                   "val": {"count": 4, "psnr": {"all": psnr, "rain": psnr, "snow": psnr},
                           "ssim": {"all": 0.8}, "loss": loss},
                   "epoch_seconds": 1.5})
            .to_string()
        })
        .collect();
    write(&dir.join("metrics.jsonl"), &(lines.join("\n") + "\n"));
    let w = vec![format!("weights/{}/best.safetensors", f.name)];
    if let Some(v) = f.test {
        write(&dir.join("eval_test.json"), &eval_json(&w, false, "test", v));
    }
    if let Some(v) = f.tta {
        write(&dir.join("eval_test_tta.json"), &eval_json(&w, true, "test", v));
    }
    dir
}

fn curve(top: f64, loss0: f64, epochs: usize) -> Vec<(usize, f64, f64)> {
    (1..=epochs)
        .map(|e| {
            let t = (-(e as f64) / 3.0).exp();
            (e, top - 6.0 * t + 0.1 * (e as f64).sin(), loss0 * (1.0 + 2.0 * t))
        })
        .collect()
}

/// Three runs like the ablation, the L1 one without a TTA eval, the last one stopped early,
/// and an ensemble of the last two.
fn ablation(root: &Path) -> Vec<PathBuf> {
    let runs = [
        Fake {
            name: "l1_only",
            patch: 224,
            batch: 2,
            epochs: 12,
            ssim: 0.0,
            perceptual: 0.0,
            curve: curve(23.0, 0.06, 12),
            test: Some(22.7),
            tta: None,
        },
        Fake {
            name: "combined_loss",
            patch: 224,
            batch: 2,
            epochs: 12,
            ssim: 0.2,
            perceptual: 0.05,
            curve: curve(23.5, 0.1, 12),
            test: Some(23.254),
            tta: Some(23.5),
        },
        Fake {
            name: "patch160_bs4",
            patch: 160,
            batch: 4,
            epochs: 12,
            ssim: 0.2,
            perceptual: 0.05,
            curve: curve(23.3, 0.12, 9),
            test: Some(23.1),
            tta: Some(23.38),
        },
    ];
    let dirs = runs.iter().map(|f| fabricate(root, f)).collect();
    let members =
        vec!["w/combined_loss/best.safetensors".into(), "w/patch160_bs4/best.safetensors".into()];
    write(&root.join("evals/ensemble_test.json"), &eval_json(&members, false, "test", 23.4));
    write(&root.join("evals/ensemble_test_tta.json"), &eval_json(&members, true, "test", 23.61));
    dirs
}

fn opts(root: &Path, runs: Vec<PathBuf>) -> ReportOptions {
    ReportOptions {
        runs,
        output: root.join("results"),
        evals: Some(root.join("evals")),
        split: promptir::eval::SplitName::Test,
        notes: vec!["A note from the script.".into()],
    }
}

fn table(md: &str) -> Vec<&str> {
    md.lines().filter(|l| l.starts_with('|')).collect()
}

#[test]
fn table_rows_and_numbers_are_exact() {
    let d = tempfile::tempdir().unwrap();
    let runs = ablation(d.path());
    report::report(&opts(d.path(), runs)).unwrap();
    let md = std::fs::read_to_string(d.path().join("results/ablation.md")).unwrap();
    // best val: max over epochs of top - 6 exp(-e/3) + 0.1 sin(e): 22.8364 and 23.3364 at
    // epoch 12, 23.0425 at epoch 9 (python). Gains: 23.5 - 23.254, 23.61 - 23.5, 23.61 - 23.38,
    // 23.61 - 23.4.
    assert_eq!(table(&md), [
        "| experiment                             | loss                     |   patch | batch | epochs | best val PSNR | test PSNR |          +TTA |     +ensemble |",
        "| :------------------------------------- | :----------------------- | ------: | ----: | -----: | ------------: | --------: | ------------: | ------------: |",
        "| l1_only                                | L1                       |     224 |     2 |     12 | 22.84 (ep 12) |     22.70 |             - |             - |",
        "| combined_loss                          | L1 + 0.2 SSIM + 0.05 VGG |     224 |     2 |     12 | 23.34 (ep 12) |     23.25 | 23.50 (+0.25) | 23.61 (+0.11) |",
        "| patch160_bs4                           | L1 + 0.2 SSIM + 0.05 VGG |     160 |     4 |   9/12 |  23.04 (ep 9) |     23.10 | 23.38 (+0.28) | 23.61 (+0.23) |",
        "| ensemble: combined_loss + patch160_bs4 | L1 + 0.2 SSIM + 0.05 VGG | 224/160 |   2/4 |     12 |             - |     23.40 | 23.61 (+0.21) |             - |",
    ]);
    assert!(md.contains("![validation curves](curves.png)"));
    assert!(md.contains("- Network: the paper's PromptIR (dim 48, blocks [4, 6, 6, 8]).\n"));
    assert!(md.contains("- test set: 20 images; the degraded inputs themselves score 18.00 dB.\n- A note from the script.\n"));
}

#[test]
fn missing_evals_and_curves_show_a_dash() {
    let d = tempfile::tempdir().unwrap();
    let f = Fake {
        name: "fresh",
        patch: 64,
        batch: 8,
        epochs: 6,
        ssim: 0.2,
        perceptual: 0.0,
        curve: vec![],
        test: None,
        tta: None,
    };
    let dir = fabricate(d.path(), &f);
    std::fs::remove_file(dir.join("metrics.jsonl")).unwrap();
    // No evals folder at all.
    let s = report::report(&opts(d.path(), vec![dir])).unwrap();
    assert!(s.ablation.ensembles.is_empty());
    let md = std::fs::read_to_string(d.path().join("results/ablation.md")).unwrap();
    assert_eq!(
        table(&md)[2],
        "| fresh      | L1 + 0.2 SSIM |    64 |     8 |    0/6 |             - |         - |    - |         - |"
    );
    // Curves with no data still render (a "no data" panel), at the full size.
    let png = image::open(d.path().join("results/curves.png")).unwrap();
    assert_eq!((png.width() as usize, png.height() as usize), CURVES_SIZE);
}

#[test]
fn json_holds_the_same_numbers() {
    let d = tempfile::tempdir().unwrap();
    let runs = ablation(d.path());
    report::report(&opts(d.path(), runs)).unwrap();
    let text = std::fs::read_to_string(d.path().join("results/ablation.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["split"], "test");
    let runs = j["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[0]["name"], "l1_only");
    assert_eq!(runs[0]["loss"], "L1");
    assert_eq!(runs[0]["eval"]["psnr"]["all"], 22.7);
    assert!(runs[0]["eval_tta"].is_null() && runs[0]["ensemble_psnr"].is_null());
    assert_eq!(runs[1]["eval_tta"]["psnr"]["rain"], 23.0);
    assert_eq!(runs[1]["ensemble_psnr"], 23.61);
    assert_eq!(runs[2]["epochs_done"], 9);
    assert_eq!(runs[2]["best_val_epoch"], 9);
    assert_eq!(runs[2]["curve"].as_array().unwrap().len(), 9);
    assert_eq!(runs[2]["config"]["train"]["patch_size"], 160);
    let e = &j["ensembles"][0];
    assert_eq!(e["name"], "ensemble");
    assert_eq!(e["members"], json!(["combined_loss", "patch160_bs4"]));
    assert_eq!(e["eval"]["psnr"]["all"], 23.4);
    assert_eq!(e["eval_tta"]["psnr"]["all"], 23.61);
    assert_eq!(j["notes"].as_array().unwrap().last().unwrap(), "A note from the script.");
}

/// Pixels within `tol` of `c` in columns `x0..x1`.
fn count_color(img: &image::RgbImage, x0: u32, x1: u32, c: [u8; 3], tol: i32) -> usize {
    img.enumerate_pixels()
        .filter(|(x, _, p)| {
            (x0..x1).contains(x) && (0..3).all(|i| (i32::from(p[i]) - i32::from(c[i])).abs() <= tol)
        })
        .count()
}

#[test]
fn curves_have_a_line_per_run_in_each_panel() {
    let d = tempfile::tempdir().unwrap();
    let runs = ablation(d.path());
    report::report(&opts(d.path(), runs)).unwrap();
    let img = image::open(d.path().join("results/curves.png")).unwrap().to_rgb8();
    let (w, h) = CURVES_SIZE;
    assert_eq!((img.width() as usize, img.height() as usize), (w, h));
    let half = w as u32 / 2;
    for (x0, x1) in [(0, half), (half, w as u32)] {
        for c in &promptir::tools::plot::PALETTE[..3] {
            // A legend entry alone is ~150 pixels; a 12-point line across the panel is thousands.
            let n = count_color(&img, x0, x1, *c, 8);
            assert!(n > 1000, "colour {c:?} in columns {x0}..{x1}: {n} pixels");
        }
        // Colours of runs that do not exist are absent.
        assert_eq!(count_color(&img, x0, x1, promptir::tools::plot::PALETTE[3], 8), 0);
        // Text: dark pixels in the panel (title, ticks, labels).
        assert!(count_color(&img, x0, x1, promptir::tools::plot::BLACK, 40) > 500);
    }
}

#[test]
fn eval_files_must_match_their_names() {
    let d = tempfile::tempdir().unwrap();
    let runs = ablation(d.path());
    let w = vec!["weights/l1_only/best.safetensors".to_string()];
    // A TTA file that says it ran without TTA.
    write(&runs[0].join("eval_test_tta.json"), &eval_json(&w, false, "test", 22.9));
    let e = report::report(&opts(d.path(), runs.clone())).unwrap_err().to_string();
    assert!(e.contains("eval_test_tta.json") && e.contains("setup.tta is false"), "{e}");
    write(&runs[0].join("eval_test_tta.json"), &eval_json(&w, true, "val", 22.9));
    let e = report::report(&opts(d.path(), runs.clone())).unwrap_err().to_string();
    assert!(e.contains("setup.split is \"val\""), "{e}");
    write(&runs[0].join("eval_test_tta.json"), "{\"psnr\": 3}");
    let e = report::report(&opts(d.path(), runs.clone())).unwrap_err().to_string();
    assert!(e.contains("not the output of `promptir eval --format json`"), "{e}");
    std::fs::remove_file(runs[0].join("eval_test_tta.json")).unwrap();
    // Ensemble files that disagree on their members.
    let other = vec!["w/l1_only/best.safetensors".into(), "w/patch160_bs4/best.safetensors".into()];
    write(&d.path().join("evals/ensemble_test.json"), &eval_json(&other, false, "test", 23.0));
    let e = report::report(&opts(d.path(), runs)).unwrap_err().to_string();
    assert!(e.contains("ensemble_test"), "{e}");
}

#[test]
fn the_cli_writes_the_report_and_rejects_weights_folders() {
    let d = tempfile::tempdir().unwrap();
    let runs = ablation(d.path());
    let bin = env!("CARGO_BIN_EXE_promptir");
    let out = std::process::Command::new(bin)
        .arg("report")
        .args(&runs)
        .args(["--output", d.path().join("out").to_str().unwrap()])
        .args(["--evals", d.path().join("evals").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("3 run(s), 1 ensemble(s): wrote "), "{stdout}");
    for f in ["ablation.md", "ablation.json", "curves.png"] {
        assert!(d.path().join("out").join(f).is_file(), "{f}");
    }
    let bad = d.path().join("weights/l1_only");
    std::fs::create_dir_all(&bad).unwrap();
    let out = std::process::Command::new(bin).arg("report").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no config.yaml; pass run log folders"), "{err}");
}
