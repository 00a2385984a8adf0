//! `promptir eval` and `promptir visualize` end to end: the binary on tiny random checkpoints,
//! its numbers against scikit-image on the PNGs `promptir predict` writes for the same images
//! (scripts/reference/eval_ref.py), the val split against training's own held-out set, and the
//! user errors.

use promptir::data::{scan_pairs, split};
use promptir::io::RgbImage;
use promptir::io::{panel, stack};
use promptir::train::{train, TrainArgs};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::common::{checkpoint_at, copy_dir, ok, on_cpu, user_error};

/// (name, height, width, type) of the synthetic test set; sizes not multiples of 8 on purpose.
const TEST: [(&str, usize, usize, &str); 5] = [
    ("0.png", 24, 40, "rain"),
    ("1.png", 25, 37, "snow"),
    ("2.png", 19, 33, "rain"),
    ("3.png", 32, 32, "snow"),
    ("10.png", 16, 24, "rain"),
];

/// `root/test/{degraded,clean}` and `types.json` like `promptir synth` writes: smooth noisy
/// targets, degraded by bright streaks.
fn test_set(root: &Path) {
    for d in ["test/degraded", "test/clean"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut types = serde_json::Map::new();
    for (name, h, w, kind) in TEST {
        let mut clean = vec![0u8; h * w * 3];
        let mut deg = vec![0u8; h * w * 3];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let v = ((x * 6 + y * 4 + c * 50) % 180 + (state >> 60) as usize) as u8 + 30;
                    let i = (y * w + x) * 3 + c;
                    clean[i] = v;
                    deg[i] = if (x + 2 * y) % 7 == 0 { v.saturating_add(80) } else { v };
                }
            }
        }
        RgbImage { width: w, height: h, hwc: clean }
            .save_png(&root.join("test/clean").join(name))
            .unwrap();
        RgbImage { width: w, height: h, hwc: deg }
            .save_png(&root.join("test/degraded").join(name))
            .unwrap();
        types.insert(name.into(), kind.into());
    }
    std::fs::write(root.join("test/types.json"), Value::Object(types).to_string()).unwrap();
}

fn weights_args(w: &[&PathBuf]) -> Vec<PathBuf> {
    w.iter().flat_map(|p| [PathBuf::from("--weights"), p.to_path_buf()]).collect()
}

fn refs(v: &[PathBuf]) -> Vec<&dyn AsRef<OsStr>> {
    v.iter().map(|p| p as &dyn AsRef<OsStr>).collect()
}

fn eval_json(args: &[PathBuf]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--format", "json"].map(PathBuf::from));
    serde_json::from_str(&ok(on_cpu("eval", &refs(&a)))).unwrap()
}

fn names(j: &Value) -> Vec<String> {
    j["images"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().into()).collect()
}

#[test]
fn test_split_numbers_equal_skimage_on_the_predict_pngs() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    test_set(&root);
    let a = checkpoint_at(t.path(), "a.safetensors", 1);
    let b = checkpoint_at(t.path(), "b.safetensors", 2);
    let mut max_diff = 0f64;
    for (i, (weights, tta)) in [(vec![&a, &b], false), (vec![&a], true)].into_iter().enumerate() {
        let png = t.path().join(format!("png{i}"));
        let mut common_args = weights_args(&weights);
        if tta {
            common_args.extend(["--tta", "8"].map(PathBuf::from));
        }
        let mut p = common_args.clone();
        p.extend([
            "--input".into(),
            root.join("test/degraded"),
            "--output".into(),
            t.path().join("pred.npz"),
            "--png-dir".into(),
            png.clone(),
        ]);
        ok(on_cpu("predict", &refs(&p)));

        let mut e = common_args.clone();
        e.extend(["--data".into(), root.clone(), "--split".into(), "test".into()]);
        let file = t.path().join(format!("eval{i}.json"));
        let mut ej = e.clone();
        ej.extend(["--output".into(), file.clone()]);
        let got = eval_json(&ej);
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(got, written, "--output holds what --format json prints");

        let d = |s: &str| root.join(s).to_str().unwrap().to_string();
        let want: Value = serde_json::from_str(&crate::common::run_python(&[
            "scripts/reference/eval_ref.py",
            "--pred",
            png.to_str().unwrap(),
            "--degraded",
            &d("test/degraded"),
            "--clean",
            &d("test/clean"),
            "--types",
            &d("test/types.json"),
        ]))
        .unwrap();
        for metric in ["psnr", "ssim", "psnr_input", "ssim_input"] {
            let (g, w) = (got[metric].as_object().unwrap(), want[metric].as_object().unwrap());
            assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>(), "{metric}");
            for (k, v) in w {
                let diff = (g[k].as_f64().unwrap() - v.as_f64().unwrap()).abs();
                assert!(diff < 1e-6, "{metric}/{k}: {} vs {v}", g[k]);
                max_diff = max_diff.max(diff);
            }
        }
        let by_name: BTreeMap<&str, &Value> = got["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["name"].as_str().unwrap(), i))
            .collect();
        for w in want["images"].as_array().unwrap() {
            let g = by_name[w["name"].as_str().unwrap()];
            assert_eq!(g["kind"], w["kind"]);
            for m in ["psnr", "ssim", "psnr_input", "ssim_input"] {
                let diff = (g[m].as_f64().unwrap() - w[m].as_f64().unwrap()).abs();
                assert!(diff < 1e-6, "{} {m}: {} vs {}", w["name"], g[m], w[m]);
                max_diff = max_diff.max(diff);
            }
        }
        assert!(got["psnr"]["all"].as_f64().unwrap() != got["psnr_input"]["all"].as_f64().unwrap());

        let setup = &got["setup"];
        assert_eq!(setup["models"], weights.len());
        assert_eq!(setup["weights"].as_array().unwrap().len(), weights.len());
        assert_eq!(setup["weights"][0], a.to_str().unwrap());
        let (mode, views) = if tta { ("8", 8) } else { ("off", 1) };
        assert_eq!((setup["tta"].as_str(), setup["count"].as_u64()), (Some(mode), Some(5)));
        assert_eq!(setup["tta_views"].as_array().unwrap().len(), views);
        assert_eq!((&setup["split"], &setup["split_params"]), (&Value::from("test"), &Value::Null));

        if tta {
            continue; // the table once is enough (TTA runs are the slow ones)
        }
        // The table shows the same numbers, rounded, and names the setup.
        let table = ok(on_cpu("eval", &refs(&e)));
        assert!(
            table.contains("(ensemble of 2)\nTTA off") && table.contains("5 images"),
            "{table}"
        );
        for (group, n) in [("rain", 3), ("snow", 2), ("all", 5)] {
            let row: Vec<&str> = table
                .lines()
                .find(|l| l.starts_with(group))
                .unwrap_or_else(|| panic!("no {group} row in {table}"))
                .split_whitespace()
                .collect();
            let v = |m: &str| got[m][group].as_f64().unwrap();
            let want_row = [
                group.to_string(),
                n.to_string(),
                format!("{:.2}", v("psnr")),
                format!("{:.4}", v("ssim")),
                format!("{:.2}", v("psnr_input")),
                format!("{:.4}", v("ssim_input")),
                format!("{:+.2}", v("psnr") - v("psnr_input")),
            ];
            assert_eq!(row, want_row, "{table}");
        }
        // Another paper's convention is named in the header and the JSON, and scores otherwise
        // (its numbers: tests/it/loss_metrics.rs against scikit-image).
        assert_eq!(setup["metric"], "course");
        assert!(table.contains("metric: course: rounded 8-bit RGB"), "{table}");
        let mut ey = e.clone();
        ey.extend(["--metric", "y"].map(PathBuf::from));
        let y = eval_json(&ey);
        assert_eq!(y["setup"]["metric"], "y");
        assert_ne!(y["psnr"]["all"], got["psnr"]["all"]);
        assert!(ok(on_cpu("eval", &refs(&ey))).contains("metric: y: luma"));
    }
    eprintln!("max |promptir eval - scikit-image| = {max_diff:e}");
}

/// The tiny experiment with a non-default seed and fraction (and `extra` YAML lines), trained
/// for one epoch.
fn trained_run(t: &Path, root: &Path, extra: &str) -> PathBuf {
    let exp = t.join("exp.yaml");
    let tiny = crate::common::repo().join("experiments/tiny.yaml");
    std::fs::write(
        &exp,
        format!(
            "extends: {}\nname: t\nseed: 7\ndata: {{val_fraction: 0.25, workers: 1}}\n\
             train: {{epochs: 1, batch_size: 2, patch_size: 24, val_every: 1, log_every: 1}}\n{extra}",
            tiny.display()
        ),
    )
    .unwrap();
    let s = train(&TrainArgs {
        config: Some(exp),
        data: Some(root.to_path_buf()),
        logs_dir: t.join("logs"),
        weights_dir: t.join("weights"),
        progress: false,
        ..TrainArgs::default()
    })
    .unwrap();
    s.run.checkpoint("best")
}

#[test]
fn val_split_is_exactly_what_training_held_out() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    crate::common::paired_dataset(&root);
    let best = trained_run(t.path(), &root, "");
    let logs = t.path().join("logs");
    let pairs = scan_pairs(&root).unwrap();
    let kinds: Vec<&str> = pairs.iter().map(|p| p.kind.as_str()).collect();
    let names_of = |idx: &[usize]| idx.iter().map(|&i| pairs[i].name.clone()).collect::<Vec<_>>();

    let mut args = weights_args(&[&best]);
    args.extend(["--data".into(), root.clone()]);
    let got = eval_json(&args);
    let held_out = split(&kinds, 0.25, 7);
    assert_eq!(names(&got), names_of(&held_out.val));
    assert_eq!(names(&got).len(), 4, "round(6 * 0.25) = 2 per type");
    let p = &got["setup"]["split_params"];
    assert_eq!((p["seed"].as_u64(), p["val_fraction"].as_f64()), (Some(7), Some(0.25)));
    assert_eq!(p["source"], "from run t (checkpoint)");
    assert!(got["setup"]["notice"].is_null(), "the data is what training saw");

    // The same numbers training logged for the same weights on the same pairs.
    let metrics = std::fs::read_to_string(logs.join("t/metrics.jsonl")).unwrap();
    let last: Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    for m in ["psnr", "ssim"] {
        for g in ["all", "rain", "snow"] {
            let (a, b) = (got[m][g].as_f64().unwrap(), last["val"][m][g].as_f64().unwrap());
            assert!((a - b).abs() < 1e-9, "{m}/{g}: eval {a} vs training {b}");
        }
    }

    // --split train is the rest.
    let mut tr = args.clone();
    tr.extend(["--split", "train"].map(PathBuf::from));
    assert_eq!(names(&eval_json(&tr)), names_of(&held_out.train));

    // A flag overrides the run's value; the other still comes from the run.
    let mut flagged = args.clone();
    flagged.extend(["--seed", "42"].map(PathBuf::from));
    let j = eval_json(&flagged);
    let other = split(&kinds, 0.25, 42);
    assert_ne!(other.val, held_out.val, "the test needs seeds that split differently");
    assert_eq!(names(&j), names_of(&other.val));
    let src = j["setup"]["split_params"]["source"].as_str().unwrap();
    assert!(src.starts_with("seed from --seed, val_fraction from run t"), "{src}");

    // The checkpoint alone carries the split: without the run's logs it is the same.
    std::fs::remove_dir_all(&logs).unwrap();
    assert_eq!(names(&eval_json(&args)), names_of(&held_out.val));
    // Files that are not those training saw: the split is still computed, and said to differ.
    for p in [&pairs[0].degraded, &pairs[0].clean] {
        std::fs::remove_file(p).unwrap();
    }
    let notice = eval_json(&args)["setup"]["notice"].as_str().unwrap().to_string();
    assert!(notice.contains("run t trained on 12 pairs"), "{notice}");
}

#[test]
fn tta_auto_uses_the_trained_views_and_compare_scores_each_set() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    crate::common::paired_dataset(&root);
    // Horizontal flips only: auto is {id, hflip}, none of off / flips / 8.
    let best = trained_run(t.path(), &root, "augment: {hflip: 0.5, vflip: 0.0, rot90: 0.0}\n");
    let mut args = weights_args(&[&best]);
    args.extend(["--data".into(), root.clone(), "--tta".into(), "auto".into()]);
    let mut cmp = args.clone();
    cmp.push("--tta-compare".into());
    let got = eval_json(&cmp);
    let setup = &got["setup"];
    assert_eq!((&setup["tta"], &setup["tta_views"]), (&json!("auto"), &json!(["id", "hflip"])));
    assert!(setup["tta_notice"].is_null(), "{setup}");
    let rows = got["tta_compare"].as_array().unwrap();
    let modes: Vec<&str> = rows.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["off", "flips", "8", "auto"]);
    assert_eq!(rows[1]["views"], json!(["id", "rot180", "hflip", "vflip"]));
    assert_eq!(rows[2]["views"].as_array().unwrap().len(), 8);
    // The main numbers are auto's row; the off row is a plain eval; gains are against it.
    assert_eq!(rows[3]["psnr"], got["psnr"]);
    let mut off_args = weights_args(&[&best]);
    off_args.extend(["--data".into(), root.clone()]);
    let off = eval_json(&off_args);
    assert_eq!(rows[0]["psnr"], off["psnr"]);
    for r in rows {
        for g in ["all", "rain", "snow"] {
            let gain = r["psnr"][g].as_f64().unwrap() - off["psnr"][g].as_f64().unwrap();
            assert!((r["psnr_gain"][g].as_f64().unwrap() - gain).abs() < 1e-12, "{r}");
        }
    }
    // A network that is not equivariant: the view sets give different numbers.
    let all: Vec<f64> = rows.iter().map(|r| r["psnr"]["all"].as_f64().unwrap()).collect();
    assert!(all[1] != all[2] && all[3] != all[2], "{all:?}");
    eprintln!("PSNR all by TTA set (off, flips, 8, auto): {all:?}");

    // The table names the views and has a row per set, with the gains.
    let table = ok(on_cpu("eval", &refs(&cmp)));
    assert!(table.contains("TTA auto (id, hflip)"), "{table}");
    for (m, n) in [("off", 1), ("flips", 4), ("8", 8), ("auto", 2)] {
        let label = format!("{m} ({n})");
        let row =
            table.lines().find(|l| l.starts_with(&label)).unwrap_or_else(|| panic!("{table}"));
        assert_eq!(row.matches('(').count(), 4, "label and 3 gains (rain, snow, all): {row}");
    }

    // Forcing views the training did not show is allowed, with a note naming them.
    let mut forced = weights_args(&[&best]);
    forced.extend(["--data".into(), root.clone(), "--tta".into(), "flips".into()]);
    let n = eval_json(&forced)["setup"]["tta_notice"].as_str().unwrap().to_string();
    assert!(n.contains("(rot180, vflip)") && n.contains("--tta auto"), "{n}");

    // Without provenance (a plain saved checkpoint) auto is all 8, and says why.
    let plain = checkpoint_at(t.path(), "plain.safetensors", 1);
    let mut pa = weights_args(&[&plain]);
    pa.extend(["--data".into(), root.clone(), "--tta".into(), "auto".into()]);
    let j = eval_json(&pa);
    assert_eq!(j["setup"]["tta_views"].as_array().unwrap().len(), 8);
    let n = j["setup"]["tta_notice"].as_str().unwrap();
    assert!(n.contains("plain.safetensors") && n.contains("all 8"), "{n}");
}

/// Runs a command that must fail with a user error (exit 2, one line); returns stderr.
fn fails(cmd: &str, args: &[PathBuf]) -> String {
    user_error(&on_cpu(cmd, &refs(args)))
}

#[test]
fn user_errors_name_the_problem() {
    let t = tempfile::tempdir().unwrap();
    let w = checkpoint_at(t.path(), "a.safetensors", 1);
    let root = t.path().join("data");
    test_set(&root);
    let out_json = t.path().join("eval.json");
    let run = |data: &Path, extra: &[&str], weights: &Path, needles: &[&str]| {
        let mut a = weights_args(&[&weights.to_path_buf()]);
        a.extend(["--data".into(), data.to_path_buf(), "--output".into(), out_json.clone()]);
        a.extend(extra.iter().map(PathBuf::from));
        let err = fails("eval", &a);
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err:?}");
        }
        assert!(!out_json.exists(), "output written despite: {err}");
    };
    run(&t.path().join("nope"), &[], &w, &["nope", "dataset root does not exist", "--data"]);
    // No training pairs (a synthetic set with only test/).
    run(&root, &[], &w, &["train/degraded", "missing folder"]);
    let empty = t.path().join("empty");
    for d in ["train/degraded", "train/clean"] {
        std::fs::create_dir_all(empty.join(d)).unwrap();
    }
    run(&empty, &[], &w, &["train/degraded", "no images in this folder"]);
    let bad = t.path().join("model.ckpt");
    std::fs::write(&bad, b"PK\x03\x04 a pickled checkpoint").unwrap();
    run(&root, &["--split", "test"], &bad, &["model.ckpt", "not a readable safetensors file"]);
    run(&empty, &["--val-fraction", "1.5"], &w, &["--val-fraction 1.5"]);
    let out_of_dir = t.path().join("no/such/eval.json");
    let mut a = weights_args(&[&w]);
    a.extend(["--data".into(), root.clone(), "--split".into(), "test".into()]);
    a.extend(["--output".into(), out_of_dir]);
    assert!(fails("eval", &a).contains("output folder does not exist"));

    // Course-like test set without targets: say to use predict.
    let course = t.path().join("course");
    std::fs::create_dir_all(course.join("test")).unwrap();
    copy_dir(&root.join("test/degraded"), &course.join("test/degraded"));
    run(&course, &["--split", "test"], &w, &["test/clean", "no ground truth", "promptir predict"]);
    // types.json must cover every image.
    std::fs::write(root.join("test/types.json"), r#"{"0.png": "rain"}"#).unwrap();
    run(&root, &["--split", "test"], &w, &["types.json", "has no entry for 1.png"]);

    // visualize refuses a file as its folder, before any work.
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut v = weights_args(&[&w]);
    v.extend(["--data".into(), course.clone(), "--output".into(), file]);
    assert!(fails("visualize", &v).contains("--output is a file"));

    let err = user_error(&on_cpu("eval", &[&"--split", &"dev"]));
    assert!(
        err.contains("invalid value 'dev' for '--split <SPLIT>'")
            && err.contains("val, train, test"),
        "{err}"
    );
}

#[test]
fn visualize_writes_panels_named_by_psnr_and_an_overview() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("data");
    test_set(&root);
    let w = checkpoint_at(t.path(), "a.safetensors", 3);
    let png = t.path().join("png");
    let mut p = weights_args(&[&w]);
    p.extend(["--input".into(), root.join("test/degraded"), "--png-dir".into(), png.clone()]);
    p.extend(["--output".into(), t.path().join("pred.npz")]);
    ok(on_cpu("predict", &refs(&p)));
    let mut e = weights_args(&[&w]);
    e.extend(["--data".into(), root.clone(), "--split".into(), "test".into()]);
    let scores = eval_json(&e);
    let psnr_of = |name: &str| {
        scores["images"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap()["psnr"]
            .as_f64()
            .unwrap()
    };

    let out = t.path().join("vis/new");
    let mut v = e.clone();
    v.extend(["--output".into(), out.clone(), "--count".into(), "3".into()]);
    let said = ok(on_cpu("visualize", &refs(&v)));
    assert!(said.starts_with("wrote 3 panels"), "{said}");
    // Types in turn: rain 0.png, snow 1.png, rain 2.png.
    let mut rows = Vec::new();
    let mut want_files = vec!["overview.png".to_string()];
    for name in ["0.png", "1.png", "2.png"] {
        let stem = name.trim_end_matches(".png");
        let file = format!("{stem}_psnr{:.2}.png", psnr_of(name));
        let got = RgbImage::load(&out.join(&file)).unwrap();
        let load = |dir: &Path| RgbImage::load(&dir.join(name)).unwrap();
        let want = panel(&[
            &load(&root.join("test/degraded")),
            &load(&png),
            &load(&root.join("test/clean")),
        ]);
        assert!(got == want, "{file}: degraded | restored | clean");
        rows.push(want);
        want_files.push(file);
    }
    assert!(RgbImage::load(&out.join("overview.png")).unwrap() == stack(&rows));
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    want_files.sort();
    assert_eq!(files, want_files, "no temp files or extras");
}
