//! `runtime::tune_allocator` as the binary applies it: large activations are reused from the
//! heap instead of being mapped (and page-faulted) afresh at every forward.

use crate::common::{ok, promptir};
use serde_json::Value;

/// Page faults per 512x512 forward of the tiny network (its largest activations are 88 MiB,
/// above glibc's 32 MiB mmap threshold), with the binary's allocator setting or glibc's default.
fn faults_per_forward(malloc: Option<&str>) -> f64 {
    let mut cmd = promptir();
    cmd.args(["bench", "--config", "tiny", "--size", "512", "--mode", "infer", "--iters", "3"])
        .args(["--warmup", "1", "--threads", "1", "--json"]);
    if let Some(m) = malloc {
        cmd.env("PROMPTIR_MALLOC", m);
    } else {
        cmd.env_remove("PROMPTIR_MALLOC");
    }
    let row: Value = serde_json::from_str(&ok(cmd.output().unwrap())).unwrap();
    row["page_faults_per_iter"].as_f64().unwrap()
}

#[test]
fn large_activations_are_reused_without_page_faults() {
    let tuned = faults_per_forward(None);
    let default = faults_per_forward(Some("default"));
    eprintln!("page faults per forward: tuned {tuned}, glibc default {default}");
    // Each fresh 88 MiB mapping alone faults 22528 times.
    assert!(default > 20_000.0, "glibc default: only {default} faults per forward");
    assert!(tuned < default / 5.0, "tuned {tuned} vs default {default} faults per forward");
}
