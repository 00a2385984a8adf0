//! Every pair decoded into memory once, as **HWC u8** (the file layout: 1.26 GB for the 3,200
//! course pairs); loader threads convert only the training patches to CHW f32.

use super::layout::PairPath;
use crate::io::RgbImage;
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use std::io::IsTerminal;
use std::path::PathBuf;

/// One decoded pair, both images HWC u8 of the same size.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The degraded file name, e.g. `rain-12.png`.
    pub name: String,
    pub kind: String,
    pub path: PathBuf,
    pub height: usize,
    pub width: usize,
    pub degraded: Vec<u8>,
    pub clean: Vec<u8>,
}

/// All pairs decoded into memory, in the order of the [`PairPath`] list they came from.
#[derive(Debug)]
pub struct Store {
    samples: Vec<Sample>,
}

impl Store {
    /// Decodes every pair on a local pool of `workers` threads (not rayon's global pool, which
    /// would compete with libtorch's threads), with a progress bar on a terminal. Fails on the
    /// first unreadable image or size mismatch in list order.
    pub fn load(pairs: &[PairPath], workers: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("decode-{i}"))
            .build()
            .map_err(|e| Error::Usage(format!("cannot start {workers} decode threads: {e}")))?;
        let bar = ProgressBar::new(pairs.len() as u64);
        if std::io::stderr().is_terminal() {
            bar.set_style(
                ProgressStyle::with_template("decoding pairs {bar:30} {pos}/{len} [{elapsed}]")
                    .expect("valid template"),
            );
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let results: Vec<Result<Sample>> = pool.install(|| {
            pairs
                .par_iter()
                .map(|p| {
                    let s = load_pair(p);
                    bar.inc(1);
                    s
                })
                .collect()
        });
        bar.finish_and_clear();
        Ok(Store { samples: results.into_iter().collect::<Result<_>>()? })
    }

    /// A store from already decoded samples (tests, synthetic data).
    pub fn from_samples(samples: Vec<Sample>) -> Self {
        Store { samples }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn get(&self, i: usize) -> &Sample {
        &self.samples[i]
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The decoded samples, without copying them.
    pub fn into_samples(self) -> Vec<Sample> {
        self.samples
    }

    /// Each sample's kind, in order (the input of [`super::split`]).
    pub fn kinds(&self) -> Vec<&str> {
        self.samples.iter().map(|s| s.kind.as_str()).collect()
    }
}

fn load_pair(p: &PairPath) -> Result<Sample> {
    let d = RgbImage::load(&p.degraded)?;
    let c = RgbImage::load(&p.clean)?;
    if (d.width, d.height) != (c.width, c.height) {
        return Err(Error::data(
            &p.clean,
            format!(
                "is {}x{} but its degraded twin {} is {}x{}; a pair must have one size, re-export one of them",
                c.width, c.height, p.name, d.width, d.height
            ),
        ));
    }
    Ok(Sample {
        name: p.name.clone(),
        kind: p.kind.clone(),
        path: p.degraded.clone(),
        height: d.height,
        width: d.width,
        degraded: d.hwc,
        clean: c.hwc,
    })
}
