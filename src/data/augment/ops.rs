//! The augmentation steps on raw buffers: crops (optionally rotated), exact flips and quarter
//! turns, colour jitter, Gaussian blur and erasing. Pure functions of their parameters.

/// A 3-channel CHW f32 image, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub height: usize,
    pub width: usize,
    /// `3 * height * width` values, channel-major.
    pub data: Vec<f32>,
}

impl Planes {
    pub fn zeros(height: usize, width: usize) -> Self {
        Planes { height, width, data: vec![0.0; 3 * height * width] }
    }

    pub(crate) fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Builds a new image of size `h x w` whose pixel (c, y, x) is `f(c, y, x)`.
    fn from_fn(h: usize, w: usize, f: impl Fn(usize, usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(3 * h * w);
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    data.push(f(c, y, x));
                }
            }
        }
        Planes { height: h, width: w, data }
    }
}

/// The `size x size` window at (`top`, `left`) of an HWC u8 image of width `w`, as [`Planes`].
pub fn crop(hwc: &[u8], w: usize, top: usize, left: usize, size: usize) -> Planes {
    Planes::from_fn(size, size, |c, y, x| {
        f32::from(hwc[((top + y) * w + left + x) * 3 + c]) / 255.0
    })
}

/// Index `i` folded into `0..n` by mirroring about the first and last pixel (PyTorch
/// `reflect`, scipy `mirror`: ... 2 1 | 0 1 2 ... n-1 | n-2 ...).
fn reflect(i: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let m = i.rem_euclid(period);
    (if m >= n as i64 { period - m } else { m }) as usize
}

/// A `size x size` window of an HWC u8 `h x w` image centred at (`cy`, `cx`) (pixel
/// coordinates, may be fractional) and rotated by `degrees` counter-clockwise on screen
/// about that centre: output pixel (y, x) samples the source at
/// `centre + R(-degrees) * ((y, x) - window centre)` bilinearly, reflecting at the image border.
/// Sampling the full image (not a crop) keeps real pixels in the corners wherever they exist.
/// At 0 degrees and an integral window position it equals [`crop`] exactly.
pub fn rotated_crop(
    hwc: &[u8],
    h: usize,
    w: usize,
    cy: f64,
    cx: f64,
    degrees: f64,
    size: usize,
) -> Planes {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let half = (size as f64 - 1.0) / 2.0;
    let mut out = Planes::zeros(size, size);
    let plane = size * size;
    for y in 0..size {
        let dy = y as f64 - half;
        for x in 0..size {
            let dx = x as f64 - half;
            // Inverse map: undo the on-screen (y-down) counter-clockwise rotation.
            let sx = cx + dx * cos - dy * sin;
            let sy = cy + dx * sin + dy * cos;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let (xa, xb) = (reflect(x0, w), reflect(x0 + 1, w));
            let (ya, yb) = (reflect(y0, h), reflect(y0 + 1, h));
            for c in 0..3 {
                let p = |yy: usize, xx: usize| f32::from(hwc[(yy * w + xx) * 3 + c]);
                let top = p(ya, xa) * (1.0 - fx) + p(ya, xb) * fx;
                let bottom = p(yb, xa) * (1.0 - fx) + p(yb, xb) * fx;
                out.data[c * plane + y * size + x] = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
    }
    out
}

/// Mirror left-right (`torch.flip(x, [-1])`).
pub fn hflip(p: &Planes) -> Planes {
    Planes::from_fn(p.height, p.width, |c, y, x| p.at(c, y, p.width - 1 - x))
}

/// Mirror top-bottom (`torch.flip(x, [-2])`).
pub fn vflip(p: &Planes) -> Planes {
    Planes::from_fn(p.height, p.width, |c, y, x| p.at(c, p.height - 1 - y, x))
}

/// `k` counter-clockwise quarter turns (`torch.rot90(x, k, [-2, -1])`).
pub fn rot90(p: &Planes, k: u8) -> Planes {
    let (h, w) = (p.height, p.width);
    match k % 4 {
        0 => p.clone(),
        1 => Planes::from_fn(w, h, |c, y, x| p.at(c, x, w - 1 - y)),
        2 => Planes::from_fn(h, w, |c, y, x| p.at(c, h - 1 - y, w - 1 - x)),
        _ => Planes::from_fn(w, h, |c, y, x| p.at(c, h - 1 - x, y)),
    }
}

/// ITU-R 601 luma weights, as torchvision's `rgb_to_grayscale`.
const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// Multiplicative factors (1 = unchanged) for brightness, contrast and saturation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
}

/// Colour jitter with torchvision's formulas (blend with black, the mean grey, the pixel's
/// grey; clamp to [0, 1] after each), applied as **one** transform to both images: the contrast
/// pivot is the clean image's mean grey, used for the degraded one too. Jitter models another
/// scene or camera, not another degradation, so input and target must change alike; jittering
/// only the input would teach the network colour correction that the test set never asks for.
/// On the clean image this equals torchvision's `adjust_brightness -> adjust_contrast ->
/// adjust_saturation`.
pub fn color_jitter(degraded: &mut Planes, clean: &mut Planes, j: Jitter) {
    let clamp = |v: f32| v.clamp(0.0, 1.0);
    let blend = |img: &mut Planes, f: &dyn Fn(usize) -> f32, ratio: f32| {
        let plane = img.height * img.width;
        for c in 0..3 {
            for i in 0..plane {
                let v = &mut img.data[c * plane + i];
                *v = clamp(ratio * *v + (1.0 - ratio) * f(i));
            }
        }
    };
    for img in [&mut *degraded, &mut *clean] {
        blend(img, &|_| 0.0, j.brightness);
    }
    let grey = |img: &Planes| -> Vec<f32> {
        let plane = img.height * img.width;
        (0..plane).map(|i| (0..3).map(|c| LUMA[c] * img.data[c * plane + i]).sum::<f32>()).collect()
    };
    let g = grey(clean);
    let mean = (g.iter().map(|&v| f64::from(v)).sum::<f64>() / g.len() as f64) as f32;
    for img in [&mut *degraded, &mut *clean] {
        blend(img, &|_| mean, j.contrast);
    }
    for img in [&mut *degraded, &mut *clean] {
        let g = grey(img);
        blend(img, &|i| g[i], j.saturation);
    }
}

/// Radius of the Gaussian kernel for `sigma` (3 sigma), capped so that reflection padding
/// stays inside an image of `min_side` pixels.
pub fn blur_radius(sigma: f64, min_side: usize) -> usize {
    ((3.0 * sigma).ceil() as usize).clamp(1, min_side.saturating_sub(1).max(1))
}

/// Separable Gaussian blur with reflected borders; equals torchvision's `gaussian_blur` with
/// kernel size `2 * blur_radius + 1` and the same sigma in both directions.
pub fn gaussian_blur(p: &Planes, sigma: f64) -> Planes {
    let r = blur_radius(sigma, p.height.min(p.width));
    let weights: Vec<f64> =
        (0..=2 * r).map(|i| (-0.5 * ((i as f64 - r as f64) / sigma).powi(2)).exp()).collect();
    let total: f64 = weights.iter().sum();
    let k: Vec<f32> = weights.iter().map(|w| (w / total) as f32).collect();
    let (h, w) = (p.height, p.width);
    let pass = |src: &Planes, horizontal: bool| {
        Planes::from_fn(h, w, |c, y, x| {
            k.iter()
                .enumerate()
                .map(|(i, &kv)| {
                    let off = i as i64 - r as i64;
                    let v = if horizontal {
                        src.at(c, y, reflect(x as i64 + off, w))
                    } else {
                        src.at(c, reflect(y as i64 + off, h), x)
                    };
                    kv * v
                })
                .sum()
        })
    };
    pass(&pass(p, true), false)
}

/// An axis-aligned rectangle, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Sets the rectangle to 0 (black) in all channels.
pub fn erase(p: &mut Planes, r: Rect) {
    let plane = p.height * p.width;
    for c in 0..3 {
        for y in r.top..r.top + r.height {
            let row = c * plane + y * p.width;
            p.data[row + r.left..row + r.left + r.width].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    fn tensor(p: &Planes) -> Tensor {
        Tensor::from_slice(&p.data).view([3, p.height as i64, p.width as i64])
    }

    /// A non-square image with distinct, irregular pixel values.
    fn image(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * 3).map(|i| ((i * i * 7 + i * 13) % 251) as u8).collect()
    }

    #[test]
    fn flips_and_quarter_turns_match_tch_exactly() {
        let (h, w) = (5, 7);
        let src = image(h, w);
        let p = Planes::from_fn(h, w, |c, y, x| f32::from(src[(y * w + x) * 3 + c]));
        let t = tensor(&p);
        assert!(tensor(&hflip(&p)).equal(&t.flip([-1])));
        assert!(tensor(&vflip(&p)).equal(&t.flip([-2])));
        for k in 0..4u8 {
            let r = rot90(&p, k);
            assert!(tensor(&r).equal(&t.rot90(i64::from(k), [-2, -1])), "k={k}");
        }
    }

    #[test]
    fn crop_matches_tensor_slicing_and_zero_angle_rotation_is_the_crop() {
        let (h, w) = (9, 12);
        let src = image(h, w);
        let full = Tensor::from_slice(&src).view([h as i64, w as i64, 3]).permute([2, 0, 1]);
        let c = crop(&src, w, 2, 3, 6);
        let expect = full.narrow(1, 2, 6).narrow(2, 3, 6).to_kind(tch::Kind::Float) / 255.0;
        assert!(tensor(&c).equal(&expect));
        assert_eq!(rotated_crop(&src, h, w, 2.0 + 2.5, 3.0 + 2.5, 0.0, 6), c);
    }

    #[test]
    fn quarter_angle_rotation_turns_the_same_way_as_rot90() {
        let (h, w) = (9, 12);
        let src = image(h, w);
        let c = crop(&src, w, 1, 3, 6);
        for (deg, k) in [(90.0, 1), (180.0, 2), (-90.0, 3)] {
            let r = rotated_crop(&src, h, w, 1.0 + 2.5, 3.0 + 2.5, deg, 6);
            let worst = r
                .data
                .iter()
                .zip(&rot90(&c, k).data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst < 1e-5, "{deg} degrees: {worst}");
        }
    }

    #[test]
    fn reflect_folds_like_pytorch() {
        let got: Vec<usize> = (-4..8).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, [2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]);
        assert_eq!(reflect(-3, 1), 0);
    }
}
