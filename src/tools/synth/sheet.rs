//! The sample sheet (`promptir synth --sheet PATH`): rows of `clean | rain | snow`, saved as a
//! 256-colour PNG so the docs copy stays small (about a quarter of the RGB size).

use super::{check_size, rng_for, Canvas, Source, Stream, SynthOptions, Weather};
use crate::io::{self, RgbImage};
use crate::{Error, Result};
use rayon::prelude::*;
use std::path::Path;

/// Writes a sheet of `rows` rows, each `clean | rain | snow` on the same clean image, with
/// 4-px white gutters: a quick look at what the generator makes.
pub fn write_sheet(path: &Path, rows: usize, opts: &SynthOptions) -> Result<()> {
    check_size(opts.size)?;
    io::check_output_file(path)?;
    let source = Source::new(opts.clean_dir.as_deref())?;
    let (s, gap) = (opts.size, 4);
    let tiles: Vec<[Canvas; 3]> = (0..rows as u64)
        .into_par_iter()
        .map(|r| {
            let clean = source.clean(s, &mut rng_for(opts.seed, Stream::SheetScene, r))?;
            let rain = Weather::Rain.degrade(&clean, &mut rng_for(opts.seed, Stream::SheetRain, r));
            let snow = Weather::Snow.degrade(&clean, &mut rng_for(opts.seed, Stream::SheetSnow, r));
            Ok([clean, rain, snow])
        })
        .collect::<Result<_>>()?;
    let (w, h) = (3 * s + 2 * gap, rows * s + rows.saturating_sub(1) * gap);
    let mut sheet = RgbImage { width: w, height: h, hwc: vec![255; w * h * 3] };
    for (r, row) in tiles.iter().enumerate() {
        for (c, tile) in row.iter().enumerate() {
            let img = tile.to_rgb();
            for y in 0..s {
                let dst = ((r * (s + gap) + y) * w + c * (s + gap)) * 3;
                sheet.hwc[dst..dst + s * 3].copy_from_slice(&img.hwc[y * s * 3..(y + 1) * s * 3]);
            }
        }
    }
    let (palette, indices) = quantize(&sheet.hwc);
    let mut buf = Vec::new();
    let mut enc = png::Encoder::new(&mut buf, w as u32, h as u32);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette.concat());
    // Palette indices are labels, not intensities: prediction filters only hurt them.
    enc.set_deflate_compression(png::DeflateCompression::Level(9));
    enc.set_filter(png::Filter::NoFilter);
    enc.write_header()
        .and_then(|mut wr| wr.write_image_data(&indices))
        .map_err(|e| Error::data(path, format!("PNG encoding failed: {e}")))?;
    io::write_atomic_bytes(path, &buf)
}

/// 5 bits per channel: the histogram resolution of the quantiser.
fn bin(p: &[u8]) -> usize {
    (usize::from(p[0] >> 3) << 10) | (usize::from(p[1] >> 3) << 5) | usize::from(p[2] >> 3)
}

/// Median-cut colour quantisation to at most 256 colours, on a 5-bit histogram: repeatedly split
/// the box with the most pixels x widest channel range at its weighted median. Returns the palette
/// and one index per pixel of `hwc`.
fn quantize(hwc: &[u8]) -> (Vec<[u8; 3]>, Vec<u8>) {
    let mut count = vec![0u64; 1 << 15];
    let mut sum = vec![[0u64; 3]; 1 << 15];
    for p in hwc.chunks_exact(3) {
        let b = bin(p);
        count[b] += 1;
        (0..3).for_each(|c| sum[b][c] += u64::from(p[c]));
    }
    // Each used bin as (mean colour, pixel count).
    let mut bins: Vec<([f64; 3], u64)> = (0..1 << 15)
        .filter(|&b| count[b] > 0)
        .map(|b| (sum[b].map(|v| v as f64 / count[b] as f64), count[b]))
        .collect();
    let extent = |bs: &[([f64; 3], u64)], c: usize| {
        let (lo, hi) =
            bs.iter().fold((f64::MAX, f64::MIN), |(l, h), b| (l.min(b.0[c]), h.max(b.0[c])));
        hi - lo
    };
    // Boxes are ranges of `bins`; one box holding every bin to start.
    let mut boxes = Vec::with_capacity(256);
    boxes.push(0..bins.len());
    while boxes.len() < 256 {
        let score = |r: &std::ops::Range<usize>| {
            let bs = &bins[r.clone()];
            let n: u64 = bs.iter().map(|b| b.1).sum();
            n as f64 * (0..3).map(|c| extent(bs, c)).fold(0.0, f64::max)
        };
        let Some((i, _)) = boxes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.len() > 1)
            .max_by(|a, b| score(a.1).total_cmp(&score(b.1)))
        else {
            break;
        };
        let r = boxes.swap_remove(i);
        let bs = &mut bins[r.clone()];
        let c = (0..3).max_by(|&a, &b| extent(bs, a).total_cmp(&extent(bs, b))).unwrap();
        bs.sort_by(|a, b| a.0[c].total_cmp(&b.0[c]));
        let half = bs.iter().map(|b| b.1).sum::<u64>() / 2;
        let mut acc = 0;
        let cut = bs.iter().position(|b| {
            acc += b.1;
            acc >= half
        });
        let cut = cut.unwrap_or(0).clamp(0, bs.len() - 2) + 1;
        boxes.push(r.start..r.start + cut);
        boxes.push(r.start + cut..r.end);
    }
    let palette: Vec<[f64; 3]> = boxes
        .iter()
        .map(|r| {
            let bs = &bins[r.clone()];
            let n: u64 = bs.iter().map(|b| b.1).sum();
            [0, 1, 2].map(|c| bs.iter().map(|b| b.0[c] * b.1 as f64).sum::<f64>() / n as f64)
        })
        .collect();
    // Every used bin maps to the palette colour nearest to the bin's mean.
    let mut lut = vec![0u8; 1 << 15];
    for b in (0..1 << 15).filter(|&b| count[b] > 0) {
        let m = sum[b].map(|v| v as f64 / count[b] as f64);
        let d = |p: &[f64; 3]| (0..3).map(|c| (p[c] - m[c]).powi(2)).sum::<f64>();
        let best = (0..palette.len()).min_by(|&i, &j| d(&palette[i]).total_cmp(&d(&palette[j])));
        lut[b] = best.unwrap_or(0) as u8;
    }
    let indices = hwc.chunks_exact(3).map(|p| lut[bin(p)]).collect();
    (palette.iter().map(|p| p.map(|v| v.round() as u8)).collect(), indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiser_keeps_few_colours_exact_and_many_close() {
        // Three colours survive exactly.
        let few: Vec<u8> = [[10, 20, 30], [200, 100, 0], [255, 255, 255]].repeat(50).concat();
        let (pal, idx) = quantize(&few);
        assert_eq!(pal.len(), 3);
        for (p, &i) in few.chunks_exact(3).zip(&idx) {
            assert_eq!(&pal[usize::from(i)][..], p);
        }
        // All 64^3 colours of a uniform cube: close to the best 256 equal cells can do.
        let many: Vec<u8> = (0..64u8)
            .flat_map(|r| {
                (0..64u8).flat_map(move |g| (0..64u8).flat_map(move |b| [r * 4, g * 4, b * 4]))
            })
            .collect();
        let (pal, idx) = quantize(&many);
        assert_eq!(pal.len(), 256);
        let err: f64 = many
            .chunks_exact(3)
            .zip(&idx)
            .map(|(p, &i)| {
                (0..3)
                    .map(|c| (f64::from(p[c]) - f64::from(pal[usize::from(i)][c])).abs())
                    .sum::<f64>()
            })
            .sum::<f64>()
            / many.len() as f64;
        // 256 equal cubes (side 40) would give 10.1 per channel; this gives 10.67.
        assert!(err < 11.0, "mean abs error {err}");
    }
}
