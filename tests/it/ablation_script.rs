//! `scripts/ablation.sh` at tiny scale, in a copy of the repository: real `train` and `report`,
//! stand-ins for `synth` and `eval` (a shell wrapper), so the test checks the commands the script
//! runs, its file conventions and that a second call leaves the first session alone.

use crate::common::{copy_tree, table_rows};
use std::path::Path;
use std::process::Command;

/// Delegates to the real binary except `synth` (a small dataset written by python) and `eval`
/// (fixed numbers: 20 dB + 0.1 per checkpoint + 0.3 with TTA), and logs every call.
const STUB: &str = r#"#!/usr/bin/env bash
set -euo pipefail
echo "$*" >> "$STUB_LOG"
case "$1" in
synth)
    [ "${2:-}" = --help ] && exit 0
    out=$3
    "$STUB_PY" - "$out" <<'PY'
import os, sys
import numpy as np
from PIL import Image
root = sys.argv[1]; rng = np.random.default_rng(0)
for d in ["train/degraded", "train/clean", "test/degraded", "test/clean"]:
    os.makedirs(os.path.join(root, d))
def pair():
    c = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return c, np.clip(c.astype(int) + 40, 0, 255).astype(np.uint8)
for k in ["rain", "snow"]:
    for i in range(1, 21):
        c, d = pair()
        Image.fromarray(c).save(f"{root}/train/clean/{k}_clean-{i}.png")
        Image.fromarray(d).save(f"{root}/train/degraded/{k}-{i}.png")
for i in range(2):
    c, d = pair()
    Image.fromarray(c).save(f"{root}/test/clean/{i}.png")
    Image.fromarray(d).save(f"{root}/test/degraded/{i}.png")
PY
    ;;
eval)
    [ "${2:-}" = --help ] && exit 0
    shift
    w=(); out=; tta=false; split=
    while [ $# -gt 0 ]; do
        case $1 in
        --weights) [ -f "$2" ] || { echo "no $2" >&2; exit 3; }; w+=("\"$2\""); shift 2 ;;
        --output) out=$2; shift 2 ;;
        --split) split=$2; shift 2 ;;
        --tta) [ "$2" = auto ] || { echo "tta $2" >&2; exit 3; }; tta=true; shift 2 ;;
        --data | --device | --format) shift 2 ;;
        *) echo "unexpected eval argument $1" >&2; exit 3 ;;
        esac
    done
    psnr=$(awk -v n=${#w[@]} -v t=$tta 'BEGIN { printf "%.2f", 20 + 0.1 * n + (t == "true" ? 0.3 : 0) }')
    weights=$(IFS=,; echo "${w[*]}")
    mode=off; views='"id"'
    if $tta; then mode=auto; views='"id", "hflip"'; fi
    echo "{\"format_version\": 1, \"count\": 2, \"psnr\": {\"all\": $psnr}, \"ssim\": {}, \"psnr_input\": {\"all\": 18.5}, \"ssim_input\": {}, \"loss\": null, \"images\": [], \"setup\": {\"weights\": [$weights], \"runs\": [], \"models\": ${#w[@]}, \"ema\": [], \"tta\": \"$mode\", \"tta_views\": [$views], \"tile\": null, \"data\": \"d\", \"split\": \"$split\", \"split_params\": null, \"count\": 2, \"device\": \"Cpu\"}}" > "$out"
    ;;
*) exec "$STUB_REAL" "$@" ;;
esac
"#;

fn run_script(repo: &Path, stub: &Path, log: &Path, sets: &str) -> std::process::Output {
    run_seeds(repo, stub, log, sets, "1")
}

fn run_seeds(
    repo: &Path,
    stub: &Path,
    log: &Path,
    sets: &str,
    seeds: &str,
) -> std::process::Output {
    Command::new("bash")
        .arg(repo.join("scripts/ablation.sh"))
        .env("PROMPTIR", stub)
        .env("STUB_REAL", env!("CARGO_BIN_EXE_promptir"))
        .env("STUB_PY", crate::common::python())
        .env("STUB_LOG", log)
        .env("ABLATION_SCALE", "tiny")
        .env("ABLATION_SET", sets)
        .env("SEEDS", seeds)
        .env_remove("SEED0")
        .output()
        .unwrap()
}

/// A copy of the repository's scripts and experiments, the stub binary and its call log.
fn setup(d: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let repo = d.join("repo");
    copy_tree(&crate::common::repo().join("scripts"), &repo.join("scripts"));
    copy_tree(&crate::common::repo().join("experiments"), &repo.join("experiments"));
    let stub = d.join("promptir");
    std::fs::write(&stub, STUB).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    (repo, stub, d.join("calls.log"))
}

#[test]
fn tiny_ablation_trains_evaluates_and_reports() {
    let d = tempfile::tempdir().unwrap();
    let (repo, stub, log) = setup(d.path());
    let out = run_script(&repo, &stub, &log, "train.epochs=1 data.workers=1");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    let md = std::fs::read_to_string(repo.join("results/ablation.md")).unwrap();
    let rows = table_rows(&md);
    let cells =
        |r: &Vec<&str>| [r[0], r[1], r[2], r[3], r[4], r[6], r[7], r[8]].map(String::from).to_vec();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(rows.len(), 4, "{md}");
    assert_eq!(
        cells(&rows[0]),
        s(&["tiny_l1_only", "L1", "64", "8", "1", "20.10", "20.40 (+0.30)", "-"])
    );
    assert_eq!(
        cells(&rows[1]),
        s(&[
            "tiny_combined",
            "L1 + 0.2 SSIM",
            "64",
            "8",
            "1",
            "20.10",
            "20.40 (+0.30)",
            "20.50 (+0.10)"
        ])
    );
    assert_eq!(
        cells(&rows[2]),
        s(&[
            "tiny_patch48_bs16",
            "L1 + 0.2 SSIM",
            "48",
            "16",
            "1",
            "20.10",
            "20.40 (+0.30)",
            "20.50 (+0.10)"
        ])
    );
    assert_eq!(
        cells(&rows[3]),
        s(&[
            "ensemble: tiny_combined + tiny_patch48_bs16",
            "L1 + 0.2 SSIM",
            "64/48",
            "8/16",
            "1",
            "20.20",
            "20.50 (+0.30)",
            "-"
        ])
    );
    // Real training filled the validation column.
    assert!(rows[0][5].ends_with("(ep 1)"), "{md}");
    assert!(md.contains("without the paper's 0.05 VGG16 perceptual term"), "{md}");
    assert!(md.contains("Overrides for every run: train.epochs=1 data.workers=1."), "{md}");
    for f in ["ablation.json", "fig1_train_loss.png", "fig2_val_loss.png", "fig3_val_psnr.png"] {
        assert!(repo.join("results").join(f).is_file(), "{f}");
    }

    let calls = std::fs::read_to_string(&log).unwrap();
    let trains = calls.lines().filter(|l| l.starts_with("train --config")).count();
    let evals = calls.lines().filter(|l| l.starts_with("eval --weights")).count();
    assert_eq!((trains, evals), (3, 8), "{calls}");
    assert!(
        calls.contains("synth --output results/ablation/synth-400-40-128-s0.partial --train 400")
    );

    // A second call reuses the synthetic data and makes a new session (its training is made to
    // fail at once, to keep the test short): the first session and the report are untouched.
    let sessions = |repo: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(repo.join("results/ablation"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("tiny-"))
            .collect();
        v.sort();
        v
    };
    let first = sessions(&repo);
    assert_eq!(first.len(), 1);
    let first_md = repo.join("results/ablation").join(&first[0]).join("report/ablation.md");
    let before = std::fs::read(&first_md).unwrap();
    let out = run_script(&repo, &stub, &log, "train.epochs=0");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("train.epochs must be >= 1"), "{}", text(&out.stderr));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert_eq!(calls.lines().filter(|l| l.starts_with("synth --output")).count(), 1);
    assert_eq!(sessions(&repo).len(), 2);
    assert_eq!(std::fs::read(&first_md).unwrap(), before);
    assert_eq!(std::fs::read_to_string(repo.join("results/ablation.md")).unwrap(), md);
}

#[test]
fn seeds_train_every_experiment_per_seed_and_report_mean_and_std() {
    let d = tempfile::tempdir().unwrap();
    let (repo, stub, log) = setup(d.path());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let out = run_seeds(&repo, &stub, &log, "train.epochs=1 data.workers=1", "x");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("SEEDS must be a positive whole number"));
    let out = run_seeds(&repo, &stub, &log, "train.epochs=1 train.max_steps=1 data.workers=1", "2");
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    let calls = std::fs::read_to_string(&log).unwrap();
    let trains: Vec<&str> = calls.lines().filter(|l| l.starts_with("train --config")).collect();
    // Three experiments x two seeds, each with its own name and seed; 6 x 2 + 2 evals.
    assert_eq!(trains.len(), 6, "{calls}");
    for (name, seed) in
        [("tiny_l1_only_s42", 42), ("tiny_combined_s43", 43), ("tiny_patch48_bs16_s43", 43)]
    {
        let t = trains.iter().find(|l| l.contains(&format!("--name {name} "))).expect(name);
        assert!(t.ends_with(&format!("--set seed={seed}")), "{t}");
    }
    assert_eq!(calls.lines().filter(|l| l.starts_with("eval --weights")).count(), 14);
    let ens = calls.lines().find(|l| l.contains("ensemble_test.json")).unwrap();
    assert!(ens.contains("tiny_combined_s42/best") && ens.contains("tiny_patch48_bs16_s42/best"));

    let md = std::fs::read_to_string(repo.join("results/ablation.md")).unwrap();
    let rows = table_rows(&md);
    assert_eq!(rows.len(), 4, "{md}");
    // The stub's evals do not depend on the seed: 20.1 and 20.4 for both, sample std 0.
    assert_eq!(
        [rows[0][0], rows[0][6], rows[0][7]],
        ["tiny_l1_only (2 seeds)", "20.10 ± 0.00", "20.40 ± 0.00 (+0.30)"],
        "{md}"
    );
    assert_eq!(rows[1][0], "tiny_combined (2 seeds)");
    assert_eq!(rows[2][0], "tiny_patch48_bs16 (2 seeds)");
    assert_eq!(rows[3][0], "ensemble: tiny_combined_s42 + tiny_patch48_bs16_s42");
    // Tiny scale carries no published number, so there is no reference column.
    assert_eq!(rows[0].len(), 9, "{md}");
    assert!(md.contains("Seeds: 2 per experiment (42 43"), "{md}");
    // Real training: each seed's own validation, its mean and std in the best-val column.
    assert!(rows[0][5].contains(" ± "), "{md}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo.join("results/ablation.json")).unwrap())
            .unwrap();
    assert_eq!(j["experiments"][0]["seeds"], serde_json::json!([42, 43]));
    assert_eq!(
        j["experiments"][0]["runs"],
        serde_json::json!(["tiny_l1_only_s42", "tiny_l1_only_s43"])
    );
    assert_eq!(j["runs"][1]["config"]["seed"], 43);
}
