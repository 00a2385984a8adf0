//! Images as files and as tensors: decode/encode, CHW/HWC, side-by-side panels.
//!
//! Images cross into tensors as CHW u8 bytes; quantisation (clamp, *255, round) happens in
//! exactly one place, [`to_u8_chw`], so PNGs and `pred.npz` always hold the same bytes.

use super::atomic::write_atomic_bytes;
use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// An RGB image as interleaved HWC u8, the layout image files use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub hwc: Vec<u8>,
}

impl RgbImage {
    /// Decodes a PNG/JPEG (alpha dropped, grayscale expanded), naming the file on failure.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() == 0 {
            return Err(Error::data(path, "empty file (0 bytes); re-copy or delete it"));
        }
        let img = image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?
            .decode()
            .map_err(|e| {
                Error::data(path, format!("not a readable image ({e}); re-copy or delete it"))
            })?
            .to_rgb8();
        let (w, h) = img.dimensions();
        Ok(RgbImage { width: w as usize, height: h as usize, hwc: img.into_raw() })
    }

    /// Encodes as PNG (atomically).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        let mut buf = Vec::new();
        image::codecs::png::PngEncoder::new(&mut buf)
            .write_image_rgb(&self.hwc, self.width as u32, self.height as u32)
            .map_err(|e| Error::data(path, format!("PNG encoding failed: {e}")))?;
        write_atomic_bytes(path, &buf)
    }

    /// (3, H, W) float in [0, 1] on CPU.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.hwc)
            .view([self.height as i64, self.width as i64, 3])
            .permute([2, 0, 1])
            .to_kind(Kind::Float)
            / 255.0
    }

    /// From CHW u8 bytes.
    pub fn from_chw(chw: &[u8], height: usize, width: usize) -> Self {
        let plane = height * width;
        let mut hwc = vec![0u8; plane * 3];
        for (i, px) in hwc.chunks_exact_mut(3).enumerate() {
            px[0] = chw[i];
            px[1] = chw[plane + i];
            px[2] = chw[2 * plane + i];
        }
        RgbImage { width, height, hwc }
    }

    /// CHW u8 bytes, the `pred.npz` layout.
    pub fn to_chw(&self) -> Vec<u8> {
        let plane = self.height * self.width;
        let mut chw = vec![0u8; plane * 3];
        for (i, px) in self.hwc.chunks_exact(3).enumerate() {
            chw[i] = px[0];
            chw[plane + i] = px[1];
            chw[2 * plane + i] = px[2];
        }
        chw
    }
}

trait PngRgb {
    fn write_image_rgb(self, buf: &[u8], w: u32, h: u32) -> image::ImageResult<()>;
}

impl<W: Write> PngRgb for image::codecs::png::PngEncoder<W> {
    fn write_image_rgb(self, buf: &[u8], w: u32, h: u32) -> image::ImageResult<()> {
        use image::ImageEncoder;
        self.write_image(buf, w, h, image::ExtendedColorType::Rgb8)
    }
}

/// Quantises a (3, H, W) float image in [0, 1] to CHW u8: clamp, scale, **round** (upstream and
/// tch's `image::save` truncate, which costs about 0.03 dB at 32 dB).
pub fn to_u8_chw(img: &Tensor) -> Vec<u8> {
    let q = (img.clamp(0.0, 1.0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let n = q.numel();
    let mut out = vec![0u8; n];
    q.copy_data(&mut out, n);
    out
}

/// Image files (png/jpg/jpeg) directly inside `dir`, sorted by name (numerically where names are numbers).
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image_path(p))
        .collect();
    files.sort_by_key(|p| natural_key(p));
    Ok(files)
}

pub fn is_image_path(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Sort key: numeric file stems first in numeric order ("2.png" before "10.png"), then by name.
fn natural_key(p: &Path) -> (u8, u64, String) {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match stem.parse::<u64>() {
        Ok(n) => (0, n, name),
        Err(_) => (1, 0, name),
    }
}

/// Images side by side, top-aligned (degraded | restored | clean), HWC.
pub fn panel(items: &[&RgbImage]) -> RgbImage {
    let h = items.iter().map(|i| i.height).max().unwrap_or(0);
    let w: usize = items.iter().map(|i| i.width).sum();
    let mut hwc = vec![0u8; h * w * 3];
    let mut x0 = 0;
    for img in items {
        for y in 0..img.height {
            let src = &img.hwc[y * img.width * 3..(y + 1) * img.width * 3];
            hwc[(y * w + x0) * 3..(y * w + x0 + img.width) * 3].copy_from_slice(src);
        }
        x0 += img.width;
    }
    RgbImage { width: w, height: h, hwc }
}

/// Images stacked top to bottom, left-aligned on black.
pub fn stack(rows: &[RgbImage]) -> RgbImage {
    let w = rows.iter().map(|i| i.width).max().unwrap_or(0);
    let h: usize = rows.iter().map(|i| i.height).sum();
    let mut hwc = vec![0u8; h * w * 3];
    let mut y0 = 0;
    for img in rows {
        for y in 0..img.height {
            let src = &img.hwc[y * img.width * 3..(y + 1) * img.width * 3];
            let at = ((y0 + y) * w) * 3;
            hwc[at..at + src.len()].copy_from_slice(src);
        }
        y0 += img.height;
    }
    RgbImage { width: w, height: h, hwc }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_rounds_instead_of_truncating() {
        let t = Tensor::from_slice(&[0.0f32, 100.7 / 255.0, 1.5, -0.2, 0.5]).view([1, 1, 5]);
        assert_eq!(to_u8_chw(&t), vec![0, 101, 255, 0, 128]);
    }

    #[test]
    fn chw_hwc_round_trip() {
        let img = RgbImage { width: 2, height: 1, hwc: vec![1, 2, 3, 4, 5, 6] };
        let chw = img.to_chw();
        assert_eq!(chw, vec![1, 4, 2, 5, 3, 6]);
        assert_eq!(RgbImage::from_chw(&chw, 1, 2), img);
    }

    #[test]
    fn images_sort_numerically() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["10.png", "2.png", "1.png", "notes.txt"] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let names: Vec<String> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into())
            .collect();
        assert_eq!(names, ["1.png", "2.png", "10.png"]);
    }

    fn solid(w: usize, h: usize, v: u8) -> RgbImage {
        RgbImage { width: w, height: h, hwc: vec![v; w * h * 3] }
    }

    #[test]
    fn panel_and_stack_place_pixels() {
        let p = panel(&[&solid(2, 2, 10), &solid(3, 1, 20)]);
        assert_eq!((p.width, p.height), (5, 2));
        let px = |img: &RgbImage, x: usize, y: usize| img.hwc[(y * img.width + x) * 3];
        assert_eq!([px(&p, 1, 1), px(&p, 2, 0), px(&p, 4, 0), px(&p, 3, 1)], [10, 20, 20, 0]);
        let s = stack(&[p.clone(), solid(2, 1, 30)]);
        assert_eq!((s.width, s.height), (5, 3));
        assert_eq!([px(&s, 4, 0), px(&s, 1, 2), px(&s, 2, 2)], [20, 30, 0]);
    }
}
