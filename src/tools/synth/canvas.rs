//! A float RGB drawing surface with area-coverage anti-aliasing, and colour helpers.

use crate::io::RgbImage;

pub type Rgb = [f32; 3];

/// A float RGB image, values nominally in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub px: Vec<Rgb>,
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Self {
        Canvas { w, h, px: vec![[0.0; 3]; w * h] }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.px[y * self.w + x]
    }

    /// Alpha-blends `c` over pixel (x, y).
    pub fn blend(&mut self, x: usize, y: usize, c: Rgb, a: f32) {
        if a > 0.0 {
            let p = &mut self.px[y * self.w + x];
            *p = mix(*p, c, a.min(1.0));
        }
    }

    /// Rounds to u8 (clamped), the one place a synthetic image is quantised.
    pub fn to_rgb(&self) -> RgbImage {
        let hwc = self
            .px
            .iter()
            .flat_map(|p| p.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect();
        RgbImage { width: self.w, height: self.h, hwc }
    }

    pub fn from_rgb(img: &RgbImage) -> Self {
        let px =
            img.hwc.chunks_exact(3).map(|p| [0, 1, 2].map(|c| f32::from(p[c]) / 255.0)).collect();
        Canvas { w: img.width, h: img.height, px }
    }
}

pub fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

pub(super) fn scale(a: Rgb, k: f32) -> Rgb {
    a.map(|v| v * k)
}

pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Length of the overlap of pixel span [p, p+1] with [lo, hi]: exact coverage of an edge.
pub(super) fn cover(lo: f32, hi: f32, p: f32) -> f32 {
    ((p + 1.0).min(hi) - p.max(lo)).clamp(0.0, 1.0)
}
