//! File helpers shared by every command: atomic writes and image decode/encode.
//!
//! Images cross into tensors as CHW u8 bytes; quantisation (clamp, *255, round) happens in
//! exactly one place, [`to_u8_chw`], so PNGs and `pred.npz` always hold the same bytes.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Writes `path` through a temp file in the same folder, synced and then renamed, so a crash at
/// any moment leaves either the old file or the new one, never a torn one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |f| f.write_all(bytes))
}

/// Removes temp files that [`write_atomic`] left in `dir` when its process was killed mid-write
/// (`.<name>.tmp-<pid>`, never a finished file). Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // A writer that is still alive (this process, or another on Linux) keeps its temp file.
        let stale = name.starts_with('.')
            && name.rsplit_once(".tmp-").is_some_and(|(_, pid)| {
                !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
                    && pid != std::process::id().to_string()
                    && !Path::new("/proc").join(pid).exists()
            });
        if stale && p.is_file() && std::fs::remove_file(&p).is_ok() {
            n += 1;
        }
    }
    n
}

/// Fails early when the file `path` cannot be written: its folder is missing, a file, or
/// read-only, or `path` is a folder itself.
pub fn check_output_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::data(path, "output is a folder; give a file name such as pred.npz"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(dir, "is a file, not a folder; choose another output path"));
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "output folder does not exist; create it first"));
    }
    check_writable(dir)
}

/// Fails early when the folder `dir` (which may not exist yet) cannot be created or written:
/// it is a file, or its nearest existing ancestor is a file or read-only.
pub fn check_output_folder(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(dir, "is a file, not a folder; choose another folder"));
    }
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(Error::data(
            existing,
            format!("is a file, so {} cannot be created; choose another folder", dir.display()),
        ));
    }
    check_writable(existing)
}

/// Creates and removes a probe file in `dir`.
pub fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".promptir-write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::data(
            dir,
            format!("output folder is not writable ({e}); choose another output location"),
        )),
    }
}

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
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic_bytes(&p, b"one").unwrap();
        write_atomic_bytes(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temps_are_swept_and_finished_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = [".last.safetensors.tmp-99999999", ".a.tmp-99999998", "a", ".x.tmp-abc"];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".x.tmp-abc", "a"]);
    }

    #[test]
    fn output_checks_refuse_files_as_folders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_output_folder(&file.join("sub/run")).unwrap_err().to_string();
        assert!(e.contains("is a file"), "{e}");
        let e = check_output_file(&file.join("pred.npz")).unwrap_err().to_string();
        assert!(e.contains("is a file"), "{e}");
        check_output_folder(&dir.path().join("new/deeper")).unwrap();
        assert!(!dir.path().join("new").exists(), "checks create nothing");
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
}
