//! `promptir synth`: a small rain/snow dataset in the course layout, generated on the spot, so
//! every command can be tried without downloading the real data.
//!
//! Layout written under the output folder (the course's, plus test ground truth and types):
//! ```text
//! train/degraded/{rain,snow}-K.png   train/clean/{rain,snow}_clean-K.png   K = 1..
//! test/degraded/K.png                test/clean/K.png                      K = 0..M-1
//! test/types.json                    {"0.png": "snow", "1.png": "rain", ...}
//! ```
//! Clean images are procedural landscapes ([`scene::landscape`]) or crops of the user's photos
//! ([`scene::photo_crop`]); rain and snow are drawn by [`RainParams`] and [`SnowParams`].
//!
//! Determinism: every image draws from its own ChaCha stream keyed by (seed, purpose, index),
//! so the bytes depend on the seed only, never on thread count or scheduling.

mod canvas;
mod noise;
mod props;
pub mod scene;
mod sheet;
pub mod weather;

pub use canvas::Canvas;
pub use sheet::write_sheet;
use weather::{RainParams, SnowParams};

use crate::data::TestTypes;
use crate::io;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The two degradations of the course data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weather {
    Rain,
    Snow,
}

impl Weather {
    pub fn name(self) -> &'static str {
        match self {
            Weather::Rain => "rain",
            Weather::Snow => "snow",
        }
    }

    /// Draws this degradation's parameters, then applies them to `clean`.
    pub fn degrade(self, clean: &Canvas, rng: &mut impl Rng) -> Canvas {
        match self {
            Weather::Rain => RainParams::sample(rng).apply(clean, rng),
            Weather::Snow => SnowParams::sample(rng).apply(clean, rng),
        }
    }
}

/// What `promptir synth` makes.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthOptions {
    /// Training pairs in total; rain gets the odd one out when the count is odd.
    pub train: usize,
    /// Test images, half rain and half snow in shuffled order.
    pub test: usize,
    /// Side of the square images, px (the course uses 256).
    pub size: usize,
    pub seed: u64,
    /// Crop clean images from these photos (png/jpg directly inside) instead of drawing them.
    pub clean_dir: Option<PathBuf>,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions { train: 200, test: 20, size: 256, seed: 0, clean_dir: None }
    }
}

/// Independent random streams; the discriminant goes into the ChaCha seed.
#[derive(Clone, Copy)]
enum Stream {
    TrainRain = 1,
    TrainSnow = 2,
    Test = 3,
    TestOrder = 4,
    SheetScene = 5,
    SheetRain = 6,
    SheetSnow = 7,
}

fn rng_for(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16] = stream as u8;
    ChaCha8Rng::from_seed(key)
}

/// Where clean images come from.
enum Source {
    Procedural,
    Photos(Vec<PathBuf>),
}

impl Source {
    fn new(clean_dir: Option<&Path>) -> Result<Self> {
        let Some(dir) = clean_dir else { return Ok(Source::Procedural) };
        if !dir.is_dir() {
            return Err(Error::data(dir, "not a folder (--clean-dir); give a folder of photos"));
        }
        let photos = io::list_images(dir)?;
        if photos.is_empty() {
            return Err(Error::data(
                dir,
                "no .png/.jpg/.jpeg images directly inside (--clean-dir)",
            ));
        }
        Ok(Source::Photos(photos))
    }

    fn clean(&self, size: usize, rng: &mut impl Rng) -> Result<Canvas> {
        match self {
            Source::Procedural => Ok(scene::landscape(size, rng)),
            Source::Photos(p) => scene::photo_crop(p, size, rng),
        }
    }
}

fn check_size(size: usize) -> Result<()> {
    if !(16..=4096).contains(&size) {
        return Err(Error::Usage(format!("--size must be in 16..=4096, got {size}")));
    }
    Ok(())
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub train_rain: usize,
    pub train_snow: usize,
    pub test: usize,
}

/// Writes a dataset into `out`, which must not exist or be empty. Files are built in a hidden
/// sibling folder and renamed into place at the end, so `out` never holds a partial dataset.
pub fn generate(out: &Path, opts: &SynthOptions) -> Result<Summary> {
    check_size(opts.size)?;
    if opts.train + opts.test == 0 {
        return Err(Error::Usage("nothing to make: --train and --test are both 0".into()));
    }
    // Before any work or folder creation: `out` or a parent that is a file, or a read-only
    // parent, fails here.
    io::check_output_folder(out)?;
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::data(
                    out,
                    "output folder is not empty; synth never overwrites: pick a new folder",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if out.exists() && !out.is_dir() => {
            return Err(Error::data(out, format!("exists and is not a folder ({e})")));
        }
        Err(e) => return Err(Error::io(out, e)),
    }
    let source = Source::new(opts.clean_dir.as_deref())?;
    let name = out
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a folder name", out.display())))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = parent.join(format!(".{}.synth-{}", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = write_dataset(&staging, opts, &source).and_then(|summary| {
        std::fs::rename(&staging, out).map_err(|e| Error::io(out, e))?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn write_dataset(root: &Path, opts: &SynthOptions, source: &Source) -> Result<Summary> {
    for d in ["train/degraded", "train/clean", "test/degraded", "test/clean"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    }
    let (n_rain, n_snow) = (opts.train.div_ceil(2), opts.train / 2);
    let mut types = vec![Weather::Rain; opts.test.div_ceil(2)];
    types.resize(opts.test, Weather::Snow);
    types.shuffle(&mut rng_for(opts.seed, Stream::TestOrder, 0));

    // One job per pair: (weather, stream, index, degraded path, clean path).
    let mut jobs = Vec::with_capacity(opts.train + opts.test);
    for (w, n, stream) in
        [(Weather::Rain, n_rain, Stream::TrainRain), (Weather::Snow, n_snow, Stream::TrainSnow)]
    {
        for k in 1..=n {
            let t = w.name();
            jobs.push((
                w,
                stream,
                k as u64,
                root.join(format!("train/degraded/{t}-{k}.png")),
                root.join(format!("train/clean/{t}_clean-{k}.png")),
            ));
        }
    }
    for (k, &w) in types.iter().enumerate() {
        jobs.push((
            w,
            Stream::Test,
            k as u64,
            root.join(format!("test/degraded/{k}.png")),
            root.join(format!("test/clean/{k}.png")),
        ));
    }
    jobs.par_iter().try_for_each(|(w, stream, k, degraded, clean)| {
        let (c, d) = pair(source, opts.size, *w, rng_for(opts.seed, *stream, *k))?;
        c.to_rgb().save_png(clean)?;
        d.to_rgb().save_png(degraded)
    })?;

    let types = types.iter().enumerate().map(|(k, w)| (format!("{k}.png"), w.name().to_string()));
    TestTypes(types.collect()).write(&TestTypes::path(root))?;
    Ok(Summary { train_rain: n_rain, train_snow: n_snow, test: opts.test })
}

fn pair(source: &Source, size: usize, w: Weather, mut rng: ChaCha8Rng) -> Result<(Canvas, Canvas)> {
    let clean = source.clean(size, &mut rng)?;
    let degraded = w.degrade(&clean, &mut rng);
    Ok((clean, degraded))
}
