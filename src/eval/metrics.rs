//! Image-quality metrics, one implementation for training validation, `eval` and `visualize`.
//!
//! Conventions (see the notes on HW4 metrics):
//! - PSNR is per image, over all channels, on the **rounded u8** output (data range 255), which
//!   is what the leaderboard scores from `pred.npz`. Identical images would give +inf; they are
//!   capped at [`PSNR_CAP_DB`] so averages stay finite.
//! - SSIM is scikit-image's default `structural_similarity(gt, pred, data_range=255,
//!   channel_axis=-1)`, PromptIR's evaluation convention: 7x7 uniform window, sample covariance
//!   (N-1), K1 0.01, K2 0.03, a 3-pixel border cropped, mean over channels. (The training loss
//!   uses a different, Gaussian SSIM: see `loss`.)

use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// PSNR of identical images, in dB (instead of +inf).
pub const PSNR_CAP_DB: f64 = 100.0;

/// `10 log10(range^2 / mse)`, capped at [`PSNR_CAP_DB`].
pub fn psnr_from_mse(mse: f64, data_range: f64) -> f64 {
    if mse <= 0.0 {
        return PSNR_CAP_DB;
    }
    (10.0 * (data_range * data_range / mse).log10()).min(PSNR_CAP_DB)
}

/// PSNR in dB of two equally long u8 images (any layout; all channels), data range 255.
pub fn psnr_u8(pred: &[u8], gt: &[u8]) -> f64 {
    assert_eq!(pred.len(), gt.len(), "psnr_u8: images differ in size");
    assert!(!pred.is_empty(), "psnr_u8: empty image");
    // Exact integer sum: no rounding before the final division.
    let sse: u64 = pred
        .iter()
        .zip(gt)
        .map(|(&a, &b)| {
            let d = i64::from(a) - i64::from(b);
            (d * d) as u64
        })
        .sum();
    psnr_from_mse(sse as f64 / pred.len() as f64, 255.0)
}

/// PSNR in dB of two equally shaped float tensors in [0, 1] taken as one image (data range 1),
/// computed in f64. No clamping: callers pass what they want measured.
pub fn psnr_tensor(pred: &Tensor, gt: &Tensor) -> f64 {
    assert_eq!(pred.size(), gt.size(), "psnr_tensor: shapes differ");
    let d = pred.to_kind(Kind::Double) - gt.to_kind(Kind::Double);
    let mse = f64::try_from(d.square().mean(Kind::Double)).expect("scalar");
    psnr_from_mse(mse, 1.0)
}

/// Side of the uniform SSIM window (scikit-image's default).
const WIN: usize = 7;

/// Summed-area table of `f(i)` over an h x w plane: `t[(r)*(w+1)+c]` = sum over rows < r, cols < c.
fn integral(h: usize, w: usize, f: impl Fn(usize) -> i64) -> Vec<i64> {
    let mut t = vec![0i64; (h + 1) * (w + 1)];
    for r in 0..h {
        let mut row = 0i64;
        for c in 0..w {
            row += f(r * w + c);
            t[(r + 1) * (w + 1) + c + 1] = t[r * (w + 1) + c + 1] + row;
        }
    }
    t
}

/// Sum of a summed-area table over the WIN x WIN window whose top-left corner is (r, c).
fn window_sum(t: &[i64], w: usize, r: usize, c: usize) -> i64 {
    let (r1, c1) = (r + WIN, c + WIN);
    t[r1 * (w + 1) + c1] - t[r * (w + 1) + c1] - t[r1 * (w + 1) + c] + t[r * (w + 1) + c]
}

/// Mean SSIM of one h x w u8 plane (the windows that fit entirely, i.e. the 3-px crop).
fn ssim_plane(x: &[u8], y: &[u8], h: usize, w: usize) -> f64 {
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let n = (WIN * WIN) as f64;
    let px = |v: &[u8], i: usize| i64::from(v[i]);
    // Window sums of u8 data are exact in integers; only the final ratios are floating point.
    let sx = integral(h, w, |i| px(x, i));
    let sy = integral(h, w, |i| px(y, i));
    let sxx = integral(h, w, |i| px(x, i) * px(x, i));
    let syy = integral(h, w, |i| px(y, i) * px(y, i));
    let sxy = integral(h, w, |i| px(x, i) * px(y, i));
    let mut total = 0.0;
    for r in 0..=h - WIN {
        for c in 0..=w - WIN {
            let s = |t: &[i64]| window_sum(t, w, r, c);
            let (ax, ay) = (s(&sx), s(&sy));
            let (ux, uy) = (ax as f64 / n, ay as f64 / n);
            // Sample (co)variances, N·Σab - Σa·Σb over N(N-1), exact in the numerator.
            let cov = |sab: i64, sa: i64, sb: i64| {
                ((WIN * WIN) as i64 * sab - sa * sb) as f64 / (n * (n - 1.0))
            };
            let vx = cov(s(&sxx), ax, ax);
            let vy = cov(s(&syy), ay, ay);
            let vxy = cov(s(&sxy), ax, ay);
            total += (2.0 * ux * uy + c1) * (2.0 * vxy + c2)
                / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        }
    }
    total / ((h - WIN + 1) * (w - WIN + 1)) as f64
}

/// SSIM of two CHW u8 images of size h x w (any number of channels), scikit-image's default
/// convention (see the module docs). Panics if a side is under 7 pixels, as scikit-image refuses.
pub fn ssim_u8(pred: &[u8], gt: &[u8], h: usize, w: usize) -> f64 {
    assert_eq!(pred.len(), gt.len(), "ssim_u8: images differ in size");
    let plane = h * w;
    assert!(
        plane > 0 && pred.len().is_multiple_of(plane),
        "ssim_u8: length is not a multiple of h*w"
    );
    assert!(h >= WIN && w >= WIN, "ssim_u8: image {h}x{w} is smaller than the {WIN}x{WIN} window");
    let channels = pred.len() / plane;
    let sum: f64 = (0..channels)
        .map(|ch| {
            let r = ch * plane..(ch + 1) * plane;
            ssim_plane(&pred[r.clone()], &gt[r], h, w)
        })
        .sum();
    sum / channels as f64
}

/// How PSNR and SSIM are computed: each paper table's convention (`eval --metric`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The course leaderboard's: PSNR on the rounded u8 output (data range 255), SSIM
    /// scikit-image's default on it (see the module docs). Training validation uses it.
    #[default]
    Course,
    /// PromptIR's, AdaIR's and MoCE-IR's test scripts: scikit-image's PSNR and SSIM on the
    /// float output clipped to [0, 1], RGB, data range 1; SSIM as `multichannel=True` meant
    /// (per channel, 7x7 uniform window, sample covariance, then the channel mean).
    Rgb,
    /// Restormer's (BasicSR's `test_y_channel`): the rounded u8 output's BT.601 luma, `16 +
    /// 65.481 R + 128.553 G + 24.966 B` with R, G, B in [0, 1], in float; PSNR with data range
    /// 255; SSIM with an 11x11 Gaussian window of sigma 1.5 and population covariance.
    Y,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Course => "course",
            Metric::Rgb => "rgb",
            Metric::Y => "y",
        }
    }

    /// The side of its SSIM window: images must be at least this large.
    pub fn ssim_window(self) -> usize {
        match self {
            Metric::Course | Metric::Rgb => 7,
            Metric::Y => 11,
        }
    }

    /// What a table's header says of it.
    pub fn describe(self) -> &'static str {
        match self {
            Metric::Course => "course: rounded 8-bit RGB, SSIM 7x7 uniform",
            Metric::Rgb => {
                "rgb: clipped float RGB, data range 1, SSIM 7x7 uniform (PromptIR's test.py)"
            }
            Metric::Y => "y: luma of the rounded output, SSIM Gaussian 11x11 (Restormer's)",
        }
    }

    /// (PSNR, SSIM) of `pred` against `gt`, both (3, H, W) float in [0, 1] for the ground truth
    /// and unclamped for the output (which each convention clips or rounds as it does).
    pub fn score(self, pred: &Tensor, gt: &Tensor) -> (f64, f64) {
        let (h, w) = (gt.size()[1] as usize, gt.size()[2] as usize);
        match self {
            Metric::Course => {
                let (p, g) = (crate::io::to_u8_chw(pred), crate::io::to_u8_chw(gt));
                (psnr_u8(&p, &g), ssim_u8(&p, &g, h, w))
            }
            Metric::Rgb => {
                let p = pred.to_kind(Kind::Double).clamp(0.0, 1.0);
                let g = gt.to_kind(Kind::Double).clamp(0.0, 1.0);
                (psnr_tensor(&p, &g), ssim_float(&p, &g, 1.0, Window::Uniform7))
            }
            Metric::Y => {
                let luma = |t: &Tensor| {
                    let u8s = Tensor::from_slice(&crate::io::to_u8_chw(t));
                    let rgb = u8s.to_kind(Kind::Double).view([3, h as i64, w as i64]) / 255.0;
                    let k = Tensor::from_slice(&[65.481f64, 128.553, 24.966]).view([3, 1, 1]);
                    (rgb * k).sum_dim_intlist([0i64].as_slice(), true, Kind::Double) + 16.0
                };
                let (p, g) = (luma(pred), luma(gt));
                let d = (&p - &g).square().mean(Kind::Double);
                let psnr = psnr_from_mse(f64::try_from(d).expect("scalar"), 255.0);
                (psnr, ssim_float(&p, &g, 255.0, Window::Gaussian11))
            }
        }
    }
}

/// SSIM's window.
#[derive(Debug, Clone, Copy)]
enum Window {
    /// scikit-image's default: 7x7 uniform, sample covariance (N / (N - 1)).
    Uniform7,
    /// Wang et al.'s: 11x11 Gaussian of sigma 1.5 (scikit-image's `gaussian_weights=True`, radius
    /// `int(3.5 sigma + 0.5)`), population covariance.
    Gaussian11,
}

/// Mean SSIM of (C, H, W) float64 images over the windows that fit (scikit-image's crop), the
/// mean over channels; `range` is the data range.
fn ssim_float(x: &Tensor, y: &Tensor, range: f64, window: Window) -> f64 {
    let (k, cov_norm) = match window {
        Window::Uniform7 => {
            (Tensor::full([7, 7], 1.0 / 49.0, (Kind::Double, x.device())), 49.0 / 48.0)
        }
        Window::Gaussian11 => {
            let t = Tensor::arange_start(-5, 6, (Kind::Double, x.device()));
            let g = (t.square() * (-0.5 / (1.5 * 1.5))).exp();
            let g = &g / g.sum(Kind::Double);
            (g.view([11, 1]) * g.view([1, 11]), 1.0)
        }
    };
    let side = k.size()[0];
    let c = x.size()[0];
    assert!(
        x.size()[1] >= side && x.size()[2] >= side,
        "SSIM: image {:?} is smaller than its {side}x{side} window",
        x.size()
    );
    let k = k.view([1, 1, side, side]).expand([c, 1, side, side], false);
    let filt = |t: &Tensor| t.unsqueeze(0).conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
    let (ux, uy) = (filt(x), filt(y));
    let vx = (filt(&(x * x)) - &ux * &ux) * cov_norm;
    let vy = (filt(&(y * y)) - &uy * &uy) * cov_norm;
    let vxy = (filt(&(x * y)) - &ux * &uy) * cov_norm;
    let (c1, c2) = ((0.01 * range).powi(2), (0.03 * range).powi(2));
    let s = ((&ux * &uy * 2.0 + c1) * (vxy * 2.0 + c2))
        / ((ux.square() + uy.square() + c1) * (vx + vy + c2));
    f64::try_from(s.mean(Kind::Double)).expect("scalar")
}

/// A running mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mean {
    sum: f64,
    count: usize,
}

impl Mean {
    /// A mean of `count` values summing to `sum` (e.g. sums over several processes).
    pub fn from_sum(sum: f64, count: usize) -> Self {
        Mean { sum, count }
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn add(&mut self, x: f64) {
        self.sum += x;
        self.count += 1;
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// None before the first value.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Means per group (e.g. "rain", "snow") and over everything, each value counted once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupMeans {
    all: Mean,
    groups: BTreeMap<String, Mean>,
}

impl GroupMeans {
    pub fn add(&mut self, group: &str, x: f64) {
        self.all.add(x);
        self.groups.entry(group.to_string()).or_default().add(x);
    }

    /// The mean over all values (each image weighs the same, whatever its group).
    pub fn overall(&self) -> &Mean {
        &self.all
    }

    /// Per-group means, sorted by group name.
    pub fn groups(&self) -> &BTreeMap<String, Mean> {
        &self.groups
    }

    /// From the overall mean and the per-group ones (e.g. each summed over processes).
    pub fn new(all: Mean, groups: BTreeMap<String, Mean>) -> Self {
        GroupMeans { all, groups }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_by_hand() {
        // One pixel off by 255 out of 4 values: mse = 255^2 / 4, so PSNR = 10 log10(4).
        let p = psnr_u8(&[0, 0, 0, 0], &[255, 0, 0, 0]);
        assert!((p - 10.0 * 4f64.log10()).abs() < 1e-12, "{p}");
        // Off by 1 everywhere: 20 log10(255).
        let p = psnr_u8(&[10, 20, 30], &[11, 21, 29]);
        assert!((p - 20.0 * 255f64.log10()).abs() < 1e-12, "{p}");
    }

    #[test]
    fn identical_images_are_capped() {
        assert_eq!(psnr_u8(&[7, 8, 9], &[7, 8, 9]), PSNR_CAP_DB);
        let t = Tensor::from_slice(&[0.25f32, 0.5]);
        assert_eq!(psnr_tensor(&t, &t), PSNR_CAP_DB);
        let img: Vec<u8> = (0..3 * 9 * 11).map(|i| (i * 37 % 251) as u8).collect();
        assert!((ssim_u8(&img, &img, 9, 11) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psnr_tensor_matches_u8_on_exact_values() {
        let a: Vec<u8> = (0..60).map(|i| (i * 13 % 256) as u8).collect();
        let b: Vec<u8> = (0..60).map(|i| (i * 29 % 256) as u8).collect();
        let t = |v: &[u8]| Tensor::from_slice(v).to_kind(Kind::Double) / 255.0;
        assert!((psnr_tensor(&t(&a), &t(&b)) - psnr_u8(&a, &b)).abs() < 1e-9);
    }

    #[test]
    fn ssim_of_a_constant_shift() {
        // Constant planes: variances are 0, so SSIM = (2xy + C1) / (x^2 + y^2 + C1).
        let (x, y) = (100u8, 110u8);
        let c1 = (0.01f64 * 255.0).powi(2);
        let want = (2.0 * 100.0 * 110.0 + c1) / (100f64.powi(2) + 110f64.powi(2) + c1);
        let got = ssim_u8(&[x; 8 * 7], &[y; 8 * 7], 8, 7);
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn group_means() {
        let mut g = GroupMeans::default();
        assert_eq!(g.overall().mean(), None);
        g.add("rain", 30.0);
        g.add("rain", 32.0);
        g.add("snow", 35.0);
        assert_eq!(g.overall().mean(), Some(97.0 / 3.0));
        assert_eq!(g.groups()["rain"].mean(), Some(31.0));
        assert_eq!(g.groups()["snow"].count(), 1);
    }
}
