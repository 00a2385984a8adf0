//! Bakes an rpath to libtorch (so the binary runs without LD_LIBRARY_PATH) and keeps
//! `libtorch.so` in NEEDED with `--no-as-needed`: it is the library that pulls in
//! `libtorch_cuda.so`, and without it CUDA silently reports itself unavailable.
//! Also records the git commit being built, for the provenance checkpoints carry.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    git_commit();
    if std::env::var_os("CARGO_FEATURE_DOC_ONLY").is_some() {
        return;
    }
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib.to_string_lossy());
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}

/// `PROMPTIR_GIT_COMMIT`: the checked-out commit (uncommitted changes are not marked), rerun
/// when HEAD moves. Nothing outside a git checkout (a source tarball).
fn git_commit() {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let (Some(dir), Some(commit)) =
        (git(&["rev-parse", "--git-dir"]), git(&["rev-parse", "--short=12", "HEAD"]))
    else {
        return;
    };
    println!("cargo:rustc-env=PROMPTIR_GIT_COMMIT={commit}");
    let head = git(&["symbolic-ref", "-q", "HEAD"]).unwrap_or_default();
    // Only files that exist: cargo reruns the script every build for a missing one.
    for f in ["HEAD", head.as_str(), "packed-refs"] {
        let p = std::path::Path::new(&dir).join(f);
        if !f.is_empty() && p.is_file() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
