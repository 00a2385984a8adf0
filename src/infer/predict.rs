//! `promptir predict`: a folder of degraded images in, `pred.npz` (and optionally PNGs) out.
//!
//! The forward path is [`super::restorer::build_restorer`]'s: checkpoints averaged as an
//! ensemble, wrapped in TTA and then in tiles when asked. Every check a user can fail
//! (folders, image files, weights, writability) runs before inference, and nothing is written
//! until every image is restored, so an error never leaves partial output.

use super::npz::{write_pred_npz, NpzImage};
use super::restorer::{build_restorer, load_models, restore_image};
use super::tile::Tiled;
use super::tta::{TtaMode, TtaPlan};
use crate::io::{self, EmaChoice, RgbImage};
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use tch::Device;

/// Everything `promptir predict` takes.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// One or more checkpoints; several are averaged (each rebuilds its own network).
    pub weights: Vec<PathBuf>,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Test-time augmentation: which views to average.
    pub tta: TtaMode,
    /// Raw weights or their moving average.
    pub ema: EmaChoice,
    /// Also save each restored image here as `<stem>.png` (the npz bytes).
    pub png_dir: Option<PathBuf>,
    /// Tile size and overlap; `None` restores whole images.
    pub tile: Option<(i64, i64)>,
    pub device: Device,
}

/// What a run did, for the CLI to print.
#[derive(Debug, Clone)]
pub struct PredictSummary {
    pub images: usize,
    pub models: usize,
    /// The views averaged, and why when `auto` had to assume.
    pub tta: TtaPlan,
    pub seconds: f64,
}

/// One restored image in `pred.npz` layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    /// The input's file name with extension (`"0.png"`): the npz key.
    pub key: String,
    pub height: usize,
    pub width: usize,
    /// `(3, H, W)` u8 in C order, from [`io::to_u8_chw`].
    pub chw: Vec<u8>,
}

/// Runs the whole command.
pub fn predict(opts: &PredictOptions) -> Result<PredictSummary> {
    let start = std::time::Instant::now();
    let files = input_images(&opts.input)?;
    let keys = files.iter().map(|f| key_of(f)).collect::<Result<Vec<_>>>()?;
    let png_names = png_names(&files)?;
    io::check_output_file(&opts.output)?;
    if let Some(dir) = &opts.png_dir {
        if dir.is_file() {
            return Err(Error::data(dir, "--png-dir is a file; give a folder"));
        }
        io::check_output_folder(dir)?;
    }
    if let Some((size, overlap)) = opts.tile {
        // Checked here too so a bad geometry fails before anything is loaded.
        Tiled::new((), size, overlap)?;
    }
    let models = load_models(&opts.weights, opts.device, opts.ema)?;
    let n_models = models.len();
    let checkpoints: Vec<(&Path, _)> = models.iter().map(|m| (m.path.as_path(), &m.meta)).collect();
    let tta = TtaPlan::resolve(opts.tta, &checkpoints)?;
    let restorer = build_restorer(models, &tta.views, opts.tile)?;
    // Decode everything first: an unreadable file fails in seconds, not after the inference.
    let images = files.iter().map(|f| RgbImage::load(f)).collect::<Result<Vec<_>>>()?;

    let bar = progress_bar(images.len() as u64);
    let mut preds = Vec::with_capacity(images.len());
    for (img, key) in images.into_iter().zip(keys) {
        bar.set_message(key.clone());
        let chw = restore_image(&*restorer, &img, opts.device);
        preds.push(Prediction { key, height: img.height, width: img.width, chw });
        bar.inc(1);
    }
    bar.finish_and_clear();

    if let Some(dir) = &opts.png_dir {
        write_pngs(dir, &png_names, &preds)?;
    }
    let written = write_npz(&opts.output, &preds);
    if written.is_err() {
        if let Some(dir) = &opts.png_dir {
            remove_pngs(dir, &png_names);
        }
    }
    written?;
    Ok(PredictSummary {
        images: preds.len(),
        models: n_models,
        tta,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes predictions as `pred.npz`.
pub fn write_npz(path: &Path, preds: &[Prediction]) -> Result<()> {
    let entries: Vec<NpzImage<'_>> = preds
        .iter()
        .map(|p| NpzImage { key: &p.key, chw: &p.chw, height: p.height, width: p.width })
        .collect();
    write_pred_npz(path, &entries)
}

/// The images in `dir`, sorted, with clear errors for a missing or empty folder.
fn input_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Err(Error::data(
            dir,
            "input folder does not exist; give --input the folder of degraded images",
        ));
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "input is not a folder; give the folder of images"));
    }
    let files = io::list_images(dir)?;
    if files.is_empty() {
        return Err(Error::data(dir, "input folder has no .png/.jpg/.jpeg images"));
    }
    Ok(files)
}

fn key_of(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| Error::data(path, "file name is not valid UTF-8; rename the file"))
}

/// `<stem>.png` for each input, refusing two inputs that would share one PNG (`a.jpg`, `a.png`).
fn png_names(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut seen = std::collections::HashMap::new();
    let mut names = Vec::with_capacity(files.len());
    for f in files {
        let stem = f
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| Error::data(f, "file name is not valid UTF-8; rename the file"))?;
        let name = format!("{stem}.png");
        if let Some(other) = seen.insert(name.clone(), f) {
            return Err(Error::data(
                f,
                format!("has the same stem as {}; rename one of them", other.display()),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

/// Saves the PNGs, creating `dir` if needed; on failure removes what it wrote.
fn write_pngs(dir: &Path, names: &[String], preds: &[Prediction]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    io::check_writable(dir)?;
    for (i, (name, p)) in names.iter().zip(preds).enumerate() {
        let img = RgbImage::from_chw(&p.chw, p.height, p.width);
        if let Err(e) = img.save_png(&dir.join(name)) {
            remove_pngs(dir, &names[..i]);
            return Err(e);
        }
    }
    Ok(())
}

fn remove_pngs(dir: &Path, names: &[String]) {
    for n in names {
        let _ = std::fs::remove_file(dir.join(n));
    }
    // Only succeeds if the folder is now empty, i.e. this run created it for nothing.
    let _ = std::fs::remove_dir(dir);
}

fn progress_bar(n: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_names_refuse_colliding_stems() {
        let ok = png_names(&[PathBuf::from("d/0.png"), PathBuf::from("d/1.jpg")]).unwrap();
        assert_eq!(ok, ["0.png", "1.png"]);
        let err = png_names(&[PathBuf::from("d/a.jpg"), PathBuf::from("d/a.png")]).unwrap_err();
        assert!(err.to_string().contains("same stem"), "{err}");
    }

    #[test]
    fn output_checks_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope/pred.npz");
        let check = io::check_output_file;
        assert!(check(&missing).unwrap_err().to_string().contains("does not exist"));
        assert!(check(dir.path()).unwrap_err().to_string().contains("is a folder"));
        check(&dir.path().join("pred.npz")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "probe left behind");
    }
}
