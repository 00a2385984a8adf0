//! Property tests: random YAML and `--set` mutations, random / truncated / bit-flipped
//! checkpoint bytes and random metadata configs give `Ok` or `Err`, never a panic.

use crate::common::{checkpoint_at, repo};
use promptir::config::Experiment;
use promptir::io::{self as checkpoint, TensorFile};
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tch::Device;

/// Values that stress typing and ranges.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just(".nan".to_string()),
        Just("-.inf".to_string()),
        Just("~".to_string()),
        Just("[1, 2".to_string()),
        Just("{a: b}".to_string()),
        Just("[]".to_string()),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        Just("18446744073709551616".to_string()),
        Just("&a [*a]".to_string()),
        "[a-z_.]{0,12}",
        "[ -~]{0,16}",
    ]
}

/// Real keys and near misses.
fn yaml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "seed",
            "device",
            "name",
            "model.dim",
            "model.num_blocks",
            "model.heads",
            "model.ffn_expansion_factor",
            "model.prompt_sizes",
            "model.prompt_len",
            "model.inp_channels",
            "model.layer_norm_type",
            "data.root",
            "data.workers",
            "data.val_fraction",
            "train.lr",
            "train.patch_size",
            "train.batch_size",
            "train.epochs",
            "train.max_steps",
            "train.betas",
            "train.max_epochs",
            "train.warmup_epochs",
            "train.grad_clip",
            "train.precision",
            "train.schedule_unit",
            "loss.l1",
            "loss.perceptual",
            "loss.perceptual_layers",
            "augment.hflip",
            "augment.blur.sigma",
            "augment.erase.scale",
            "augment.rotate",
            "extends",
            "model",
        ])
        .prop_map(String::from),
        "[a-z]{1,6}(\\.[a-z_]{1,8}){0,3}",
    ]
}

fn exp_file() -> &'static (tempfile::TempDir, PathBuf, String) {
    static F: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.yaml");
        let tiny = repo().join("experiments/tiny.yaml");
        std::fs::write(&p, format!("extends: {}\n", tiny.display())).unwrap();
        let text = Experiment::load(&p, &[]).unwrap().to_yaml();
        (dir, p, text)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_set_overrides_never_panic(sets in prop::collection::vec((yaml_key(), yaml_value()), 1..4)) {
        let (_, path, _) = exp_file();
        let sets: Vec<String> = sets.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = Experiment::load(path, &sets);
    }

    #[test]
    fn mutated_yaml_text_never_panics(
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in prop_oneof![yaml_value(), (yaml_key(), yaml_value()).prop_map(|(k, v)| format!("\n{k}: {v}\n")), "[\\x00-\\x7f]{0,8}"],
    ) {
        let (_, path, text) = exp_file();
        let at = cut.index(text.len() + 1);
        let end = (at + len).min(text.len());
        let mutated = format!("{}{insert}{}", &text[..at], &text[end..]);
        let _ = Experiment::from_yaml_str(&mutated, path);
    }

    #[test]
    fn damaged_checkpoints_never_panic(
        mode in 0u8..5,
        entry in any::<prop::sample::Index>(),
        field in 0u8..4,
        shape in prop::collection::vec(0i64..70, 0..5),
        dtype in prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "I8", "F8_E4M3", "X"]),
        pos in any::<prop::sample::Index>(),
        bits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..5),
        noise in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let (dir, base) = ckpt_bytes();
        let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let bytes: Vec<u8> = match mode {
            0 => base[..pos.index(base.len())].to_vec(), // truncated
            1 => {
                // bit flips in the JSON header (names, dtypes, shapes, offsets, metadata)
                let mut b = base.clone();
                for (i, bit) in &bits {
                    b[i.index(header_end)] ^= 1 << bit;
                }
                b
            }
            2 => {
                // a random header length
                let mut b = base.clone();
                b[..8].copy_from_slice(&noise.iter().chain([0u8; 8].iter()).take(8).copied().collect::<Vec<_>>());
                b
            }
            3 => noise, // random bytes
            _ => edit_header(base, |h| {
                // one well-formed but wrong field: a shape, a dtype, offsets or a name
                let m = h.as_object_mut().unwrap();
                let names: Vec<String> = m.keys().filter(|k| *k != "__metadata__").cloned().collect();
                let name = &names[entry.index(names.len())];
                let e = &mut m[name.as_str()];
                match field {
                    0 => e["shape"] = shape.into(),
                    1 => e["dtype"] = dtype.into(),
                    2 => e["data_offsets"] = serde_json::json!([noise.len(), noise.len() * 64]),
                    _ => {
                        let v = m.remove(name).unwrap();
                        m.insert(format!("{name}x"), v);
                    }
                }
            }),
        };
        let p = dir.path().join(format!("case-{}.safetensors", COUNTER.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(f) = TensorFile::open(&p) {
            let _ = (f.metadata(), f.header(), checkpoint::CheckpointMeta::read(&f));
            let _ = checkpoint::load_model(&p, Device::Cpu);
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn random_metadata_configs_never_panic(
        key in prop::sample::select(vec![
            "inp_channels", "out_channels", "dim", "num_blocks", "num_refinement_blocks", "heads",
            "ffn_expansion_factor", "bias", "layer_norm_type", "prompt_len", "prompt_dims", "prompt_sizes", "nope",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e12f64..1e12).prop_map(serde_json::Value::from),
            prop::collection::vec(any::<i32>(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::vec(0i64..64, 3..5).prop_map(serde_json::Value::from),
            "[a-z_]{0,10}".prop_map(serde_json::Value::from),
        ],
    ) {
        let (dir, base) = ckpt_bytes();
        let p = dir.path().join(format!("meta-{}.safetensors", COUNTER.fetch_add(1, Ordering::SeqCst)));
        let bytes = edit_header(base, |h| {
            let meta = h["__metadata__"].as_object_mut().unwrap();
            let mut cfg: serde_json::Value =
                serde_json::from_str(meta[checkpoint::CONFIG_KEY].as_str().unwrap()).unwrap();
            cfg[key] = value;
            meta.insert(checkpoint::CONFIG_KEY.into(), cfg.to_string().into());
        });
        std::fs::write(&p, bytes).unwrap();
        let _ = checkpoint::load_model(&p, Device::Cpu);
        std::fs::remove_file(&p).unwrap();
    }
}

/// A safetensors file's bytes with its JSON header edited (data offsets are relative to the
/// data section, so they stay valid).
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let text = serde_json::to_vec(&h).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ckpt_bytes() -> &'static (tempfile::TempDir, Vec<u8>) {
    static B: OnceLock<(tempfile::TempDir, Vec<u8>)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = checkpoint_at(dir.path(), "base.safetensors", 0);
        let bytes = std::fs::read(&p).unwrap();
        (dir, bytes)
    })
}
