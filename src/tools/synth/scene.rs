//! Clean images: procedural landscapes (sky, clouds, ridged mountains, hills, ground or water,
//! buildings, trees, fences) or random crops of the user's own photos.
//!
//! Everything is drawn in float RGB on a [`Canvas`] with area-coverage anti-aliasing, so edges
//! are sharp but not jagged; textures come from seeded fractal noise, so nothing is flat.

use super::canvas::{cover, mix, scale, smoothstep, Canvas, Rgb};
use super::noise::Noise;
use super::props::{buildings, fence, trees};
use crate::io::RgbImage;
use crate::{Error, Result};
use rand::Rng;
use std::path::Path;

/// Colours of one scene; sampled from a few looks (day, golden hour, overcast, autumn, desert,
/// dusk, winter) and jittered per channel, so no two scenes share a palette.
pub(super) struct Palette {
    pub(super) sky_top: Rgb,
    pub(super) horizon: Rgb,
    pub(super) sun: Rgb,
    pub(super) cloud: Rgb,
    pub(super) far: Rgb,
    pub(super) mid: Rgb,
    pub(super) ground: Rgb,
    pub(super) foliage: Rgb,
    pub(super) building: Rgb,
    /// Snow caps on mountains (winter look).
    pub(super) caps: bool,
    /// Warm lit windows (dusk look).
    pub(super) night: bool,
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
