//! Tiled inference: restores a large image as overlapping tiles of one fixed size and blends
//! them with a smooth window, so memory is bounded by the tile and seams do not show.
//!
//! PromptIR is **not** translation-local: its transposed (channel) attention and the prompt
//! blocks pool over the whole input, so a tile sees different global statistics than the full
//! image and tiled output is close to, but never equal to, untiled output. Use tiling only when
//! the full image does not fit in memory.

use super::restore::Restore;
use crate::{Error, Result};
use tch::Tensor;

/// Runs `inner` on `tile`x`tile` crops that overlap by at least `overlap` pixels.
pub struct Tiled<R> {
    pub inner: R,
    pub tile: i64,
    pub overlap: i64,
}

impl<R> Tiled<R> {
    /// Checks the geometry: `tile >= 8` and `0 <= overlap < tile`.
    pub fn new(inner: R, tile: i64, overlap: i64) -> Result<Self> {
        if tile < 8 {
            return Err(Error::Usage(format!("--tile {tile}: use a tile of at least 8 pixels")));
        }
        if overlap < 0 || overlap >= tile {
            return Err(Error::Usage(format!(
                "--tile-overlap {overlap}: must be >= 0 and smaller than --tile {tile}"
            )));
        }
        Ok(Tiled { inner, tile, overlap })
    }
}

/// Start offsets of tiles of length `min(tile, size)` covering `0..size`: the fewest tiles whose
/// neighbours overlap by at least `overlap`, spread evenly so that the last one ends exactly at
/// the image edge (every tile has the same size; overlaps come out equal up to rounding).
pub fn tile_starts(size: i64, tile: i64, overlap: i64) -> Vec<i64> {
    if size <= tile {
        return vec![0];
    }
    let step = tile - overlap;
    let gaps = (size - tile + step - 1) / step; // n - 1 >= (size - tile) / step
    (0..=gaps).map(|i| (i * (size - tile) + gaps / 2) / gaps).collect()
}

/// Blend weights along one axis, one window per tile, summing to exactly 1 at every pixel.
/// Neighbours cross-fade with a raised-cosine ramp `r(j) = (1 - cos(pi (j + 1/2) / n)) / 2`
/// (`r(j) + r(n-1-j) = 1`) of `n = overlap` pixels, capped by the tile spacing so a tile's two
/// ramps never meet, centred in their overlap. The pixels at a tile's inner edges, which see
/// padding instead of neighbours, get weight ~0 or exactly 0 when the overlap is wider than `n`.
fn axis_windows(starts: &[i64], len: i64, overlap: i64) -> Vec<Vec<f32>> {
    let spacing = starts.windows(2).map(|p| p[1] - p[0]).min().unwrap_or(len);
    let n = overlap.min(spacing);
    let ramp = |j: i64| 0.5 - 0.5 * (std::f64::consts::PI * (j as f64 + 0.5) / n as f64).cos();
    // Where the fade between tile k and k+1 begins (their overlap is starts[k+1]..starts[k]+len).
    let fade: Vec<i64> = starts.windows(2).map(|p| p[1] + (p[0] + len - p[1] - n) / 2).collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            (s..s + len)
                .map(|g| {
                    let rise = match k.checked_sub(1).map(|i| g - fade[i]) {
                        Some(j) if j < 0 => 0.0,
                        Some(j) if j < n => ramp(j),
                        _ => 1.0,
                    };
                    let fall = match fade.get(k).map(|&a| g - a) {
                        Some(j) if j >= n => 0.0,
                        Some(j) if j >= 0 => ramp(n - 1 - j),
                        _ => 1.0,
                    };
                    (rise * fall) as f32
                })
                .collect()
        })
        .collect()
}

impl<R: Restore> Restore for Tiled<R> {
    fn restore(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (h, w) = (size[2], size[3]);
        if h <= self.tile && w <= self.tile {
            return self.inner.restore(x);
        }
        let (th, tw) = (h.min(self.tile), w.min(self.tile));
        let (ys, xs) =
            (tile_starts(h, self.tile, self.overlap), tile_starts(w, self.tile, self.overlap));
        let (wy, wx) = (axis_windows(&ys, th, self.overlap), axis_windows(&xs, tw, self.overlap));
        let mut acc: Option<Tensor> = None;
        for (&y0, wy) in ys.iter().zip(&wy) {
            for (&x0, wx) in xs.iter().zip(&wx) {
                let out = self.inner.restore(&x.narrow(2, y0, th).narrow(3, x0, tw));
                let win = Tensor::from_slice(wy).view([1, 1, th, 1])
                    * Tensor::from_slice(wx).view([1, 1, 1, tw]);
                let acc = acc.get_or_insert_with(|| {
                    Tensor::zeros([size[0], out.size()[1], h, w], (out.kind(), out.device()))
                });
                // The windows sum to 1 everywhere, so the weighted sum needs no normalising.
                let mut dst = acc.narrow(2, y0, th).narrow(3, x0, tw);
                dst += out * win.to_device(x.device());
            }
        }
        acc.expect("at least one tile")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::FnRestore;
    use crate::model::{ModelConfig, Network};
    use tch::{Device, Kind};

    /// Uniform noise from a seed, drawn while no seeded model init runs.
    fn rand(seed: i64, shape: &[i64]) -> Tensor {
        crate::model::with_global_rng(|| {
            tch::manual_seed(seed);
            Tensor::rand(shape, (Kind::Float, Device::Cpu))
        })
    }

    fn max_abs(t: &Tensor) -> f64 {
        f64::try_from(t.abs().max()).unwrap()
    }

    #[test]
    fn starts_cover_the_image_with_equal_tiles() {
        assert_eq!(tile_starts(40, 48, 16), [0]);
        assert_eq!(tile_starts(48, 48, 16), [0]);
        assert_eq!(tile_starts(72, 48, 16), [0, 24]);
        assert_eq!(tile_starts(88, 48, 16), [0, 20, 40]);
        assert_eq!(tile_starts(100, 48, 16), [0, 26, 52]);
        assert_eq!(tile_starts(49, 48, 0), [0, 1]);
        for (size, tile, overlap) in [(1000, 64, 7), (257, 128, 32), (300, 64, 63)] {
            let s = tile_starts(size, tile, overlap);
            assert_eq!((s[0], *s.last().unwrap() + tile), (0, size));
            assert!(s.windows(2).all(|p| p[0] + tile - p[1] >= overlap), "{s:?}");
        }
    }

    #[test]
    fn windows_are_a_partition_of_unity() {
        for (size, tile, overlap) in
            [(88, 48, 16), (100, 48, 16), (300, 64, 24), (70, 32, 0), (130, 32, 30), (49, 48, 40)]
        {
            let starts = tile_starts(size, tile, overlap);
            let wins = axis_windows(&starts, tile, overlap);
            let mut sum = vec![0.0f64; size as usize];
            for (&s, win) in starts.iter().zip(&wins) {
                assert!(win.iter().all(|&v| (0.0..=1.0).contains(&v)));
                for (j, &v) in win.iter().enumerate() {
                    sum[s as usize + j] += f64::from(v);
                }
            }
            assert!(sum.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{size} {tile} {overlap}");
        }
    }

    #[test]
    fn pointwise_restorer_is_unchanged_by_tiling() {
        // A pixel-local map gives every tile the untiled values, so only blending can differ.
        let x = rand(0, &[2, 3, 70, 101]);
        let f = FnRestore(|t: &Tensor| t.sin() * 2.0 - 0.3);
        let full = f.restore(&x);
        let tiled = Tiled::new(f, 32, 8).unwrap().restore(&x);
        assert_eq!(tiled.size(), full.size());
        let d = max_abs(&(tiled - full));
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn local_restorer_is_unchanged_by_tiling() {
        // A 3x3 blur sees zero padding instead of neighbours on a tile's inner edge; the window
        // gives those edge pixels weight 0 here (overlaps 24 and 28 > 16), so tiling is exact.
        let x = rand(1, &[1, 3, 72, 88]);
        let k = Tensor::ones([3, 1, 3, 3], (Kind::Float, Device::Cpu)) / 9.0;
        let blur = FnRestore(|t: &Tensor| t.conv2d(&k, None::<Tensor>, [1, 1], [1, 1], [1, 1], 3));
        let full = blur.restore(&x);
        let d = max_abs(&(Tiled::new(blur, 48, 16).unwrap().restore(&x) - full));
        assert!(d < 1e-6, "{d}");
    }

    #[test]
    fn promptir_tiled_is_close_but_not_equal() {
        // PromptIR is not translation-local: the prompts are resized to the input size (an
        // absolute-position pattern) and channel attention pools over all pixels, so no overlap
        // makes tiles exact. Measured on this random tiny model (72x88, tile 48, overlap 16):
        // max 4.6e-2, mean 6.4e-3, against a mean |output - input| of 0.105; constant prompts
        // cut it to about a third. Misplaced tiles would show the input noise (mean ~0.3).
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = Network::seeded(&vs.root(), &ModelConfig::tiny(), 0);
        let x = rand(2, &[1, 3, 72, 88]);
        tch::no_grad(|| {
            let full = model.restore(&x);
            let tiled = Tiled::new(&model, 48, 16).unwrap().restore(&x);
            let d = (&tiled - &full).abs();
            let (max, mean) = (max_abs(&d), f64::try_from(d.mean(None)).unwrap());
            assert!(max < 0.06 && mean < 0.01, "max {max} mean {mean}");
            assert!(max > 1e-3, "tiling ran untiled? max {max}");
        });
    }

    #[test]
    fn tiles_have_the_requested_size_and_small_images_run_whole() {
        let seen = std::cell::RefCell::new(Vec::new());
        let f = FnRestore(|t: &Tensor| {
            seen.borrow_mut().push((t.size()[2], t.size()[3]));
            t.shallow_clone()
        });
        let t = Tiled::new(f, 32, 8).unwrap();
        let x = Tensor::zeros([1, 3, 40, 20], (Kind::Float, Device::Cpu));
        let _ = t.restore(&x);
        assert_eq!(*seen.borrow(), [(32, 20), (32, 20)]);
        seen.borrow_mut().clear();
        let _ = t.restore(&Tensor::zeros([1, 3, 30, 32], (Kind::Float, Device::Cpu)));
        assert_eq!(*seen.borrow(), [(30, 32)]);
    }

    #[test]
    fn bad_geometry_is_a_usage_error() {
        let f = || FnRestore(|t: &Tensor| t.shallow_clone());
        assert!(Tiled::new(f(), 4, 0).is_err());
        assert!(Tiled::new(f(), 32, 32).is_err());
        assert!(Tiled::new(f(), 32, -1).is_err());
    }
}
