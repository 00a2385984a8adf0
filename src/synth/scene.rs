//! Clean images: procedural landscapes (sky, clouds, ridged mountains, hills, ground or water,
//! buildings, trees, fences) or random crops of the user's own photos.
//!
//! Everything is drawn in float RGB on a [`Canvas`] with area-coverage anti-aliasing, so edges
//! are sharp but not jagged; textures come from seeded fractal noise, so nothing is flat.

use super::noise::Noise;
use crate::io::RgbImage;
use crate::{Error, Result};
use rand::Rng;
use std::path::Path;

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

fn scale(a: Rgb, k: f32) -> Rgb {
    a.map(|v| v * k)
}

pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Length of the overlap of pixel span [p, p+1] with [lo, hi]: exact coverage of an edge.
fn cover(lo: f32, hi: f32, p: f32) -> f32 {
    ((p + 1.0).min(hi) - p.max(lo)).clamp(0.0, 1.0)
}

/// Colours of one scene; sampled from a few looks (day, golden hour, overcast, autumn, desert,
/// dusk, winter) and jittered per channel, so no two scenes share a palette.
struct Palette {
    sky_top: Rgb,
    horizon: Rgb,
    sun: Rgb,
    cloud: Rgb,
    far: Rgb,
    mid: Rgb,
    ground: Rgb,
    foliage: Rgb,
    building: Rgb,
    /// Snow caps on mountains (winter look).
    caps: bool,
    /// Warm lit windows (dusk look).
    night: bool,
}

impl Palette {
    fn sample(rng: &mut impl Rng) -> Self {
        type Look = ([Rgb; 9], bool, bool);
        const LOOKS: [Look; 7] = [
            // sky_top, horizon, sun, cloud, far, mid, ground, foliage, building
            (
                [
                    [0.25, 0.45, 0.80],
                    [0.70, 0.80, 0.92],
                    [1.00, 0.97, 0.90],
                    [0.96, 0.96, 0.98],
                    [0.45, 0.52, 0.66],
                    [0.30, 0.45, 0.24],
                    [0.38, 0.52, 0.22],
                    [0.14, 0.33, 0.12],
                    [0.62, 0.58, 0.54],
                ],
                false,
                false,
            ),
            (
                [
                    [0.33, 0.38, 0.62],
                    [0.98, 0.72, 0.45],
                    [1.00, 0.86, 0.62],
                    [0.96, 0.72, 0.56],
                    [0.52, 0.40, 0.48],
                    [0.40, 0.34, 0.20],
                    [0.52, 0.40, 0.20],
                    [0.24, 0.24, 0.10],
                    [0.72, 0.55, 0.44],
                ],
                false,
                false,
            ),
            (
                [
                    [0.55, 0.58, 0.62],
                    [0.80, 0.81, 0.83],
                    [0.92, 0.92, 0.92],
                    [0.68, 0.70, 0.74],
                    [0.50, 0.53, 0.57],
                    [0.34, 0.40, 0.32],
                    [0.40, 0.42, 0.34],
                    [0.20, 0.28, 0.18],
                    [0.50, 0.50, 0.53],
                ],
                false,
                false,
            ),
            (
                [
                    [0.35, 0.55, 0.85],
                    [0.80, 0.85, 0.90],
                    [1.00, 0.95, 0.85],
                    [0.95, 0.95, 0.95],
                    [0.50, 0.50, 0.62],
                    [0.60, 0.40, 0.15],
                    [0.55, 0.45, 0.25],
                    [0.72, 0.34, 0.10],
                    [0.66, 0.45, 0.35],
                ],
                false,
                false,
            ),
            (
                [
                    [0.30, 0.50, 0.85],
                    [0.86, 0.86, 0.84],
                    [1.00, 0.98, 0.90],
                    [0.97, 0.97, 0.97],
                    [0.70, 0.55, 0.45],
                    [0.80, 0.60, 0.40],
                    [0.85, 0.70, 0.50],
                    [0.40, 0.45, 0.20],
                    [0.80, 0.70, 0.55],
                ],
                false,
                false,
            ),
            (
                [
                    [0.12, 0.12, 0.30],
                    [0.82, 0.46, 0.50],
                    [1.00, 0.62, 0.40],
                    [0.62, 0.36, 0.46],
                    [0.26, 0.21, 0.36],
                    [0.16, 0.15, 0.21],
                    [0.19, 0.17, 0.21],
                    [0.10, 0.12, 0.10],
                    [0.30, 0.27, 0.33],
                ],
                false,
                true,
            ),
            (
                [
                    [0.55, 0.67, 0.82],
                    [0.90, 0.92, 0.95],
                    [1.00, 1.00, 0.96],
                    [0.94, 0.95, 0.97],
                    [0.62, 0.68, 0.80],
                    [0.48, 0.55, 0.56],
                    [0.80, 0.83, 0.87],
                    [0.18, 0.28, 0.24],
                    [0.56, 0.45, 0.40],
                ],
                true,
                false,
            ),
        ];
        let (c, caps, night) = LOOKS[rng.gen_range(0..LOOKS.len())];
        let bright = rng.gen_range(0.85..1.12);
        let mut jitter =
            |c: Rgb| -> Rgb { c.map(|v| (v * bright * rng.gen_range(0.88..1.12)).clamp(0.0, 1.0)) };
        Palette {
            sky_top: jitter(c[0]),
            horizon: jitter(c[1]),
            sun: jitter(c[2]),
            cloud: jitter(c[3]),
            far: jitter(c[4]),
            mid: jitter(c[5]),
            ground: jitter(c[6]),
            foliage: jitter(c[7]),
            building: jitter(c[8]),
            caps,
            night,
        }
    }
}

/// A procedural landscape of `size`x`size`, fully determined by `rng`'s state.
pub fn landscape(size: usize, rng: &mut impl Rng) -> Canvas {
    let s = size as f32;
    let pal = Palette::sample(rng);
    let mut cv = Canvas::new(size, size);
    let horizon = rng.gen_range(0.38..0.62) * s;
    let sun = (rng.gen_range(0.1..0.9) * s, horizon - rng.gen_range(0.05..0.35) * s);
    let sun_on = rng.gen_bool(0.5);
    let light_x = if sun.0 < s / 2.0 { -1.0 } else { 1.0 };

    sky(&mut cv, &pal, horizon, sun, sun_on, rng);
    if rng.gen_bool(0.8) {
        let (base, amp) = (rng.gen_range(0.0..0.06) * s, rng.gen_range(0.12..0.32) * s);
        mountains(&mut cv, &pal, horizon, base, amp, 0.55, light_x, rng);
    }
    if rng.gen_bool(0.6) {
        let (base, amp) = (rng.gen_range(-0.02..0.02) * s, rng.gen_range(0.06..0.15) * s);
        mountains(&mut cv, &pal, horizon, base, amp, 0.25, light_x, rng);
    }
    hills(&mut cv, &pal, horizon, rng);
    if rng.gen_bool(0.45) {
        buildings(&mut cv, &pal, horizon, light_x, rng);
    }
    let water = rng.gen_bool(0.3);
    ground(&mut cv, &pal, horizon, water, rng);
    if rng.gen_bool(0.7) {
        trees(&mut cv, &pal, horizon, light_x, water, rng);
    }
    if !water && rng.gen_bool(0.3) {
        fence(&mut cv, &pal, horizon, rng);
    }
    finish(&mut cv, rng);
    cv
}

fn sky(
    cv: &mut Canvas,
    pal: &Palette,
    horizon: f32,
    sun: (f32, f32),
    sun_on: bool,
    rng: &mut impl Rng,
) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let gamma = rng.gen_range(0.6..1.5);
    let cover_lvl = rng.gen_range(-0.3..0.5);
    let stretch = rng.gen_range(2.0..5.0);
    let freq = rng.gen_range(2.0..4.0);
    let sun_r = rng.gen_range(0.02..0.05) * s;
    // Only down to just below the horizon: the ground covers the rest.
    for y in 0..((horizon + 0.03 * s) as usize).min(cv.h) {
        for x in 0..cv.w {
            let (u, v) = (x as f32 / s, y as f32 / s);
            let t = ((y as f32 + 0.5) / horizon).clamp(0.0, 1.0).powf(gamma);
            let mut c = mix(pal.sky_top, pal.horizon, t);
            let d = ((x as f32 - sun.0).powi(2) + (y as f32 - sun.1).powi(2)).sqrt();
            if sun_on {
                let glow = (-(d / (0.25 * s)).powi(2)).exp() * 0.45;
                c = mix(c, pal.sun, glow);
                c = mix(c, [1.0, 1.0, 0.97], (sun_r - d + 0.5).clamp(0.0, 1.0));
            }
            // Clouds: horizontally stretched fbm, thinned towards the horizon, lit from above.
            let cl = n.fbm(u * freq, v * freq * stretch, 6);
            let a = smoothstep(cover_lvl, cover_lvl + 0.45, cl) * (1.0 - 0.6 * t);
            let lit = 0.82 + 0.3 * n.fbm(u * freq + 5.0, (v - 0.02) * freq * stretch, 4);
            cv.blend(x, y, c, 1.0);
            cv.blend(x, y, scale(pal.cloud, lit), a * 0.9);
        }
    }
}

/// A mountain range: a ridged-noise skyline whose base sits on the horizon, a ridged height
/// field relief-shaded from the sun's side, optional snow caps, faded towards the horizon colour
/// by `haze`.
#[allow(clippy::too_many_arguments)]
fn mountains(
    cv: &mut Canvas,
    pal: &Palette,
    horizon: f32,
    base: f32,
    amp: f32,
    haze: f32,
    light_x: f32,
    rng: &mut impl Rng,
) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let freq = rng.gen_range(1.5..4.0);
    let col = mix(pal.far, pal.mid, rng.gen_range(0.0..0.3) + (0.55 - haze));
    // Skyline: ridged crests over a broad swell, so peaks are sharp but not a comb.
    let ridge = |x: f32| {
        let u = x / s * freq;
        horizon
            - base
            - amp * (0.65 * n.ridged(u, 0.3, 4) + 0.35 * (0.5 + 0.5 * n.fbm(u * 0.5, 5.0, 3)))
    };
    // The face is a ridged height field, relief-shaded from the sun's side: ridges and gullies.
    let face = |u: f32, v: f32| n.ridged(u * freq * 2.5 + 7.0, v * freq * 4.0, 5);
    let d = 1.5 / s;
    // Hills and ground cover everything below the horizon.
    let bottom = ((horizon + 0.03 * s) as usize).min(cv.h);
    let cap_line = rng.gen_range(0.25..0.55);
    for x in 0..cv.w {
        let xf = x as f32;
        let top = ridge(xf + 0.5);
        for y in (top.floor().max(0.0) as usize)..bottom {
            let yf = y as f32;
            let a = cover(top, f32::MAX, yf);
            if a <= 0.0 {
                continue;
            }
            let (u, v) = ((xf + 0.5) / s, (yf + 0.5) / s);
            let f0 = face(u, v);
            let (gx, gy) = (2.0 * (face(u + d, v) - f0), 2.0 * (face(u, v + d) - f0));
            let shade = 0.85
                + (2.0 * (gx * light_x - 0.6 * gy)).clamp(-0.4, 0.35)
                + 0.06 * n.fbm(u * 40.0, v * 40.0, 3);
            let mut c = scale(col, shade);
            let depth = ((yf - top) / (horizon - top + 1.0)).clamp(0.0, 1.0);
            if pal.caps {
                let snow = smoothstep(
                    cap_line + 0.1,
                    cap_line - 0.05,
                    depth + 0.25 * n.fbm(u * 12.0, v * 12.0, 3),
                );
                c = mix(c, scale([0.95, 0.96, 1.0], shade.min(1.05)), snow);
            }
            c = mix(c, pal.horizon, haze * (0.5 + 0.5 * depth));
            cv.blend(x, y, c, a);
        }
    }
}

/// Rolling hills with forest-like texture just in front of the horizon.
fn hills(cv: &mut Canvas, pal: &Palette, horizon: f32, rng: &mut impl Rng) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let amp = rng.gen_range(0.02..0.08) * s;
    let freq = rng.gen_range(2.0..5.0);
    for x in 0..cv.w {
        let xf = x as f32;
        let top = horizon - amp * (0.6 + 0.6 * n.fbm(xf / s * freq, 0.7, 5));
        for y in (top.floor().max(0.0) as usize)..((horizon + 0.03 * s) as usize).min(cv.h) {
            let yf = y as f32;
            let (u, v) = (xf / s, yf / s);
            let tex = n.fbm(u * 40.0, v * 40.0, 4);
            let c = scale(mix(pal.mid, pal.foliage, 0.5 + 0.4 * tex), 0.9 + 0.2 * tex);
            cv.blend(x, y, mix(c, pal.horizon, 0.15), cover(top, f32::MAX, yf));
        }
    }
}

/// A skyline of boxes standing on the horizon: lit and shadowed faces, window grids, roofs.
fn buildings(cv: &mut Canvas, pal: &Palette, horizon: f32, light_x: f32, rng: &mut impl Rng) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let base = horizon + rng.gen_range(0.01..0.05) * s;
    let mut x0 = rng.gen_range(-0.1..0.3) * s;
    let end = rng.gen_range(0.6..1.1) * s;
    while x0 < end {
        let w = rng.gen_range(0.06..0.2) * s;
        let top = base - rng.gen_range(0.1..0.45) * s;
        let side = w * rng.gen_range(0.15..0.3);
        let col = pal.building.map(|v| (v * rng.gen_range(0.75..1.2)).min(1.0));
        let (win_w, win_h) = (rng.gen_range(0.012..0.025) * s, rng.gen_range(0.015..0.03) * s);
        let (gap_x, gap_y) = (win_w * rng.gen_range(0.6..1.4), win_h * rng.gen_range(0.5..1.2));
        let win_seed: u32 = rng.gen();
        let x1 = x0 + w;
        let (ya, yb) = (top.max(0.0) as usize, (base.ceil() as usize).min(cv.h));
        let (xa, xb) = (x0.max(0.0) as usize, (x1.ceil().max(0.0) as usize).min(cv.w));
        for y in ya..yb {
            for x in xa..xb {
                let (xf, yf) = (x as f32, y as f32);
                let a = cover(x0, x1, xf) * cover(top, base, yf);
                if a <= 0.0 {
                    continue;
                }
                // The face away from the light is a darker strip: reads as a 3-D box.
                let shadow_side =
                    if light_x > 0.0 { xf + 0.5 < x0 + side } else { xf + 0.5 > x1 - side };
                let mut c = scale(col, if shadow_side { 0.62 } else { 1.0 });
                c = scale(c, 0.92 + 0.1 * n.fbm(xf / s * 30.0, yf / s * 30.0, 3));
                // Windows on a grid, inset from the edges; some lit, some reflecting sky.
                let (lx, ly) = (xf + 0.5 - x0 - gap_x, yf + 0.5 - top - gap_y);
                if lx > 0.0 && ly > 0.0 && xf + 0.5 < x1 - gap_x && yf < base - 2.0 * win_h {
                    let (cx, cy) = ((lx / (win_w + gap_x)) as i32, (ly / (win_h + gap_y)) as i32);
                    let (fx, fy) = (lx % (win_w + gap_x), ly % (win_h + gap_y));
                    if fx < win_w && fy < win_h {
                        let h = Noise::new(win_seed)
                            .sample(cx as f32 * 0.71 + 0.3, cy as f32 * 0.53 + 0.2);
                        c = if pal.night && h > 0.05 {
                            [1.0, 0.82, 0.5]
                        } else {
                            mix(scale(pal.horizon, 0.55), [0.1, 0.12, 0.15], 0.5 + h)
                        };
                    }
                }
                // Roof ledge.
                if yf < top + 0.012 * s {
                    c = scale(col, 1.12);
                }
                cv.blend(x, y, c, a);
            }
        }
        x0 = x1 + rng.gen_range(-0.02..0.05) * s;
    }
}

/// Ground (perspective-textured fields, optional road) or water reflecting what is above.
fn ground(cv: &mut Canvas, pal: &Palette, horizon: f32, water: bool, rng: &mut impl Rng) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let line = |x: f32| horizon + 0.01 * s * n.sample(x / s * 3.0, 9.5);
    let road = !water && rng.gen_bool(0.35);
    let vx = rng.gen_range(0.3..0.7) * s;
    let road_w = rng.gen_range(0.3..0.7) * s;
    let field_scale = rng.gen_range(0.5..2.0);
    let water_tint = mix(pal.sky_top, [0.1, 0.2, 0.25], 0.5);
    let reflect = cv.clone();
    for x in 0..cv.w {
        let xf = x as f32;
        let top = line(xf + 0.5);
        for y in (top.floor().max(0.0) as usize)..cv.h {
            let yf = y as f32;
            let a = cover(top, f32::MAX, yf);
            // Perspective: depth z grows towards the horizon, so textures shrink there.
            let dy = (yf + 0.5 - horizon).max(0.5) / s;
            let z = 1.0 / dy;
            let gx = (xf / s - 0.5) * z;
            let c = if water {
                let ripple = n.fbm(gx * 2.0, z * 3.0, 3) * (2.0 + 6.0 * dy);
                let my = (2.0 * horizon - yf).clamp(0.0, cv.h as f32 - 1.0) as usize;
                let mx = (xf + ripple).clamp(0.0, cv.w as f32 - 1.0) as usize;
                let stripes = 0.08 * (z * 9.0 + 2.0 * n.sample(gx, z * 0.5)).sin();
                scale(mix(reflect.get(mx, my), water_tint, 0.35 + 0.2 * dy), 0.85 + stripes)
            } else {
                let patch = n.fbm(gx * 0.6 * field_scale, z * 0.25 * field_scale, 4);
                let grass = n.fbm(gx * 25.0, z * 10.0, 3);
                let mut c = mix(pal.ground, pal.mid, 0.5 + 0.5 * patch);
                // Furrows of fields, following the perspective.
                c = scale(
                    c,
                    0.88 + 0.12 * grass
                        + 0.06 * (gx * 40.0 * field_scale).sin() * (patch > 0.2) as u8 as f32,
                );
                // The road narrows linearly to a vanishing point on the horizon.
                let half = road_w / 2.0 * (yf + 0.5 - horizon) / (s - horizon);
                let d = (xf + 0.5 - vx).abs();
                if road && d < half + 0.5 {
                    let mut r = scale(
                        [0.33, 0.33, 0.35],
                        0.9 + 0.15 * n.fbm(xf / s * 60.0, yf / s * 60.0, 2),
                    );
                    if d < half * 0.03 + 0.3 && (z * 2.0).fract() < 0.5 {
                        r = [0.92, 0.9, 0.8];
                    }
                    mix(c, r, (half + 0.5 - d).clamp(0.0, 1.0))
                } else {
                    c
                }
            };
            // Aerial perspective near the horizon.
            cv.blend(x, y, mix(c, pal.horizon, 0.35 * (1.0 - dy * 4.0).max(0.0)), a);
        }
    }
}

/// Broadleaf and conifer trees on the ground (or the far shore), nearer ones bigger and drawn
/// later, shaded from the sun's side.
fn trees(
    cv: &mut Canvas,
    pal: &Palette,
    horizon: f32,
    light_x: f32,
    water: bool,
    rng: &mut impl Rng,
) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let count = rng.gen_range(3..25);
    let mut list: Vec<(f32, f32)> = (0..count)
        .map(|_| {
            let max_y = if water { horizon + 0.04 * s } else { s };
            (
                rng.gen_range(0.0..s),
                rng.gen_range(horizon + 0.01 * s..max_y.max(horizon + 0.02 * s)),
            )
        })
        .collect();
    list.sort_by(|a, b| a.1.total_cmp(&b.1));
    let conifers = rng.gen_range(0.0..1.0f32).powi(2);
    for (tx, ty) in list {
        let depth = (ty - horizon) / s;
        let r = (0.015 + depth * rng.gen_range(0.1..0.3)) * s;
        let col = pal.foliage.map(|v| (v * rng.gen_range(0.8..1.3)).min(1.0));
        let trunk_h = r * rng.gen_range(0.6..1.2);
        if rng.gen::<f32>() < conifers {
            conifer(cv, &n, (tx, ty), r, trunk_h * 0.5, col, light_x);
        } else {
            round_tree(cv, &n, (tx, ty), r, trunk_h, col, light_x);
        }
    }
}

const TRUNK: Rgb = [0.28, 0.2, 0.13];

fn trunk(cv: &mut Canvas, (tx, ty): (f32, f32), top: f32, half_w: f32, light_x: f32) {
    let (xa, xb) =
        ((tx - half_w - 1.0).max(0.0) as usize, ((tx + half_w + 2.0) as usize).min(cv.w));
    for y in (top.max(0.0) as usize)..((ty + 1.0) as usize).min(cv.h) {
        for x in xa..xb {
            let xf = x as f32;
            let a = cover(tx - half_w, tx + half_w, xf) * cover(top, ty, y as f32);
            let side = ((xf + 0.5 - tx) * light_x / half_w).clamp(-1.0, 1.0);
            cv.blend(x, y, scale(TRUNK, 0.8 + 0.3 * side), a);
        }
    }
}

/// A broadleaf tree: trunk plus a lumpy sphere-shaded crown.
fn round_tree(
    cv: &mut Canvas,
    n: &Noise,
    (tx, ty): (f32, f32),
    r: f32,
    trunk_h: f32,
    col: Rgb,
    light_x: f32,
) {
    let s = cv.w as f32;
    let (cx, cy) = (tx, ty - trunk_h - r * 0.8);
    trunk(cv, (tx, ty), cy, (r * 0.09).max(0.4), light_x);
    let ext = 1.2 * r + 1.0;
    let (xa, xb) = ((cx - ext).max(0.0) as usize, ((cx + ext + 1.0) as usize).min(cv.w));
    let (ya, yb) = ((cy - ext).max(0.0) as usize, ((cy + ext + 1.0) as usize).min(cv.h));
    for y in ya..yb {
        for x in xa..xb {
            let (xf, yf) = (x as f32, y as f32);
            // The lumps come from noise on the radius, by direction.
            let (dx, dy) = (xf + 0.5 - cx, yf + 0.5 - cy);
            let d = (dx * dx + dy * dy).sqrt();
            let ang = dy.atan2(dx);
            let rr = r * (1.0 + 0.12 * n.sample(ang.cos() * 2.0 + tx, ang.sin() * 2.0 + ty));
            let a = (rr - d + 0.5).clamp(0.0, 1.0);
            if a > 0.0 {
                let (nx, ny) = (dx / rr, dy / rr);
                let nz = (1.0 - nx * nx - ny * ny).max(0.0).sqrt();
                let lambert = (nx * light_x * 0.6 - ny * 0.5 + nz * 0.6).max(0.0);
                let leaves = n.fbm(xf / s * 60.0, yf / s * 60.0, 3);
                cv.blend(x, y, scale(col, 0.45 + 0.75 * lambert + 0.15 * leaves), a);
            }
        }
    }
}

/// A conifer: three stacked triangles, the side away from the sun darker.
fn conifer(
    cv: &mut Canvas,
    n: &Noise,
    (tx, ty): (f32, f32),
    r: f32,
    trunk_h: f32,
    col: Rgb,
    light_x: f32,
) {
    let s = cv.w as f32;
    let base = ty - trunk_h;
    trunk(cv, (tx, ty), base - r, (r * 0.08).max(0.4), light_x);
    let height = 3.2 * r;
    let col = scale(col, 0.8);
    for tier in 0..3 {
        let t = tier as f32;
        let bot = base - t * height * 0.26;
        let apex = bot - height * (0.55 - 0.08 * t);
        let half_base = r * (1.0 - 0.22 * t);
        let (xa, xb) =
            ((tx - half_base - 1.0).max(0.0) as usize, ((tx + half_base + 2.0) as usize).min(cv.w));
        for y in (apex.max(0.0) as usize)..((bot + 1.0) as usize).min(cv.h) {
            let yf = y as f32 + 0.5;
            let hw = half_base * ((yf - apex) / (bot - apex)).clamp(0.0, 1.0);
            for x in xa..xb {
                let xf = x as f32;
                let a = cover(tx - hw, tx + hw, xf) * cover(apex, bot, y as f32);
                if a > 0.0 {
                    let side = ((xf + 0.5 - tx) * light_x / hw.max(0.5)).clamp(-1.0, 1.0);
                    let needles = n.fbm(xf / s * 80.0, yf / s * 40.0, 3);
                    cv.blend(x, y, scale(col, 0.8 + 0.3 * side + 0.15 * needles), a);
                }
            }
        }
    }
}

/// A wooden fence across the foreground: regular posts and two rails (stripes with edges).
fn fence(cv: &mut Canvas, pal: &Palette, horizon: f32, rng: &mut impl Rng) {
    let s = cv.w as f32;
    let n = Noise::new(rng.gen());
    let base = rng.gen_range(0.82..0.98) * s;
    let height = rng.gen_range(0.1..0.2) * s;
    let spacing = rng.gen_range(0.06..0.14) * s;
    let post_w = spacing * rng.gen_range(0.15..0.3);
    let wood = mix([0.45, 0.33, 0.22], pal.building, rng.gen_range(0.0..0.5));
    let top = (base - height).max(horizon);
    let offset = rng.gen_range(0.0..spacing);
    for y in (top as usize)..(base.ceil() as usize).min(cv.h) {
        for x in 0..cv.w {
            let (xf, yf) = (x as f32, y as f32);
            let k = ((xf - offset) / spacing).floor();
            let px0 = offset + k * spacing;
            let post = cover(px0, px0 + post_w, xf) * cover(top, base, yf);
            let rail = [0.25, 0.65]
                .iter()
                .map(|r| cover(top + height * r, top + height * (r + 0.1), yf))
                .fold(0.0f32, f32::max);
            let a = post.max(rail * cover(0.0, s, xf));
            let grain = 0.85 + 0.2 * n.fbm(xf / s * 8.0, yf / s * 80.0, 3);
            cv.blend(x, y, scale(wood, grain), a);
        }
    }
}

/// Camera touches: gentle vignette and a little sensor grain, so no region is perfectly flat.
fn finish(cv: &mut Canvas, rng: &mut impl Rng) {
    let s = cv.w as f32;
    let vig = rng.gen_range(0.0..0.25);
    let grain = rng.gen_range(0.004..0.015);
    let n = Noise::new(rng.gen());
    for y in 0..cv.h {
        for x in 0..cv.w {
            let (u, v) = (x as f32 / s - 0.5, y as f32 / s - 0.5);
            let k = 1.0 - vig * (u * u + v * v) * 1.6;
            let g = grain * n.sample(x as f32 * 0.93 + 0.5, y as f32 * 0.87 + 0.5) * 2.0;
            let p = &mut cv.px[y * cv.w + x];
            // Clamped here so the weather blends always start from a valid image.
            *p = p.map(|c| (c * k + g).clamp(0.0, 1.0));
        }
    }
}

/// A random `size`x`size` crop of one of `photos`: photos whose short side is under `size` are
/// scaled up; larger ones are first scaled to a random short side in [size, 2*size] so a crop
/// keeps a scene's worth of content. Randomly mirrored.
pub fn photo_crop(
    photos: &[std::path::PathBuf],
    size: usize,
    rng: &mut impl Rng,
) -> Result<Canvas> {
    let path: &Path = &photos[rng.gen_range(0..photos.len())];
    let img = RgbImage::load(path)?;
    let im = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.hwc)
        .ok_or_else(|| Error::data(path, "decoded image has the wrong size"))?;
    let short = im.width().min(im.height()) as f32;
    let target = if short < size as f32 {
        size as f32
    } else {
        short.min(rng.gen_range(size as f32..=2.0 * size as f32))
    };
    let k = target / short;
    let (w, h) = (
        ((im.width() as f32 * k).round() as u32).max(size as u32),
        ((im.height() as f32 * k).round() as u32).max(size as u32),
    );
    let im = if (w, h) == im.dimensions() {
        im
    } else {
        image::imageops::resize(&im, w, h, image::imageops::FilterType::CatmullRom)
    };
    let (x0, y0) = (rng.gen_range(0..=w - size as u32), rng.gen_range(0..=h - size as u32));
    let mut crop = image::imageops::crop_imm(&im, x0, y0, size as u32, size as u32).to_image();
    if rng.gen_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut crop);
    }
    Ok(Canvas::from_rgb(&RgbImage { width: size, height: size, hwc: crop.into_raw() }))
}
