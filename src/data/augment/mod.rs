//! Paired training augmentation on plain buffers, run on the loader threads (which then build
//! the batch tensors from its output).
//!
//! A training sample is cut from a stored pair (HWC u8) into two [`Planes`] (CHW f32 in [0, 1]):
//! 1. crop a `patch x patch` window at the same place in both images, optionally rotated by a
//!    small angle about the window's centre (bilinear, reflected image borders);
//! 2. rotate by a random quarter turn, flip horizontally, flip vertically (exact, both images);
//! 3. colour jitter with the same factors on both images;
//! 4. Gaussian blur and random erasing of the degraded image only, or of both (`images: both`,
//!    the course report's pipeline).
//!
//! Geometric steps and the jitter act identically on both images, so the pixel correspondence
//! between input and target survives. The parameters are drawn by [`Params::sample`] from a
//! caller-supplied RNG and applied by [`Params::apply`], so every step is testable on its own.

mod ops;

use crate::config::{AugmentConfig, AugmentImages};
pub use ops::{
    blur_radius, color_jitter, crop, erase, gaussian_blur, hflip, rot90, rotated_crop, vflip,
    Jitter, Planes, Rect,
};
use rand::Rng;

/// Every random choice for one sample, drawn up front so that applying them is pure.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub top: usize,
    pub left: usize,
    /// Small-angle rotation in degrees (0 = none).
    pub degrees: f64,
    /// Counter-clockwise quarter turns, 0..=3.
    pub quarter_turns: u8,
    pub hflip: bool,
    pub vflip: bool,
    pub jitter: Option<Jitter>,
    /// Blur sigma for the degraded image.
    pub blur: Option<f64>,
    /// The clean image is blurred too.
    pub blur_both: bool,
    /// Rectangle erased in the degraded image.
    pub erase: Option<Rect>,
    /// The clean image is erased too.
    pub erase_both: bool,
}

impl Params {
    /// Draws the parameters for a `patch` crop of an `h x w` pair (`h, w >= patch`). A step
    /// whose probability is 0 draws nothing more, so it leaves both images untouched.
    pub fn sample(
        cfg: &AugmentConfig,
        h: usize,
        w: usize,
        patch: usize,
        rng: &mut impl Rng,
    ) -> Self {
        assert!(h >= patch && w >= patch, "{h}x{w} image is smaller than patch {patch}");
        let hit = |p: f64, rng: &mut dyn rand::RngCore| p > 0.0 && rng.gen_bool(p);
        let top = rng.gen_range(0..=h - patch);
        let left = rng.gen_range(0..=w - patch);
        let r = &cfg.rotate;
        let degrees = if hit(r.prob, rng) && r.degrees > 0.0 {
            rng.gen_range(-r.degrees..=r.degrees)
        } else {
            0.0
        };
        let quarter_turns = if hit(cfg.rot90, rng) { rng.gen_range(1..=3) } else { 0 };
        let hflip = hit(cfg.hflip, rng);
        let vflip = hit(cfg.vflip, rng);
        let cj = &cfg.color_jitter;
        let jitter = if hit(cj.prob, rng) {
            let mut factor =
                |s: f64| if s > 0.0 { rng.gen_range(1.0 - s..=1.0 + s) as f32 } else { 1.0 };
            Some(Jitter {
                brightness: factor(cj.brightness),
                contrast: factor(cj.contrast),
                saturation: factor(cj.saturation),
            })
        } else {
            None
        };
        let blur = if hit(cfg.blur.prob, rng) {
            Some(rng.gen_range(cfg.blur.sigma[0]..=cfg.blur.sigma[1]))
        } else {
            None
        };
        let erase = if hit(cfg.erase.prob, rng) { sample_erase(cfg, patch, rng) } else { None };
        Params {
            top,
            left,
            degrees,
            quarter_turns,
            hflip,
            vflip,
            jitter,
            blur,
            blur_both: cfg.blur.images == AugmentImages::Both,
            erase,
            erase_both: cfg.erase.images == AugmentImages::Both,
        }
    }

    /// Cuts and augments one pair of HWC u8 `h x w` images; returns (degraded, clean).
    pub fn apply(
        &self,
        degraded: &[u8],
        clean: &[u8],
        h: usize,
        w: usize,
        patch: usize,
    ) -> (Planes, Planes) {
        let cut = |img: &[u8]| {
            if self.degrees == 0.0 {
                crop(img, w, self.top, self.left, patch)
            } else {
                let half = (patch as f64 - 1.0) / 2.0;
                rotated_crop(
                    img,
                    h,
                    w,
                    self.top as f64 + half,
                    self.left as f64 + half,
                    self.degrees,
                    patch,
                )
            }
        };
        let geometric = |mut p: Planes| {
            if self.quarter_turns != 0 {
                p = rot90(&p, self.quarter_turns);
            }
            if self.hflip {
                p = hflip(&p);
            }
            if self.vflip {
                p = vflip(&p);
            }
            p
        };
        let mut d = geometric(cut(degraded));
        let mut c = geometric(cut(clean));
        if let Some(j) = self.jitter {
            color_jitter(&mut d, &mut c, j);
        }
        if let Some(sigma) = self.blur {
            d = gaussian_blur(&d, sigma);
            if self.blur_both {
                c = gaussian_blur(&c, sigma);
            }
        }
        if let Some(r) = self.erase {
            erase(&mut d, r);
            if self.erase_both {
                erase(&mut c, r);
            }
        }
        (d, c)
    }
}

/// torchvision `RandomErasing`'s recipe: area fraction in `scale`, aspect ratio log-uniform in
/// [0.3, 3.3], up to 10 tries to fit the patch; `None` when nothing fits.
fn sample_erase(cfg: &AugmentConfig, patch: usize, rng: &mut impl Rng) -> Option<Rect> {
    let area = (patch * patch) as f64;
    let (lo, hi) = ((0.3f64).ln(), (3.3f64).ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(cfg.erase.scale[0]..=cfg.erase.scale[1]);
        let ratio = rng.gen_range(lo..=hi).exp();
        let height = (target * ratio).sqrt().round() as usize;
        let width = (target / ratio).sqrt().round() as usize;
        if (1..patch).contains(&height) && (1..patch).contains(&width) {
            let top = rng.gen_range(0..=patch - height);
            let left = rng.gen_range(0..=patch - width);
            return Some(Rect { top, left, height, width });
        }
    }
    None
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BlurConfig, ColorJitterConfig, EraseConfig, RotateConfig};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A non-square image with distinct, irregular pixel values.
    fn image(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * 3).map(|i| ((i * i * 7 + i * 13) % 251) as u8).collect()
    }

    fn all_on() -> AugmentConfig {
        AugmentConfig {
            hflip: 0.5,
            vflip: 0.5,
            rot90: 0.5,
            rotate: RotateConfig { prob: 0.5, degrees: 20.0 },
            color_jitter: ColorJitterConfig {
                prob: 0.8,
                brightness: 0.3,
                contrast: 0.3,
                saturation: 0.3,
            },
            blur: BlurConfig { prob: 0.5, sigma: [0.3, 1.5], ..Default::default() },
            erase: EraseConfig { prob: 0.5, scale: [0.05, 0.2], ..Default::default() },
        }
    }

    fn all_off() -> AugmentConfig {
        let mut c = all_on();
        c.hflip = 0.0;
        c.vflip = 0.0;
        c.rot90 = 0.0;
        c.rotate.prob = 0.0;
        c.color_jitter.prob = 0.0;
        c.blur.prob = 0.0;
        c.erase.prob = 0.0;
        c
    }

    #[test]
    fn zero_probabilities_leave_the_crop_untouched() {
        let (h, w, patch) = (20, 24, 16);
        let (d, c) = (image(h, w), image(h, w).iter().map(|v| 255 - v).collect::<Vec<u8>>());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let p = Params::sample(&all_off(), h, w, patch, &mut rng);
            let (ad, ac) = p.apply(&d, &c, h, w, patch);
            assert_eq!(ad, crop(&d, w, p.top, p.left, patch));
            assert_eq!(ac, crop(&c, w, p.top, p.left, patch));
        }
    }

    #[test]
    fn geometry_keeps_pixel_correspondence() {
        // clean = 1 - degraded pixelwise; every geometric step (bilinear rotation included,
        // being affine in the values) must keep that relation.
        let (h, w, patch) = (20, 24, 16);
        let d = image(h, w);
        let c: Vec<u8> = d.iter().map(|v| 255 - v).collect();
        let mut cfg = all_off();
        (cfg.hflip, cfg.vflip, cfg.rot90, cfg.rotate.prob) = (0.5, 0.5, 0.7, 0.5);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut rotated = 0;
        for _ in 0..30 {
            let p = Params::sample(&cfg, h, w, patch, &mut rng);
            rotated += usize::from(p.degrees != 0.0);
            let (ad, ac) = p.apply(&d, &c, h, w, patch);
            let worst =
                ad.data.iter().zip(&ac.data).map(|(a, b)| (a + b - 1.0).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-5, "{p:?}: {worst}");
        }
        assert!(rotated > 5, "the rotation branch was exercised only {rotated} times");
    }

    #[test]
    fn jitter_is_one_transform_on_both_images() {
        // Identical inputs stay identical under geometry + jitter, and jitter does change them.
        let (h, w, patch) = (20, 24, 16);
        let d = image(h, w);
        let mut cfg = all_on();
        (cfg.blur.prob, cfg.erase.prob, cfg.color_jitter.prob) = (0.0, 0.0, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..10 {
            let p = Params::sample(&cfg, h, w, patch, &mut rng);
            let (ad, ac) = p.apply(&d, &d, h, w, patch);
            assert_eq!(ad, ac);
            let mut plain = p.clone();
            plain.jitter = None;
            assert_ne!(plain.apply(&d, &d, h, w, patch).0, ad);
        }
    }

    #[test]
    fn blur_and_erase_touch_only_the_degraded_image() {
        let (h, w, patch) = (20, 24, 16);
        let (d, c) = (image(h, w), image(h, w).iter().map(|v| v / 2).collect::<Vec<u8>>());
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut cfg = all_off();
        (cfg.blur.prob, cfg.erase.prob) = (1.0, 1.0);
        let p = Params::sample(&cfg, h, w, patch, &mut rng);
        let r = p.erase.expect("an erase rectangle fits a 16 px patch");
        let (ad, ac) = p.apply(&d, &c, h, w, patch);
        assert_eq!(ac, crop(&c, w, p.top, p.left, patch));
        let plain = crop(&d, w, p.top, p.left, patch);
        assert_eq!(ad, {
            let mut b = gaussian_blur(&plain, p.blur.unwrap());
            erase(&mut b, r);
            b
        });
        assert_ne!(gaussian_blur(&plain, p.blur.unwrap()), plain);
        let erased =
            (0..3).all(|ch| (r.top..r.top + r.height).all(|y| ad.at(ch, y, r.left) == 0.0));
        assert!(erased && r.height * r.width > 0);
    }

    #[test]
    fn blur_and_erase_on_both_images_change_them_alike() {
        // Identical inputs stay identical; the clean image is no longer the plain crop.
        let (h, w, patch) = (20, 24, 16);
        let d = image(h, w);
        let mut cfg = all_off();
        (cfg.blur.prob, cfg.erase.prob) = (1.0, 1.0);
        (cfg.blur.images, cfg.erase.images) = (AugmentImages::Both, AugmentImages::Both);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let p = Params::sample(&cfg, h, w, patch, &mut rng);
        assert!(p.blur.is_some() && p.erase.is_some());
        let (ad, ac) = p.apply(&d, &d, h, w, patch);
        assert_eq!(ad, ac);
        assert_ne!(ac, crop(&d, w, p.top, p.left, patch));
        let only_degraded = Params { blur_both: false, erase_both: false, ..p.clone() };
        assert_eq!(only_degraded.apply(&d, &d, h, w, patch).0, ad);
    }

    #[test]
    fn same_rng_state_gives_same_sample() {
        let (h, w, patch) = (20, 24, 16);
        let (d, c) = (image(h, w), image(h, w));
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let p = Params::sample(&all_on(), h, w, patch, &mut rng);
            (p.clone(), p.apply(&d, &c, h, w, patch))
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1).0, run(2).0);
    }
}
