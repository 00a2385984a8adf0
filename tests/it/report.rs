//! `promptir report` on fabricated run folders: exact table rows, `-` for missing evals, the
//! JSON, seeds grouped into mean ± sample std, the published column, and the three figures
//! (size, and a line per experiment in each).

use crate::common::{ok, promptir, user_error};
use promptir::config::{Experiment, Published};
use promptir::tools::report::{self, ReportOptions, FIGURE_SIZE};
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
        "format_version": 1,
        "setup": {"weights": weights, "runs": [], "models": weights.len(), "ema": [],
                  "tta": if tta { "auto" } else { "off" },
                  "tta_views": if tta { vec!["id", "hflip"] } else { vec!["id"] },
                  "tile": null, "data": "data", "split": split, "split_params": null,
                  "count": 20, "device": "Cpu"},
    })
    .to_string()
}

fn fabricate(root: &Path, f: &Fake) -> PathBuf {
    fabricate_seeded(root, f, 42, None)
}

/// The training loss fabricated for an epoch whose validation loss is `loss`.
fn train_loss(loss: f64) -> f64 {
    1.25 * loss
}

fn fabricate_seeded(root: &Path, f: &Fake, seed: u64, published: Option<(f64, &str)>) -> PathBuf {
    let dir = root.join("logs").join(f.name);
    let mut e = Experiment { name: f.name.into(), seed, ..Experiment::default() };
    e.published = published.map(|(psnr, label)| Published { psnr, label: label.into() });
    e.train.patch_size = f.patch;
    e.train.batch_size = f.batch;
    e.train.epochs = f.epochs;
    e.train.warmup_epochs = 0.0;
    e.loss.set_weight("ssim", f.ssim);
    e.loss.set_weight("perceptual", f.perceptual);
    write(&dir.join("config.yaml"), &e.to_yaml());
    let lines: Vec<String> = f
        .curve
        .iter()
        .map(|&(epoch, psnr, loss)| {
            json!({"epoch": epoch, "step": epoch * 10, "lr": 1e-3, "train_loss": train_loss(loss),
                   "val": {"count": 4, "psnr": {"all": psnr, "rain": psnr, "snow": psnr},
                           "ssim": {"all": 0.8}, "psnr_input": {"all": 18.0},
                           "ssim_input": {"all": 0.6}, "loss": loss},
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
    for fig in ["fig1_train_loss.png", "fig2_val_loss.png", "fig3_val_psnr.png"] {
        assert!(md.contains(&format!("]({fig})")), "{fig}");
    }
    // No row carries a published number, so there is no column for it.
    assert!(!md.contains("report's public test"), "{md}");
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
    // Figures with no data still render (a "no data" panel), at the full size.
    for fig in ["fig1_train_loss.png", "fig2_val_loss.png", "fig3_val_psnr.png"] {
        let png = image::open(d.path().join("results").join(fig)).unwrap();
        assert_eq!((png.width() as usize, png.height() as usize), FIGURE_SIZE, "{fig}");
    }
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
fn each_figure_has_a_line_per_run() {
    let d = tempfile::tempdir().unwrap();
    let runs = ablation(d.path());
    report::report(&opts(d.path(), runs)).unwrap();
    let (w, h) = FIGURE_SIZE;
    for fig in ["fig1_train_loss.png", "fig2_val_loss.png", "fig3_val_psnr.png"] {
        let img = image::open(d.path().join("results").join(fig)).unwrap().to_rgb8();
        assert_eq!((img.width() as usize, img.height() as usize), (w, h), "{fig}");
        for c in &promptir::tools::plot::PALETTE[..3] {
            // A legend entry alone is ~150 pixels; a 9- or 12-point line across the panel is
            // thousands.
            let n = count_color(&img, 0, w as u32, *c, 8);
            assert!(n > 1000, "{fig}: colour {c:?}: {n} pixels");
        }
        // Colours of runs that do not exist are absent.
        assert_eq!(count_color(&img, 0, w as u32, promptir::tools::plot::PALETTE[3], 8), 0);
        // Text: dark pixels (title, ticks, labels).
        assert!(count_color(&img, 0, w as u32, promptir::tools::plot::BLACK, 40) > 500, "{fig}");
    }
}

/// l1_only over seeds 42..44 and combined_loss over 42, 43 (the second without evals), both
/// carrying their published numbers; patch160_bs4 once, without; the ensemble of
/// combined_loss_s42 and patch160_bs4.
fn seeded(root: &Path) -> Vec<PathBuf> {
    let l1 = "course report, public test set (Codabench), L1 + TTA";
    let comb = "course report, public test set (Codabench), combined loss";
    let mut dirs = Vec::new();
    for (k, (name, test, tta)) in
        [("l1_only_s42", 22.7, 23.0), ("l1_only_s43", 22.9, 23.1), ("l1_only_s44", 23.2, 23.5)]
            .into_iter()
            .enumerate()
    {
        let f = Fake {
            name,
            patch: 224,
            batch: 2,
            epochs: 12,
            ssim: 0.0,
            perceptual: 0.0,
            curve: curve(23.0 + 0.1 * k as f64, 0.06, 12),
            test: Some(test),
            tta: Some(tta),
        };
        dirs.push(fabricate_seeded(root, &f, 42 + k as u64, Some((32.02, l1))));
    }
    for (k, name) in ["combined_loss_s42", "combined_loss_s43"].into_iter().enumerate() {
        let f = Fake {
            name,
            patch: 224,
            batch: 2,
            epochs: 12,
            ssim: 0.2,
            perceptual: 0.05,
            curve: curve(23.5, 0.1, 12),
            test: (k == 0).then_some(23.25),
            tta: (k == 0).then_some(23.5),
        };
        dirs.push(fabricate_seeded(root, &f, 42 + k as u64, Some((32.64, comb))));
    }
    let f = Fake {
        name: "patch160_bs4",
        patch: 160,
        batch: 4,
        epochs: 12,
        ssim: 0.2,
        perceptual: 0.05,
        curve: curve(23.3, 0.12, 12),
        test: Some(23.1),
        tta: Some(23.38),
    };
    dirs.push(fabricate(root, &f));
    let members = vec![
        "w/combined_loss_s42/best.safetensors".into(),
        "w/patch160_bs4/best.safetensors".into(),
    ];
    write(&root.join("evals/ensemble_test.json"), &eval_json(&members, false, "test", 23.4));
    write(&root.join("evals/ensemble_test_tta.json"), &eval_json(&members, true, "test", 23.61));
    dirs
}

#[test]
fn seeds_of_one_experiment_share_a_row_with_mean_and_sample_std() {
    let d = tempfile::tempdir().unwrap();
    let runs = seeded(d.path());
    let s = report::report(&opts(d.path(), runs)).unwrap();
    let md = std::fs::read_to_string(d.path().join("results/ablation.md")).unwrap();
    // l1_only (python, statistics.mean / stdev): best val 22.8364 + 0.1 k at epoch 12 -> 22.9364
    // ± 0.1; test 22.7, 22.9, 23.2 -> 22.9333 ± 0.2517; TTA 23.0, 23.1, 23.5 -> 23.2 ± 0.2646,
    // gains 0.3, 0.2, 0.3 -> +0.2667. combined_loss: one seed of two has evals ([n=1]); its
    // +ensemble compares with the member's own TTA (23.61 - 23.5).
    assert_eq!(table(&md), [
        "| experiment                                 | loss                     |   patch | batch | epochs | best val PSNR |    test PSNR |                 +TTA |     +ensemble | report's public test (other split) |",
        "| :----------------------------------------- | :----------------------- | ------: | ----: | -----: | ------------: | -----------: | -------------------: | ------------: | ---------------------------------: |",
        "| l1_only (3 seeds)                          | L1                       |     224 |     2 |     12 |  22.94 ± 0.10 | 22.93 ± 0.25 | 23.20 ± 0.26 (+0.27) |             - |                              32.02 |",
        "| combined_loss (2 seeds)                    | L1 + 0.2 SSIM + 0.05 VGG |     224 |     2 |     12 |  23.34 ± 0.00 |  23.25 [n=1] |  23.50 [n=1] (+0.25) | 23.61 (+0.11) |                              32.64 |",
        "| patch160_bs4                               | L1 + 0.2 SSIM + 0.05 VGG |     160 |     4 |     12 | 23.14 (ep 12) |        23.10 |        23.38 (+0.28) | 23.61 (+0.23) |                                    |",
        "| ensemble: combined_loss_s42 + patch160_bs4 | L1 + 0.2 SSIM + 0.05 VGG | 224/160 |   2/4 |     12 |             - |        23.40 |        23.61 (+0.21) |             - |                              32.73 |",
    ]);
    assert!(md.contains("mean ± sample standard deviation over the seeds"), "{md}");
    assert!(md.contains("l1_only: 32.02 dB (course report, public test set (Codabench), L1 + TTA)"));
    assert!(md.contains(
        "ensemble: 32.73 dB (course report, public test set (Codabench), two-model ensemble)"
    ));

    let x = &s.ablation.experiments;
    assert_eq!(x.len(), 3);
    assert_eq!(x[0].runs, ["l1_only_s42", "l1_only_s43", "l1_only_s44"]);
    let text = std::fs::read_to_string(d.path().join("results/ablation.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let l1 = &j["experiments"][0];
    assert_eq!(l1["name"], "l1_only");
    assert_eq!(l1["seeds"], json!([42, 43, 44]));
    assert_eq!(l1["eval_psnr"]["values"], json!([22.7, 22.9, 23.2]));
    assert_eq!(l1["eval_psnr"]["n"], 3);
    let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
    assert!(close(&l1["eval_psnr"]["mean"], 22.933333333333334), "{l1}");
    assert!(close(&l1["eval_psnr"]["std"], 0.25166114784235877), "{l1}");
    assert!(close(&l1["eval_tta_psnr"]["std"], 0.2645751311064586), "{l1}");
    assert!(close(&l1["tta_gain"]["mean"], 0.26666666666666666), "{l1}");
    assert_eq!(l1["published"]["psnr"], 32.02);
    let comb = &j["experiments"][1];
    assert_eq!(comb["eval_psnr"]["values"], json!([23.25, null]));
    assert_eq!(
        (comb["eval_psnr"]["n"].as_u64(), comb["eval_psnr"]["std"].is_null()),
        (Some(1), true)
    );
    assert!(j["experiments"][2]["published"].is_null());
    assert_eq!(j["runs"].as_array().unwrap().len(), 6);
    assert_eq!(j["runs"][1]["config"]["seed"], 43);

    // One line per experiment (not per run) in each figure, the mean over the seeds.
    let figs = report::figures(&s.ablation);
    let psnr = &figs[2].1.series;
    assert_eq!(psnr.len(), 3);
    assert_eq!(psnr[0].name, "l1_only (mean of 3 seeds)");
    let (e, v) = psnr[0].points[11];
    assert_eq!(e, 12.0);
    // Mean of 23.0 + 0.1 k - 6 exp(-4) + 0.1 sin(12) over k = 0, 1, 2.
    let want = 23.1 - 6.0 * (-4.0f64).exp() + 0.1 * 12f64.sin();
    assert!((v - want).abs() < 1e-9, "{v} {want}");
    // Training loss: 1.25 x the validation loss of the same epoch.
    let (_, tl) = figs[0].1.series[2].points[0];
    assert!((tl - 1.25 * 0.12 * (1.0 + 2.0 * (-1.0f64 / 3.0).exp())).abs() < 1e-12, "{tl}");
    for (fig, _) in &figs {
        let img = image::open(d.path().join("results").join(fig)).unwrap().to_rgb8();
        let w = img.width();
        for c in &promptir::tools::plot::PALETTE[..3] {
            assert!(count_color(&img, 0, w, *c, 8) > 1000, "{fig}: colour {c:?}");
        }
        assert_eq!(count_color(&img, 0, w, promptir::tools::plot::PALETTE[3], 8), 0, "{fig}");
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
    assert!(e.contains("eval_test_tta.json") && e.contains("setup.tta is off"), "{e}");
    write(&runs[0].join("eval_test_tta.json"), &eval_json(&w, true, "val", 22.9));
    let e = report::report(&opts(d.path(), runs.clone())).unwrap_err().to_string();
    assert!(e.contains("setup.split is \"val\""), "{e}");
    // Scores of another convention.
    let mut rgb: serde_json::Value =
        serde_json::from_str(&eval_json(&w, true, "test", 22.9)).unwrap();
    rgb["setup"]["metric"] = "rgb".into();
    write(&runs[0].join("eval_test_tta.json"), &rgb.to_string());
    let e = report::report(&opts(d.path(), runs.clone())).unwrap_err().to_string();
    assert!(e.contains("setup.metric is \"rgb\"") && e.contains("without --metric"), "{e}");
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
    let out = promptir()
        .arg("report")
        .args(&runs)
        .args(["--output", d.path().join("out").to_str().unwrap()])
        .args(["--evals", d.path().join("evals").to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = ok(out);
    assert!(stdout.starts_with("3 run(s), 1 ensemble(s): wrote "), "{stdout}");
    for f in [
        "ablation.md",
        "ablation.json",
        "fig1_train_loss.png",
        "fig2_val_loss.png",
        "fig3_val_psnr.png",
    ] {
        assert!(d.path().join("out").join(f).is_file(), "{f}");
    }
    let bad = d.path().join("weights/l1_only");
    std::fs::create_dir_all(&bad).unwrap();
    let err = user_error(&promptir().arg("report").arg(&bad).output().unwrap());
    assert!(err.contains("no config.yaml; pass run log folders"), "{err}");
}
