//! `scripts/gpu-check.sh` on its CPU path (tiny config, one iteration): it must keep working on
//! machines without a GPU, and its Rust and PyTorch rows must describe the same network.

use serde_json::Value;
use std::process::Command;

#[test]
fn gpu_check_script_runs_its_cpu_path() {
    if tch::Cuda::is_available() {
        eprintln!("CUDA present: the CPU path is not what this machine would run; skipped");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(crate::common::repo().join("scripts/gpu-check.sh"))
        .arg(env!("CARGO_BIN_EXE_promptir"))
        .arg(crate::common::repo().join(".venv/torch/lib"))
        .arg(out.path())
        .env("PYTHON", crate::common::python())
        .status()
        .expect("bash runs");
    assert!(status.success(), "gpu-check.sh failed");
    let read = |f: &str| std::fs::read_to_string(out.path().join(f)).unwrap();
    assert!(read("doctor.txt").contains("cuda available    false"));
    assert!(read("train-smoke.txt").contains("PLACEHOLDER"));

    let rows: Vec<Value> = read("bench.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["row"].clone())
        .collect();
    let mut seen: Vec<(String, String, i64, i64)> = rows
        .iter()
        .map(|r| {
            assert_eq!(r["config"], "tiny");
            assert_eq!(r["device"], "cpu");
            assert_eq!(r["threads"], 1);
            let ms = r["median_ms"].as_f64().unwrap();
            assert!(ms > 0.0 && r["peak_rss_mib"].as_f64().unwrap() > 10.0);
            // Same network on both sides: the tiny config's parameter count.
            assert_eq!(r["params"], 338_476);
            (
                r["implementation"].as_str().unwrap().to_string(),
                r["mode"].as_str().unwrap().to_string(),
                r["size"].as_i64().unwrap(),
                r["batch"].as_i64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let want = |i: &str, m: &str, b| (i.to_string(), m.to_string(), 32, b);
    assert_eq!(
        seen,
        [
            want("pytorch", "infer", 1),
            want("pytorch", "train", 2),
            want("rust", "infer", 1),
            want("rust", "train", 2)
        ]
    );
    let layouts: Vec<Value> =
        read("layouts.jsonl").lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = layouts.iter().map(|r| r["layout"].as_str().unwrap()).collect();
    assert_eq!(names, ["contiguous", "channels-last", "contiguous", "channels-last"]);
    let summary = read("summary.md");
    assert!(summary.contains("| train | 32x32 | 2 | cpu |"), "{summary}");
    assert!(summary.contains("| infer | 32x32 | 1 | cpu |"), "{summary}");
}
