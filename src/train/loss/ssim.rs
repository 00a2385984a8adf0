//! SSIM as `pytorch_msssim.ssim(x, y, data_range=1)`, differentiable, for the `ssim` term and
//! the tests: an 11x11 Gaussian window (sigma 1.5) applied separably as a *valid* convolution
//! per channel (a side shorter than 11 is not smoothed, as there), K1 0.01, K2 0.03, the mean
//! over the map, channels and batch.

use tch::{Device, Kind, Tensor};

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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::kind::FLOAT_CPU;

    #[test]
    fn window_is_a_normalised_gaussian() {
        let g = Vec::<f32>::try_from(gaussian_1d(Device::Cpu)).unwrap();
        assert_eq!(g.len(), 11);
        assert!((g.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        // exp(-25 / 4.5) relative to the centre.
        assert!((g[0] / g[5] - (-25.0f32 / 4.5).exp()).abs() < 1e-7);
    }

    #[test]
    fn ssim_of_identical_images_is_one() {
        let x = crate::model::with_global_rng(|| {
            tch::manual_seed(0);
            Tensor::rand([1, 3, 16, 13], FLOAT_CPU)
        });
        let s = f64::try_from(gaussian_ssim(&x, &x)).unwrap();
        assert!((s - 1.0).abs() < 1e-5, "{s}");
    }
}
