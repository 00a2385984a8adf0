//! Bakes an rpath to libtorch (so the binary runs without LD_LIBRARY_PATH) and keeps
//! `libtorch.so` in NEEDED with `--no-as-needed`: it is the library that pulls in
//! `libtorch_cuda.so`, and without it CUDA silently reports itself unavailable.
//! Also records the git commit being built, for the provenance checkpoints carry.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

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
    native();
}

/// `csrc/native.cpp`, against the headers of the libtorch torch-sys links (and with its ABI).
/// NCCL comes in when the venv holds CUDA's and NCCL's headers (pip's CUDA wheels do).
/// The script also reruns whenever HEAD moves (the commit above); the C++ (about 13 s) is only
/// recompiled when `csrc/`, this file or the flags changed since the archive was built.
fn native() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys gives its libtorch folder");
    let torch = Path::new(&lib).join("..");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/native.cpp")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .include("csrc/gloo_shim")
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .define("USE_C10D_GLOO", None)
        // libtorch's headers warn under -Wall; our file is small enough to read.
        .warnings(false);
    // site-packages/torch/lib/.. -> site-packages/nvidia/{cu13,nccl}/include
    let nvidia = torch.join("../nvidia");
    let cuda = ["cu13", "cu12"].map(|v| nvidia.join(v).join("include"));
    let cuda = cuda.iter().find(|p| p.join("cuda_runtime_api.h").is_file());
    let nccl = nvidia.join("nccl/include");
    if let (Some(cuda), true) = (cuda, nccl.join("nccl.h").is_file()) {
        build
            .include(cuda)
            .include(&nccl)
            .define("PROMPTIR_NCCL", None)
            .define("USE_C10D_NCCL", None);
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let (archive, stamp) = (out.join("libpromptir_native.a"), out.join("native.stamp"));
    let flags = format!("{lib}|{abi}|{:?}|{:?}", cuda, nccl.join("nccl.h").is_file());
    let built = std::fs::metadata(&archive).and_then(|m| m.modified()).ok();
    let unchanged = std::fs::read_to_string(&stamp).is_ok_and(|s| s == flags)
        && built.is_some_and(|t| newest(Path::new("csrc")).max(newest(Path::new("build.rs"))) < t);
    if unchanged {
        // What `compile` prints, without compiling.
        println!("cargo:rustc-link-search=native={}", out.display());
        println!("cargo:rustc-link-lib=static=promptir_native");
        println!("cargo:rustc-link-lib=stdc++");
        return;
    }
    build.compile("promptir_native");
    std::fs::write(&stamp, flags).expect("writing OUT_DIR/native.stamp");
}

/// The latest modification time under `path` (a file or a folder tree).
fn newest(path: &Path) -> SystemTime {
    let own = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let children = std::fs::read_dir(path).into_iter().flatten().flatten();
    children.map(|e| newest(&e.path())).fold(own, SystemTime::max)
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
        let p = Path::new(&dir).join(f);
        if !f.is_empty() && p.is_file() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
}
