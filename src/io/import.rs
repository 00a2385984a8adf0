//! `promptir import`: official checkpoints (Lightning `.ckpt`, `torch.save` `.pth` holding a
//! state_dict or BasicSR's `{'params': ...}`, or safetensors with the official keys) into this
//! project's format. The architecture is recognised from the keys and its config read off the
//! tensor shapes; pickles are opened by a small Python helper carried in the binary.

use super::checkpoint::{save_model, CheckpointMeta};
use super::tensors::{load_strict, TensorFile};
use crate::model::{recognise, Arch, ModelConfig, Network};
use crate::{Error, Result};
use safetensors::tensor::Dtype;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{nn, Device};

/// The network an official state_dict's keys and shapes describe, so that importing needs no
/// config: of `arch` when given, else of the architecture the keys are recognised as.
pub fn infer_config(
    path: &Path,
    header: &BTreeMap<String, (Dtype, Vec<i64>)>,
    arch: Option<Arch>,
) -> Result<ModelConfig> {
    let shapes = header.iter().map(|(k, (_, s))| (k.clone(), s.clone())).collect();
    recognise(&shapes, arch).map_err(|msg| Error::weights(path, msg))
}

/// The Python that unpickles `.ckpt`/`.pth` files, carried in the binary.
const IMPORT_PY: &str = include_str!("../../scripts/import_checkpoint.py");

/// The python to run helpers with: `$PROMPTIR_PYTHON`, else the project's venv, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMPTIR_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Report of `import_official`.
#[derive(Debug)]
pub struct ImportReport {
    pub config: ModelConfig,
    pub dropped: Vec<String>,
    pub tensors: usize,
    pub parameters: i64,
}

/// Converts an official checkpoint (Lightning `.ckpt`, `torch.save` `.pth`/`.pt`, or a
/// `.safetensors` with official keys) of `arch` (recognised from the keys when `None`) into a
/// checkpoint of this project.
pub fn import_official(src: &Path, dst: &Path, arch: Option<Arch>) -> Result<ImportReport> {
    if !src.is_file() {
        return Err(Error::weights(src, "no such file; check the checkpoint path"));
    }
    crate::io::check_output_file(dst)?;
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let tmp_dir;
    let st_path = if ext == "safetensors" {
        src.to_path_buf()
    } else if matches!(ext.as_str(), "ckpt" | "pth" | "pt" | "bin") {
        tmp_dir = tempdir_near(dst)?;
        let out = tmp_dir.join("converted.safetensors");
        let py = python();
        let mut child = std::process::Command::new(&py)
            .arg("-")
            .arg(src)
            .arg(&out)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Usage(format!(
                    "cannot run {} to unpickle {} ({e}); run `make setup` or set PROMPTIR_PYTHON to a python with torch",
                    py.display(),
                    src.display()
                ))
            })?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(IMPORT_PY.as_bytes())
            .map_err(|e| Error::io(&py, e))?;
        let res = child.wait_with_output().map_err(|e| Error::io(&py, e))?;
        if !res.status.success() {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            let msg = String::from_utf8_lossy(&res.stderr);
            let last = msg.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("python failed");
            return Err(Error::weights(src, last.trim().to_string()));
        }
        out
    } else {
        return Err(Error::weights(
            src,
            "unknown checkpoint type: expected .ckpt, .pth, .pt or .safetensors",
        ));
    };
    let result = (|| {
        let file = TensorFile::open(&st_path)?;
        let config = infer_config(src, &file.header(), arch)?;
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Network::new(&vs.root(), &config);
        let unused = config.unused_upstream_keys();
        let dropped = load_strict(&vs, &file, &|k| unused.contains(&k))?;
        let meta = CheckpointMeta {
            imported_from: Some(src.display().to_string()),
            ..CheckpointMeta::new(config.clone())
        };
        save_model(&vs, &meta, dst)?;
        let vars = vs.variables();
        Ok(ImportReport {
            parameters: vars.values().map(|t| t.numel() as i64).sum(),
            tensors: vars.len(),
            config,
            dropped,
        })
    })();
    if st_path != src {
        if let Some(d) = st_path.parent() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    result
}

fn tempdir_near(dst: &Path) -> Result<PathBuf> {
    let parent = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = parent.join(format!(".promptir-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}
