//! The loss terms, each declared once in [`TERMS`]: its key (the experiment's `loss.<key>`
//! weight and TensorBoard's `train/loss_<key>`), its label in the report's tables, its default
//! weight and how it is computed. Adding a term is one entry here plus its reference test
//! (`tests/it/loss_metrics.rs` checks every entry against `scripts/reference/loss_metrics_ref.py`).
//!
//! Each term is unweighted, of the raw network output `pred` and the clean `target`, (B, 3, H, W)
//! fp32 in [0, 1], but for the network's own (`Source::Network`), which its training forward
//! gives.

use super::config::{Distance, LossConfig};
use super::ssim::gaussian_ssim;
use crate::train::Vgg16Features;
use crate::Result;
use tch::{Device, Kind, Reduction, Tensor};

/// One term's computation, built once for a run (holding what it loaded).
pub type TermFn = Box<dyn Fn(&Tensor, &Tensor) -> Tensor>;

/// Where a term's value comes from.
pub enum Source {
    /// Computed from the output and the target by the function built for `cfg` on `device`
    /// (called only when the term's weight is above 0).
    Images(fn(cfg: &LossConfig, device: Device) -> Result<TermFn>),
    /// Computed by the network in its training forward ([`crate::model::Trained`]'s
    /// `balance`): absent in validation, and only some architectures have it.
    Network,
}

/// A loss term.
pub struct Term {
    /// `loss.<key>` in an experiment holds its weight (0: off).
    pub key: &'static str,
    /// How the report's loss column names it ("L1 + 0.2 SSIM").
    pub label: &'static str,
    /// Its weight when the experiment does not set it.
    pub default: f64,
    pub source: Source,
}

/// Every term, in the order the config, the logs and the labels list them.
pub static TERMS: [Term; 8] = [
    // Mean absolute error over all elements.
    Term { key: "l1", label: "L1", default: 1.0, source: Source::Images(|_, _| Ok(Box::new(l1))) },
    // 1 - SSIM (pytorch_msssim's, see `ssim.rs`).
    Term {
        key: "ssim",
        label: "SSIM",
        default: 0.0,
        source: Source::Images(|_, _| Ok(Box::new(one_minus_ssim))),
    },
    // The mean over `loss.perceptual_layers` of VGG16 feature distances (`perceptual`).
    Term { key: "perceptual", label: "VGG", default: 0.0, source: Source::Images(perceptual) },
    // `mean(sqrt((pred - target)^2 + eps^2))`, eps 1e-3 (MPRNet's): a smooth L1.
    Term {
        key: "charbonnier",
        label: "Charbonnier",
        default: 0.0,
        source: Source::Images(|_, _| Ok(Box::new(charbonnier))),
    },
    // The mean over both directions of the L1 between 3x3 Sobel responses (valid).
    Term {
        key: "edge",
        label: "edge",
        default: 0.0,
        source: Source::Images(|_, _| Ok(Box::new(edge))),
    },
    // The L1 between the real and imaginary parts of the orthonormal real 2-D FFTs
    // (`rfft2(.., norm="ortho")`, so its scale does not grow with the image).
    Term {
        key: "fft",
        label: "FFT",
        default: 0.0,
        source: Source::Images(|_, _| Ok(Box::new(fft))),
    },
    // Minus the PSNR per image (data range 1, `10 log10(mse + 1e-8)`), batch mean: tens of
    // units, so its weight is usually small (0.01).
    Term {
        key: "psnr",
        label: "PSNR",
        default: 0.0,
        source: Source::Images(|_, _| Ok(Box::new(neg_psnr))),
    },
    // MoCE-IR's routing balance loss (importance and load, upstream's; its train.py weighs it
    // 0.01): the network's own, checked against moce_ir_ref.py in the parity tests.
    Term { key: "balance", label: "balance", default: 0.0, source: Source::Network },
];

/// The term named `key`, if there is one.
pub fn term(key: &str) -> Option<&'static Term> {
    TERMS.iter().find(|t| t.key == key)
}

fn l1(pred: &Tensor, target: &Tensor) -> Tensor {
    pred.l1_loss(target, Reduction::Mean)
}

fn one_minus_ssim(pred: &Tensor, target: &Tensor) -> Tensor {
    1.0 - gaussian_ssim(pred, target)
}

const CHARBONNIER_EPS: f64 = 1e-3;

fn charbonnier(pred: &Tensor, target: &Tensor) -> Tensor {
    ((pred - target).square() + CHARBONNIER_EPS * CHARBONNIER_EPS).sqrt().mean(Kind::Float)
}

/// Per-channel 3x3 Sobel responses (x, y), valid convolution.
fn sobel(x: &Tensor) -> (Tensor, Tensor) {
    let c = x.size()[1];
    // [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] as (1 2 1)^T (-1 0 1), built on the device (no host
    // copy; see `ssim.rs`).
    let d = Tensor::arange(3, (x.kind(), x.device())) - 1.0;
    let kx = ((-d.abs() + 2.0).view([3, 1]) * d.view([1, 3])).view([1, 1, 3, 3]);
    let ky = kx.transpose(2, 3).contiguous();
    let conv = |w: &Tensor| {
        let w = w.expand([c, 1, 3, 3], false);
        x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)
    };
    (conv(&kx), conv(&ky))
}

fn edge(pred: &Tensor, target: &Tensor) -> Tensor {
    let ((px, py), (tx, ty)) = (sobel(pred), sobel(target));
    (px.l1_loss(&tx, Reduction::Mean) + py.l1_loss(&ty, Reduction::Mean)) / 2.0
}

fn fft(pred: &Tensor, target: &Tensor) -> Tensor {
    let f = |x: &Tensor| x.fft_rfft2(None::<&[i64]>, [-2, -1], "ortho").view_as_real();
    f(pred).l1_loss(&f(target), Reduction::Mean)
}

fn neg_psnr(pred: &Tensor, target: &Tensor) -> Tensor {
    let mse = (pred - target).square().mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
    ((mse + 1e-8).log10() * 10.0).mean(Kind::Float)
}

/// The frozen VGG16 of `loss.vgg_weights`; per layer of `loss.perceptual_layers` the distance
/// (L1: mean absolute error, L2: mean squared error, over that layer's elements) between the
/// features of `pred` and of `target` (which carry no gradient), averaged over the layers.
fn perceptual(cfg: &LossConfig, device: Device) -> Result<TermFn> {
    let vgg = Vgg16Features::load(&cfg.vgg_weights, device, &cfg.perceptual_layers)?;
    let distance = cfg.perceptual_distance;
    Ok(Box::new(move |pred, target| {
        let fp = vgg.forward(pred);
        let ft = tch::no_grad(|| vgg.forward(target));
        let n = fp.len() as f64;
        let per_layer = fp.iter().zip(&ft).map(|(a, b)| match distance {
            Distance::L1 => a.l1_loss(b, Reduction::Mean),
            Distance::L2 => a.mse_loss(b, Reduction::Mean),
        });
        per_layer.reduce(|a, b| a + b).expect("at least one layer") / n
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sobel_is_the_3x3_filter_pair() {
        let x = Tensor::from_slice(&[0f32, 0., 0., 1., 0., 0., 0., 0., 0.]).view([1, 1, 3, 3]);
        // A valid 3x3 response of an impulse at (1, 0) reads the kernel's left column.
        let (gx, gy) = sobel(&x);
        assert_eq!(f64::try_from(gx.reshape([])).unwrap(), -2.0);
        assert_eq!(f64::try_from(gy.reshape([])).unwrap(), 0.0);
        let y = x.transpose(2, 3);
        let (gx, gy) = sobel(&y);
        assert_eq!(f64::try_from(gx.reshape([])).unwrap(), 0.0);
        assert_eq!(f64::try_from(gy.reshape([])).unwrap(), -2.0);
    }

    #[test]
    fn keys_are_unique_plain_names() {
        for (i, t) in TERMS.iter().enumerate() {
            assert!(
                t.key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
                "{}",
                t.key
            );
            assert!(TERMS[..i].iter().all(|u| u.key != t.key && u.label != t.label), "{}", t.key);
            assert!(t.default >= 0.0);
        }
        assert!(term("l1").is_some() && term("vgg").is_none());
    }
}
