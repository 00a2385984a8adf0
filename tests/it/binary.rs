//! The built binary: runs without LD_LIBRARY_PATH, keeps libtorch_cuda linked, maps errors to
//! exit codes.

use crate::common::{promptir, user_error};
use std::process::Command;

#[test]
fn doctor_runs_without_ld_library_path() {
    let out = promptir().arg("doctor").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("libtorch") && text.contains("2.11.0") && text.contains("cuda available"),
        "{text}"
    );
}

#[test]
fn libtorch_cuda_is_linked_so_cuda_can_be_found() {
    // Without -Wl,--no-as-needed the linker drops libtorch.so, which is what pulls in
    // libtorch_cuda.so, and CUDA silently reports itself unavailable on GPU machines.
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_promptir"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("libtorch_cuda.so =>") && !text.contains("not found"), "{text}");
}

#[test]
fn user_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let err =
        user_error(&promptir().args(["inspect", missing.to_str().unwrap()]).output().unwrap());
    assert!(err.contains("missing.safetensors"), "{err}");
    assert_eq!(err.matches("No such file").count(), 1, "the cause is printed once: {err}");
}

#[test]
fn import_cli_converts_a_lightning_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("tiny.safetensors");
    let src = crate::common::parity_fixtures().join("lightning.ckpt");
    let out = promptir()
        .args(["import", src.to_str().unwrap(), "--output", out_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dropped 6 keys"), "{text}");
    let out = promptir().args(["inspect", out_path.to_str().unwrap()]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"dim\":8"));
}

#[test]
fn running_out_of_memory_is_a_user_error_with_advice() {
    // Under a 5 GB address-space cap libtorch's libraries (~2.7 GB mapped) still load, and the
    // tiny network's 4096x4096 activations (GBs each) cannot be allocated: libtorch throws inside
    // an op, which tch turns into a panic.
    let script = format!(
        "ulimit -v 5000000; exec \"{}\" bench --config tiny --size 4096 --mode infer --iters 1 --warmup 0",
        env!("CARGO_BIN_EXE_promptir")
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let err = user_error(&out);
    assert!(err.starts_with("error: out of memory (libtorch could not allocate "), "{err}");
    assert!(err.contains(" bytes)") && err.contains("--tile"), "{err}");
}
