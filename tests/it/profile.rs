//! `promptir bench --profile` and `scripts/profile_table.py`: the trace holds the timed
//! iterations' ops (forward, backward, one fused AdamW step each), and their self times add up
//! to the step time the row measured.

use crate::common::{ok, promptir, repo, run_python, user_error};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

/// `promptir bench ARGS --profile TRACE`, ARGS split at spaces.
fn bench_profiled(args: &str, trace: &Path) -> Output {
    promptir().arg("bench").args(args.split(' ')).arg("--profile").arg(trace).output().unwrap()
}

/// `profile_table.py TRACE ARGS --json` (gpu-check's test reads its trace with it too).
pub fn table(trace: &Path, args: &[&str]) -> Value {
    let script = repo().join("scripts/profile_table.py");
    let mut argv = vec![script.to_str().unwrap(), trace.to_str().unwrap()];
    argv.extend(args);
    argv.push("--json");
    serde_json::from_str(&run_python(&argv)).unwrap()
}

#[test]
fn a_profiled_training_step_sums_to_its_measured_time() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let out = bench_profiled(
        "--config tiny --size 32 --batch 2 --mode train --iters 3 --warmup 1 --threads 1 --json",
        &trace,
    );
    let row: Value = serde_json::from_str(&ok(out)).unwrap();
    let times: Vec<f64> =
        row["times_ms"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    let mean_ms = times.iter().sum::<f64>() / times.len() as f64;

    let t = table(&trace, &["--iters", "3", "--top", "1000"]);
    let calls = |op: &str| {
        let ops = t["ops"].as_array().unwrap();
        ops.iter().find(|o| o["key"] == op).map_or(0.0, |o| o["calls"].as_f64().unwrap())
    };
    // Only the timed iterations: one optimizer step each, and the backward of every conv.
    assert_eq!(calls("aten::_fused_adamw_"), 1.0);
    let convs = calls("aten::convolution");
    assert!(convs > 10.0 && calls("aten::convolution_backward") >= convs / 2.0, "{t}");
    // Self times partition the ops' time, which is all of the step but the gaps between ops
    // (0.85-0.86 of it measured, also beside a training run; preemption between ops on a
    // loaded machine widens the gaps, hence the margin).
    let share = t["total_ms"].as_f64().unwrap() / mean_ms;
    eprintln!("profiled self time {:.1} ms of a {mean_ms:.1} ms step", share * mean_ms);
    assert!((0.5..=1.02).contains(&share), "self time is {share:.2} of the step");

    // By shape: the 16x16 level's 1x1 convs (2 x 16 x 16 = 512 pixel rows) ran as matrix
    // products, and the breakdown of an op adds up to that op's own total.
    let by_shape = table(&trace, &["--iters", "3", "--top", "1000", "--shapes", "aten::mm"]);
    let shapes = by_shape["ops"].as_array().unwrap();
    assert!(shapes.iter().any(|o| o["key"].as_str().unwrap().starts_with("[[512, ")), "{by_shape}");
    let ops = t["ops"].as_array().unwrap();
    let mm = ops.iter().find(|o| o["key"] == "aten::mm").unwrap();
    let parts: f64 = shapes.iter().map(|o| o["self_ms"].as_f64().unwrap()).sum();
    assert!((parts - mm["self_ms"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn profile_takes_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    let out = bench_profiled("--config tiny --size 16,32 --mode infer --iters 1", &trace);
    let err = user_error(&out);
    assert!(err.contains("--profile records one row"), "{err}");
    assert!(!trace.exists());
}
