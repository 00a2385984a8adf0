//! Checkpoints: safetensors files whose metadata carries the `ModelConfig`, so every later
//! command rebuilds the network from the file alone. Loading is strict (tch's `VarStore::load`
//! ignores extra keys, broadcasts shapes and adopts the file's dtype; none of that here).

use crate::io::write_atomic;
use crate::model::{ModelConfig, PromptIr, IGNORED_UPSTREAM_KEYS};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Metadata key holding the model config as JSON.
pub const CONFIG_KEY: &str = "promptir.model_config";
/// Metadata key marking files written by this project.
pub const FORMAT_KEY: &str = "promptir.format";
pub const FORMAT_VERSION: &str = "1";

fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        _ => return None,
    })
}

fn dtype_to_kind(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

/// Little-endian bytes of a tensor, on CPU and contiguous.
fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(Device::Cpu).contiguous();
    let nbytes = t.numel() * t.kind().elt_size_in_bytes();
    let mut buf = vec![0u8; nbytes];
    // SAFETY-free route: copy_data_u8 copies the raw storage bytes of a contiguous CPU tensor.
    t.copy_data_u8(&mut buf, t.numel());
    buf
}

/// Writes named tensors plus string metadata atomically.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = kind_to_dtype(t.kind()).ok_or_else(|| {
            Error::weights(path, format!("tensor {name}: unsupported kind {:?}", t.kind()))
        })?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, tensor_bytes(t)));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::weights(path, format!("cannot serialise: {e}")))?;
    let meta: HashMap<String, String> = metadata.into_iter().collect();
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| Error::weights(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, |f| f.write_all(&bytes))
}

/// Saves a model's variables with its config in the metadata (plus any `extra` entries).
pub fn save_model(
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    extra: BTreeMap<String, String>,
    path: &Path,
) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = extra;
    meta.insert(FORMAT_KEY.into(), FORMAT_VERSION.into());
    meta.insert(CONFIG_KEY.into(), serde_json::to_string(cfg).expect("ModelConfig serialises"));
    save_tensors(path, &vars, meta)
}

/// A safetensors file read fully into memory and parsed (so truncation is caught here).
pub struct TensorFile {
    pub path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::weights(path, format!("cannot read ({e}); check the path")))?;
        let tf = TensorFile { path: path.to_path_buf(), bytes };
        tf.parse()?;
        Ok(tf)
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| {
            Error::weights(
                &self.path,
                format!("not a readable safetensors file ({e:?}); it may be truncated or of another format (official .ckpt/.pth files go through `promptir import`)"),
            )
        })
    }

    pub fn metadata(&self) -> BTreeMap<String, String> {
        let (_, meta) = SafeTensors::read_metadata(&self.bytes).expect("parsed in open");
        meta.metadata().clone().unwrap_or_default().into_iter().collect()
    }

    /// Names with (dtype, shape), sorted by name.
    pub fn header(&self) -> BTreeMap<String, (Dtype, Vec<i64>)> {
        let st = self.parse().expect("parsed in open");
        st.tensors()
            .into_iter()
            .map(|(n, v)| (n, (v.dtype(), v.shape().iter().map(|&d| d as i64).collect())))
            .collect()
    }

    /// One tensor, on CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let st = self.parse()?;
        let v = st
            .tensor(name)
            .map_err(|_| Error::weights(&self.path, format!("no tensor named {name}")))?;
        let kind = dtype_to_kind(v.dtype()).ok_or_else(|| {
            Error::weights(&self.path, format!("tensor {name}: unsupported dtype {:?}", v.dtype()))
        })?;
        let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
        Ok(Tensor::f_from_data_size(v.data(), &shape, kind)?)
    }

    /// The model config stored by `save_model`.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let meta = self.metadata();
        if let Some(v) = meta.get(FORMAT_KEY).filter(|v| v.as_str() != FORMAT_VERSION) {
            return Err(Error::weights(
                &self.path,
                format!("format version {v:?}, this promptir reads {FORMAT_VERSION:?}; use a matching promptir"),
            ));
        }
        let json = meta.get(CONFIG_KEY).ok_or_else(|| {
            Error::weights(
                &self.path,
                "has no promptir model config in its metadata; convert official checkpoints with `promptir import`",
            )
        })?;
        let cfg: ModelConfig = serde_json::from_str(json).map_err(|e| {
            Error::weights(&self.path, format!("corrupt model config in metadata: {e}"))
        })?;
        cfg.validate().map_err(|e| {
            Error::weights(&self.path, format!("invalid model config in metadata: {e}"))
        })?;
        Ok(cfg)
    }
}

fn list(keys: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = keys.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > SHOW {
        s.push_str(&format!(", ... ({} in all)", keys.len()));
    }
    s
}

/// What to do with the official keys of modules that never run (see `IGNORED_UPSTREAM_KEYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKeys {
    /// They are unexpected keys like any other (our own checkpoints never hold them).
    Reject,
    /// Skip them (importing official checkpoints); they are returned to the caller to report.
    Drop,
}

/// Copies every variable of `vs` from `file` after a strict diff: missing keys, unexpected keys,
/// shape and dtype mismatches are all errors that list the offending keys. Returns dropped keys.
pub fn load_strict(
    vs: &nn::VarStore,
    file: &TensorFile,
    upstream: UpstreamKeys,
) -> Result<Vec<String>> {
    let skip = |k: &str| upstream == UpstreamKeys::Drop && IGNORED_UPSTREAM_KEYS.contains(&k);
    load_strict_skipping(vs, file, &skip)
}

/// [`load_strict`] with the file keys to pass over chosen by `skip` (e.g. a classifier the
/// model does not build); they are returned. Every other difference is an error.
pub fn load_strict_skipping(
    vs: &nn::VarStore,
    file: &TensorFile,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let header = file.header();
    let vars = vs.variables();
    let mut missing: Vec<String> =
        vars.keys().filter(|k| !header.contains_key(*k)).cloned().collect();
    missing.sort();
    let mut unexpected = Vec::new();
    let mut dropped = Vec::new();
    for k in header.keys() {
        if vars.contains_key(k) {
            continue;
        }
        if skip(k) {
            dropped.push(k.clone());
        } else {
            unexpected.push(k.clone());
        }
    }
    let mut wrong = Vec::new();
    for (k, v) in &vars {
        if let Some((dtype, shape)) = header.get(k) {
            if *shape != v.size() {
                wrong.push(format!("{k} (file {shape:?}, model {:?})", v.size()));
            } else if Some(*dtype) != kind_to_dtype(v.kind()) {
                wrong.push(format!("{k} (file {dtype:?}, model {:?})", v.kind()));
            }
        }
    }
    wrong.sort();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("{} missing key(s): {}", missing.len(), list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("{} unexpected key(s): {}", unexpected.len(), list(&unexpected)));
    }
    if !wrong.is_empty() {
        problems.push(format!("{} shape/dtype mismatch(es): {}", wrong.len(), list(&wrong)));
    }
    if !problems.is_empty() {
        return Err(Error::weights(
            &file.path,
            format!(
                "does not match the model ({}); was it written for another model config?",
                problems.join("; ")
            ),
        ));
    }
    tch::no_grad(|| -> Result<()> {
        for (k, mut v) in vars {
            let src = file.tensor(&k)?;
            v.f_copy_(&src)?;
        }
        Ok(())
    })?;
    Ok(dropped)
}

/// A network rebuilt from a checkpoint's own metadata.
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: PromptIr,
    pub config: ModelConfig,
    pub path: PathBuf,
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish()
    }
}

/// Refuses metadata whose config describes a network much larger than the tensors the file
/// holds (an edited or corrupted header) before building it, so that a damaged config can never
/// ask for a huge allocation. The estimate is at most the true count, so a file that matches
/// its config always passes; smaller differences are left to the strict key/shape check.
fn check_config_fits_tensors(file: &TensorFile, config: &ModelConfig) -> Result<()> {
    let header = file.header();
    let held: f64 = header.values().map(|(_, s)| s.iter().product::<i64>() as f64).sum();
    let claimed = config.approx_parameters();
    if claimed <= 1.5 * held {
        return Ok(());
    }
    // Name the differing keys when the tensors say what the config should be.
    let mut differs = Vec::new();
    if let Ok(actual) = infer_config(&file.path, &header) {
        let (a, b) = (serde_json::to_value(config), serde_json::to_value(&actual));
        if let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (a, b) {
            for (k, v) in &a {
                // The factor is not stored in the tensors, only the width it produces.
                if k != "ffn_expansion_factor" && b.get(k) != Some(v) {
                    differs.push(format!("{k}: metadata {v}, tensors {}", b[k]));
                }
            }
        }
    }
    if differs.is_empty() {
        differs.push(format!(
            "about {claimed:.1e} parameters in the metadata, {held:.1e} in the file"
        ));
    }
    Err(Error::weights(
        &file.path,
        format!(
            "the model config in the metadata does not match the tensors ({}); the file was edited or is corrupt, use another checkpoint",
            differs.join("; ")
        ),
    ))
}

/// Loads a checkpoint written by this project onto `device`: the metadata's config must
/// describe the tensors, then keys, shapes and dtypes are checked strictly.
pub fn load_model(path: &Path, device: Device) -> Result<LoadedModel> {
    let file = TensorFile::open(path)?;
    let config = file.model_config()?;
    check_config_fits_tensors(&file, &config)?;
    let vs = nn::VarStore::new(device);
    let model = PromptIr::new(&vs.root(), &config);
    load_strict(&vs, &file, UpstreamKeys::Reject)?;
    Ok(LoadedModel { vs, model, config, path: path.to_path_buf(), metadata: file.metadata() })
}

/// Reads the network's hyper-parameters off an official state_dict's keys and shapes, so that
/// importing needs no config (the release checkpoint comes out as `ModelConfig::paper()`).
pub fn infer_config(
    path: &Path,
    header: &BTreeMap<String, (Dtype, Vec<i64>)>,
) -> Result<ModelConfig> {
    let err = |msg: String| Error::weights(path, format!("{msg}; is this a PromptIR checkpoint?"));
    let shape =
        |k: &str| header.get(k).map(|(_, s)| s.clone()).ok_or_else(|| err(format!("no key {k}")));
    let count = |prefix: &str| {
        let dot = format!("{prefix}.");
        header
            .keys()
            .filter_map(|k| k.strip_prefix(&dot)?.split('.').next()?.parse::<i64>().ok())
            .max()
            .map_or(0, |m| m + 1)
    };
    // Shapes come from the file: index them only after checking their rank.
    let shape_n = |k: &str, n: usize| {
        let s = shape(k)?;
        if s.len() == n {
            Ok(s)
        } else {
            Err(err(format!("{k} has shape {s:?}, expected {n} dimensions")))
        }
    };
    let heads = |prefix: &str| shape_n(&format!("{prefix}.attn.temperature"), 3).map(|s| s[0]);
    let embed = shape_n("patch_embed.proj.weight", 4)?;
    let dim = embed[0];
    let project_in = shape_n("encoder_level1.0.ffn.project_in.weight", 4)?;
    let hidden = project_in[0] / 2;
    if dim < 1 {
        return Err(err(format!("patch_embed.proj.weight has shape {embed:?}")));
    }
    // The factor itself is not stored: take the upstream 2.66 when it reproduces the width.
    let ffn_expansion_factor =
        if (dim as f64 * 2.66) as i64 == hidden { 2.66 } else { hidden as f64 / dim as f64 };
    let p = |i: usize| shape_n(&format!("prompt{i}.prompt_param"), 5);
    let (p1, p2, p3) = (p(1)?, p(2)?, p(3)?);
    let cfg = ModelConfig {
        inp_channels: embed[1],
        out_channels: shape_n("output.weight", 4)?[0],
        dim,
        num_blocks: [
            count("encoder_level1"),
            count("encoder_level2"),
            count("encoder_level3"),
            count("latent"),
        ],
        num_refinement_blocks: count("refinement"),
        heads: [
            heads("encoder_level1.0")?,
            heads("encoder_level2.0")?,
            heads("encoder_level3.0")?,
            heads("latent.0")?,
        ],
        ffn_expansion_factor,
        bias: header.contains_key("patch_embed.proj.bias"),
        layer_norm_type: if header.contains_key("encoder_level1.0.norm1.body.bias") {
            crate::model::LayerNormType::WithBias
        } else {
            crate::model::LayerNormType::BiasFree
        },
        prompt_len: p1[1],
        prompt_dims: [p1[2], p2[2], p3[2]],
        prompt_sizes: [p1[3], p2[3], p3[3]],
    };
    cfg.validate().map_err(|e| err(format!("inferred an invalid config ({e})")))?;
    Ok(cfg)
}

/// The Python that unpickles `.ckpt`/`.pth` files, carried in the binary.
const IMPORT_PY: &str = include_str!("../scripts/import_checkpoint.py");

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
/// `.safetensors` with official keys) into a checkpoint of this project.
pub fn import_official(src: &Path, dst: &Path) -> Result<ImportReport> {
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
        let config = infer_config(src, &file.header())?;
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = PromptIr::new(&vs.root(), &config);
        let dropped = load_strict(&vs, &file, UpstreamKeys::Drop)?;
        let mut meta = BTreeMap::new();
        meta.insert("promptir.imported_from".into(), src.display().to_string());
        save_model(&vs, &config, meta, dst)?;
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
