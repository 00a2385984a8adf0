//! The ports against PyTorch: every block and each whole network, on the same weights and
//! inputs. The PyTorch side is `scripts/reference/<arch>_ref.py`, references written in this
//! repo whose outputs and gradients equal the official code exactly (each file says the commit
//! and what was compared: max abs difference 0 for forward and backward).

use crate::common::{max_abs_diff, parity_fixtures};
use promptir::infer::Restore;
use promptir::io::TensorFile;
use promptir::model::*;
use serde_json::Value;
use std::collections::BTreeSet;
use tch::{nn, nn::Module, Device, Tensor};

const TOL: f64 = 1e-4;

struct Fixture {
    file: TensorFile,
    args: Value,
}

fn fixture(name: &str) -> Fixture {
    let file = TensorFile::open(&parity_fixtures().join(format!("{name}.safetensors"))).unwrap();
    let args = serde_json::from_str(&file.metadata()["args"]).unwrap();
    Fixture { file, args }
}

impl Fixture {
    fn i(&self, k: &str) -> i64 {
        self.args[k].as_i64().unwrap()
    }
    fn t(&self, k: &str) -> Tensor {
        self.file.tensor(k).unwrap()
    }
    /// Copies `param.*` into the var store, requiring the key sets to be equal.
    fn load_params(&self, vs: &nn::VarStore) {
        let theirs: BTreeSet<String> = self
            .file
            .header()
            .keys()
            .filter_map(|k| k.strip_prefix("param.").map(String::from))
            .collect();
        let ours: BTreeSet<String> = vs.variables().keys().cloned().collect();
        assert_eq!(ours, theirs, "parameter names differ from PyTorch's");
        tch::no_grad(|| {
            for (k, mut v) in vs.variables() {
                let src = self.t(&format!("param.{k}"));
                assert_eq!(v.size(), src.size(), "{k}");
                v.copy_(&src);
            }
        });
    }
    fn check(&self, build: impl FnOnce(&nn::Path) -> Box<dyn Module>) -> f64 {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(&vs.root());
        self.load_params(&vs);
        let y = tch::no_grad(|| m.forward(&self.t("input")));
        let d = max_abs_diff(&y, &self.t("output"));
        assert!(d <= TOL, "max abs diff {d:e} > {TOL:e}");
        d
    }
}

fn ln_kind(f: &Fixture) -> LayerNormType {
    match f.args["kind"].as_str().unwrap() {
        "with_bias" => LayerNormType::WithBias,
        _ => LayerNormType::BiasFree,
    }
}

#[test]
fn layer_norm_both_types() {
    for name in ["layernorm_with_bias", "layernorm_bias_free"] {
        let f = fixture(name);
        f.check(|p| Box::new(LayerNorm::new(p.clone(), f.i("dim"), ln_kind(&f))));
    }
}

#[test]
fn attention() {
    for name in ["attention", "attention_bias"] {
        let f = fixture(name);
        let bias = f.args["bias"].as_bool().unwrap();
        f.check(|p| Box::new(Attention::new(p.clone(), f.i("dim"), f.i("heads"), bias)));
    }
}

#[test]
fn feed_forward() {
    let f = fixture("feedforward");
    f.check(|p| Box::new(FeedForward::new(p.clone(), f.i("dim"), 2.66, false)));
}

#[test]
fn transformer_block() {
    for name in ["transformer_block", "transformer_block_bias_free"] {
        let f = fixture(name);
        let bias = f.args["bias"].as_bool().unwrap();
        f.check(|p| {
            Box::new(TransformerBlock::new(
                p.clone(),
                f.i("dim"),
                f.i("heads"),
                2.66,
                bias,
                ln_kind(&f),
            ))
        });
    }
}

#[test]
fn resamplers_and_embedding() {
    let f = fixture("downsample");
    f.check(|p| Box::new(Downsample::new(p.clone(), f.i("dim"))));
    let f = fixture("upsample");
    f.check(|p| Box::new(Upsample::new(p.clone(), f.i("dim"))));
    let f = fixture("overlap_patch_embed");
    f.check(|p| Box::new(OverlapPatchEmbed::new(p.clone(), f.i("cin"), f.i("dim"), false)));
}

#[test]
fn prompt_block_at_same_double_and_odd_sizes() {
    for name in ["prompt_same", "prompt_2x", "prompt_odd"] {
        let f = fixture(name);
        f.check(|p| {
            Box::new(PromptGenBlock::new(
                p.clone(),
                f.i("dim"),
                f.i("len"),
                f.i("size"),
                f.i("lin_dim"),
            ))
        });
    }
}

fn config_of(f: &Fixture) -> PromptIrConfig {
    serde_json::from_value(f.args.clone()).unwrap()
}

fn restormer_config(f: &Fixture) -> ModelConfig {
    ModelConfig::Restormer(serde_json::from_value(f.args.clone()).unwrap())
}

/// The network's output, then every gradient of a loss weighing each output element differently.
fn forward_and_gradients(f: &Fixture, cfg: &ModelConfig) {
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Network::new(&vs.root(), cfg);
    f.load_params(&vs);
    let y = m.forward(&f.t("input"));
    let d = max_abs_diff(&y, &f.t("output"));
    assert!(d <= TOL, "max abs diff {d:e}");
    let w = Tensor::linspace(-1.0, 1.0, y.numel() as i64, (tch::Kind::Float, Device::Cpu))
        .view(y.size().as_slice());
    (&y * w).sum(tch::Kind::Float).backward();
    check_gradients(f, &vs);
}

/// Every parameter's gradient against PyTorch's (`grad.<key>`; none where PyTorch has none).
fn check_gradients(f: &Fixture, vs: &nn::VarStore) {
    for (k, v) in vs.variables() {
        let Ok(reference) = f.file.tensor(&format!("grad.{k}")) else {
            // PyTorch gave it no gradient (a module that never runs): neither does the port.
            assert!(!v.grad().defined(), "{k} has a gradient; PyTorch's has none");
            continue;
        };
        // Gradients sum over every pixel of the batch, so they are compared relative to their scale.
        let scale = f64::try_from(reference.abs().max()).unwrap().max(1.0);
        let d = max_abs_diff(&v.grad(), &reference);
        assert!(d <= TOL * scale, "gradient of {k}: max abs diff {d:e} (scale {scale:e})");
    }
}

/// `restore` on an input that is no multiple of 8: upstream's reflect padding, then cropped.
fn restore_padded(f: &Fixture, cfg: &ModelConfig) {
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Network::new(&vs.root(), cfg);
    f.load_params(&vs);
    let y = tch::no_grad(|| m.restore(&f.t("input")));
    assert_eq!(y.size(), [1, 3, 27, 35]);
    let d = max_abs_diff(&y, &f.t("output"));
    assert!(d <= TOL, "restore: max abs diff {d:e}");
}

#[test]
fn paper_model_64x64() {
    let f = fixture("model_paper");
    let cfg = config_of(&f);
    assert_eq!(cfg, PromptIrConfig::paper());
    let d = f.check(|p| Box::new(PromptIr::new(p, &cfg)));
    eprintln!("paper config 64x64: max abs diff {d:e}");
}

#[test]
fn tiny_model_forward_and_gradients() {
    let f = fixture("model_tiny");
    assert_eq!(config_of(&f), PromptIrConfig::tiny());
    forward_and_gradients(&f, &ModelConfig::Promptir(config_of(&f)));
}

#[test]
fn restore_pads_non_multiple_sizes_like_reflect_padding() {
    let f = fixture("model_tiny_padded");
    restore_padded(&f, &ModelConfig::Promptir(config_of(&f)));
}

#[test]
fn restormer_tiny_forward_gradients_and_padding() {
    let f = fixture("restormer_tiny");
    let cfg = restormer_config(&f);
    assert_eq!(cfg, ModelConfig::Restormer(RestormerConfig::tiny()));
    forward_and_gradients(&f, &cfg);
    restore_padded(&fixture("restormer_tiny_padded"), &cfg);
    // Bias-free LayerNorm with conv biases.
    let f = fixture("restormer_bias_free");
    let cfg = restormer_config(&f);
    f.check(|p| Box::new(Network::new(p, &cfg)));
}

fn nafnet_config(f: &Fixture) -> ModelConfig {
    ModelConfig::Nafnet(serde_json::from_value(f.args.clone()).unwrap())
}

/// NAFNet pads to a multiple of 16 with zeros inside its forward, as upstream: 32x40 (padded to
/// 32x48) with every gradient, then 27x35 through `restore`, which adds no padding of its own.
#[test]
fn nafnet_tiny_forward_gradients_and_own_padding() {
    let f = fixture("nafnet_tiny");
    let cfg = nafnet_config(&f);
    assert_eq!(cfg, ModelConfig::Nafnet(NafNetConfig::tiny()));
    forward_and_gradients(&f, &cfg);
    restore_padded(&fixture("nafnet_tiny_odd"), &cfg);
}

#[test]
fn nafnet_sidd_model_64x64() {
    let f = fixture("nafnet_sidd");
    let cfg = nafnet_config(&f);
    assert_eq!(cfg, ModelConfig::Nafnet(NafNetConfig::sidd()));
    let d = f.check(|p| Box::new(Network::new(p, &cfg)));
    eprintln!("NAFNet SIDD config 64x64: max abs diff {d:e}");
}

fn adair_config(f: &Fixture) -> ModelConfig {
    let mut args = f.args.clone();
    args.as_object_mut().unwrap().remove("mask_sizes");
    ModelConfig::Adair(serde_json::from_value(args).unwrap())
}

/// AdaIR's tiny config with every gradient (its frequency boxes are empty below 128 pixels
/// per level, so the low branch is zero), then at 512x512, where the reference opened the box
/// of the last block, and the paper config at 64x64.
#[test]
fn adair_tiny_forward_gradients_and_frequency_box() {
    let f = fixture("adair_tiny");
    let cfg = adair_config(&f);
    assert_eq!(cfg, ModelConfig::Adair(AdaIrConfig::tiny()));
    forward_and_gradients(&f, &cfg);
    let f = fixture("adair_tiny_masked");
    let sizes = f.args["mask_sizes"].as_array().unwrap();
    assert!(sizes.iter().any(|s| s[0].as_i64() > Some(0) && s[1].as_i64() > Some(0)), "{sizes:?}");
    f.check(|p| Box::new(Network::new(p, &adair_config(&f))));
}

#[test]
fn adair_paper_model_64x64() {
    let f = fixture("adair_paper");
    let cfg = adair_config(&f);
    assert_eq!(cfg, ModelConfig::Adair(AdaIrConfig::paper()));
    let d = f.check(|p| Box::new(Network::new(p, &cfg)));
    eprintln!("AdaIR paper config 64x64: max abs diff {d:e}");
}

fn moce_ir_config(f: &Fixture) -> MoceIrConfig {
    serde_json::from_value(f.args.clone()).unwrap()
}

/// MoCE-IR in eval mode (deterministic routing, each image to its own experts): the tiny config
/// with every gradient at batch 2, then reflect-padded odd sizes, and the paper config at 64x64.
#[test]
fn moce_ir_tiny_forward_gradients_padding_and_paper_model() {
    let f = fixture("moce_ir_tiny");
    let cfg = ModelConfig::MoceIr(moce_ir_config(&f));
    assert_eq!(cfg, ModelConfig::MoceIr(MoceIrConfig::tiny()));
    forward_and_gradients(&f, &cfg);
    restore_padded(&fixture("moce_ir_tiny_padded"), &cfg);
    let f = fixture("moce_ir_paper");
    let cfg = ModelConfig::MoceIr(moce_ir_config(&f));
    assert_eq!(cfg, ModelConfig::MoceIr(MoceIrConfig::paper()));
    let d = f.check(|p| Box::new(Network::new(p, &cfg)));
    eprintln!("MoCE-IR paper config 64x64: max abs diff {d:e}");
}

/// MoCE-IR in training mode with the reference's noise: top 2 of 4 experts, the importance
/// weighted by the experts' sizes, a batch of 3 that the experts split. The output, the balance
/// loss and every gradient of `(y * w).sum() + balance` equal PyTorch's.
#[test]
fn moce_ir_training_routing_and_balance_loss() {
    let f = fixture("moce_ir_train");
    let cfg = moce_ir_config(&f);
    assert!(cfg.topk == 2 && cfg.with_complexity, "{cfg:?}");
    let partial: usize = f.file.metadata()["partial"].parse().unwrap();
    assert!(partial > 0, "no expert got part of the batch: the dispatch path is untested");
    let vs = nn::VarStore::new(Device::Cpu);
    let net = MoceIr::new(&vs.root(), &cfg);
    f.load_params(&vs);
    let (y, balance) = net.forward_routed(&f.t("input"), Some(&f.t("noise")));
    let d = max_abs_diff(&y, &f.t("output"));
    assert!(d <= TOL, "output: max abs diff {d:e}");
    let balance = balance.expect("training gives a balance loss");
    let (got, want) =
        (f64::try_from(&balance).unwrap(), f64::try_from(f.t("balance").get(0)).unwrap());
    eprintln!("MoCE-IR training: output diff {d:e}, balance {got} vs {want}");
    assert!(want > 0.01 && (got - want).abs() <= 1e-5 * want, "balance {got} vs {want}");
    let w = Tensor::linspace(-1.0, 1.0, y.numel() as i64, (tch::Kind::Float, Device::Cpu))
        .view(y.size().as_slice());
    ((&y * w).sum(tch::Kind::Float) + balance).backward();
    check_gradients(&f, &vs);
}

/// The routing's `complexity` buffers as built (not loaded) equal upstream's: each expert's
/// parameter count, divided by the largest, the smallest, or not at all.
#[test]
fn moce_ir_complexity_buffers_in_every_scaling() {
    for (scale, name) in [
        (ComplexityScale::Max, "max"),
        (ComplexityScale::Min, "min"),
        (ComplexityScale::None, "none"),
    ] {
        let file = TensorFile::open(
            &parity_fixtures().join(format!("moce_ir_complexity_{name}.safetensors")),
        )
        .unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = MoceIrConfig { complexity_scale: scale, ..MoceIrConfig::tiny() };
        let _net = MoceIr::new(&vs.root(), &cfg);
        let ours = vs.variables();
        let keys: Vec<String> = file.header().keys().cloned().collect();
        assert_eq!(keys.len(), 3, "{name}: one buffer per decoder block");
        for k in &keys {
            let want = file.tensor(k).unwrap().to_kind(tch::Kind::Float);
            let d = max_abs_diff(&ours[k], &want);
            assert!(d <= 1e-6, "{name} {k}: {:?} vs {:?}", ours[k], want);
        }
    }
}

#[test]
fn restormer_paper_model_64x64() {
    let f = fixture("restormer_paper");
    let cfg = restormer_config(&f);
    assert_eq!(cfg, ModelConfig::Restormer(RestormerConfig::paper()));
    let d = f.check(|p| Box::new(Network::new(p, &cfg)));
    eprintln!("Restormer paper config 64x64: max abs diff {d:e}");
}

#[test]
fn both_activation_layouts_give_the_reference_output() {
    // The network in either layout (the tiny fixture has a batch of 2 and heads up to 4).
    let f = fixture("model_tiny");
    for layout in [Layout::Contiguous, Layout::ChannelsLast] {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut m = PromptIr::new(&vs.root(), &config_of(&f));
        m.layout = layout;
        f.load_params(&vs);
        let y = tch::no_grad(|| m.forward(&f.t("input")));
        let d = max_abs_diff(&y, &f.t("output"));
        assert!(d <= TOL, "{layout:?}: max abs diff {d:e}");
    }
    // A block handed channels-last input directly (attention's NHWC path with 2 heads).
    let f = fixture("transformer_block");
    let vs = nn::VarStore::new(Device::Cpu);
    let bias = f.args["bias"].as_bool().unwrap();
    let b = TransformerBlock::new(vs.root(), f.i("dim"), f.i("heads"), 2.66, bias, ln_kind(&f));
    f.load_params(&vs);
    let y = tch::no_grad(|| b.forward(&to_channels_last(&f.t("input"))));
    assert!(max_abs_diff(&y, &f.t("output")) <= TOL);
    // The fused output projection with a bias, channels-last.
    let f = fixture("attention_bias");
    let vs = nn::VarStore::new(Device::Cpu);
    let a = Attention::new(vs.root(), f.i("dim"), f.i("heads"), true);
    f.load_params(&vs);
    let y = tch::no_grad(|| a.forward(&to_channels_last(&f.t("input"))));
    assert!(max_abs_diff(&y, &f.t("output")) <= TOL);
}
