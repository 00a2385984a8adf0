//! The objects of a landscape: buildings, trees (round and conifer) and fences.

use super::canvas::{cover, mix, scale, Canvas, Rgb};
use super::noise::Noise;
use super::scene::Palette;
use rand::Rng;

/// A skyline of boxes standing on the horizon: lit and shadowed faces, window grids, roofs.
pub(super) fn buildings(
    cv: &mut Canvas,
    pal: &Palette,
    horizon: f32,
    light_x: f32,
    rng: &mut impl Rng,
) {
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

/// Broadleaf and conifer trees on the ground (or the far shore), nearer ones bigger and drawn
/// later, shaded from the sun's side.
pub(super) fn trees(
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
            conifer(cv, &n, Tree { base: (tx, ty), r, trunk_h: trunk_h * 0.5, col }, light_x);
        } else {
            round_tree(cv, &n, Tree { base: (tx, ty), r, trunk_h, col }, light_x);
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

/// Where a tree stands and how it looks.
struct Tree {
    /// The trunk's foot.
    base: (f32, f32),
    /// Crown radius.
    r: f32,
    trunk_h: f32,
    col: Rgb,
}

/// A broadleaf tree: trunk plus a lumpy sphere-shaded crown.
fn round_tree(cv: &mut Canvas, n: &Noise, tree: Tree, light_x: f32) {
    let Tree { base: (tx, ty), r, trunk_h, col } = tree;
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
fn conifer(cv: &mut Canvas, n: &Noise, tree: Tree, light_x: f32) {
    let Tree { base: (tx, ty), r, trunk_h, col } = tree;
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
pub(super) fn fence(cv: &mut Canvas, pal: &Palette, horizon: f32, rng: &mut impl Rng) {
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
