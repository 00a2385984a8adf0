//! `bad_inputs_exit_2_with_one_line_and_write_nothing`: every row of the table (`rows.rs`)
//! must exit 2 with one `error:` line naming the file or key and what to do, no panic text,
//! and leave its folder exactly as it was (no partial output, no run folder).

use super::fixture::{fixture, Fixture};
use super::rows::{rows, Row};
use crate::common::{promptir, snapshot};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What one row printed, for the failure report and the table printed with --nocapture.
struct Outcome {
    name: &'static str,
    stderr: String,
    problems: Vec<String>,
}

fn check_row(i: usize, r: &Row, fx: &Fixture, base: &Path) -> Outcome {
    let dir = base.join(format!("row{i:02}"));
    std::fs::create_dir_all(&dir).unwrap();
    let args = (r.setup)(&dir, fx);
    let before = snapshot(&dir);
    let out = promptir().current_dir(&dir).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut problems = Vec::new();
    if out.status.code() != Some(2) {
        problems.push(format!("exit {:?}, expected 2", out.status.code()));
    }
    // libtorch may print its own `[W ...]` warnings on some CPUs; those are not ours.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("[W")).collect();
    if lines.len() != 1 || !lines[0].starts_with("error: ") {
        problems.push(format!("expected one `error:` line, got {}", lines.len()));
    }
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "frame #", "internal error"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr contains {bad:?}"));
        }
    }
    for e in r.expect {
        if !stderr.contains(e) {
            problems.push(format!("stderr lacks {e:?}"));
        }
    }
    let after = snapshot(&dir);
    if after != before {
        let changed: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.display().to_string())
            .chain(
                before
                    .keys()
                    .filter(|k| !after.contains_key(*k))
                    .map(|k| format!("-{}", k.display())),
            )
            .collect();
        problems.push(format!("the folder changed: {changed:?}"));
    }
    Outcome { name: r.name, stderr, problems }
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_write_nothing() {
    let fx = fixture();
    let fixture_before = snapshot(&fx.root);
    let base = tempfile::tempdir().unwrap();
    let rows = rows();
    assert!(rows.len() >= 25);
    let next = AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = rows.get(i) else { break };
                let o = check_row(i, r, fx, base.path());
                outcomes.lock().unwrap().push((i, o));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (i, o) in &outcomes {
        println!("{i:02} {:<42} {}", o.name, o.stderr.trim_end());
        if !o.problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n  stderr: {}",
                o.name,
                i,
                o.problems.join("; "),
                o.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(snapshot(&fx.root), fixture_before, "rows must not change the shared fixture");
}
