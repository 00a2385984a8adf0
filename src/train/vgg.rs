//! The convolutional part of torchvision's VGG16 (`vgg16().features`), frozen, for the
//! perceptual loss. Var-store paths equal torchvision's keys (`features.N.weight/bias`, convs at
//! N = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), so the file written by
//! `scripts/export_vgg16.py` loads strictly. The classifier is never built.

use crate::io::{load_strict, TensorFile};
use crate::{Error, Result};
use std::path::Path;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// One entry of `features`: `Some(c)` is a 3x3 conv with `c` outputs (followed by a ReLU at the
/// next index), `None` a 2x2 max-pool. torchvision's configuration "D".
const CONFIG: [Option<i64>; 18] = [
    Some(64),
    Some(64),
    None,
    Some(128),
    Some(128),
    None,
    Some(256),
    Some(256),
    Some(256),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
    Some(512),
    Some(512),
    Some(512),
    None,
];

/// Number of modules in `features` (13 conv + 13 ReLU + 5 pool).
pub const NUM_LAYERS: usize = crate::config::VGG16_FEATURES;

/// ImageNet statistics torchvision's weights were trained with, applied to [0, 1] input.
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

enum Layer {
    Conv(nn::Conv2D),
    Relu,
    MaxPool,
}

/// `features` of VGG16 that returns the outputs of chosen layers.
pub struct Vgg16Features {
    vs: nn::VarStore,
    layers: Vec<Layer>,
    wanted: Vec<usize>,
    mean: Tensor,
    std: Tensor,
}

impl std::fmt::Debug for Vgg16Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vgg16Features").field("layers", &self.wanted).finish()
    }
}

fn check_layers(layers: &[usize]) -> Result<()> {
    if layers.is_empty() || layers.iter().any(|&i| i >= NUM_LAYERS) {
        return Err(Error::Usage(format!(
            "VGG16 layers {layers:?}: give one or more torchvision `features.N` indices in 0..{NUM_LAYERS}"
        )));
    }
    Ok(())
}

impl Vgg16Features {
    /// The network with zero weights, to be loaded (see [`Self::load`]). Zeros, not a random
    /// init: 14.7 M draws from libtorch's global generator would also shift any seeded model
    /// init running in another thread (see `model::with_global_rng`).
    /// `layers` are torchvision `features.N` indices; `forward` returns their outputs in order.
    pub fn new(device: Device, layers: &[usize]) -> Result<Self> {
        check_layers(layers)?;
        let vs = nn::VarStore::new(device);
        let p = vs.root() / "features";
        let mut built = Vec::with_capacity(NUM_LAYERS);
        let mut cin = 3;
        for c in CONFIG {
            match c {
                Some(cout) => {
                    let zeros = nn::Init::Const(0.0);
                    let cfg = nn::ConvConfig {
                        padding: 1,
                        ws_init: zeros,
                        bs_init: zeros,
                        ..Default::default()
                    };
                    built.push(Layer::Conv(nn::conv2d(&p / built.len(), cin, cout, 3, cfg)));
                    built.push(Layer::Relu);
                    cin = cout;
                }
                None => built.push(Layer::MaxPool),
            }
        }
        debug_assert_eq!(built.len(), NUM_LAYERS);
        let stat = |v: &[f32; 3]| Tensor::from_slice(v).view([1, 3, 1, 1]).to_device(device);
        let (mean, std) = (stat(&MEAN), stat(&STD));
        Ok(Vgg16Features { vs, layers: built, wanted: layers.to_vec(), mean, std })
    }

    /// Loads `features.*` weights (extra `classifier.*` keys are ignored; anything else that does
    /// not match is an error) and freezes them.
    pub fn load(path: &Path, device: Device, layers: &[usize]) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::weights(
                path,
                format!(
                    "VGG16 weights not found; on a machine with internet run `python scripts/export_vgg16.py --output {}` (torchvision downloads the ImageNet weights) and copy the file here",
                    path.display()
                ),
            ));
        }
        let mut vgg = Self::new(device, layers)?;
        let file = TensorFile::open(path)?;
        load_strict(&vgg.vs, &file, &|k| k.starts_with("classifier.")).map_err(|e| {
            match e {
                Error::Weights { path, msg } => Error::weights(
                    path,
                    format!("{msg} (expected torchvision VGG16 `features.*` tensors as written by scripts/export_vgg16.py)"),
                ),
                e => e,
            }
        })?;
        vgg.vs.freeze();
        Ok(vgg)
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The requested `features.N` indices, in the order `forward` returns them.
    pub fn layers(&self) -> &[usize] {
        &self.wanted
    }

    /// (B, 3, H, W) in [0, 1] -> the output of each requested layer (after the ReLU when the
    /// index is a ReLU), in the order requested. Runs only up to the deepest requested layer.
    pub fn forward(&self, x: &Tensor) -> Vec<Tensor> {
        let last = *self.wanted.iter().max().expect("checked non-empty");
        let mut h = (x.to_kind(Kind::Float) - &self.mean) / &self.std;
        let mut outs: Vec<Option<Tensor>> = (0..NUM_LAYERS).map(|_| None).collect();
        for (i, layer) in self.layers.iter().enumerate().take(last + 1) {
            h = match layer {
                Layer::Conv(c) => c.forward(&h),
                Layer::Relu => h.relu(),
                Layer::MaxPool => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            };
            if self.wanted.contains(&i) {
                outs[i] = Some(h.shallow_clone());
            }
        }
        self.wanted.iter().map(|&i| outs[i].as_ref().expect("computed").shallow_clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_and_shapes_are_torchvision_s() {
        let v = Vgg16Features::new(Device::Cpu, &[3]).unwrap();
        let vars = v.var_store().variables();
        let convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
        assert_eq!(vars.len(), 2 * convs.len());
        for i in convs {
            assert!(vars.contains_key(&format!("features.{i}.bias")), "features.{i}.bias");
        }
        assert_eq!(vars["features.0.weight"].size(), [64, 3, 3, 3]);
        assert_eq!(vars["features.28.weight"].size(), [512, 512, 3, 3]);
        let params: i64 = vars.values().map(|t| t.numel() as i64).sum();
        assert_eq!(params, 14_714_688, "torchvision vgg16().features parameter count");
    }

    #[test]
    fn feature_shapes_and_bad_layers() {
        let v = Vgg16Features::new(Device::Cpu, &[8, 3, 4]).unwrap();
        let f = tch::no_grad(|| v.forward(&Tensor::zeros([1, 3, 16, 12], tch::kind::FLOAT_CPU)));
        let sizes: Vec<Vec<i64>> = f.iter().map(|t| t.size()).collect();
        assert_eq!(sizes, [vec![1, 128, 8, 6], vec![1, 64, 16, 12], vec![1, 64, 8, 6]]);
        assert!(Vgg16Features::new(Device::Cpu, &[31]).is_err());
        assert!(Vgg16Features::new(Device::Cpu, &[]).is_err());
    }

    #[test]
    fn missing_file_says_how_to_export() {
        let e = Vgg16Features::load(Path::new("/nonexistent/vgg16.safetensors"), Device::Cpu, &[3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("scripts/export_vgg16.py") && e.contains("internet"), "{e}");
    }
}
