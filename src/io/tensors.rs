//! safetensors files: writing named tensors with string metadata, reading them back, and
//! copying them into a `VarStore` strictly (tch's `VarStore::load` ignores extra keys,
//! broadcasts shapes and adopts the file's dtype; none of that here).

use super::atomic::write_atomic;
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

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
}

fn list(keys: &[String]) -> String {
    const SHOW: usize = 8;
    let mut s = keys.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > SHOW {
        s.push_str(&format!(", ... ({} in all)", keys.len()));
    }
    s
}

/// Copies every variable of `vs` from `file` after a strict diff: missing keys, unexpected keys,
/// shape and dtype mismatches are all errors that list the offending keys. File keys chosen by
/// `skip` (a classifier the model does not build, optimizer state) are passed over and returned.
pub fn load_strict(
    vs: &nn::VarStore,
    file: &TensorFile,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    load_strict_prefixed(vs, file, "", skip)
}

/// [`load_strict`] where variable `n` is the file's `prefix` + `n` (the weights' average, say).
pub fn load_strict_prefixed(
    vs: &nn::VarStore,
    file: &TensorFile,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let header = file.header();
    let vars: HashMap<String, Tensor> =
        vs.variables().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)).collect();
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
