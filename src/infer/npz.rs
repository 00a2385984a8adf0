//! The `pred.npz` writer: one uint8 `(3, H, W)` array per image, keyed by the input's file name,
//! laid out exactly like `np.savez(**{"0.png": a, ...})` (Stored zip entries `0.png.npy`).

use crate::io::write_atomic;
use crate::Result;
use npyz::WriterBuilder;
use std::io::BufWriter;
use std::path::Path;

/// One restored image: `chw` holds `3 * height * width` bytes in C order.
pub struct NpzImage<'a> {
    pub key: &'a str,
    pub chw: &'a [u8],
    pub height: usize,
    pub width: usize,
}

/// Writes all images to `path` atomically; the zip is finalised explicitly so that any write
/// error surfaces here instead of being printed by a destructor.
pub fn write_pred_npz(path: &Path, images: &[NpzImage<'_>]) -> Result<()> {
    write_atomic(path, |file| {
        let mut npz = npyz::npz::NpzWriter::new(BufWriter::new(file));
        let opts = npyz::zip::write::FileOptions::default()
            .compression_method(npyz::zip::CompressionMethod::Stored)
            // Entries of 4 GiB or more need zip64 headers (a 37k x 37k image).
            .large_file(images.iter().any(|im| im.chw.len() as u64 + 128 > u32::MAX as u64));
        for im in images {
            assert_eq!(im.chw.len(), 3 * im.height * im.width, "{}: CHW size mismatch", im.key);
            let mut w = npz
                .array::<u8>(im.key, opts)?
                .default_dtype()
                .shape(&[3, im.height as u64, im.width as u64])
                .begin_nd()?;
            w.extend(im.chw.iter().copied())?;
            w.finish()?;
        }
        let mut buffered = npz.zip_writer().finish()?;
        std::io::Write::flush(&mut buffered)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_named_like_np_savez() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pred.npz");
        let a = [7u8; 3 * 2 * 5];
        write_pred_npz(&p, &[NpzImage { key: "0.png", chw: &a, height: 2, width: 5 }]).unwrap();
        let mut zip = npyz::zip::ZipArchive::new(std::fs::File::open(&p).unwrap()).unwrap();
        let entry = zip.by_index(0).unwrap();
        assert_eq!(entry.name(), "0.png.npy");
        assert_eq!(entry.compression(), npyz::zip::CompressionMethod::Stored);
        assert_eq!(entry.size(), 128 + a.len() as u64); // numpy's 128-byte v1 header + data
    }
}
