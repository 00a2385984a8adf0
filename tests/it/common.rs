//! Shared test helpers: the built binary, the venv's python, PyTorch fixtures, a tiny
//! checkpoint and dataset, tensor and folder comparisons.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use tch::Tensor;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The project's venv python (`make setup` creates it; `make test` runs setup first).
pub fn python() -> PathBuf {
    let p = repo().join(".venv/bin/python");
    assert!(p.exists(), "{} missing: run `make setup`", p.display());
    p
}

/// Runs a python snippet with the venv and returns stdout; panics with stderr on failure.
pub fn run_python(args: &[&str]) -> String {
    let out = Command::new(python()).args(args).output().expect("python runs");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn content_hash(files: &[&str]) -> u64 {
    // FNV-1a over the generating scripts, fixtures rebuilt whenever one changes, and over the
    // CPU's feature flags: vector width changes libtorch's reduction order, and some tests
    // compare bit for bit with fixtures this machine made (a copied `target/` must not pass
    // another CPU's numbers off as this one's).
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("flags")).map(String::from))
        .unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    let bytes = files.iter().flat_map(|f| std::fs::read(repo().join(f)).unwrap());
    for b in bytes.chain(flags.into_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    h
}

/// The parity fixtures written by `scripts/reference/parity_fixtures.py`, generated once per
/// script version under `target/`.
pub fn parity_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        fixtures(
            "parity",
            &[
                "scripts/reference/parity_fixtures.py",
                "scripts/reference/promptir_ref.py",
                "scripts/reference/restormer_ref.py",
                "scripts/reference/nafnet_ref.py",
                "scripts/reference/adair_ref.py",
                "scripts/reference/moce_ir_ref.py",
            ],
        )
    })
}

/// `target/test-fixtures/<name>-<hash of the scripts>`, written once by `scripts[0] DIR`
/// (through a temp folder, so an interrupted run never leaves half a set).
fn fixtures(name: &str, scripts: &[&str]) -> PathBuf {
    let dir = repo().join(format!("target/test-fixtures/{name}-{:016x}", content_hash(scripts)));
    if !dir.join(".complete").exists() {
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        run_python(&[scripts[0], tmp.to_str().unwrap()]);
        std::fs::write(tmp.join(".complete"), b"").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    dir
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    f64::try_from((a - b).abs().max()).unwrap()
}

/// [`max_abs_diff`] of `got` from `expected`, relative to `expected`'s largest magnitude.
pub fn max_rel_diff(expected: &Tensor, got: &Tensor) -> f64 {
    max_abs_diff(expected, got) / f64::try_from(expected.abs().max()).unwrap().max(1e-12)
}

/// The fixtures written by `scripts/reference/loss_metrics_ref.py` (metrics, losses, VGG16),
/// generated once per script version under `target/`.
pub fn loss_metrics_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        fixtures(
            "loss-metrics",
            &["scripts/reference/loss_metrics_ref.py", "scripts/export_vgg16.py"],
        )
    })
}

/// A tiny dataset in the course layout under `root`: 6 rain + 6 snow 32x32 pairs, smooth clean
/// images degraded by streaks / dots (the same images as `tests/train.rs` builds).
pub fn paired_dataset(root: &Path) {
    use promptir::io::RgbImage;
    for d in ["train/degraded", "train/clean"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for kind in ["rain", "snow"] {
        for n in 1..=6usize {
            let (w, h) = (32usize, 32usize);
            let mut clean = vec![0u8; w * h * 3];
            let mut deg = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        let v = ((x * 5 + y * 3 + c * 40 + n * 17) % 200) as u8 + 20;
                        let i = (y * w + x) * 3 + c;
                        clean[i] = v;
                        let streak = if kind == "rain" {
                            (x + 2 * y + n) % 9 == 0
                        } else {
                            (x * 7 + y * 13 + n) % 23 == 0
                        };
                        deg[i] = if streak { v.saturating_add(90) } else { v };
                    }
                }
            }
            RgbImage { width: w, height: h, hwc: clean }
                .save_png(&root.join(format!("train/clean/{kind}_clean-{n}.png")))
                .unwrap();
            RgbImage { width: w, height: h, hwc: deg }
                .save_png(&root.join(format!("train/degraded/{kind}-{n}.png")))
                .unwrap();
        }
    }
}

/// Copies a folder tree.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// Every entry under `dir` (relative path -> FNV-1a of the bytes, or `None` for folders), to
/// assert that a command changed nothing on disk.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Option<u64>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<PathBuf, Option<u64>>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.map(Result::unwrap) {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                let mut h: u64 = 0xcbf29ce484222325;
                for b in std::fs::read(&p).unwrap_or_default() {
                    h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
                }
                out.insert(rel, Some(h));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A checkpoint of the network `meta.model` with seeded random weights, saved at `path` with
/// `meta`; returns its weights.
pub fn save_checkpoint(
    path: &Path,
    meta: &promptir::io::CheckpointMeta,
    seed: u64,
) -> tch::nn::VarStore {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _model = promptir::model::Network::seeded(&vs.root(), &meta.model, seed);
    promptir::io::save_model(&vs, meta, path).unwrap();
    vs
}

/// A tiny checkpoint (seeded random weights, plain metadata) at `dir/name`.
pub fn checkpoint_at(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    let meta = promptir::io::CheckpointMeta::new(promptir::model::ModelConfig::tiny());
    save_checkpoint(&path, &meta, seed);
    path
}

/// Every tensor of a safetensors file, by name.
pub fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let f = promptir::io::TensorFile::open(path).unwrap();
    f.header().keys().map(|k| (k.clone(), f.tensor(k).unwrap())).collect()
}

/// The built binary as every test runs it: one libtorch thread (the suite runs several
/// processes at once on 2-core machines), outside any torchrun job, without backtraces (tests
/// read one-line errors) and without LD_LIBRARY_PATH (the rpath must find libtorch).
pub fn promptir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_promptir"));
    c.env("OMP_NUM_THREADS", "1");
    for var in ["LD_LIBRARY_PATH", "RUST_BACKTRACE", "WORLD_SIZE", "RANK", "LOCAL_RANK"] {
        c.env_remove(var);
    }
    c
}

/// `promptir CMD ARGS --device cpu`, run to the end: the numbers are compared with CPU
/// references even on a machine with a GPU.
pub fn on_cpu(cmd: &str, args: &[&dyn AsRef<OsStr>]) -> Output {
    promptir().arg(cmd).args(args).args(["--device", "cpu"]).output().unwrap()
}

/// The stdout of a command that must succeed (its stderr is the failure message).
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Stdout then stderr of a command that must succeed (training reports on both).
pub fn ok_printed(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned() + &err
}

/// The stderr of a user error: exit 2 and one line (libtorch's own `[W ...]` warnings, which
/// some CPUs print, aside).
pub fn user_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    let ours = err.lines().filter(|l| !l.starts_with("[W")).count();
    assert_eq!(ours, 1, "expected one line: {err}");
    err
}

/// Sends `sig` (as `kill` spells it: -TERM, -STOP, -9...) to a process.
pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// `from` copied into `to`, folders included (but Python caches).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if p.is_dir() {
            if name != "__pycache__" {
                copy_tree(&p, &to.join(name));
            }
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// The body rows of the first markdown table in `md`, cells trimmed.
pub fn table_rows(md: &str) -> Vec<Vec<&str>> {
    md.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}
