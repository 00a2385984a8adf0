//! The seam between the harness and the networks. An experiment's `model:` is a
//! [`ModelConfig`]: `arch` (PromptIR when absent, so older files keep their meaning) and that
//! architecture's own keys, a key of another arch being an error naming both. [`Network`] is
//! the built network. Adding an architecture is one arm in each enum here plus its folder.

use super::shapes::Shapes;
use super::{
    AdaIr, AdaIrConfig, Layout, MoceIr, MoceIrConfig, NafNet, NafNetConfig, PromptIr,
    PromptIrConfig, Restormer, RestormerConfig,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use tch::{nn, nn::Module, Tensor};

/// The architectures, as `model.arch` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    Promptir,
    Restormer,
    Nafnet,
    Adair,
    #[value(name = "moce_ir", alias = "moce-ir")]
    MoceIr,
}

impl Arch {
    pub const ALL: [Arch; 5] =
        [Arch::Promptir, Arch::Restormer, Arch::Nafnet, Arch::Adair, Arch::MoceIr];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Promptir => "promptir",
            Arch::Restormer => "restormer",
            Arch::Nafnet => "nafnet",
            Arch::Adair => "adair",
            Arch::MoceIr => "moce_ir",
        }
    }

    /// As papers and tables write it.
    pub fn label(self) -> &'static str {
        match self {
            Arch::Promptir => "PromptIR",
            Arch::Restormer => "Restormer",
            Arch::Nafnet => "NAFNet",
            Arch::Adair => "AdaIR",
            Arch::MoceIr => "MoCE-IR",
        }
    }
}

/// Which network, with its hyper-parameters. Written as `{arch: promptir, dim: 48, ...}` in
/// YAML and in checkpoint metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "arch", rename_all = "snake_case")]
pub enum ModelConfig {
    Promptir(PromptIrConfig),
    Restormer(RestormerConfig),
    Nafnet(NafNetConfig),
    Adair(AdaIrConfig),
    MoceIr(MoceIrConfig),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Promptir(PromptIrConfig::default())
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde's internally tagged enums need the tag; here it defaults to PromptIR.
        let mut keys = serde_yaml::Mapping::deserialize(d)?;
        let arch = match keys.remove("arch") {
            None => Arch::Promptir,
            Some(v) => Arch::deserialize(v).map_err(|e| D::Error::custom(format!("arch: {e}")))?,
        };
        let keys = serde_yaml::Value::Mapping(keys);
        let of_arch = |e: serde_path_to_error::Error<serde_yaml::Error>| {
            let key = e.path().to_string();
            D::Error::custom(format!("{} (key `{key}` of arch {})", e.into_inner(), arch.name()))
        };
        match arch {
            Arch::Promptir => {
                serde_path_to_error::deserialize(keys).map(ModelConfig::Promptir).map_err(of_arch)
            }
            Arch::Restormer => {
                serde_path_to_error::deserialize(keys).map(ModelConfig::Restormer).map_err(of_arch)
            }
            Arch::Nafnet => {
                serde_path_to_error::deserialize(keys).map(ModelConfig::Nafnet).map_err(of_arch)
            }
            Arch::Adair => {
                serde_path_to_error::deserialize(keys).map(ModelConfig::Adair).map_err(of_arch)
            }
            Arch::MoceIr => {
                serde_path_to_error::deserialize(keys).map(ModelConfig::MoceIr).map_err(of_arch)
            }
        }
    }
}

/// Splits a [`ModelConfig`] key error into (message, key, arch), for callers that track paths.
pub fn key_of_arch(msg: &str) -> Option<(&str, &str, &str)> {
    let (msg, rest) = msg.rsplit_once(" (key `")?;
    let (key, arch) = rest.strip_suffix(')')?.split_once("` of arch ")?;
    Some((msg, key, arch))
}

impl ModelConfig {
    /// The official PromptIR network (the default experiment's).
    pub fn paper() -> Self {
        ModelConfig::Promptir(PromptIrConfig::paper())
    }

    /// PromptIR's small CPU configuration (tests, demos, `tiny.yaml`).
    pub fn tiny() -> Self {
        ModelConfig::Promptir(PromptIrConfig::tiny())
    }

    /// `arch`'s published network (NAFNet: its SIDD width-32 one).
    pub fn paper_of(arch: Arch) -> Self {
        match arch {
            Arch::Promptir => Self::paper(),
            Arch::Restormer => ModelConfig::Restormer(RestormerConfig::paper()),
            Arch::Nafnet => ModelConfig::Nafnet(NafNetConfig::sidd()),
            Arch::Adair => ModelConfig::Adair(AdaIrConfig::paper()),
            Arch::MoceIr => ModelConfig::MoceIr(MoceIrConfig::paper()),
        }
    }

    /// `arch`'s small CPU configuration (`experiments/tiny_<arch>.yaml`).
    pub fn tiny_of(arch: Arch) -> Self {
        match arch {
            Arch::Promptir => Self::tiny(),
            Arch::Restormer => ModelConfig::Restormer(RestormerConfig::tiny()),
            Arch::Nafnet => ModelConfig::Nafnet(NafNetConfig::tiny()),
            Arch::Adair => ModelConfig::Adair(AdaIrConfig::tiny()),
            Arch::MoceIr => ModelConfig::MoceIr(MoceIrConfig::tiny()),
        }
    }

    /// The published network this config is, as its paper names it: [`ModelConfig::paper_of`]
    /// each arch, and NAFNet's GoPro width and MoCE-IR-S beside them.
    pub fn published(&self) -> Option<&'static str> {
        match self {
            ModelConfig::Nafnet(c) if *c == NafNetConfig::gopro() => {
                Some("NAFNet (GoPro width 64)")
            }
            ModelConfig::MoceIr(c) if *c == MoceIrConfig::small() => Some("MoCE-IR-S"),
            c if *c == Self::paper_of(c.arch()) => Some(c.arch().label()),
            _ => None,
        }
    }

    pub fn arch(&self) -> Arch {
        match self {
            ModelConfig::Promptir(_) => Arch::Promptir,
            ModelConfig::Restormer(_) => Arch::Restormer,
            ModelConfig::Nafnet(_) => Arch::Nafnet,
            ModelConfig::Adair(_) => Arch::Adair,
            ModelConfig::MoceIr(_) => Arch::MoceIr,
        }
    }

    /// Checks everything the constructor relies on, so that building never panics.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ModelConfig::Promptir(c) => c.validate(),
            ModelConfig::Restormer(c) => c.validate(),
            ModelConfig::Nafnet(c) => c.validate(),
            ModelConfig::Adair(c) => c.validate(),
            ModelConfig::MoceIr(c) => c.validate(),
        }
    }

    /// Image channels in and out.
    pub fn channels(&self) -> i64 {
        match self {
            ModelConfig::Promptir(c) => c.inp_channels,
            ModelConfig::Restormer(c) => c.inp_channels,
            ModelConfig::Nafnet(c) => c.img_channel,
            ModelConfig::Adair(c) => c.inp_channels,
            ModelConfig::MoceIr(c) => c.inp_channels,
        }
    }

    /// The main sizes, for one-line summaries ("dim 48, blocks [4, 6, 6, 8]").
    pub fn summary(&self) -> String {
        match self {
            ModelConfig::Promptir(c) => format!("dim {}, blocks {:?}", c.dim, c.num_blocks),
            ModelConfig::Restormer(c) => format!("dim {}, blocks {:?}", c.dim, c.num_blocks),
            ModelConfig::Nafnet(c) => format!(
                "width {}, blocks {:?} + {} + {:?}",
                c.width, c.enc_blk_nums, c.middle_blk_num, c.dec_blk_nums
            ),
            ModelConfig::Adair(c) => format!("dim {}, blocks {:?}", c.dim, c.num_blocks),
            ModelConfig::MoceIr(c) => format!(
                "dim {}, blocks {:?} + {:?}, {} experts, top {}",
                c.dim, c.num_blocks, c.num_dec_blocks, c.num_experts, c.topk
            ),
        }
    }

    /// The config of `arch` that an official state_dict's keys and shapes describe. Which
    /// arch a file holds is [`super::recognise`]'s question.
    pub fn from_shapes(arch: Arch, shapes: &BTreeMap<String, Vec<i64>>) -> Result<Self, String> {
        let shapes = Shapes(shapes);
        match arch {
            Arch::Promptir => super::promptir::from_shapes(&shapes).map(ModelConfig::Promptir),
            Arch::Restormer => super::restormer::from_shapes(&shapes).map(ModelConfig::Restormer),
            Arch::Nafnet => super::nafnet::from_shapes(&shapes).map(ModelConfig::Nafnet),
            Arch::Adair => super::adair::from_shapes(&shapes).map(ModelConfig::Adair),
            Arch::MoceIr => super::moce_ir::from_shapes(&shapes).map(ModelConfig::MoceIr),
        }
    }

    /// Keys of the official state_dict that the official forward never uses: not built here,
    /// dropped (and reported) on import.
    pub fn unused_upstream_keys(&self) -> &'static [&'static str] {
        match self {
            ModelConfig::Promptir(_) => &super::IGNORED_UPSTREAM_KEYS,
            ModelConfig::Restormer(_)
            | ModelConfig::Nafnet(_)
            | ModelConfig::Adair(_)
            | ModelConfig::MoceIr(_) => &[],
        }
    }

    /// Input sizes must be multiples of this; `restore` pads to it.
    pub fn pad_multiple(&self) -> i64 {
        match self {
            ModelConfig::Promptir(c) => c.pad_multiple(),
            ModelConfig::Restormer(c) => c.pad_multiple(),
            ModelConfig::Nafnet(c) => c.pad_multiple(),
            ModelConfig::Adair(c) => c.pad_multiple(),
            ModelConfig::MoceIr(c) => c.pad_multiple(),
        }
    }

    /// A lower bound of the parameter count, cheap enough to refuse typos before building.
    pub fn approx_parameters(&self) -> f64 {
        match self {
            ModelConfig::Promptir(c) => c.approx_parameters(),
            ModelConfig::Restormer(c) => c.approx_parameters(),
            ModelConfig::Nafnet(c) => c.approx_parameters(),
            ModelConfig::Adair(c) => c.approx_parameters(),
            ModelConfig::MoceIr(c) => c.approx_parameters(),
        }
    }
}

/// A built network; var-store paths are its official state_dict keys.
#[derive(Debug)]
pub enum Network {
    // Boxed: the networks' sizes differ by kilobytes of block vectors.
    Promptir(Box<PromptIr>),
    Restormer(Box<Restormer>),
    Nafnet(Box<NafNet>),
    Adair(Box<AdaIr>),
    MoceIr(Box<MoceIr>),
}

impl Network {
    /// Builds `cfg` under `p` with PyTorch's default init. Panics on an invalid config: call
    /// [`ModelConfig::validate`] first on user input.
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        match cfg {
            ModelConfig::Promptir(c) => Network::Promptir(Box::new(PromptIr::new(p, c))),
            ModelConfig::Restormer(c) => Network::Restormer(Box::new(Restormer::new(p, c))),
            ModelConfig::Nafnet(c) => Network::Nafnet(Box::new(NafNet::new(p, c))),
            ModelConfig::Adair(c) => Network::Adair(Box::new(AdaIr::new(p, c))),
            ModelConfig::MoceIr(c) => Network::MoceIr(Box::new(MoceIr::new(p, c))),
        }
    }

    /// [`Network::new`] with libtorch's generator seeded (the same seed, the same weights).
    pub fn seeded(p: &nn::Path, cfg: &ModelConfig, seed: u64) -> Self {
        match cfg {
            ModelConfig::Promptir(c) => Network::Promptir(Box::new(PromptIr::seeded(p, c, seed))),
            ModelConfig::Restormer(c) => {
                Network::Restormer(Box::new(Restormer::seeded(p, c, seed)))
            }
            ModelConfig::Nafnet(c) => Network::Nafnet(Box::new(NafNet::seeded(p, c, seed))),
            ModelConfig::Adair(c) => Network::Adair(Box::new(AdaIr::seeded(p, c, seed))),
            ModelConfig::MoceIr(c) => Network::MoceIr(Box::new(MoceIr::seeded(p, c, seed))),
        }
    }

    pub fn config(&self) -> ModelConfig {
        match self {
            Network::Promptir(n) => ModelConfig::Promptir(n.config.clone()),
            Network::Restormer(n) => ModelConfig::Restormer(n.config.clone()),
            Network::Nafnet(n) => ModelConfig::Nafnet(n.config.clone()),
            Network::Adair(n) => ModelConfig::Adair(n.config.clone()),
            Network::MoceIr(n) => ModelConfig::MoceIr(n.config.clone()),
        }
    }

    pub fn pad_multiple(&self) -> i64 {
        match self {
            Network::Promptir(n) => n.config.pad_multiple(),
            Network::Restormer(n) => n.config.pad_multiple(),
            Network::Nafnet(n) => n.config.pad_multiple(),
            Network::Adair(n) => n.config.pad_multiple(),
            Network::MoceIr(n) => n.config.pad_multiple(),
        }
    }

    pub fn set_layout(&mut self, layout: Layout) {
        match self {
            Network::Promptir(n) => n.layout = layout,
            Network::Restormer(n) => n.layout = layout,
            Network::Nafnet(n) => n.layout = layout,
            Network::Adair(n) => n.set_layout(layout),
            Network::MoceIr(n) => n.layout = layout,
        }
    }
}

/// What a training forward gives: the output and the network's own loss term, if it has one
/// (MoCE-IR's routing balance loss; `loss.balance` weighs it).
#[derive(Debug)]
pub struct Trained {
    pub output: Tensor,
    pub balance: Option<Tensor>,
}

impl Network {
    /// The random draws one training forward of a batch of `batch` images takes, drawn from
    /// libtorch's generator seeded with `seed` (so a step's draws are a function of the run's
    /// seed and the step, and an exact resume draws them again): MoCE-IR's routing noise,
    /// (decoder blocks, batch, experts) on the CPU. None for a network without such draws.
    pub fn training_draws(&self, seed: u64, batch: i64) -> Option<Tensor> {
        match self {
            Network::MoceIr(n) => {
                let c = &n.config;
                let shape = [c.decoder_blocks(), batch, c.num_experts];
                Some(super::init::drawing(Some(seed), || {
                    Tensor::randn(shape, (tch::Kind::Float, tch::Device::Cpu))
                }))
            }
            _ => None,
        }
    }

    /// Whether which parameters get a gradient depends on the batch (MoCE-IR routes each image
    /// to some of its experts); for the others the set is fixed by the network.
    pub fn routes_gradients(&self) -> bool {
        matches!(self, Network::MoceIr(_))
    }

    /// The forward in training mode: MoCE-IR routes with the noise `draws` (from
    /// [`Network::training_draws`], the rows of this batch) and returns its balance loss; the
    /// other networks train as they infer.
    pub fn forward_train(&self, x: &Tensor, draws: Option<&Tensor>) -> Trained {
        match (self, draws) {
            (Network::MoceIr(n), Some(noise)) => {
                let (output, balance) = n.forward_routed(x, Some(noise));
                Trained { output, balance }
            }
            _ => Trained { output: self.forward(x), balance: None },
        }
    }
}

impl Module for Network {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Network::Promptir(n) => n.forward(x),
            Network::Restormer(n) => n.forward(x),
            Network::Nafnet(n) => n.forward(x),
            Network::Adair(n) => n.forward(x),
            Network::MoceIr(n) => n.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ModelConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn arch_defaults_to_promptir_and_round_trips() {
        assert_eq!(parse("dim: 8").unwrap(), parse("arch: promptir\ndim: 8").unwrap());
        let tiny = ModelConfig::tiny();
        let yaml = serde_yaml::to_string(&tiny).unwrap();
        assert!(yaml.starts_with("arch: promptir\n"), "{yaml}");
        assert_eq!(parse(&yaml).unwrap(), tiny);
        let json = serde_json::to_string(&tiny).unwrap();
        assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), tiny);
        // A metadata config written before `arch` existed is PromptIR's.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("arch");
        assert_eq!(serde_json::from_value::<ModelConfig>(old).unwrap(), tiny);
    }

    #[test]
    fn unknown_arches_and_keys_are_named() {
        let e = parse("arch: restormr").unwrap_err();
        assert!(e.contains("unknown variant `restormr`") && e.contains("promptir"), "{e}");
        let e = parse("arch: promptir\nwidth: 32").unwrap_err();
        assert!(e.contains("unknown field `width`") && e.contains("of arch promptir"), "{e}");
        // PromptIR's prompt keys are not Restormer's.
        let e = parse("arch: restormer\nprompt_len: 5").unwrap_err();
        assert!(e.contains("unknown field `prompt_len`") && e.contains("of arch restormer"), "{e}");
        assert_eq!(
            parse("arch: restormer\ndim: 8\nnum_blocks: [1, 1, 1, 1]").unwrap().arch(),
            Arch::Restormer
        );
        let e = parse("dim: many").unwrap_err();
        assert!(e.contains("key `dim` of arch promptir"), "{e}");
    }
}
