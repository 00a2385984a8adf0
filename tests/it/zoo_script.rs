//! `scripts/zoo.sh` with tiny knobs, in a copy of the repository: real `train`, `eval`, `report`
//! and `scripts/zoo_table.py` (MACs counted by PyTorch), a small real `synth` in place of the
//! 400-pair set and a stand-in for `scripts/bench.sh` (fixed times), so the test checks the
//! commands the script runs, the networks it picks up and the table it writes.

use crate::common::{copy_tree, table_rows};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Delegates to the real binary but makes `synth`'s set small (40 pairs of 64x64, 4 test
/// images), and logs every call.
const STUB: &str = r#"#!/usr/bin/env bash
set -euo pipefail
echo "$*" >> "$STUB_LOG"
if [ "$1" = synth ]; then
    exec "$STUB_REAL" synth --output "$3" --train 40 --test 4 --size 64 --seed 0
fi
exec "$STUB_REAL" "$@"
"#;

/// scripts/bench.sh's stand-in: the network's real `model` and `params` (one tiny `promptir
/// bench` row), fixed times: Rust 10 ms x rep, PyTorch fused 16 ms x rep, eager 20 ms x rep.
const BENCH: &str = r#"#!/usr/bin/env bash
set -euo pipefail
echo "bench.sh $*" >> "$STUB_LOG"
config= rows= reps= out=
while [ $# -gt 0 ]; do
    case $1 in
    --config) config=$2 ;;
    --rows) rows=$2 ;;
    --reps) reps=$2 ;;
    --out) out=$2 ;;
    esac
    shift 2
done
row=$("$BIN" bench --config "$config" --mode infer --size 8 --batch 1 --iters 1 --warmup 0 --json | tail -n1)
"$PYTHON" - "$row" "$rows" "$reps" "$out" <<'PY'
import json, sys
rust, rows, reps, out = json.loads(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]
with open(out, "w") as f:
    for rep in range(1, reps + 1):
        for spec in rows:
            mode, size, batch = spec.split(":")[:3]
            for impl, opt, ms in [("rust", "fused", 10.0), ("pytorch", "fused", 16.0), ("pytorch", "default", 20.0)]:
                r = dict(rust, implementation=impl, optimizer=opt, mode=mode, size=int(size), batch=int(batch),
                         times_ms=[ms * rep], median_ms=ms * rep)
                f.write(json.dumps({"rep": rep, "precision": "fp32", "row": r}) + "\n")
PY
echo "stub table"
"#;

fn write_executable(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A copy of scripts/ (with reference/) and experiments/, bench.sh replaced by [`BENCH`], the
/// stub binary and its call log.
fn setup(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let repo = d.join("repo");
    copy_tree(&crate::common::repo().join("scripts"), &repo.join("scripts"));
    copy_tree(&crate::common::repo().join("experiments"), &repo.join("experiments"));
    write_executable(&repo.join("scripts/bench.sh"), BENCH);
    let stub = d.join("promptir");
    write_executable(&stub, STUB);
    (repo, stub, d.join("calls.log"))
}

fn run(repo: &Path, stub: &Path, log: &Path, steps: &str) -> std::process::Output {
    Command::new("bash")
        .arg(repo.join("scripts/zoo.sh"))
        .env("PROMPTIR", stub)
        .env("STUB_REAL", env!("CARGO_BIN_EXE_promptir"))
        .env("STUB_LOG", log)
        .env("PYTHON", crate::common::python())
        .env("STEPS", steps)
        .env("BENCH_ROWS", "train:16:1 infer:32:1")
        .env("BENCH_REPS", "2")
        .env("PAPER_MACS", "0")
        .env("ZOO_SET", "data.workers=1")
        .env_remove("SEED")
        .env_remove("OUT")
        .env_remove("BENCH_ITERS")
        .env_remove("BENCH_THREADS")
        .output()
        .unwrap()
}

#[test]
fn zoo_trains_every_tiny_network_and_tabulates_them() {
    let d = tempfile::tempdir().unwrap();
    let (repo, stub, log) = setup(d.path());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    let out = run(&repo, &stub, &log, "0");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("STEPS must be a positive whole number"));

    let out = run(&repo, &stub, &log, "2");
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    // Every network, in the script's order.
    let archs = ["promptir", "restormer", "nafnet", "adair", "moce_ir"];
    let calls = std::fs::read_to_string(&log).unwrap();
    let trains: Vec<&str> = calls.lines().filter(|l| l.starts_with("train --config")).collect();
    assert_eq!(trains.len(), archs.len(), "{calls}");
    for (t, a) in trains.iter().zip(&archs) {
        assert!(t.contains(&format!("--name {a} ")), "{t}");
        for kv in ["seed=42", "train.max_steps=2", "train.epochs=1", "data.workers=1"] {
            assert!(t.contains(&format!("--set {kv}")), "{t}");
        }
    }
    let evals = calls.lines().filter(|l| l.starts_with("eval --weights")).count();
    let benches = calls.lines().filter(|l| l.starts_with("bench.sh --config")).count();
    assert_eq!((evals, benches), (archs.len(), archs.len()), "{calls}");
    assert!(calls.contains(
        "bench.sh --config experiments/tiny_nafnet.yaml --rows train:16:1 infer:32:1 --reps 2"
    ));
    assert_eq!(calls.lines().filter(|l| l.starts_with("synth --output")).count(), 1);

    let zoo = repo.join("results/zoo");
    let md = std::fs::read_to_string(zoo.join("zoo.md")).unwrap();
    assert!(md.starts_with("Date: "), "{md}");
    let command =
        "command: `ZOO_SET='data.workers=1' BENCH_ROWS='train:16:1 infer:32:1' STEPS=2 SEED=42 \
                   BENCH_REPS=2 BENCH_ITERS=10 scripts/zoo.sh`";
    assert!(md.contains(command), "{md}");
    let rows = table_rows(&md);
    assert_eq!(rows.len(), archs.len() + 1, "{md}");
    // network, parameters, MACs, train ms, ratio, infer ms, ratio, seconds, PSNR/SSIM all, rain, snow
    let expected = [
        ("PromptIR", "338,476", "1.78G"),
        ("Restormer", "208,221", "1.39G"),
        ("NAFNet", "290,715", "0.36G"),
        ("AdaIR", "295,861", "1.62G"),
        ("MoCE-IR", "249,043", "1.13G"),
    ];
    assert_eq!(expected.len(), archs.len());
    for (row, (name, params, macs)) in rows.iter().zip(expected) {
        assert_eq!(row.len(), 11, "{md}");
        assert_eq!([row[0], row[1], row[2]], [name, params, macs], "{md}");
        // Medians over the two repetitions (10, 20 against 20, 40 ms), each repetition 0.50.
        assert_eq!(
            [row[3], row[4], row[5], row[6]],
            ["15.0 vs 30.0", "**0.50** (0.50-0.50)", "15.0 vs 30.0", "**0.50** (0.50-0.50)"]
        );
        for cell in &row[8..] {
            let (psnr, ssim) = cell.split_once(" / ").expect(cell);
            assert!(
                psnr.parse::<f64>().unwrap() > 5.0 && ssim.parse::<f64>().unwrap() > 0.0,
                "{md}"
            );
        }
    }
    assert!(md.contains("test PSNR / SSIM: rain | test PSNR / SSIM: snow"), "{md}");
    assert_eq!(rows.last().unwrap()[0], "degraded input");
    assert!(!md.contains("The paper configs"), "{md}");
    assert!(md.contains("![validation PSNR per epoch](fig3_val_psnr.png)"), "{md}");
    for f in ["zoo.json", "ablation.md", "fig3_val_psnr.png"] {
        assert!(zoo.join(f).is_file(), "{f}");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(zoo.join("zoo.json")).unwrap()).unwrap();
    let nets = j["networks"].as_array().unwrap();
    assert_eq!(nets.len(), archs.len());
    assert_eq!(nets[0]["eval"]["count"], 4);
    let fused = &nets[0]["bench"][0]["fused"];
    assert_eq!(fused["ratio"], 0.625, "{fused}");
}
