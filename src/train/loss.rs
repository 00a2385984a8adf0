//! Training losses: L1, (1 - SSIM), a VGG16 perceptual term, Charbonnier, Sobel edge, FFT and
//! PSNR losses, weighted by `LossConfig`.
//!
//! Inputs are the raw network output and the target, (B, 3, H, W) in [0, 1]; the output is not
//! clamped, so the loss also pushes values back into range. Terms are computed in fp32 whatever
//! the input dtype (SSIM's variance differences are too imprecise in bf16).
//!
//! Definitions, each the unweighted value reported in [`LossTerms`]:
//! - `l1`: mean absolute error over all elements.
//! - `ssim`: `1 - SSIM`, SSIM as `pytorch_msssim.ssim(pred, target, data_range=1)`: 11x11
//!   Gaussian window (sigma 1.5) applied separably as a *valid* convolution per channel (a side
//!   shorter than 11 is not smoothed, as there), K1 0.01, K2 0.03, mean over the map, channels and
//!   batch.
//! - `perceptual`: mean over the configured VGG16 layers of the distance between the features of
//!   `pred` and of `target` (L1: mean absolute error, L2: mean squared error, each averaged over
//!   that layer's elements). Target features carry no gradient.
//! - `charbonnier`: `mean(sqrt((pred - target)^2 + eps^2))`, eps 1e-3 (MPRNet's).
//! - `edge`: the 3x3 Sobel filters per channel (valid), the mean over both directions of the
//!   mean absolute difference of the responses.
//! - `fft`: the mean absolute difference of the real and imaginary parts of the orthonormal 2-D
//!   real FFTs (`rfft2(.., norm="ortho")`, so its scale does not grow with the image).
//! - `psnr`: minus the PSNR per image (data range 1, `10 log10(mse + 1e-8)`), batch mean.

use super::vgg::Vgg16Features;
use crate::config::{Distance, LossConfig};
use crate::Result;
use tch::{Device, Kind, Reduction, Tensor};

/// Gaussian SSIM window (pytorch_msssim's defaults).
const WIN: i64 = 11;
const SIGMA: f64 = 1.5;

/// The normalised 1-D Gaussian, as `pytorch_msssim._fspecial_gauss_1d` (float32, the same
/// ops). Built on `device` by kernels rather than copied from the host: a host-to-GPU copy from
/// pageable memory would wait for the whole queue, at every SSIM call.
fn gaussian_1d(device: Device) -> Tensor {
    let coords = Tensor::arange(WIN, (Kind::Float, device)) - (WIN / 2) as f64;
    let g = (coords.square() / (-2.0 * SIGMA * SIGMA)).exp();
    &g / g.sum(Kind::Float)
}

/// Depthwise valid Gaussian blur along H then W; a side shorter than the window is left as is.
fn blur(x: &Tensor, g: &Tensor) -> Tensor {
    let c = x.size()[1];
    let mut out = x.shallow_clone();
    for (dim, shape) in [(2usize, [c, 1, WIN, 1]), (3, [c, 1, 1, WIN])] {
        if out.size()[dim] >= WIN {
            let w = g.view([1, 1, WIN]).expand([c, 1, WIN], false).reshape(shape);
            out = out.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
        }
    }
    out
}

/// Mean SSIM (data range 1) of two (B, C, H, W) float tensors; differentiable in both.
pub fn gaussian_ssim(x: &Tensor, y: &Tensor) -> Tensor {
    assert_eq!(x.size(), y.size(), "ssim: shapes differ");
    assert_eq!(x.dim(), 4, "ssim: expected (B, C, H, W)");
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let g = gaussian_1d(x.device()).to_kind(x.kind());
    let (mu_x, mu_y) = (blur(x, &g), blur(y, &g));
    let (mu_xx, mu_yy, mu_xy) = (mu_x.square(), mu_y.square(), &mu_x * &mu_y);
    let var_x = blur(&(x * x), &g) - &mu_xx;
    let var_y = blur(&(y * y), &g) - &mu_yy;
    let cov = blur(&(x * y), &g) - &mu_xy;
    let cs = (cov * 2.0 + c2) / (var_x + var_y + c2);
    let map = (mu_xy * 2.0 + c1) / (mu_xx + mu_yy + c1) * cs;
    map.mean(None::<Kind>)
}

/// The weighted loss and its unweighted terms (`None` for terms with weight 0).
#[derive(Debug)]
pub struct LossTerms {
    pub total: Tensor,
    pub l1: Option<Tensor>,
    pub ssim: Option<Tensor>,
    pub perceptual: Option<Tensor>,
    pub charbonnier: Option<Tensor>,
    pub edge: Option<Tensor>,
    pub fft: Option<Tensor>,
    pub psnr: Option<Tensor>,
}

impl LossTerms {
    /// The total (`loss`) and each present term (`loss_<term>`), as TensorBoard names them.
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let terms = [
            ("loss_l1", &self.l1),
            ("loss_ssim", &self.ssim),
            ("loss_perceptual", &self.perceptual),
            ("loss_charbonnier", &self.charbonnier),
            ("loss_edge", &self.edge),
            ("loss_fft", &self.fft),
            ("loss_psnr", &self.psnr),
        ];
        let present = terms.into_iter().filter_map(|(k, t)| t.as_ref().map(|t| (k, t)));
        std::iter::once(("loss", &self.total)).chain(present).collect()
    }
}

impl LossTerms {
    /// The mean of several micro-batches' terms (detached: for logging and checks), as one
    /// step over all of them reports it.
    pub fn mean_of(parts: Vec<LossTerms>) -> LossTerms {
        let n = parts.len() as f64;
        let avg = |f: &dyn Fn(&LossTerms) -> Option<&Tensor>| {
            let terms: Option<Vec<Tensor>> =
                parts.iter().map(|p| f(p).map(Tensor::detach)).collect();
            terms.and_then(|t| t.into_iter().reduce(|a, b| a + b)).map(|s| s / n)
        };
        LossTerms {
            total: avg(&|p| Some(&p.total)).expect("at least one micro-batch"),
            l1: avg(&|p| p.l1.as_ref()),
            ssim: avg(&|p| p.ssim.as_ref()),
            perceptual: avg(&|p| p.perceptual.as_ref()),
            charbonnier: avg(&|p| p.charbonnier.as_ref()),
            edge: avg(&|p| p.edge.as_ref()),
            fft: avg(&|p| p.fft.as_ref()),
            psnr: avg(&|p| p.psnr.as_ref()),
        }
    }
}

const CHARBONNIER_EPS: f64 = 1e-3;

/// Per-channel 3x3 Sobel responses (x, y), valid convolution.
fn sobel(x: &Tensor) -> (Tensor, Tensor) {
    let c = x.size()[1];
    // [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]] as (1 2 1)^T (-1 0 1), built on the device (no host
    // copy; see `gaussian_1d`).
    let d = Tensor::arange(3, (x.kind(), x.device())) - 1.0;
    let kx = ((-d.abs() + 2.0).view([3, 1]) * d.view([1, 3])).view([1, 1, 3, 3]);
    let ky = kx.transpose(2, 3).contiguous();
    let conv = |w: &Tensor| {
        let w = w.expand([c, 1, 3, 3], false);
        x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], c)
    };
    (conv(&kx), conv(&ky))
}

fn edge_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let ((px, py), (tx, ty)) = (sobel(pred), sobel(target));
    (px.l1_loss(&tx, Reduction::Mean) + py.l1_loss(&ty, Reduction::Mean)) / 2.0
}

fn fft_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let f = |x: &Tensor| x.fft_rfft2(None::<&[i64]>, [-2, -1], "ortho").view_as_real();
    f(pred).l1_loss(&f(target), Reduction::Mean)
}

fn psnr_loss(pred: &Tensor, target: &Tensor) -> Tensor {
    let mse = (pred - target).square().mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
    ((mse + 1e-8).log10() * 10.0).mean(Kind::Float)
}

struct Perceptual {
    weight: f64,
    vgg: Vgg16Features,
    distance: Distance,
}

/// The configured training loss (holds the frozen VGG16 when the perceptual term is on).
pub struct Loss {
    l1: f64,
    ssim: f64,
    perceptual: Option<Perceptual>,
    charbonnier: f64,
    edge: f64,
    fft: f64,
    psnr: f64,
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loss")
            .field("l1", &self.l1)
            .field("ssim", &self.ssim)
            .field("perceptual", &self.perceptual.as_ref().map(|p| (p.weight, p.vgg.layers())))
            .finish()
    }
}

impl Loss {
    /// Loads the VGG16 weights only when `cfg.perceptual > 0`.
    pub fn new(cfg: &LossConfig, device: Device) -> Result<Self> {
        let perceptual = if cfg.perceptual > 0.0 {
            Some(Perceptual {
                weight: cfg.perceptual,
                vgg: Vgg16Features::load(&cfg.vgg_weights, device, &cfg.perceptual_layers)?,
                distance: cfg.perceptual_distance,
            })
        } else {
            None
        };
        Ok(Loss {
            l1: cfg.l1,
            ssim: cfg.ssim,
            perceptual,
            charbonnier: cfg.charbonnier,
            edge: cfg.edge,
            fft: cfg.fft,
            psnr: cfg.psnr,
        })
    }

    /// `pred` is the raw network output, `target` the clean image, both (B, 3, H, W).
    pub fn compute(&self, pred: &Tensor, target: &Tensor) -> LossTerms {
        assert_eq!(pred.size(), target.size(), "loss: pred and target shapes differ");
        let pred = pred.to_kind(Kind::Float);
        let target = target.to_kind(Kind::Float);
        let l1 = (self.l1 > 0.0).then(|| pred.l1_loss(&target, Reduction::Mean));
        let ssim = (self.ssim > 0.0).then(|| 1.0 - gaussian_ssim(&pred, &target));
        let perceptual = self.perceptual.as_ref().map(|p| perceptual_distance(p, &pred, &target));
        let pw = self.perceptual.as_ref().map_or(0.0, |p| p.weight);
        let charbonnier = (self.charbonnier > 0.0).then(|| {
            ((&pred - &target).square() + CHARBONNIER_EPS * CHARBONNIER_EPS)
                .sqrt()
                .mean(Kind::Float)
        });
        let edge = (self.edge > 0.0).then(|| edge_loss(&pred, &target));
        let fft = (self.fft > 0.0).then(|| fft_loss(&pred, &target));
        let psnr = (self.psnr > 0.0).then(|| psnr_loss(&pred, &target));
        let total = [
            (self.l1, &l1),
            (self.ssim, &ssim),
            (pw, &perceptual),
            (self.charbonnier, &charbonnier),
            (self.edge, &edge),
            (self.fft, &fft),
            (self.psnr, &psnr),
        ]
        .into_iter()
        .filter_map(|(w, t)| t.as_ref().map(|t| t * w))
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, pred.device())));
        LossTerms { total, l1, ssim, perceptual, charbonnier, edge, fft, psnr }
    }
}

fn perceptual_distance(p: &Perceptual, pred: &Tensor, target: &Tensor) -> Tensor {
    let fp = p.vgg.forward(pred);
    let ft = tch::no_grad(|| p.vgg.forward(target));
    let n = fp.len() as f64;
    let sum = fp
        .iter()
        .zip(&ft)
        .map(|(a, b)| match p.distance {
            Distance::L1 => a.l1_loss(b, Reduction::Mean),
            Distance::L2 => a.mse_loss(b, Reduction::Mean),
        })
        .reduce(|a, b| a + b)
        .expect("at least one layer");
    sum / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::kind::FLOAT_CPU;

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
    fn window_is_a_normalised_gaussian() {
        let g = Vec::<f32>::try_from(gaussian_1d(Device::Cpu)).unwrap();
        assert_eq!(g.len(), 11);
        assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // exp(-25 / 4.5) relative to the centre.
        assert!((g[0] / g[5] - (-25.0f32 / 4.5).exp()).abs() < 1e-7);
    }

    #[test]
    fn ssim_of_identical_images_is_one_and_weights_zero_skip_terms() {
        let x = crate::model::with_global_rng(|| {
            tch::manual_seed(0);
            Tensor::rand([1, 3, 16, 13], FLOAT_CPU)
        });
        let s = f64::try_from(gaussian_ssim(&x, &x)).unwrap();
        assert!((s - 1.0).abs() < 1e-5, "{s}");
        let cfg = LossConfig { l1: 2.0, ssim: 0.0, perceptual: 0.0, ..Default::default() };
        let loss = Loss::new(&cfg, Device::Cpu).unwrap();
        let y = &x + 0.1;
        let t = loss.compute(&x, &y);
        assert!(t.ssim.is_none() && t.perceptual.is_none());
        let l1 = f64::try_from(t.l1.unwrap()).unwrap();
        assert!((l1 - 0.1).abs() < 1e-6, "{l1}");
        assert!((f64::try_from(t.total).unwrap() - 0.2).abs() < 1e-6);
    }
}
