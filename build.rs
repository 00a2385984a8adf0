//! Bakes an rpath to libtorch (so the binary runs without LD_LIBRARY_PATH) and keeps
//! `libtorch.so` in NEEDED with `--no-as-needed`: it is the library that pulls in
//! `libtorch_cuda.so`, and without it CUDA silently reports itself unavailable.
fn main() {
    if std::env::var_os("CARGO_FEATURE_DOC_ONLY").is_some() {
        return;
    }
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={}", lib.to_string_lossy());
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=build.rs");
}
