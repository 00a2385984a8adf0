//! Checkpoints: import of official files written by PyTorch, strict loading, metadata.

use crate::common::{max_abs_diff, parity_fixtures, save_checkpoint, tensors};
use promptir::io::{self as checkpoint, save_tensors, TensorFile};
use promptir::model::{
    AdaIrConfig, Arch, LayerNormType, MoceIrConfig, ModelConfig, NafNetConfig, Network,
    RestormerConfig, IGNORED_UPSTREAM_KEYS,
};
use std::collections::BTreeMap;
use tch::{nn, nn::Module, Device, Tensor};

fn io() -> (Tensor, Tensor) {
    let f = TensorFile::open(&parity_fixtures().join("lightning_io.safetensors")).unwrap();
    (f.tensor("input").unwrap(), f.tensor("output").unwrap())
}

#[test]
fn imports_lightning_and_plain_checkpoints_with_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = io();
    for src in ["lightning.ckpt", "plain.pth"] {
        let out = dir.path().join(format!("{src}.safetensors"));
        let r = checkpoint::import_official(&parity_fixtures().join(src), &out, None).unwrap();
        assert_eq!(r.config, ModelConfig::tiny(), "{src}: config read off the shapes");
        let mut dropped = r.dropped.clone();
        dropped.sort();
        let mut expected: Vec<String> =
            IGNORED_UPSTREAM_KEYS.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(dropped, expected, "{src}: the six unused modules are dropped and reported");
        let loaded = checkpoint::load_model(&out, Device::Cpu).unwrap();
        let d = max_abs_diff(&tch::no_grad(|| loaded.model.forward(&x)), &y);
        // The project's parity tolerance: outputs reach 13.4 here, where 1e-5 is ~10 float32
        // ulps, and the forward's op order (channels-last kernels, fused projections) differs
        // from the reference's.
        assert!(d <= 1e-4, "{src}: max abs diff {d:e}");
    }
}

/// Imports `file` (written by parity_fixtures.py) with the arch recognised: `config`, no keys
/// dropped, and the outputs PyTorch gave on `io`'s input.
fn import_matches_pytorch(file: &str, io: &str, config: ModelConfig) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported.safetensors");
    let r = checkpoint::import_official(&parity_fixtures().join(file), &out, None).unwrap();
    assert_eq!(r.config, config, "{file}");
    assert!(r.dropped.is_empty(), "{file}");
    let f = TensorFile::open(&parity_fixtures().join(io)).unwrap();
    let loaded = checkpoint::load_model(&out, Device::Cpu).unwrap();
    let y = tch::no_grad(|| loaded.model.forward(&f.tensor("input").unwrap()));
    let d = max_abs_diff(&y, &f.tensor("output").unwrap());
    assert!(d <= 1e-4, "{file}: max abs diff {d:e}");
}

/// Each network in the format its authors release: Restormer's and NAFNet's BasicSR `.pth`
/// (`{'params': state_dict}`; Restormer's with bias-free LayerNorm and conv biases, read off
/// the shapes), AdaIR's Lightning `.ckpt` (`net.` prefix).
#[test]
fn imports_each_official_format_and_recognises_the_arch() {
    let restormer = RestormerConfig {
        layer_norm_type: LayerNormType::BiasFree,
        bias: true,
        ..RestormerConfig::tiny()
    };
    for (file, io, config) in [
        (
            "restormer_basicsr.pth",
            "restormer_basicsr_io.safetensors",
            ModelConfig::Restormer(restormer),
        ),
        (
            "nafnet_basicsr.pth",
            "nafnet_basicsr_io.safetensors",
            ModelConfig::Nafnet(NafNetConfig::tiny()),
        ),
        (
            "adair_lightning.ckpt",
            "adair_lightning_io.safetensors",
            ModelConfig::Adair(AdaIrConfig::tiny()),
        ),
        (
            "moce_ir_lightning.ckpt",
            "moce_ir_lightning_io.safetensors",
            ModelConfig::MoceIr(MoceIrConfig::tiny()),
        ),
    ] {
        import_matches_pytorch(file, io, config);
    }
    // Forced to another arch, a file is named as not being one.
    let dir = tempfile::tempdir().unwrap();
    let src = parity_fixtures().join("restormer_basicsr.pth");
    let e =
        checkpoint::import_official(&src, &dir.path().join("p.safetensors"), Some(Arch::Promptir))
            .unwrap_err()
            .to_string();
    assert!(e.contains("no key prompt1.prompt_param; is this a PromptIR checkpoint?"), "{e}");
}

/// A state_dict that is no arch's: the closest arch comes first, with what differs.
#[test]
fn a_state_dict_of_no_arch_names_the_closest_and_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Network::new(&vs.root(), &ModelConfig::Restormer(RestormerConfig::tiny()));
    let mut ts: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    ts.retain(|(k, _)| k != "refinement.0.ffn.dwconv.weight");
    ts.push(("extra_head.weight".into(), Tensor::zeros([2], (tch::Kind::Float, Device::Cpu))));
    let src = dir.path().join("odd.safetensors");
    save_tensors(&src, &ts, BTreeMap::new()).unwrap();
    let out = dir.path().join("out.safetensors");
    let e = checkpoint::import_official(&src, &out, None).unwrap_err().to_string();
    assert!(
        e.contains("match no architecture (closest first: restormer: missing refinement.0.ffn.dwconv.weight; unexpected extra_head.weight | promptir: no key prompt1.prompt_param | nafnet: no key intro.weight | adair: no key fre1.conv1.weight | moce_ir: no key enc.0.0.layers.0.ffn.project_in.weight)"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn checkpoint_without_state_dict_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let e = checkpoint::import_official(&parity_fixtures().join("no_state_dict.ckpt"), &out, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_state_dict.ckpt") && e.contains("holds no state_dict"), "{e}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no temp files left");
}

/// The tiny network at `dir/tiny.safetensors`, marked as imported; returns its weights too.
fn tiny_checkpoint(dir: &std::path::Path) -> (std::path::PathBuf, nn::VarStore) {
    let p = dir.join("tiny.safetensors");
    let meta = checkpoint::CheckpointMeta {
        imported_from: Some("somewhere.ckpt".into()),
        ..checkpoint::CheckpointMeta::new(ModelConfig::tiny())
    };
    let vs = save_checkpoint(&p, &meta, 0);
    (p, vs)
}

#[test]
fn round_trip_rebuilds_the_network_from_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (p, vs) = tiny_checkpoint(dir.path());
    let loaded = checkpoint::load_model(&p, Device::Cpu).unwrap();
    assert_eq!(loaded.meta.model, ModelConfig::tiny());
    assert_eq!(loaded.meta.imported_from.as_deref(), Some("somewhere.ckpt"));
    for (k, v) in vs.variables() {
        assert!(loaded.vs.variables()[&k].equal(&v), "{k}");
    }
}

/// Rewrites the tiny checkpoint with `edit` applied to its tensors.
fn edited(
    edit: impl FnOnce(&mut Vec<(String, Tensor)>),
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny_checkpoint(dir.path());
    let mut ts = tensors(&p);
    edit(&mut ts);
    save_tensors(&p, &ts, TensorFile::open(&p).unwrap().metadata()).unwrap();
    (dir, p)
}

#[test]
fn missing_extra_and_misshapen_keys_are_named() {
    let (_d, p) = edited(|ts| ts.retain(|(k, _)| k != "output.weight"));
    let e = checkpoint::load_model(&p, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("1 missing key(s): output.weight"), "{e}");

    let (_d, p) = edited(|ts| {
        ts.push(("chnl_reduce1.weight".into(), Tensor::zeros([2], (tch::Kind::Float, Device::Cpu))))
    });
    let e = checkpoint::load_model(&p, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("1 unexpected key(s): chnl_reduce1.weight"), "{e}");

    let (_d, p) = edited(|ts| {
        let i = ts.iter().position(|(k, _)| k == "latent.0.attn.temperature").unwrap();
        ts[i].1 = Tensor::ones([1], (tch::Kind::Float, Device::Cpu)); // tch's own loader would broadcast this
    });
    let e = checkpoint::load_model(&p, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("latent.0.attn.temperature (file [1], model [4, 1, 1])"), "{e}");

    let (_d, p) = edited(|ts| {
        let i = ts.iter().position(|(k, _)| k == "output.weight").unwrap();
        ts[i].1 = ts[i].1.to_kind(tch::Kind::Half);
    });
    let e = checkpoint::load_model(&p, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("output.weight (file F16, model Float)"), "{e}");
}

#[test]
fn truncated_and_foreign_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = tiny_checkpoint(dir.path());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let e = checkpoint::load_model(&p, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("tiny.safetensors") && e.contains("truncated"), "{e}");

    // A valid safetensors without our metadata (e.g. official keys exported by hand).
    let q = dir.path().join("plain.safetensors");
    save_tensors(
        &q,
        &[("a".into(), Tensor::zeros([1], (tch::Kind::Float, Device::Cpu)))],
        BTreeMap::new(),
    )
    .unwrap();
    let e = checkpoint::load_model(&q, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("promptir import"), "{e}");
}
