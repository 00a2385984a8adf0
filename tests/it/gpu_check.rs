//! `scripts/gpu-check.sh` on its CPU path (tiny config, one iteration): it must keep working on
//! machines without a GPU, and its Rust and PyTorch rows must describe the same network.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The script into `out` with these extra variables, on its CPU path: a GPU, where there is one,
/// is hidden from it (`CUDA_VISIBLE_DEVICES=`), so the same checks run on every machine.
fn gpu_check(out: &Path, env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(crate::common::repo().join("scripts/gpu-check.sh"))
        .arg(env!("CARGO_BIN_EXE_promptir"))
        .arg(crate::common::repo().join(".venv/torch/lib"))
        .arg(out)
        .env("PYTHON", crate::common::python())
        .env("CUDA_VISIBLE_DEVICES", "")
        .envs(env.iter().copied())
        .output()
        .expect("bash runs")
}

#[test]
fn gpu_check_script_runs_its_cpu_path() {
    let out = tempfile::tempdir().unwrap();
    let run = gpu_check(out.path(), &[]);
    assert!(run.status.success(), "gpu-check.sh failed: {}", String::from_utf8_lossy(&run.stderr));
    let read = |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap();
    assert!(read("doctor.txt").contains("cuda available    false"));

    // Rust, PyTorch's fused/autocast baseline and PyTorch plain eager fp32, per row.
    let rows: Vec<(String, Value)> = read("bench.jsonl")
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            (e["precision"].as_str().unwrap().to_string(), e["row"].clone())
        })
        .collect();
    let mut seen: Vec<String> = rows
        .iter()
        .map(|(for_precision, r)| {
            assert_eq!((r["config"].as_str(), r["device"].as_str()), (Some("tiny"), Some("cpu")));
            assert_eq!(r["threads"], 1);
            assert!(r["median_ms"].as_f64().unwrap() > 0.0);
            // Same network on both sides: the tiny config's parameter count.
            assert_eq!(r["params"], 338_476);
            format!(
                "{} {} {} {} {}/{}",
                for_precision,
                r["mode"].as_str().unwrap(),
                r["implementation"].as_str().unwrap(),
                r["optimizer"].as_str().unwrap(),
                r["precision"].as_str().unwrap(),
                r["size"]
            )
        })
        .collect();
    seen.sort();
    let mut want = Vec::new();
    for (p, mode) in [
        ("fp32", "train"),
        ("bf16", "train"),
        ("fp16", "train"),
        ("fp32", "optim"),
        ("fp32", "infer"),
        ("bf16", "infer"),
    ] {
        want.push(format!("{p} {mode} pytorch fused {p}/32"));
        want.push(format!("{p} {mode} rust fused {p}/32"));
    }
    // The plain eager fp32 baseline runs once per mode, with the first precision of the mode.
    for mode in ["train", "optim", "infer"] {
        want.push(format!("fp32 {mode} pytorch default fp32/32"));
    }
    want.sort();
    assert_eq!(seen, want);
    let layouts: Vec<Value> =
        read("layouts.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<String> = layouts
        .iter()
        .map(|r| format!("{} {} {}", r["mode"], r["precision"], r["layout"]).replace('"', ""))
        .collect();
    let want: Vec<String> = ["train fp32", "train bf16", "infer fp32", "infer bf16"]
        .iter()
        .flat_map(|r| ["contiguous", "channels-last"].map(|l| format!("{r} {l}")))
        .collect();
    assert_eq!(names, want);

    // The profile of the first training row in bf16: the trace (one fused AdamW call per
    // iteration in it) and its table by op.
    let trace = out.path().join("profile-train-bf16.json");
    let table = crate::profile::table(&trace, &["--top", "1000"]);
    let ops = table["ops"].as_array().unwrap();
    let adamw = ops.iter().find(|o| o["key"] == "aten::_fused_adamw_");
    assert!(adamw.is_some_and(|o| o["calls"] == 1.0), "{table}");
    assert!(read("profile-train-bf16.md").contains("self time of CPU ops"));

    // The training smoke: a row per precision, losses finite and decreasing, images/s beside
    // PyTorch's, a validation PSNR.
    let smoke = read("train-smoke.md");
    for p in ["fp32", "bf16", "fp16"] {
        let row = smoke.lines().find(|l| l.starts_with(&format!("| {p} |"))).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(cells[1], "10", "{row}");
        let num = |i: usize| cells[i].parse::<f64>().unwrap();
        assert!(num(3) < num(2) && cells[4] == "yes", "{row}");
        assert!(num(5) > 0.0 && num(6) > 0.0 && num(7) > 10.0, "{row}");
    }
    let dist = read("dist-smoke.txt");
    assert!(dist.contains("ok: 4 steps in a process group of 1 (Gloo)"), "{dist}");
    let summary = read("summary.md");
    assert!(summary.contains("| train | 32x32 | 2 | bf16 | cpu |"), "{summary}");
    assert!(summary.contains("## Training smoke"), "{summary}");
    assert!(summary.contains("self time of CPU ops"), "{summary}");
    let stages: Vec<&str> = summary.lines().filter(|l| l.contains("| ok |")).collect();
    assert_eq!(stages.len(), 6, "{summary}");
    // The other networks: each Rust row beside PyTorch's on the same network (its count).
    let zoo: Vec<Value> =
        read("zoo.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for params in [208_221, 290_715, 295_861, 249_043] {
        let impls: Vec<&str> = zoo
            .iter()
            .filter(|e| e["row"]["params"] == params)
            .map(|e| e["row"]["implementation"].as_str().unwrap())
            .collect();
        assert!(impls.contains(&"rust") && impls.contains(&"pytorch"), "{params}: {impls:?}");
    }
    assert!(summary.contains("## The other networks: Rust vs PyTorch"), "{summary}");
}

/// A GPU machine may be lent for one call: a stage that fails (here every stage that uses the
/// bench config, which does not exist) must not cost the others their numbers, and the run
/// must still end non-zero, naming it.
#[test]
fn gpu_check_runs_every_stage_when_one_fails() {
    let out = tempfile::tempdir().unwrap();
    // A previous run's files in the folder: a rerun starts clean.
    std::fs::write(out.path().join("layouts.md"), "STALE").unwrap();
    std::fs::create_dir(out.path().join("smoke-data")).unwrap();
    std::fs::write(out.path().join("smoke-data/old.png"), "").unwrap();
    let missing = out.path().join("missing.yaml");
    let env = [("GPU_CHECK_CPU_CONFIG", missing.to_str().unwrap()), ("SMOKE_STEPS", "2")];
    let run = gpu_check(out.path(), &env);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gpu-check: FAILED: bench: Rust vs PyTorch on cpu"), "{stderr}");
    let summary = std::fs::read_to_string(out.path().join("summary.md")).unwrap();
    let result = |stage: &str| {
        let row = summary.lines().find(|l| l.starts_with(&format!("| {stage}"))).unwrap();
        row.split('|').nth(2).unwrap().trim().to_string()
    };
    assert_eq!(result("bench"), "FAILED", "{summary}");
    assert_eq!(result("training smoke"), "ok", "{summary}");
    assert_eq!(result("data-parallel smoke"), "ok", "{summary}");
    assert_eq!(result("profile"), "FAILED", "{summary}");
    assert_eq!(result("Rust in both"), "FAILED", "{summary}");
    assert_eq!(result("the other networks"), "ok", "{summary}");
    assert!(!summary.contains("STALE"), "{summary}");
    // The smoke ran in full: a row per precision with finite, decreasing losses (PyTorch's
    // images/s are missing with the bench).
    for p in ["fp32", "bf16", "fp16"] {
        let row = summary.lines().find(|l| l.starts_with(&format!("| {p} | 2 |"))).unwrap();
        assert!(row.contains("| yes |") && row.contains("| nan |"), "{row}");
    }
}
