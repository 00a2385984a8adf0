//! Seeded 2-D gradient (Perlin-style) noise and its fractal sums. Lattice gradients come from an
//! integer hash of (cell, seed), so there are no tables to build and any seed is free.

/// Gradient noise with its own seed; `sample` is roughly in [-0.7, 0.7], 0 on lattice points.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    seed: u32,
}

fn hash(x: i32, y: i32, seed: u32) -> u32 {
    // A murmur3-style finaliser over the mixed coordinates: cheap and well spread.
    let mut h = seed ^ (x as u32).wrapping_mul(0x9e37_79b1) ^ (y as u32).wrapping_mul(0x85eb_ca77);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^ (h >> 16)
}

/// Quintic fade: continuous second derivative, so no lattice creases show.
fn fade(t: f32) -> f32 {
    t * t * t * (t * (t * 6.0 - 15.0) + 10.0)
}

const D: f32 = std::f32::consts::FRAC_1_SQRT_2;
const GRADS: [(f32, f32); 8] =
    [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0), (D, D), (-D, D), (D, -D), (-D, -D)];

impl Noise {
    pub fn new(seed: u32) -> Self {
        Noise { seed }
    }

    fn grad(&self, ix: i32, iy: i32, dx: f32, dy: f32) -> f32 {
        let (gx, gy) = GRADS[(hash(ix, iy, self.seed) & 7) as usize];
        gx * dx + gy * dy
    }

    pub fn sample(&self, x: f32, y: f32) -> f32 {
        // Truncate-and-fix instead of floor(): floorf is a libm call without SSE4.1.
        let ix = x as i32 - i32::from(x < (x as i32) as f32);
        let iy = y as i32 - i32::from(y < (y as i32) as f32);
        let (fx, fy) = (ix as f32, iy as f32);
        let (dx, dy) = (x - fx, y - fy);
        let (u, v) = (fade(dx), fade(dy));
        let a = self.grad(ix, iy, dx, dy);
        let b = self.grad(ix + 1, iy, dx - 1.0, dy);
        let c = self.grad(ix, iy + 1, dx, dy - 1.0);
        let d = self.grad(ix + 1, iy + 1, dx - 1.0, dy - 1.0);
        let top = a + (b - a) * u;
        let bottom = c + (d - c) * u;
        top + (bottom - top) * v
    }

    /// Fractal sum of `octaves` octaves (frequency x2, amplitude x0.5), scaled to about [-1, 1].
    pub fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for o in 0..octaves {
            // Offset each octave so lattice zeros don't line up across octaves.
            let off = o as f32 * 17.31;
            sum += amp * self.sample(x * freq + off, y * freq - off);
            norm += amp;
            amp *= 0.5;
            freq *= 2.0;
        }
        1.4 * sum / norm
    }

    /// Ridged fractal noise in about [0, 1]: sharp crests, like mountain ridges.
    pub fn ridged(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for o in 0..octaves {
            let off = o as f32 * 31.7;
            let r = 1.0 - (1.4 * self.sample(x * freq + off, y * freq + off)).abs();
            sum += amp * r * r;
            norm += amp;
            amp *= 0.5;
            freq *= 2.0;
        }
        sum / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_seeded_continuous_and_bounded() {
        let (a, b) = (Noise::new(1), Noise::new(2));
        assert_eq!(a.sample(3.0, 4.0), 0.0, "zero on lattice points");
        assert_ne!(a.sample(3.3, 4.6), b.sample(3.3, 4.6));
        let mut lo = f32::MAX;
        let mut hi = f32::MIN;
        for i in 0..4000 {
            let (x, y) = (i as f32 * 0.137, i as f32 * 0.071);
            let v = a.fbm(x, y, 5);
            lo = lo.min(v);
            hi = hi.max(v);
            // Continuity: a tiny step changes the value a little.
            assert!((a.sample(x, y) - a.sample(x + 1e-3, y)).abs() < 5e-3);
        }
        assert!(lo > -1.3 && hi < 1.3 && hi - lo > 1.0, "fbm range [{lo}, {hi}]");
    }
}
