//! Degradations: rain streaks and snow flakes over a clean [`Canvas`].
//!
//! Each effect is described by a parameter struct whose `sample` draws every field from the
//! range named in its doc comment. Lengths and radii are in pixels *at 256x256* and scale with
//! the image size, and counts are per image, so a 64-px image looks like a shrunk 256-px one.

use super::canvas::{mix, Canvas, Rgb};
use super::noise::Noise;
use rand::Rng;

/// Rain: thin bright streaks from drops moving during the exposure, over a slight haze.
#[derive(Debug, Clone, PartialEq)]
pub struct RainParams {
    /// Fall direction of all streaks, radians from vertical (positive leans right). ±0.45 (±26°).
    pub angle: f32,
    /// Per-streak spread of the direction around `angle` (uniform ±), radians. 0 .. 0.08.
    pub angle_jitter: f32,
    /// Streaks per image (a non-square image gets this many per min(w, h)^2). 150 .. 800.
    pub density: f32,
    /// Streak length of the farthest .. nearest drops, px. far 6 .. 14, near 25 .. 60.
    pub length: (f32, f32),
    /// Streak half-width (Gaussian sigma across the streak), far .. near, px. 0.35 .. 0.55, 0.7 .. 1.3.
    pub width: (f32, f32),
    /// Peak opacity of far .. near streaks (each also scaled by a uniform 0.6 .. 1). 0.08 .. 0.2, 0.3 .. 0.6.
    pub brightness: (f32, f32),
    /// Colour the streaks add (screen blend): near white, slightly cool. Channels 0.85 .. 1.
    pub color: Rgb,
    /// Strength of a uniform grey veil (light scattered by the rain). 0 .. 0.08.
    pub haze: f32,
}

/// Snow: flakes at several depths (large, soft, translucent near flakes; small, sharp, dense far
/// ones), slightly smeared by their fall, over a bright uneven veil.
#[derive(Debug, Clone, PartialEq)]
pub struct SnowParams {
    /// Flakes per image, all depths together (per min(w, h)^2 if not square). 120 .. 700.
    pub density: f32,
    /// Radius of the farthest .. nearest flakes, px. far 0.5 .. 0.9, near 2 .. 5.
    pub radius: (f32, f32),
    /// Edge blur (Gaussian sigma) of the nearest flakes as a fraction of their radius, for
    /// out-of-focus near flakes; far flakes get 0.35 px. 0.3 .. 0.9.
    pub near_blur: f32,
    /// Opacity of far .. near flakes (each also scaled by a uniform 0.7 .. 1). far 0.75 .. 1,
    /// near 0.4 .. 0.8.
    pub opacity: (f32, f32),
    /// Fall direction, radians from vertical. ±0.6.
    pub angle: f32,
    /// Motion smear of the nearest flakes along `angle`, px (far flakes smear less). 0 .. 4.
    pub motion: f32,
    /// Colour of the flakes. Channels 0.9 .. 1.
    pub color: Rgb,
    /// Mean strength of the bright veil (modulated ±30% by low-frequency noise). 0.02 .. 0.12.
    pub veil: f32,
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): plenty for drawing.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - t * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))))
            * (-x * x).exp();
    y.copysign(x)
}

/// Adds `v` into a coverage map as a screen blend, so overlaps brighten without exceeding 1.
fn screen_add(m: &mut f32, v: f32) {
    *m += v - *m * v;
}

fn near_white(rng: &mut impl Rng, lo: f32) -> Rgb {
    let base = rng.gen_range(lo..1.0);
    [base, base, (base + rng.gen_range(0.0..0.06)).min(1.0)]
}

impl RainParams {
    pub fn sample(rng: &mut impl Rng) -> Self {
        RainParams {
            angle: rng.gen_range(-0.45..0.45),
            angle_jitter: rng.gen_range(0.0..0.08),
            density: rng.gen_range(150.0..800.0),
            length: (rng.gen_range(6.0..14.0), rng.gen_range(25.0..60.0)),
            width: (rng.gen_range(0.35..0.55), rng.gen_range(0.7..1.3)),
            brightness: (rng.gen_range(0.08..0.2), rng.gen_range(0.3..0.6)),
            color: near_white(rng, 0.85),
            haze: rng.gen_range(0.0..0.08),
        }
    }

    /// The rainy version of `clean`; streak positions and depths come from `rng`.
    pub fn apply(&self, clean: &Canvas, rng: &mut impl Rng) -> Canvas {
        let (w, h) = (clean.w, clean.h);
        let k = w.min(h) as f32 / 256.0;
        let count = (self.density * (w * h) as f32 / (256.0 * 256.0 * k * k)).round() as usize;
        let mut streaks = vec![0.0f32; w * h];
        for _ in 0..count {
            // Depth z: most drops are far (small, faint); a few near ones are long and bright.
            let z = rng.gen::<f32>().powi(2);
            let len = lerp(self.length.0, self.length.1, z) * k * rng.gen_range(0.8..1.2);
            // Streaks thinner than 0.4 px would alias: draw them 0.4 wide and fainter instead.
            let thin = lerp(self.width.0, self.width.1, z) * k;
            let sigma = thin.max(0.4);
            let alpha = lerp(self.brightness.0, self.brightness.1, z)
                * rng.gen_range(0.6..1.0)
                * (thin / sigma);
            let ang = self.angle + rng.gen_range(-1.0..=1.0) * self.angle_jitter;
            let (cx, cy) = (
                rng.gen_range(-0.1..1.1) * w as f32,
                rng.gen_range(-len / 2.0..h as f32 + len / 2.0),
            );
            draw_streak(&mut streaks, w, h, (cx, cy), ang, len, sigma, alpha);
        }
        let haze_color = [0.78, 0.8, 0.83];
        let px = clean
            .px
            .iter()
            .zip(&streaks)
            .map(|(&p, &s)| {
                let p = mix(p, haze_color, self.haze);
                // Screen blend: streaks are light added by the drops, so they brighten.
                [0, 1, 2].map(|c| p[c] + s * self.color[c] * (1.0 - p[c]))
            })
            .collect();
        Canvas { w, h, px }
    }
}

/// A motion-blurred drop: the line integral of a Gaussian spot of sigma `sigma` along a segment
/// of length `len`, i.e. a Gaussian profile across and an erf ramp at both ends along.
#[allow(clippy::too_many_arguments)]
fn draw_streak(
    map: &mut [f32],
    w: usize,
    h: usize,
    c: (f32, f32),
    ang: f32,
    len: f32,
    sigma: f32,
    alpha: f32,
) {
    let (dx, dy) = (ang.sin(), ang.cos());
    let reach = len / 2.0 + 3.0 * sigma;
    let (ex, ey) = (dx.abs() * reach + 3.0 * sigma, dy.abs() * reach + 3.0 * sigma);
    let (x0, x1) =
        ((c.0 - ex).floor().max(0.0) as usize, ((c.0 + ex).ceil().max(0.0) as usize).min(w));
    let (y0, y1) =
        ((c.1 - ey).floor().max(0.0) as usize, ((c.1 + ey).ceil().max(0.0) as usize).min(h));
    let s_along = std::f32::consts::SQRT_2 * sigma * 1.5;
    let inv_across = 1.0 / (2.0 * sigma * sigma);
    for y in y0..y1 {
        for x in x0..x1 {
            let (qx, qy) = (x as f32 + 0.5 - c.0, y as f32 + 0.5 - c.1);
            let t = qx * dx + qy * dy;
            let n = qx * dy - qy * dx;
            let across = (-n * n * inv_across).exp();
            if across < 1e-3 {
                continue;
            }
            let along = 0.5 * (erf((t + len / 2.0) / s_along) - erf((t - len / 2.0) / s_along));
            screen_add(&mut map[y * w + x], alpha * across * along);
        }
    }
}

impl SnowParams {
    pub fn sample(rng: &mut impl Rng) -> Self {
        SnowParams {
            density: rng.gen_range(120.0..700.0),
            radius: (rng.gen_range(0.5..0.9), rng.gen_range(2.0..5.0)),
            near_blur: rng.gen_range(0.3..0.9),
            opacity: (rng.gen_range(0.75..1.0), rng.gen_range(0.4..0.8)),
            angle: rng.gen_range(-0.6..0.6),
            motion: rng.gen_range(0.0..4.0),
            color: near_white(rng, 0.9),
            veil: rng.gen_range(0.02..0.12),
        }
    }

    /// The snowy version of `clean`; flake positions and depths come from `rng`.
    pub fn apply(&self, clean: &Canvas, rng: &mut impl Rng) -> Canvas {
        let (w, h) = (clean.w, clean.h);
        let k = w.min(h) as f32 / 256.0;
        let count = (self.density * (w * h) as f32 / (256.0 * 256.0 * k * k)).round() as usize;
        let mut flakes = vec![0.0f32; w * h];
        let (dx, dy) = (self.angle.sin(), self.angle.cos());
        for _ in 0..count {
            // Depth z: many small far flakes, a few big near ones.
            let z = rng.gen::<f32>().powf(2.5);
            let r = lerp(self.radius.0, self.radius.1, z) * k * rng.gen_range(0.8..1.25);
            let sigma = lerp(0.35 * k.max(0.5), self.near_blur * r, z).max(0.3);
            // A blurred small disc peaks below 1: keep its light roughly conserved.
            let peak = (r * r / (r * r + sigma * sigma)).min(1.0);
            let alpha = lerp(self.opacity.0, self.opacity.1, z) * rng.gen_range(0.7..1.0) * peak;
            let smear = self.motion * k * z;
            let c = (rng.gen_range(0.0..w as f32), rng.gen_range(0.0..h as f32));
            draw_flake(&mut flakes, w, h, c, (dx * smear, dy * smear), r, sigma, alpha);
        }
        let noise = Noise::new(rng.gen());
        let veil_color = [0.86, 0.88, 0.92];
        let mut px = Vec::with_capacity(w * h);
        for (i, (&p, &a)) in clean.px.iter().zip(&flakes).enumerate() {
            let (u, v) = ((i % w) as f32 / w as f32, (i / w) as f32 / h as f32);
            let veil = self.veil * (1.0 + 0.3 * noise.fbm(u * 2.5, v * 2.5, 3));
            px.push(mix(mix(p, veil_color, veil), self.color, a));
        }
        Canvas { w, h, px }
    }
}

/// A soft disc of radius `r` swept along `smear` (a capsule), with a Gaussian-blurred edge.
#[allow(clippy::too_many_arguments)]
fn draw_flake(
    map: &mut [f32],
    w: usize,
    h: usize,
    c: (f32, f32),
    smear: (f32, f32),
    r: f32,
    sigma: f32,
    alpha: f32,
) {
    let ext = r + 3.0 * sigma + 1.0;
    let (a, b) =
        ((c.0 - smear.0 / 2.0, c.1 - smear.1 / 2.0), (c.0 + smear.0 / 2.0, c.1 + smear.1 / 2.0));
    let (x0, x1) =
        ((a.0.min(b.0) - ext).max(0.0) as usize, ((a.0.max(b.0) + ext).max(0.0) as usize).min(w));
    let (y0, y1) =
        ((a.1.min(b.1) - ext).max(0.0) as usize, ((a.1.max(b.1) + ext).max(0.0) as usize).min(h));
    let seg2 = smear.0 * smear.0 + smear.1 * smear.1;
    let inv = 1.0 / (std::f32::consts::SQRT_2 * sigma);
    for y in y0..y1 {
        for x in x0..x1 {
            let (px, py) = (x as f32 + 0.5 - a.0, y as f32 + 0.5 - a.1);
            let t = if seg2 > 0.0 {
                ((px * smear.0 + py * smear.1) / seg2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (ox, oy) = (px - t * smear.0, py - t * smear.1);
            let d = (ox * ox + oy * oy).sqrt();
            // Disc edge convolved with a Gaussian: 1/2 erfc((d - r) / (sqrt2 sigma)).
            let v = 0.5 * (1.0 - erf((d - r) * inv));
            if v > 1e-3 {
                screen_add(&mut map[y * w + x], alpha * v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // math.erf(0.5), math.erf(1.0), math.erf(-2.0) in Python.
        for (x, want) in [(0.5, 0.520_499_9), (1.0, 0.842_700_8), (-2.0, -0.995_322_3), (0.0, 0.0)]
        {
            assert!((erf(x) - want).abs() < 1e-6, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn a_streak_is_long_thin_and_along_its_angle() {
        let (w, h) = (64, 64);
        let mut m = vec![0.0; w * h];
        draw_streak(&mut m, w, h, (32.0, 32.0), 0.0, 30.0, 0.6, 0.5);
        let at = |x: usize, y: usize| m[y * w + x];
        assert!(at(31, 31) > 0.3 && at(31, 20) > 0.3, "bright along the vertical axis");
        assert!(at(31, 10) < 0.02, "dark past the end");
        assert!(at(35, 31) < 1e-3, "dark a few px across");
    }
}
